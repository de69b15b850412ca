"""The landing page's Table I headline (book/landing_figures.py) read back from a table written by
qdm.reproduce.write_tables: the pooled quantum-minus-classical difference and FID over the floor
agree with the statistics computed directly from the cells."""
import importlib.util
from pathlib import Path

import numpy as np

from qdm.experiments.protocol import protocol
from qdm.reproduce import write_tables

ROOT = Path(__file__).resolve().parents[1]


def _landing():
    spec = importlib.util.spec_from_file_location("landing_figures", ROOT / "book" / "landing_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(fids: dict) -> list[dict]:
    """fids[(model, digit)] = FIDs over seeds -> table cells."""
    return [dict(model=m, cls=str(d), seed=s, FID=f, SSIM=0.3, KID=0.01, SSIM_nearest=0.6, protocol={})
            for (m, d), values in fids.items() for s, f in enumerate(values)]


def _refs(digits):
    return {d: {"real-vs-real": {"FID": 5.0 + d, "SSIM": 0.4, "KID": 0.0, "SSIM_nearest": 0.7},
                "noise-vs-real": {"FID": 400.0, "SSIM": 0.0, "KID": 0.7, "SSIM_nearest": 0.05}} for d in digits}


def test_headline_pools_quantum_minus_classical_over_digits(tmp_path):
    fids = {("classical", 0): [20.0, 22.0, 21.0], ("quantum", 0): [25.0, 27.0, 26.5],
            ("classical", 1): [30.0, 31.0, 29.0], ("quantum", 1): [30.5, 29.0, 31.5],
            ("classical", 2): [40.0, 41.0]}                       # digit 2: no quantum cell yet
    write_tables("table1", _cells(fids), _refs([0, 1, 2]), [0, 1, 2], protocol("qdm"), "qdm", tmp_path)
    answer = _landing().recipe_answer("table1_qdm", tmp_path)
    diffs = [np.mean(fids[("quantum", d)]) - np.mean(fids[("classical", d)]) for d in (0, 1)]
    ses = [np.sqrt(np.var(fids[("quantum", d)], ddof=1) / 3 + np.var(fids[("classical", d)], ddof=1) / 3)
           for d in (0, 1)]
    mean, se = np.mean(diffs), np.sqrt(sum(s ** 2 for s in ses)) / 2
    assert answer[0] == "3, 2 of 10"
    assert answer[3].startswith(f"{mean:+.2f} ± {se:.2f}") and "(pooled over the 2 digits" in answer[3]
    assert "mean over" not in answer[3]                   # the pooled digits are all the digits with both
    assert ("beyond 2 s.e." in answer[3]) == (abs(mean) > 2 * se)
    over = np.mean([np.mean(fids[("classical", d)]) / (5.0 + d) for d in (0, 1, 2)])
    assert answer[1] == f"{over:.2f} (3 digits)"


def test_headline_with_one_seed_gives_the_difference_without_a_standard_error(tmp_path):
    fids = {("classical", 0): [20.0], ("quantum", 0): [23.0]}
    write_tables("table1", _cells(fids), _refs([0]), [0], protocol("paper"), "paper", tmp_path)
    answer = _landing().recipe_answer("table1", tmp_path)
    assert answer[0] == "1, 1 of 10"
    assert answer[3] == ("+3.00 (mean over 1 digit); a pooled standard error needs two digits with two seeds "
                         "or more of both")
    assert answer[2] == f"{23.0 / 5.0:.2f} (1 digit)"


def test_readme_shows_the_committed_headline():
    """The README's headline block is results/table1_headline.md, as book/landing_figures.py wrote
    it (never typed by hand), and replacing it keeps the rest of the README."""
    landing = _landing()
    readme, headline = (ROOT / "README.md").read_text(), (ROOT / "results" / "table1_headline.md").read_text()
    assert landing.README_START + "\n" + headline + landing.README_END in readme
    assert landing.with_headline(readme, headline) == readme
    other = landing.with_headline(readme, "| x |\n")
    assert "| x |" in other and other.replace("| x |\n", headline) == readme


def test_table_plot_draws_the_models_and_references_not_the_derived_rows(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from qdm.reproduce import plot_table
    fids = {("classical", 0): [20.0, 22.0], ("quantum", 0): [25.0, 27.0]}
    write_tables("table1", _cells(fids), _refs([0]), [0], protocol("qdm"), "qdm", tmp_path)
    labels = plot_table(tmp_path / "table1_qdm.csv", "FID").get_legend_handles_labels()[1]
    assert set(labels) == {"paper classical", "ours classical", "paper quantum", "ours quantum",
                           "ours real-vs-real", "ours noise-vs-real"}


def test_headline_compute_per_device_is_read_from_the_ledger(tmp_path):
    """Median minutes of training and sampling a cell and the hours of all, per device, from the
    cells file; cells of another protocol are not counted."""
    times = [("cpu", 600, 60), ("cpu", 1800, 180), ("cpu", 1200, 120), ("cuda", 90, 12), ("cuda", 30, 24)]
    cells = [dict(model="classical", cls=str(d), seed=0, preset="qdm", FID=20.0, SSIM=0.3, KID=0.01,
                  SSIM_nearest=0.6, protocol=protocol("qdm"), device=device, train_seconds=t, sample_seconds=s)
             for d, (device, t, s) in enumerate(times)]
    other = dict(cells[0], protocol={**protocol("qdm"), "steps": 50}, train_seconds=10 ** 6)
    write_tables("table1", cells, _refs(range(5)), list(range(5)), protocol("qdm"), "qdm", tmp_path, [other])
    text = _landing().compute_text("table1_qdm", "qdm", tmp_path)
    assert text == "cpu: 3, 20.0 + 2.0 min; 1.10 h; cuda: 2, 1.0 + 0.3 min; 0.04 h"     # medians of 3 and of 2


def test_headline_gives_the_mean_over_every_digit_beside_a_pooled_difference_over_fewer(tmp_path):
    """Two digits with two seeds of both models are pooled ± s.e.; a third digit with one seed enters
    only the plain mean over all digits, which the headline gives beside the pooled value."""
    fids = {("classical", 0): [20.0, 22.0], ("quantum", 0): [25.0, 26.0],
            ("classical", 1): [30.0, 31.0], ("quantum", 1): [30.5, 29.0],
            ("classical", 2): [40.0], ("quantum", 2): [50.0]}
    write_tables("table1", _cells(fids), _refs([0, 1, 2]), [0, 1, 2], protocol("qdm"), "qdm", tmp_path)
    answer = _landing().recipe_answer("table1_qdm", tmp_path)
    diffs = [np.mean(fids[("quantum", d)]) - np.mean(fids[("classical", d)]) for d in (0, 1, 2)]
    assert answer[3].startswith(f"{np.mean(diffs[:2]):+.2f} ± ") and "(pooled over the 2 digits" in answer[3]
    assert answer[3].endswith(f"; {np.mean(diffs):+.2f} (mean over 3 digits)")
