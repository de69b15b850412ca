"""Data-parallel training: `torchrun --nproc_per_node=2 -m qdm train` (gloo, 2 CPU processes)
ends with the same weights as one process on the same global batch, and writes one set of files."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, needs_mnist


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_cli(out, *launcher, extra=()):
    """qdm train in a subprocess; a torchrun launch gets a port no earlier launch used (a fixed port
    can still be held by the previous launch's group when the next one starts)."""
    if launcher == TORCHRUN:
        launcher = (*TORCHRUN, f"--master_port={free_port()}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = ["train", "--preset", "fast", "--digit", "0", "--batch-size", "16", "--device", "cpu",
            "--out", str(out), "--no-progress", "--final-samples", "4", *extra]
    r = subprocess.run([sys.executable, *launcher, "-m", "qdm", *args], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


TORCHRUN = ("-m", "torch.distributed.run", "--nproc_per_node=2")


@needs_mnist
@pytest.mark.parametrize("model", ["classical", "quantum"])
def test_two_gloo_processes_equal_one_process(tmp_path, model):
    extra = ("--model", model)
    train_cli(tmp_path / "one", extra=extra)
    r = train_cli(tmp_path / "two", *TORCHRUN, extra=extra)
    assert r.stdout.count("run folder:") == 1                 # only rank 0 reports
    config = __import__("json").loads((tmp_path / "two" / "config.json").read_text())
    assert config["processes"] == 2 and config["batch_per_process"] == 8
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=False)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=False)
    assert one["history"]["step"] == two["history"]["step"] == 6
    # Adam's first steps move a weight by about lr whatever its gradient's size, so a gradient element
    # near zero whose sign the two summation orders round differently (it depends on the CPU's
    # kernels) moves by up to 2 lr a step: every weight within that, and on average within 1e-5 (a
    # wrong reduction, a sum for a mean, moves them all by about lr = 3e-4)
    bound = 2 * config["lr"] * 6
    for part in ("model", "ema"):
        for name, w in one[part].items():
            diff = (w - two[part][name]).abs()
            assert diff.max() <= bound and diff.mean() <= 1e-5, (part, name, diff.max(), diff.mean())
    # the logged losses are the global batch's
    l1 = [r["loss"] for r in one["history"]["steps"]]
    l2 = [r["loss"] for r in two["history"]["steps"]]
    assert l1 == pytest.approx(l2, rel=1e-4)
    # one set of files, the same as one process writes
    files = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*"))
    assert files(tmp_path / "two") == files(tmp_path / "one")


@needs_mnist
def test_resume_under_torchrun(tmp_path):
    """An interrupted data-parallel run resumed under torchrun ends like an uninterrupted one."""
    train_cli(tmp_path / "full", *TORCHRUN)
    train_cli(tmp_path / "part", *TORCHRUN, extra=("--epochs", "1"))
    train_cli(tmp_path / "part", *TORCHRUN, extra=("--resume",))
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    part = torch.load(tmp_path / "part" / "last.pt", weights_only=False)
    for name, w in full["model"].items():
        assert torch.allclose(w, part["model"][name], rtol=1e-5, atol=1e-6), name
