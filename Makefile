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

.PHONY: install run test book bench clean-book

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

# The tests: the book is built (every notebook executed in fast mode, -W), then pytest runs the
# unit tests, every notebook again through nbmake, and tests/test_book.py, which opens the built
# pages in headless Chromium (required here: a missing book fails instead of skipping).
test: book
	QDM_FAST=1 QDM_BOOK_REQUIRED=1 $(PY) -m pytest -q tests --nbmake notebooks --durations=20

bench: install
	$(PY) benchmarks/bench_quantum.py --out results/bench_quantum.md

# The book (Jupyter Book 1.x, book/_config.yml) in book/_build/html, every notebook executed in
# fast mode; -W: any warning fails it. Two Debian packages, installed only when missing:
# libjs-mathjax, the MathJax that book/_ext/offline_mathjax.py copies into the HTML (math renders
# offline), and chromium, the browser tests/test_book.py opens the built pages in.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
BOOK_NEEDS := /usr/bin/chromium:chromium /usr/share/javascript/mathjax/MathJax.js:libjs-mathjax

book: install
	@missing=""; for need in $(BOOK_NEEDS); do \
	  test -e "$${need%%:*}" || missing="$$missing $${need#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing the book's system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	QDM_FAST=1 $(VENV)/bin/jupyter-book build . --config book/_config.yml --toc _toc.yml --path-output book -W -n --keep-going

clean-book:
	rm -rf book/_build
