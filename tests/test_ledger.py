"""Results files shared by processes: each (preset, protocol) writes files of its own name, cells
run under their lock (reproduce and ablate alike), a stale lock has one new holder, and every
read-merge-write of a ledger (cells, reference rows, learning curves) happens under its lock, so
processes recording at once lose nothing. Cells here are synthetic: nothing is trained."""
import multiprocessing
import os
import socket
import sys
import threading
import time
from contextlib import ExitStack

import pytest

from conftest import read_csv
import qdm.ablations
import qdm.curves
import qdm.experiments.scoring
import qdm.metrics
import qdm.reproduce
from qdm.ablations import study_name
from qdm.errors import UserError
from qdm.locks import ledger_lock, ledger_lock_path
from qdm.reproduce import cell_lock, protocol, table_name

METRICS = ("FID", "KID", "KID_std", "SSIM", "SSIM_nearest")


def fake_reference_rows(root, dataset, cls, proto, *args, **kwargs):
    """Reference rows that say which column they belong to."""
    return {"real-vs-real": {m: 1.0 + (cls or 0) for m in METRICS},
            "noise-vs-real": {m: 100.0 + (cls or 0) for m in METRICS}}


def fake_run_cell(folder, preset, dataset, cls, model, seed, proto, fid_model, device, data_dir=None, figure=None,
                  progress=True, overrides=None):
    """A finished cell, at once; its figure names the preset and protocol that made it."""
    if figure is not None:
        figure.parent.mkdir(parents=True, exist_ok=True)
        figure.write_text(f"{preset} {proto['sampler']}{proto['steps']} n{proto['n']}")
    return {**{m: 10.0 + seed for m in METRICS}, "sample_seconds": 1.0, "protocol": proto, "model": model,
            "cls": "all" if cls is None else str(cls), "seed": seed, "preset": preset, "train_seconds": 2.0,
            "seconds_per_step": 0.01, "steps": 6, "cell_seconds": 3.0}


def no_training(setattr):
    """Cells and reference rows without training, sampling or Inception."""
    setattr(qdm.metrics, "inception", lambda device, compiled=False: None)
    setattr(qdm.experiments.scoring, "_inception", {})     # the stand-in is not kept for later tests
    for module in (qdm.reproduce, qdm.ablations):
        setattr(module, "run_cell", fake_run_cell)
        setattr(module, "reference_rows", fake_reference_rows)


@pytest.fixture
def synthetic(monkeypatch):
    no_training(monkeypatch.setattr)


def test_results_names_carry_the_preset_and_the_protocol():
    """Each real preset's own protocol keeps today's names (the committed files); every other
    (preset, protocol) has names of its own."""
    assert [table_name("table1", p, protocol(p)) for p in ("paper", "qdm", "fast")] == ["table1", "table1_qdm",
                                                                                     "table1_fast"]
    assert table_name("table1", "paper", protocol("paper", 500, "ddim", 50)) == "table1_paper_ddim50-n500"
    assert table_name("table1", "paper", protocol("paper", seed=1)) == "table1_paper_ddpm1000-n1000-seed1"
    assert [study_name(s, "study", protocol("study")) for s in ("ablations", "noise", "recipe")] == [
        "ablations", "noise", "recipe"]
    assert study_name("ablations", "study", protocol("study", 1000, "ddpm")) == "ablations_study_ddpm1000-n1000"
    protos = [(p, dict(n=n, sampler=s)) for p in ("paper", "quick", "study", "qdm", "fast")
              for n in (None, 16, 500, 1000) for s in (None, "ddpm", "ddim")]
    pairs = {(p, tuple(protocol(p, **kw).items())) for p, kw in protos}
    assert len({table_name("table1", p, dict(proto)) for p, proto in pairs}) == len(pairs)


def test_another_preset_or_protocol_leaves_the_committed_table_and_figures_alone(tmp_path, synthetic):
    results = tmp_path / "results"
    run = dict(classes=[0], models=["classical"], runs_dir=tmp_path / "runs", results_dir=results, device="cpu",
               progress=False)
    qdm.reproduce.reproduce("table1", "paper", **run)
    committed = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert sorted(p.relative_to(results).as_posix() for p in committed) == [
        "table1.csv", "table1.md", "table1_cells.csv", "table1_figures/mnist-0-classical-seed0.png"]
    qdm.reproduce.reproduce("table1", "fast", **run)
    qdm.reproduce.reproduce("table1", "paper", proto=protocol("paper", 500, "ddim", 50), **run)
    assert {p: p.read_bytes() for p in committed} == committed
    for name, made_by in (("table1_fast", "fast ddim5 n16"), ("table1_paper_ddim50-n500", "paper ddim50 n500")):
        assert (results / f"{name}_figures" / "mnist-0-classical-seed0.png").read_text() == made_by
        assert [c["preset"] for c in read_csv(results / f"{name}_cells.csv")] == [made_by.split()[0]]
    qdm.ablations.ablate([0], ["classical"], [0], "study", None, tmp_path / "runs", results, "cpu", progress=False)
    before = (results / "ablations.md").read_bytes()
    qdm.ablations.ablate([0], ["classical"], [0], "fast", None, tmp_path / "runs", results, "cpu", progress=False)
    assert (results / "ablations.md").read_bytes() == before and (results / "ablations_fast.md").exists()


def test_a_grid_takes_the_floors_a_written_table_records_instead_of_measuring_them_again(tmp_path, synthetic,
                                                                                          monkeypatch):
    """A fresh clone has the committed tables but no runs/ (where measured reference rows are
    cached): a new seed's grid reads each column's floor and ceiling from the table, not from
    thousands of Inception passes, and the table keeps them as they were."""
    results = tmp_path / "results"
    run = dict(classes=[0, 1], models=["classical"], results_dir=results, device="cpu", progress=False)
    qdm.reproduce.reproduce("table1", "paper", runs_dir=tmp_path / "runs", **run)
    measured = []
    monkeypatch.setattr(qdm.reproduce, "reference_rows",
                        lambda *a, **k: measured.append(a[2]) or fake_reference_rows(*a, **k))
    qdm.reproduce.reproduce("table1", "paper", runs_dir=tmp_path / "fresh-clone", seeds=[1], **run)
    reference = [r for r in read_csv(results / "table1.csv") if r["row"].endswith("-vs-real")]
    assert measured == [] and len(reference) == 8
    assert all(float(r[c]) == (1.0 if "real-vs" in r["row"] else 100.0) + int(c)
               for r in reference for c in ("0", "1"))
    assert sorted((c["cls"], c["seed"]) for c in read_csv(results / "table1_cells.csv")) == [
        ("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    qdm.reproduce.reproduce("table1", "paper", runs_dir=tmp_path / "fresh-clone", **{**run, "classes": [2]})
    assert measured == [2]                                  # a column the table has no floor for is measured


def test_cells_another_machine_recorded_are_merged_and_ours_stay(tmp_path, synthetic, monkeypatch, capsys):
    """A GPU machine's results folder, copied back: its new cells (with their figures) join the
    table; a cell both recorded keeps ours, figure included; other presets' rows are not taken."""
    here, there = tmp_path / "results", tmp_path / "gpu" / "results"
    run = dict(models=["classical"], device="cpu", progress=False)
    qdm.reproduce.reproduce("table1", "paper", classes=[0], runs_dir=tmp_path / "runs", results_dir=here, **run)
    figure_here = (here / "table1_figures" / "mnist-0-classical-seed0.png").read_text()

    def elsewhere(folder, preset, dataset, cls, model, seed, proto, fid_model, device, data_dir, figure, *a, **k):
        cell = fake_run_cell(folder, preset, dataset, cls, model, seed, proto, fid_model, device, data_dir, figure)
        figure.write_text("made on the GPU machine")
        return {**cell, "FID": 99.0, "device": "cuda"}

    monkeypatch.setattr(qdm.reproduce, "run_cell", elsewhere)
    qdm.reproduce.reproduce("table1", "paper", classes=[0, 1], seeds=[0, 1], runs_dir=tmp_path / "gpu" / "runs",
                            results_dir=there, **run)
    qdm.reproduce.reproduce("table1", "fast", classes=[2], runs_dir=tmp_path / "gpu" / "runs", results_dir=there,
                            **run)
    path, added = qdm.reproduce.merge_results("table1", there, "paper", results_dir=here)
    cells = {(c["cls"], c["seed"]): c for c in read_csv(here / "table1_cells.csv")}
    assert added == 3 and sorted(cells) == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert float(cells["0", "0"]["FID"]) == 10.0 and cells["0", "0"]["device"] != "cuda"
    assert {float(cells[k]["FID"]) for k in [("0", "1"), ("1", "0"), ("1", "1")]} == {99.0}
    figures = here / "table1_figures"
    assert (figures / "mnist-0-classical-seed0.png").read_text() == figure_here
    assert (figures / "mnist-1-classical-seed1.png").read_text() == "made on the GPU machine"
    assert not (here / "table1_fast_cells.csv").exists() and path == here / "table1.md"
    assert qdm.reproduce.merge_results("table1", there, "paper", results_dir=here)[1] == 0   # once is enough
    with pytest.raises(UserError, match="table1_qdm_cells.csv does not exist"):
        qdm.reproduce.merge_results("table1", there, "qdm", results_dir=here)


def test_a_stale_lock_taken_over_by_two_processes_at_once_has_one_holder(tmp_path, monkeypatch):
    """Both find the lock of a dead process; the second takes it over while the first is between
    looking and taking: only one of them holds it afterwards."""
    lock = tmp_path / "locks" / "cell.lock"
    lock.parent.mkdir()
    lock.write_text(f"{socket.gethostname()} 999999999")
    module = sys.modules[cell_lock.__module__]
    looked, held, stack = [], [], ExitStack()

    def alive(pid):
        if not looked:                                     # the first look: the other process runs now
            looked.append(pid)
            held.append(stack.enter_context(cell_lock(lock)))
        return False

    monkeypatch.setattr(module, "pid_alive", alive)
    with stack:
        with cell_lock(lock) as first:
            assert held == [True] and not first
    assert not lock.exists() and sorted(p.name for p in lock.parent.iterdir()) == []


def test_the_ledger_lock_waits_for_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    ledger = tmp_path / "table1_cells.csv"
    lock = ledger_lock_path(ledger)
    lock.write_text(f"{socket.gethostname()} {os.getppid()}")     # a live process
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"\.table1_cells\.csv\.lock has been held by .* delete it"):
        with ledger_lock(ledger, timeout=0.3):
            pass
    assert time.monotonic() - t0 >= 0.3 and lock.exists()
    lock.write_text(f"{socket.gethostname()} 999999999")         # a dead one
    with ledger_lock(ledger, timeout=0.3):
        assert lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert not lock.exists()


def test_ablate_skips_a_cell_another_process_holds(tmp_path, synthetic):
    runs, results = tmp_path / "runs", tmp_path / "results"
    held = runs / "fast" / "locks" / "mnist-0-cosine-seed0.lock"
    held.parent.mkdir(parents=True)
    held.write_text(f"{socket.gethostname()} {os.getppid()}")
    qdm.ablations.ablate([0], ["classical", "cosine"], [0], "fast", None, runs, results, "cpu", progress=False)
    assert [c["variant"] for c in read_csv(results / "ablations_fast_cells.csv")] == ["classical"]
    assert sorted(p.name for p in held.parent.iterdir()) == [held.name]


def curve_row(run) -> dict:
    return {"run": str(run), "preset": "fast", "model": "classical", "dataset": "mnist", "digit": "0", "seed": 0,
            "epoch": 1, "step": 3, "train_seconds": 1.0, "device": "cpu", "FID": 50.0, "KID": 0.1, "SSIM": 0.2,
            "SSIM_nearest": 0.3, "sample_seconds": 1.0, "sampler": "ddim-5", "n": 16}


def test_learning_curves_are_merged_under_their_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(qdm.metrics, "inception", lambda device, compiled=False: None)
    monkeypatch.setattr(qdm.experiments.scoring, "_inception", {})
    monkeypatch.setattr(qdm.curves, "reference_rows", fake_reference_rows)
    monkeypatch.setattr(qdm.curves, "learning_curve", lambda run, *args: [curve_row(run)])
    lock = ledger_lock_path(tmp_path / "learning_curves.csv")
    lock.write_text(f"{socket.gethostname()} {os.getppid()}")       # another process is writing it
    curve = threading.Thread(target=qdm.curves.write_curves, args=(["runs/a"], protocol("fast"), tmp_path, "cpu"))
    curve.start()
    time.sleep(0.5)
    assert curve.is_alive() and not (tmp_path / "learning_curves.csv").exists()
    (tmp_path / "learning_curves.csv").write_text(qdm.reproduce.csv_text([{**curve_row("runs/b"), "floor_FID": 1.0}]))
    lock.unlink()                                                  # ... and has written runs/b's curve
    curve.join(30)
    assert [r["run"] for r in read_csv(tmp_path / "learning_curves.csv")] == ["runs/b", "runs/a"]


def _fill(results, runs, index, m, trials, barrier):
    """One process of the test below: per trial, m cells of its own column (digit ``index``) into the
    same table, started at once with the other processes; in the first trial into the same study too
    (its figure, redrawn at every write, makes it slower)."""
    no_training(setattr)
    for trial in range(trials):
        where = dict(runs_dir=f"{runs}/{trial}", results_dir=f"{results}/{trial}", device="cpu", progress=False)
        barrier.wait(timeout=300)
        qdm.reproduce.reproduce("table1", "quick", classes=[index], models=["classical"], seeds=range(m), **where)
        if trial == 0:
            barrier.wait(timeout=300)
            qdm.ablations.ablate([index], ["classical"], range(m), "quick", None, **where)


def test_processes_recording_at_once_lose_no_row(tmp_path, n=4, m=3, trials=3):
    """n processes (spawned) each record m cells of their own column into the same results at once,
    through reproduce's and ablate's real ledger writes: every cell is in the cells file, and the
    table (last written by any of them) shows every column with its reference rows."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    workers = [ctx.Process(target=_fill, args=(tmp_path / "results", tmp_path / "runs", i, m, trials, barrier))
               for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(600)
    assert [w.exitcode for w in workers] == [0] * n
    every_cell = [(str(i), str(s)) for i in range(n) for s in range(m)]
    for trial in range(trials):
        out = tmp_path / "results" / str(trial)
        for name in ("table1_quick", "ablations_quick")[:2 if trial == 0 else 1]:
            assert sorted((c["cls"], c["seed"]) for c in read_csv(out / f"{name}_cells.csv")) == every_cell, trial
        fid = {r["row"]: [float(r[str(i)]) for i in range(n)] for r in read_csv(out / "table1_quick.csv")
               if r["metric"] == "FID"}
        assert fid["ours classical"] == [10 + (m - 1) / 2] * n, trial
        assert fid["ours real-vs-real"] == [1.0 + i for i in range(n)], trial
        assert fid["ours noise-vs-real"] == [100.0 + i for i in range(n)], trial
        if trial == 0:
            assert [(r["digit"], r["variant"], r["seeds"]) for r in read_csv(out / "ablations_quick.csv")] == [
                (str(i), v, s) for i in range(n) for v, s in (("classical", str(m)), ("real-vs-real", ""))]
        assert not list(out.glob(".*.lock*"))


def test_a_field_only_the_ledger_has_survives_a_process_that_does_not_know_it(tmp_path):
    """A process whose cells lack a field (started before qdm recorded it) rewrites the ledger with its
    own numbers but keeps the field the file holds: a merge loses no column of a recorded cell."""
    from qdm.experiments.ledger import cells_csv, merge_recorded
    proto = protocol("fast")
    cell = fake_run_cell(None, "fast", "mnist", 0, "classical", 0, proto, None, "cpu")
    path = tmp_path / "cells.csv"
    path.write_text(cells_csv([{**cell, "device": "cuda"}]))
    key = ("classical", "0", 0)
    mine = {key: {**cell, "FID": 99.0}}                    # this process's copy: no device, its own FID
    merge_recorded(mine, path, "fast", proto, lambda c: (c["model"], c["cls"], c["seed"]))
    assert mine[key]["device"] == "cuda" and mine[key]["FID"] == 99.0


def test_a_cell_names_the_device_of_its_wall_times():
    """Training and sampling on one device: its name; a run folder trained elsewhere and scored here:
    both, so its wall times are not read as one machine's."""
    from qdm.experiments.cells import cell_device_name
    from qdm.experiments.ledger import cell_device
    assert cell_device_name("cpu", "cpu") == "cpu"
    assert cell_device_name("cuda:0", "cpu") == "cuda (training), cpu (sampling)"
    assert cell_device({"device": None}) == cell_device({}) == "not recorded"
