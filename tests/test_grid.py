"""The one grid runner (qdm.experiments.grid) behind reproduce, ablate and curve: submitit jobs
(its local executor standing in for SLURM), one printed command per cell, and cell leases that a
heartbeat keeps and that expire when their holder stops touching them."""
import os
import shlex
import socket
import time

import pytest

from conftest import needs_inception, needs_mnist, read_csv
from qdm import locks
from qdm.ablations import ablate
from qdm.cli import main
from qdm.curves import write_curves
from qdm.errors import UserError
from qdm.experiments.grid import run_grid
from qdm.reproduce import protocol, reproduce


@needs_mnist
@needs_inception
def test_submitit_local_executor_fills_a_fast_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    runs, results = tmp_path / "runs", tmp_path / "results"
    reproduce("table1", "fast", classes=[0], models=["classical"], seeds=[0, 1], runs_dir=runs, results_dir=results,
              device="auto", progress=False, executor="submitit", cluster="local")   # each job resolves "auto"
    cells = read_csv(results / "table1_fast_cells.csv")
    assert sorted((c["model"], c["cls"], c["seed"]) for c in cells) == [("classical", "0", "0"),
                                                                        ("classical", "0", "1")]
    assert len(list((runs / "submitit").glob("*_result.pkl"))) == 2       # each cell ran as a submitit job
    assert len(list(runs.glob("fast/mnist-0-classical-seed*/metrics-*.json"))) == 2
    assert not list(runs.glob("fast/locks/*.lock"))


@needs_mnist
@needs_inception
def test_commands_executor_prints_a_command_per_cell_and_each_fills_its_cell(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    grid = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", device="cpu", progress=False)
    assert reproduce("table1", "fast", classes=[0, 1], seeds=[0], executor="commands", **grid) is None
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 4 and all(c.startswith("python -m qdm reproduce table1 --preset fast") for c in commands)
    assert not (tmp_path / "runs").exists()                                 # nothing ran
    first = shlex.split(commands[0])
    assert main(first[3:] + ["--no-progress"]) == 0                         # as a queue would run it
    cells = read_csv(tmp_path / "results" / "table1_fast_cells.csv")
    assert [(c["model"], c["cls"], c["seed"]) for c in cells] == [
        (first[first.index("--models") + 1], first[first.index("--classes") + 1], "0")]
    capsys.readouterr()
    reproduce("table1", "fast", classes=[0, 1], seeds=[0], executor="commands", **grid)
    assert capsys.readouterr().out.splitlines() == commands[1:]              # the recorded cell is done


def test_ablate_and_curve_print_their_cells_as_commands(tmp_path, capsys):
    assert ablate([0, 1], ["classical", "cosine"], [0], "fast", runs_dir=tmp_path / "runs",
                  results_dir=tmp_path / "results", device="cpu", executor="commands") is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all("python -m qdm ablate --study ablations --preset fast" in x for x in lines)
    assert write_curves(["runs/a", "runs/b"], protocol("fast"), tmp_path, "cpu", executor="commands") is None
    assert capsys.readouterr().out.splitlines()[1].startswith("python -m qdm curve runs/b --every 1 --n 16")
    with pytest.raises(UserError, match="--executor"):
        ablate([0], ["classical"], [0], "fast", runs_dir=tmp_path / "runs", executor="slurm")


def test_cells_for_another_machine_get_the_device_asked_for(tmp_path, capsys, monkeypatch):
    """On a login node without a GPU, commands (or submitit jobs) for GPU nodes keep --device cuda;
    cells run here with a device this machine lacks fail at once, before any work."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    grid = dict(runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", device="cuda")
    assert reproduce("table1", "fast", classes=[0], models=["classical"], executor="commands", **grid) is None
    assert ablate([0], ["classical"], [0], "fast", executor="commands", **grid) is None
    assert write_curves(["runs/a"], protocol("fast"), tmp_path, "cuda", executor="commands") is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(" --device cuda" in line for line in lines)
    with pytest.raises(UserError, match="--device cuda was asked for but torch sees no CUDA GPU"):
        reproduce("table1", "fast", classes=[0], models=["classical"], **grid)
    with pytest.raises(UserError, match="unknown device 'gpu'"):            # misspelt: refused before any job
        reproduce("table1", "fast", classes=[0], models=["classical"], executor="commands", **{**grid, "device": "gpu"})
    assert not (tmp_path / "runs").exists()


def test_a_lease_expires_unless_its_heartbeat_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "LEASE_SECONDS", 0.4)
    lock = tmp_path / "cell.lock"
    lock.write_text("another-machine 1")                      # another host, lease current: held
    assert not locks.try_lock(lock)
    os.utime(lock, (time.time() - 10, time.time() - 10))      # that machine stopped touching it
    with locks.cell_lock(lock) as mine:
        assert mine and lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
        time.sleep(1.2)                                       # three leases: the heartbeat keeps it
        assert time.time() - lock.stat().st_mtime < 0.4
        assert not locks.try_lock(lock)
    assert not lock.exists()


@pytest.mark.parametrize("cluster, slurm", [("bar", {}), ("local", {"foo": 1})])
def test_a_cluster_or_parameter_submitit_does_not_know_is_a_one_line_error(tmp_path, cluster, slurm):
    with pytest.raises(UserError, match="submitit refused") as e:
        run_grid([0], abs, lambda task, out: None, executor="submitit", folder=tmp_path, cluster=cluster, slurm=slurm)
    assert "\n" not in str(e.value) and not list(tmp_path.glob("*.pkl"))     # nothing submitted


def test_curve_refuses_a_learning_curves_file_it_did_not_write_before_any_work(tmp_path):
    (tmp_path / "learning_curves.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a learning-curves file written by qdm .no run, digit, sampler, n column"):
        write_curves(["runs/a"], protocol("fast"), tmp_path, "cpu", executor="commands")
    assert (tmp_path / "learning_curves.csv").read_text() == "a,b\n1,2\n"
    assert not (tmp_path / "learning_curves.png").exists()
