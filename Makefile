# qdm's single entry point. `make run` and `make test` each set themselves up on a fresh
# machine: a virtual environment in .venv with the pinned stack of requirements.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# Local copies of data and weights (CI and this project's machines: ../shared/data).
# Elsewhere torchvision / medmnist / pytorch-fid download into ./data and ~/.cache/torch.
SHARED := ../shared/data
ifeq ($(origin QDM_DATA_DIR), undefined)
export QDM_DATA_DIR := $(if $(wildcard $(SHARED)/MNIST),$(abspath $(SHARED)),$(CURDIR)/data)
endif
ifeq ($(origin TORCH_HOME), undefined)
ifneq ($(wildcard $(SHARED)/torch_hub),)
export TORCH_HOME := $(abspath $(SHARED)/torch_hub)
endif
endif

# OpenMP threads wait passively: the tests share the cores with each other and with background jobs
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install run test book book-fast book-needs bench clean-book

install: $(VENV)/.installed

# requirements.txt is its own constraints file: no dependency can move the pinned torch.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -c requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The main job: train the classical and the quantum model (the paper's circuit, exact simulator)
# on MNIST digit 0 with the quick preset, sample from the EMA models.
# Re-running continues (or just re-samples) the runs already in runs/quickstart.
run: install
	$(PY) -m qdm train --preset quick --digit 0 --model classical --out runs/quickstart/classical --resume
	$(PY) -m qdm train --preset quick --digit 0 --model quantum --out runs/quickstart/quantum --resume
	@echo "output folder: runs/quickstart (samples.png, loss.png, summary.json in each model's folder)"

# The tests: the full book is built (the one that is published: every notebook executed in full
# mode from the committed weights in pretrained/, -W), then pytest runs the unit tests, every
# notebook again in fast mode through nbmake, and tests/test_book.py, which opens the built pages
# in headless Chromium (required here: a missing book fails instead of skipping).
test: book
	QDM_FAST=1 QDM_BOOK_REQUIRED=1 $(PY) -m pytest -q tests --nbmake notebooks --durations=20

bench: install
	$(PY) benchmarks/bench_quantum.py --out results/bench_quantum.md

# The book (Jupyter Book 1.x, book/_config.yml) in book/_build/html, every notebook executed in
# full mode (at most 20 minutes on 2 CPU cores); `make book-fast` builds it in fast mode (a few
# minutes) into book/_build/fast/_build/html. BOOK_CONFIG=book/_config.published.yml (book/publish_config.py) adds the launch
# buttons, as the GitHub Pages workflow does. -W: any warning fails it. Two Debian packages,
# installed only when missing:
# libjs-mathjax, the MathJax that book/_ext/offline_mathjax.py copies into the HTML (math renders
# offline), and chromium, the browser tests/test_book.py opens the built pages in.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
BOOK_NEEDS := /usr/bin/chromium:chromium /usr/share/javascript/mathjax/MathJax.js:libjs-mathjax

BOOK_CONFIG ?= book/_config.yml
BOOK_BUILD = $(VENV)/bin/jupyter-book build . --config $(BOOK_CONFIG) --toc _toc.yml -W -n --keep-going

# Each mode has its own build folder: Sphinx does not execute a page again whose source did not
# change, so a full build over a fast one would keep the fast outputs.
book: book-needs
	$(BOOK_BUILD) --path-output book

book-fast: book-needs
	QDM_FAST=1 $(BOOK_BUILD) --path-output book/_build/fast

book-needs: install
	@missing=""; for need in $(BOOK_NEEDS); do \
	  test -e "$${need%%:*}" || missing="$$missing $${need#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing the book's system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

clean-book:
	rm -rf book/_build
