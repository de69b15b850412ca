"""`reproduce`: the fast preset fills both tables end to end, in the paper's layout, with the
paper's numbers beside ours; a rerun skips finished cells; bad input fails before any work."""
import json

import pytest
import torch

from conftest import needs_inception, needs_mnist, one_line_error, read_csv
from qdm.errors import UserError
from qdm.reproduce import PAPER_TABLE1, PAPER_TABLE2, against_floor, reproduce
from test_data import write_fake_pathmnist


@needs_mnist
@needs_inception
def test_fast_table1_layout_paper_numbers_and_rerun_skips(tmp_path, monkeypatch):
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    runs, results = tmp_path / "runs", tmp_path / "results"
    md = reproduce("table1", "fast", classes=[0, 1], runs_dir=runs, results_dir=results, device="cpu",
                   progress=False)
    rows = read_csv(results / "table1_fast.csv")
    assert list(rows[0]) == ["metric", "row", "0", "1", "Avg", "Std"]
    by = {(r["metric"], r["row"]): r for r in rows}
    # the paper's printed numbers, for the digits shown
    for metric in ("SSIM", "FID"):
        for model in ("classical", "quantum"):
            paper = by[(metric, f"paper {model}")]
            assert [float(paper[c]) for c in "01"] == PAPER_TABLE1[(metric, model)][:2]
    # ours: every metric for both models and both reference rows, finite, in range
    for metric in ("SSIM", "FID", "KID", "SSIM_nearest"):
        for row in ("ours classical", "ours quantum", "ours real-vs-real", "ours noise-vs-real"):
            values = [float(by[(metric, row)][c]) for c in "01"]
            assert all(v == v for v in values), (metric, row)
    for row in ("ours classical", "ours quantum", "ours real-vs-real", "ours noise-vs-real"):
        assert all(-1 <= float(by[("SSIM", row)][c]) <= 1 for c in "01")
    # the floor is below the ceiling: real training images are closer to the test set than noise
    assert all(float(by[("FID", "ours real-vs-real")][c]) < float(by[("FID", "ours noise-vs-real")][c]) for c in "01")
    cells = read_csv(results / "table1_fast_cells.csv")
    assert sorted((c["model"], c["cls"]) for c in cells) == [("classical", "0"), ("classical", "1"),
                                                            ("quantum", "0"), ("quantum", "1")]
    assert {c["device"] for c in cells} == {"cpu"}          # the machine whose wall times these are
    assert "Cells per device they ran on (one protocol; only wall times depend on it): cpu 4." in md.read_text()
    figures = results / "table1_fast_figures"
    assert len(list(figures.glob("mnist-*-seed0.png"))) == 4 and len(list(figures.glob("*_strip.png"))) == 4
    # the overview (the paper's Figs. 3-6 for all columns): real, classical and quantum rows per column
    from matplotlib.image import imread
    overview = imread(figures / "overview.png")
    assert overview.shape[0] < overview.shape[1] and overview.std() > 0.05
    strip = imread(figures / "mnist-0-quantum-seed0_strip.png")
    assert strip.shape[:2] == (2 * 28 + 3 * 2, 4 * 28 + 5 * 2)      # 8 samples, 2 rows of 4, padding 2
    text = md.read_text()
    assert "| FID | paper classical | 218.61 | 261.67 |" in text and "sampler = ddim" in text
    cfg = json.loads((runs / "fast" / "mnist-0-quantum-seed0" / "config.json").read_text())
    assert cfg["quantum"]["ansatz"] == "paper" and cfg["quantum"]["detach_input"] is True

    # a rerun reuses every finished cell: no training, no sampling, identical numbers
    metrics_files = sorted(runs.glob("fast/*/metrics-*.json"))
    before = {p: p.stat().st_mtime_ns for p in metrics_files}
    import qdm.experiments.cells as r        # where a cell trains and is evaluated
    monkeypatch.setattr(r, "train", lambda *a, **k: pytest.fail("a finished cell was retrained"))
    monkeypatch.setattr(r, "evaluate_checkpoint", lambda *a, **k: pytest.fail("a finished cell was re-evaluated"))
    reproduce("table1", "fast", classes=[0, 1], runs_dir=runs, results_dir=results, device="cpu", progress=False)
    assert {p: p.stat().st_mtime_ns for p in metrics_files} == before
    assert read_csv(results / "table1_fast.csv") == rows


@needs_inception
def test_fast_table2_on_a_file_in_medmnist_format(tmp_path, monkeypatch):
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    write_fake_pathmnist(tmp_path / "data", n=45)
    results = tmp_path / "results"
    reproduce("table2", "fast", models=["classical"], runs_dir=tmp_path / "runs", results_dir=results,
              device="cpu", data_dir=str(tmp_path / "data"), progress=False)
    rows = read_csv(results / "table2_fast.csv")
    assert list(rows[0]) == ["metric", "row", "all", "1", "Avg", "Std"]
    by = {(r["metric"], r["row"]): r for r in rows}
    assert float(by[("FID", "paper quantum")]["all"]) == PAPER_TABLE2[("FID", "quantum")]
    assert float(by[("FID", "ours classical")]["all"]) > 0 and float(by[("FID", "ours classical")]["1"]) > 0
    cfg = json.loads((tmp_path / "runs" / "fast" / "pathmnist-1-classical-seed0" / "config.json").read_text())
    assert cfg["dataset"] == "pathmnist" and cfg["classes"] == [1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(table="table3"), "unknown table 'table3'"),
    (dict(table="table1", models=["hybrid"]), "unknown model 'hybrid'"),
    (dict(table="table1", preset="huge"), "unknown preset 'huge'"),
    (dict(table="table1", classes=[10]), "mnist has no class 10: use 0-9"),
    (dict(table="table1", classes=[]), "give at least one class, one model and one seed"),
    (dict(table="table1", models=[]), "give at least one class, one model and one seed"),
    (dict(table="table1", seeds=[]), "give at least one class, one model and one seed"),
])
def test_bad_input_fails_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        reproduce(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", device="cpu", **kwargs)
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


@needs_mnist
@needs_inception
def test_parallel_grid_runs_each_cell_once_and_respects_locks(tmp_path, monkeypatch):
    """--jobs 2: two worker processes fill the same table as one process would; a cell whose
    lock is held by a live process (here: this one, as another machine's worker would) is left
    alone and reported, and no lock is left behind."""
    import os
    import socket
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    runs, results = tmp_path / "runs", tmp_path / "results"
    held = runs / "fast" / "locks" / "mnist-1-quantum-seed0.lock"
    held.parent.mkdir(parents=True)
    held.write_text(f"{socket.gethostname()} {os.getpid()}")
    reproduce("table1", "fast", classes=[0, 1], runs_dir=runs, results_dir=results, device="cpu",
              progress=False, jobs=2)
    cells = read_csv(results / "table1_fast_cells.csv")
    assert sorted((c["model"], c["cls"]) for c in cells) == [("classical", "0"), ("classical", "1"),
                                                            ("quantum", "0")]
    assert not (runs / "fast" / "mnist-1-quantum-seed0").exists()
    assert sorted(p.name for p in held.parent.iterdir()) == [held.name]       # only the foreign lock
    # every finished cell trained exactly once: one run folder, one metrics file each
    assert len(list(runs.glob("fast/mnist-*/metrics-*.json"))) == 3


def test_cell_lock_is_exclusive_and_takes_over_a_dead_processs_lock(tmp_path):
    import os
    import socket
    from qdm.reproduce import cell_lock
    lock = tmp_path / "locks" / "cell.lock"
    with cell_lock(lock) as mine:
        assert mine and lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
        with cell_lock(lock) as again:                     # held by a live process (this one)
            assert not again
    assert not lock.exists()
    lock.write_text(f"{socket.gethostname()} 999999999")   # left behind by a dead process
    with cell_lock(lock) as mine:
        assert mine
    assert not lock.exists()
    lock.write_text("another-machine 1")                    # another host: never taken over
    with cell_lock(lock) as mine:
        assert not mine
    assert lock.exists()


@needs_mnist
@needs_inception
def test_a_fresh_clone_continues_from_the_cells_results_records(tmp_path, monkeypatch, capsys):
    """results/ is committed and runs/ is not: with the run folders gone, a rerun keeps every cell
    that <table>_cells.csv records (not retrained, still in the table, its column's reference rows
    beside it) and adds the new ones; cells scored with another protocol stay in the file, unshown."""
    import shutil
    from qdm.reproduce import protocol
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    runs, results = tmp_path / "runs", tmp_path / "results"
    run = dict(models=["classical"], runs_dir=runs, results_dir=results, device="cpu", progress=False)
    reproduce("table1", "fast", classes=[0], **run)
    first = read_csv(results / "table1_fast_cells.csv")
    shutil.rmtree(runs)
    import qdm.reproduce as r
    run_task = r.run_task

    def another_process_records_a_cell_meanwhile(*args, **kwargs):
        text = (results / "table1_fast_cells.csv").read_text()
        (results / "table1_fast_cells.csv").write_text(text + text.splitlines()[1].replace(",classical,0,0,", ",classical,0,5,") + "\n")
        return run_task(*args, **kwargs)

    monkeypatch.setattr(r, "run_task", another_process_records_a_cell_meanwhile)
    reproduce("table1", "fast", classes=[1], **run)
    monkeypatch.setattr(r, "run_task", run_task)
    assert not (runs / "fast" / "mnist-0-classical-seed0").exists()          # not retrained
    cells = read_csv(results / "table1_fast_cells.csv")
    assert [(c["cls"], c["seed"]) for c in cells] == [("0", "0"), ("1", "0"), ("0", "5")]   # none lost
    cells = cells[:2]
    assert [(c["cls"], c["FID"]) for c in cells[:1]] == [("0", first[0]["FID"])] and cells[1]["cls"] == "1"
    rows = read_csv(results / "table1_fast.csv")
    assert list(rows[0]) == ["metric", "row", "0", "1", "Avg", "Std"]
    by = {(r["metric"], r["row"]): r for r in rows}
    assert float(by[("FID", "ours classical")]["0"]) == float(first[0]["FID"])
    assert float(by[("FID", "ours real-vs-real")]["0"]) > 0 and float(by[("FID", "ours real-vs-real")]["1"]) > 0
    mean = (float(cells[0]["FID"]) + float(cells[1]["FID"])) / 2
    assert float(by[("FID", "ours classical")]["Avg"]) == pytest.approx(mean)
    ratios = [r for r in against_floor(results, "table1", "fast") if r["seed"] == 0]
    assert [(r["class"], r["model"]) for r in ratios] == [("0", "classical"), ("1", "classical")]
    for r, c in zip(ratios, cells):
        assert r["FID / floor"] == pytest.approx(float(c["FID"]) / float(by[("FID", "ours real-vs-real")][c["cls"]]))
    # the command line prints each cell against its floor; everything is recorded, so nothing runs
    from qdm.cli import main
    capsys.readouterr()
    assert main(["reproduce", "table1", "--preset", "fast", "--digits", "0,1", "--models", "classical",
                 "--runs-dir", str(runs), "--results-dir", str(results), "--device", "cpu", "--no-progress"]) == 0
    assert f"class 1 classical seed 0: FID {ratios[1]['FID']:.2f} = {ratios[1]['FID / floor']:.2f}x" in capsys.readouterr().out
    # another protocol (N = 8): its table shows its own cell alone; the two cells above stay in the file
    reproduce("table1", "fast", classes=[1], proto=protocol("fast", n=8), **run)
    assert list(read_csv(results / "table1_fast_ddim5-n8.csv")[0]) == ["metric", "row", "1", "Avg", "Std"]
    cells = read_csv(results / "table1_fast_cells.csv") + read_csv(results / "table1_fast_ddim5-n8_cells.csv")
    assert sorted((c["cls"], json.loads(c["protocol"])["n"]) for c in cells) == [("0", 16), ("0", 16), ("1", 8), ("1", 16)]
    # a cells file that qdm did not write: one line that says what to do, and the file left as it is
    (results / "table1_fast_cells.csv").write_text("model,FID\nclassical,oops\n")
    with pytest.raises(UserError, match="is not a cells file written by qdm.*restore it from git"):
        reproduce("table1", "fast", classes=[1], **run)
    assert (results / "table1_fast_cells.csv").read_text() == "model,FID\nclassical,oops\n"


def test_table1_difference_rows_recomputed_by_hand(tmp_path):
    """Table I's answer rows from synthetic cells: FID over the column's floor, quantum minus
    classical per digit with its standard error over seeds, and the pooled difference over digits
    with standard error sqrt(sum se_d^2) / D, each recomputed here from the cells."""
    import numpy as np
    from qdm.reproduce import protocol, write_tables
    rng = np.random.default_rng(0)
    proto, digits, cells = protocol("qdm"), [0, 1, 2], []
    for d in digits:
        for model, shift in (("classical", 0.0), ("quantum", 2.0 + d)):
            for seed in range(3):
                cells.append({"model": model, "cls": str(d), "seed": seed, "FID": 20 + shift + rng.normal(),
                              "SSIM": 0.3, "KID": 0.01, "SSIM_nearest": 0.5, "preset": "qdm", "protocol": proto})
    floors = {d: 5.0 + d for d in digits}
    refs = {d: {"real-vs-real": {"FID": floors[d], "SSIM": 0.3, "KID": 0.0, "SSIM_nearest": 0.6}} for d in digits}
    write_tables("table1", cells, refs, digits, proto, "qdm", tmp_path)
    rows = {(r["metric"], r["row"]): r for r in read_csv(tmp_path / "table1_qdm.csv")}
    fid = {(m, d): [c["FID"] for c in cells if c["model"] == m and c["cls"] == str(d)] for m in ("classical", "quantum")
           for d in digits}
    diffs = [np.mean(fid["quantum", d]) - np.mean(fid["classical", d]) for d in digits]
    ses = [np.sqrt(np.var(fid["quantum", d], ddof=1) / 3 + np.var(fid["classical", d], ddof=1) / 3) for d in digits]
    for d, diff, se in zip(digits, diffs, ses):
        assert float(rows["FID", "quantum - classical"][str(d)]) == pytest.approx(diff)
        assert float(rows["FID", "quantum - classical s.e."][str(d)]) == pytest.approx(se)
        assert float(rows["FID / floor", "ours quantum"][str(d)]) == pytest.approx(np.mean(fid["quantum", d]) / floors[d])
    assert float(rows["FID", "quantum - classical"]["Avg"]) == pytest.approx(np.mean(diffs))
    assert float(rows["FID", "quantum - classical s.e."]["Avg"]) == pytest.approx(np.sqrt(sum(s ** 2 for s in ses)) / 3)
    assert "beyond 2 s.e." in (tmp_path / "table1_qdm.md").read_text()     # +3 FID on ~0.6 s.e.


def test_a_stopped_sampling_job_resumes_from_its_kept_batches(tmp_path, tiny_data, monkeypatch):
    """generate(keep=folder) saves each finished batch with the checkpoint's SHA-256: a job stopped
    after one batch samples only the others when run again, and ends with the images of an
    uninterrupted run, bit for bit; an unreadable batch and batches kept from other weights are
    sampled again."""
    import qdm.experiments.scoring as scoring
    from qdm.diffusion import Diffusion
    from qdm.experiments.protocol import protocol
    from qdm.train import make_config, train
    monkeypatch.setattr(scoring, "BATCH", 2)                   # n = 5: three batches
    for seed in (0, 1):
        train(make_config("fast", epochs=1, batch_size=8, val_size=8, seed=seed, device="cpu"),
              tmp_path / f"run{seed}", progress=False, data=tiny_data)
    proto = protocol("fast", n=5, sampler="ddim", steps=4)
    whole, _, _ = scoring.generate(tmp_path / "run0" / "best.pt", proto)

    calls, real_sample = [], Diffusion.sample

    def sample(self, *a, **k):
        calls.append(k["generator"].initial_seed())
        if stop_after is not None and len(calls) > stop_after:
            raise KeyboardInterrupt                           # the job is stopped here
        return real_sample(self, *a, **k)
    monkeypatch.setattr(Diffusion, "sample", sample)
    stop_after = 1
    with pytest.raises(KeyboardInterrupt):
        scoring.generate(tmp_path / "run0" / "best.pt", proto, keep=tmp_path / "run0")
    assert sorted(p.name for p in (tmp_path / "run0").glob("generated-*")) == ["generated-ddim4-fp32-n5-seed0-batch0.pt"]
    calls.clear()
    stop_after = None
    resumed, _, seconds = scoring.generate(tmp_path / "run0" / "best.pt", proto, keep=tmp_path / "run0")
    assert calls == [1, 2] and torch.equal(resumed, whole) and seconds > 0
    calls.clear()
    (tmp_path / "run0" / "generated-ddim4-fp32-n5-seed0-batch1.pt").write_bytes(b"cut short")   # unreadable
    again, _, _ = scoring.generate(tmp_path / "run0" / "best.pt", proto, keep=tmp_path / "run0")
    assert calls == [1] and torch.equal(again, whole)
    calls.clear()
    for kept in (tmp_path / "run0").glob("generated-*"):          # the same batches, other weights
        kept.rename(tmp_path / "run1" / kept.name)
    other, _, _ = scoring.generate(tmp_path / "run1" / "best.pt", proto, keep=tmp_path / "run1")
    assert calls == [0, 1, 2] and not torch.equal(other, whole)


def test_table_notes_say_which_seeds_each_model_has_in_which_digits():
    """An unfinished table says per model which seeds stand behind which columns: columns in their
    order (10 after 9), the columns with most seeds first."""
    from qdm.reproduce import seed_coverage
    cells = [{"model": m, "cls": str(d), "seed": s} for m, ds in (("classical", range(10)), ("quantum", (3, 0)))
             for d in ds for s in ((0, 1) if d in (0, 2) else (0,))]
    cells += [{"model": "quantum", "cls": "10", "seed": "2"}]          # as read back from a ledger: a string
    assert seed_coverage(cells) == ("classical: seeds 0, 1 in 0 2; seed 0 in 1 3 4 5 6 7 8 9; "
                                    "quantum: seeds 0, 1 in 0; seed 0 in 3; seed 2 in 10")


def test_the_overview_shows_per_digit_the_lowest_seed_both_models_have(tmp_path):
    """A digit whose seed-0 strips are missing (or only one model's) is shown from the lowest seed
    with both models' strips, so its two sample rows start from the same noise."""
    from qdm.reproduce import overview_seed
    for name in ("mnist-0-classical-seed1", "mnist-0-quantum-seed1", "mnist-0-quantum-seed0",
                 "mnist-0-classical-seed2", "mnist-0-quantum-seed2", "mnist-1-classical-seed2",
                 "mnist-10-classical-seed0", "mnist-0-classical-seed3"):
        (tmp_path / f"{name}_strip.png").touch()
    (tmp_path / "mnist-3-classical-seed0.png").touch()           # a cell figure without its strip
    assert overview_seed(tmp_path, "mnist", 0) == 1
    assert overview_seed(tmp_path, "mnist", 1) == 2                 # one model only: its lowest seed
    assert overview_seed(tmp_path, "mnist", 3) == 0                 # no strip at all


def test_a_ddpm_protocol_names_the_steps_that_run(tmp_path, tiny_data, capsys):
    """DDPM runs all T steps of a model: a protocol (and its results file name) naming other steps is
    refused, for the preset's T before any work and for a checkpoint trained with another T before
    sampling; other samplers take any number of steps."""
    from qdm.experiments import scoring
    from qdm.experiments.protocol import protocol
    from qdm.train import make_config, train
    assert protocol("paper", sampler="ddpm")["steps"] == 1000
    assert protocol("paper", sampler="ddim", steps=7)["steps"] == 7
    with pytest.raises(UserError, match="runs all T = 1000 steps of the model, not 7"):
        protocol("paper", sampler="ddpm", steps=7)
    one_line_error(capsys, ["reproduce", "table1", "--sampler", "ddpm", "--steps", "7",
                            "--results-dir", str(tmp_path / "r")], "not 7: leave out --steps")
    train(make_config("fast", epochs=1, batch_size=8, val_size=8, T=50, device="cpu"), tmp_path / "t50",
          progress=False, data=tiny_data)
    with pytest.raises(UserError, match="runs all T = 50 steps of the model, not 1000"):
        scoring.generate(tmp_path / "t50" / "best.pt", protocol("fast", n=2, sampler="ddpm"))
    proto = protocol("fast", n=2, sampler="ddpm", T=50)          # as evaluate and curve ask, from the run's T
    assert proto["steps"] == 50 and scoring.generate(tmp_path / "t50" / "best.pt", proto)[0].shape == (2, 1, 28, 28)
    assert not (tmp_path / "r").exists()
