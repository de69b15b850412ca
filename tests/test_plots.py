"""Writing figures needs no pyplot backend and leaves the caller's alone (a notebook keeps its inline one)."""
import subprocess
import sys

from conftest import ROOT


def test_importing_and_plotting_keeps_the_callers_backend(tmp_path):
    code = ("import matplotlib; matplotlib.use('svg')\n"
            "import qdm.plots, qdm.reproduce, qdm.ablations, qdm.curves\n"
            "qdm.plots.plot_losses([1.0, 0.5, 0.4, 0.3], [{'step': 2, 'val_loss_raw': 0.6, 'val_loss_ema': 0.7},"
            " {'step': 4, 'val_loss_raw': 0.3, 'val_loss_ema': 0.4}], r'%s')\n"
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
            "import matplotlib.pyplot as plt; assert not plt.get_fignums()\n" % (tmp_path / "loss.png"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
