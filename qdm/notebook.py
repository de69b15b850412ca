"""What every notebook does first, in one place: work from the repository root, quiet a known
warning, inline figures, and read the fast/full switch.

    from qdm.notebook import setup
    FAST = setup()

Jupyter, nbmake and the book start a notebook in ``notebooks/``; working from the repository root
makes a relative ``QDM_DATA_DIR`` (such as ``../shared/data``), ``runs/``, ``results/`` and
``pretrained/`` mean what they mean on the command line.
"""
import os
import warnings
from pathlib import Path

import qdm

ROOT = Path(__file__).resolve().parents[1]


def setup() -> bool:
    """Move to the repository root, set up inline figures; return the fast/full switch
    (``qdm.fast_mode()``: QDM_FAST=1 runs the seconds-long CI version of a notebook)."""
    os.chdir(ROOT)
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        import qdm.plots  # noqa: F401  (selects matplotlib's Agg backend when first imported)

        shell.run_line_magic("matplotlib", "inline")   # then back to inline figures
    fast = qdm.fast_mode()
    if fast:
        print("fast mode (QDM_FAST=1): small sizes, the CI version of this notebook")
    return fast
