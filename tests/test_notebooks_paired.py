"""The notebooks are jupytext pairs (jupytext.toml): notebooks/NN_name.py in the percent format,
the source of truth, and notebooks/NN_name.ipynb, committed without outputs (the book executes it).

These tests fail when a notebook lacks its other half, when a pair has drifted, when a committed
.ipynb carries outputs, when a notebook does not start with the Colab cell and the shared set-up
(qdm.notebook.setup, which reads the fast/full switch), when its code is wider than the page,
and when _toc.yml and notebooks/ disagree. After editing a .py, re-create its .ipynb with

    .venv/bin/jupytext --sync notebooks/*.py

(nbmake executes the notebooks themselves: `QDM_FAST=1 pytest --nbmake notebooks`.)
"""
import json
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SYNC = "run `.venv/bin/jupytext --sync notebooks/*.py` (the .py is the source of truth)"


def percent_scripts() -> list[Path]:
    """The .py files in notebooks/ that are notebooks (they have '# %%' cell markers)."""
    return sorted(p for p in NOTEBOOKS.glob("*.py") if "\n# %%" in "\n" + p.read_text())


def ipynbs() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb"))


def cells(path: Path) -> list[tuple[str, str, list]]:
    """(cell type, source without trailing whitespace, tags) of every cell, as jupytext reads it."""
    nb = jupytext.read(path, fmt="py:percent" if path.suffix == ".py" else None)
    return [(c.cell_type, c.source.rstrip(), list(c.metadata.get("tags", []))) for c in nb.cells]


def test_there_are_notebooks():
    assert percent_scripts(), f"no percent-format notebooks found in {NOTEBOOKS}"


def test_jupytext_pairs_notebooks_folder():
    text = (ROOT / "jupytext.toml").read_text()
    assert "notebooks///ipynb" in text and "notebooks///py:percent" in text, \
        "jupytext.toml must pair notebooks/*.ipynb with notebooks/*.py (percent format)"


@pytest.mark.parametrize("script", percent_scripts(), ids=lambda p: p.name)
def test_script_has_its_ipynb(script):
    assert script.with_suffix(".ipynb").exists(), f"{script.name} has no .ipynb: {SYNC}"


@pytest.mark.parametrize("notebook", ipynbs(), ids=lambda p: p.name)
def test_ipynb_has_its_script(notebook):
    assert notebook.with_suffix(".py").exists(), \
        f"{notebook.name} has no paired .py: create it with `.venv/bin/jupytext --sync {notebook.relative_to(ROOT)}`"


@pytest.mark.parametrize("script", percent_scripts(), ids=lambda p: p.name)
def test_pair_has_not_drifted(script):
    notebook = script.with_suffix(".ipynb")
    if not notebook.exists():
        pytest.skip("no .ipynb (test_script_has_its_ipynb fails)")
    py_cells, nb_cells = cells(script), cells(notebook)
    assert len(py_cells) == len(nb_cells), \
        f"{script.name} has {len(py_cells)} cells, {notebook.name} {len(nb_cells)}: {SYNC}"
    for i, (a, b) in enumerate(zip(py_cells, nb_cells)):
        assert a == b, f"cell {i} differs between {script.name} and {notebook.name}: {SYNC}\n.py:   {a}\nipynb: {b}"


@pytest.mark.parametrize("notebook", ipynbs(), ids=lambda p: p.name)
def test_ipynb_is_committed_without_outputs(notebook):
    """The book executes the notebooks at build time; committed outputs would only go stale."""
    nb = json.loads(notebook.read_text())
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{notebook.name} carries outputs in cells {dirty}: clear them "
                       f"(`.venv/bin/jupytext --sync` from the .py writes none, or "
                       f"`jupyter nbconvert --clear-output --inplace {notebook.relative_to(ROOT)}`)")


@pytest.mark.parametrize("script", percent_scripts(), ids=lambda p: p.name)
def test_notebook_uses_the_shared_setup(script):
    """One set-up for every notebook (qdm.notebook.setup: the repository root, inline figures, the
    fast/full switch read in one place), not a copied set-up cell."""
    text = script.read_text()
    assert "from qdm.notebook import setup" in text and "FAST = setup()" in text, \
        f"{script.name} must start with `from qdm.notebook import setup` and `FAST = setup()`"
    assert "os.chdir(" not in text and "qdm.fast_mode()" not in text, \
        f"{script.name} repeats what qdm.notebook.setup does (os.chdir, qdm.fast_mode())"


@pytest.mark.parametrize("script", percent_scripts(), ids=lambda p: p.name)
def test_first_cell_installs_on_colab_only(script):
    """The first code cell fetches qdm on Colab (its launch button opens the bare notebook) and
    does nothing elsewhere; the book hides it."""
    code = [c for c in jupytext.read(script).cells if c.cell_type == "code"]
    first = code[0]
    assert 'if "google.colab" in sys.modules:' in first.source, \
        f"{script.name}: the first code cell must be the Colab set-up, guarded by google.colab"
    assert "remove-cell" in first.metadata.get("tags", []), f"{script.name}: tag the Colab cell remove-cell"
    setup_cell = code[1].source
    assert "FAST = setup()" in setup_cell, f"{script.name}: the second code cell must call setup()"


@pytest.mark.parametrize("script", percent_scripts(), ids=lambda p: p.name)
def test_code_fits_the_page(script):
    """Code lines of at most 100 characters (black -l 100): longer ones overflow the book's code
    boxes."""
    long = [(i, line) for i, c in enumerate(jupytext.read(script).cells) if c.cell_type == "code"
            for line in c.source.splitlines() if len(line) > 100]
    assert not long, f"{script.name}: code lines over 100 characters (cell, line): {long[:5]}"


def toc_files(entry) -> list[str]:
    """Every 'file' (and the root) named anywhere in a _toc.yml structure."""
    found = []
    if isinstance(entry, dict):
        for key, value in entry.items():
            if key in ("file", "root"):
                found.append(value)
            else:
                found += toc_files(value)
    elif isinstance(entry, list):
        for item in entry:
            found += toc_files(item)
    return found


def test_toc_lists_existing_files_and_every_notebook():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = toc_files(toc)
    missing = [f for f in listed if not any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    unlisted = [p.name for p in ipynbs() if str(p.relative_to(ROOT).with_suffix("")) not in listed]
    assert not unlisted, f"notebooks missing from _toc.yml: {unlisted}"
    numbered = [f for f in listed if f.startswith("notebooks/")]
    assert numbered == sorted(numbered), f"_toc.yml must list the notebooks in order: {numbered}"
    assert len({Path(f).name[:2] for f in numbered}) == len(numbered), f"two notebooks share a number: {numbered}"
