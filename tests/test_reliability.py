"""Reliability: checkpoints cannot run code, --overwrite and sample/evaluate never destroy what is
not theirs, resume is exact and survives a kill at any point, bad values and bad files end in one line."""
import errno
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from conftest import ROOT, one_line_error
from qdm.checkpoint import atomic_write, load_checkpoint, pid_alive, write_text
from qdm.diffusion import Diffusion
from qdm.errors import UserError
from qdm.train import make_config, train


def fast_cfg(**kw):
    return make_config("fast", device="cpu", batch_size=8, val_size=8, **kw)


def blobs():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 28, 28, generator=g) * 2 - 1
    return x[:40], x[40:]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished fast run with EMA snapshots; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(fast_cfg(snapshot_every=1), out, progress=False, data=blobs())
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


def same_weights(a, b):
    a, b = load_checkpoint(a), load_checkpoint(b)
    return all(torch.equal(a[k][n], b[k][n]) for k in ("model", "ema") for n in a[k])


# 1. a checkpoint is data, never code
class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "marker"
    torch.save({"format": "qdm-checkpoint-v1", "config": RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="could run code"):
        load_checkpoint(tmp_path / "evil.pt")
    one_line_error(capsys, ["sample", str(tmp_path / "evil.pt")], "could run code")
    r = subprocess.run([sys.executable, "-m", "qdm", "sample", str(tmp_path / "evil.pt")], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "could run code" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_every_file_a_run_writes_loads_as_plain_data(finished_run):
    files = ["best.pt", "last.pt", "samples.pt", "snapshots/epoch_001.pt", "snapshots/epoch_002.pt"]
    for f in files:
        torch.load(finished_run / f, weights_only=True)
    last = load_checkpoint(finished_run / "last.pt")
    assert last["torch_rng"].dtype == torch.uint8 and last["history"]["epoch"] == 2
    assert json.loads((finished_run / "config.json").read_text())["format"] == "qdm-run-v1"


# 2. --overwrite replaces a run, nothing else
def test_overwrite_never_removes_what_is_not_a_run(tmp_path, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("years of work")
    args = ["train", "--preset", "fast", "--out", str(thesis), "--overwrite"]
    one_line_error(capsys, args, "holds other files (thesis.tex)")
    (thesis / "config.json").write_text('{"name": "not qdm"}')
    one_line_error(capsys, args, "not a qdm run")
    assert (thesis / "thesis.tex").read_text() == "years of work"


def test_overwrite_never_empties_cwd_home_root_or_a_repository(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from qdm.runfolder import never_replaced as _never_replaced
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "config.json").write_text('{"format": "qdm-run-v1"}')   # even one that looks like a run
    (repo / "work").mkdir()
    monkeypatch.chdir(repo / "work")
    (repo / "work" / "notes.txt").write_text("mine")
    fast = ["train", "--preset", "fast", "--overwrite", "--out"]
    one_line_error(capsys, [*fast, "."], "the current folder or one above it")
    one_line_error(capsys, [*fast, ".."], "the current folder or one above it")
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, [*fast, str(repo)], "a repository's root (it holds .git)")
    monkeypatch.setenv("HOME", str(repo / "work"))
    one_line_error(capsys, [*fast, str(repo / "work")], "the home folder")
    assert (repo / ".git").is_dir() and (repo / "work" / "notes.txt").read_text() == "mine"
    assert _never_replaced(Path(Path.cwd().anchor)) is not None    # a filesystem root: never tried for real


def test_overwrite_removes_only_a_runs_own_files(run, capsys):
    (run / "notes.txt").write_text("keep")
    one_line_error(capsys, ["train", "--preset", "fast", "--out", str(run), "--overwrite"],
                   "holds a run and other files (notes.txt)")
    assert (run / "best.pt").exists() and (run / "notes.txt").read_text() == "keep"
    (run / "notes.txt").unlink()
    (run / "samples_ddim5_n4_seed0.png").write_bytes(b"png")
    config = json.loads((run / "config.json").read_text())
    del config["format"]                                  # a run of an older qdm: it has a qdm_version
    write_text(run / "config.json", json.dumps(config))
    train(fast_cfg(epochs=1), run, overwrite=True, progress=False, data=blobs())
    assert not (run / "snapshots").exists() and not (run / "samples_ddim5_n4_seed0.png").exists()
    assert not (run / "samples" / "epoch_002.png").exists()
    assert load_checkpoint(run / "last.pt")["history"]["epoch"] == 1


def test_overwrite_keeps_files_a_person_named_like_a_runs_own(run, capsys):
    """Only the names qdm gives its files are a run's: a copy of best.pt kept under another name, a
    figure or notes a person saved with a .pt or samples_ name make --overwrite refuse."""
    for name in ("best_epoch2_keep.pt", "my_notes.pt", "samples_for_paper.png", "snapshots/epoch_2_mine.pt",
                 "snapshots/samples_for_paper.png", "snapshots/eval_notes.json", "snapshots/epoch_mine.json"):
        (run / name).write_bytes(b"mine")
        one_line_error(capsys, ["train", "--preset", "fast", "--out", str(run), "--overwrite"],
                       f"holds a run and other files ({name})")
        assert (run / name).read_bytes() == b"mine" and (run / "best.pt").exists()
        (run / name).unlink()
    from qdm.runfolder import run_files
    for name in ("samples/epoch_1000.png", "snapshots/epoch_1000.pt", "snapshots/epoch_1000-ddim100-n16-seed0.json",
                 "samples_ddpm_respaced100_bf16_n64_seed0.png", "eval_ddim50_n16_seed3.json",
                 "metrics-ddpm1000-n1000-realNone-seed0.json", "generated-ddpm1000-fp32-n1000-seed0-batch1.pt"):
        (run / name).write_bytes(b"")                    # names qdm gives (a 1000-epoch run, other commands)
    assert not run_files(run)[1]


# 3. sample and evaluate write only new files
def test_sample_and_evaluate_never_replace_a_run_or_earlier_results(run, tmp_path, capsys):
    best = (run / "best.pt").read_bytes()
    for extra in ([], ["--overwrite"]):
        one_line_error(capsys, ["sample", str(run / "best.pt"), "--out", str(run / "best.png"), *extra],
                       "is a run's own best.pt")
        one_line_error(capsys, ["evaluate", str(run / "best.pt"), "--out", str(run / "config.json"), *extra],
                       "is a run's own config.json")
        one_line_error(capsys, ["evaluate", str(run / "best.pt"), "--out", str(run / "summary.json"), *extra],
                       "is a run's own summary.json")
    shutil.copy(run / "best.pt", tmp_path / "mine.pt")
    one_line_error(capsys, ["sample", str(run / "best.pt"), "--out", str(tmp_path / "mine.png"), "--overwrite"],
                   "is a checkpoint")
    assert (run / "best.pt").read_bytes() == best and (tmp_path / "mine.pt").read_bytes() == best
    (tmp_path / "old.json").write_text("{}")
    one_line_error(capsys, ["evaluate", str(run / "best.pt"), "--out", str(tmp_path / "old.json")],
                   "exists: add --overwrite")

    from qdm.cli import main
    args = ["sample", str(run / "best.pt"), "--n", "2", "--steps", "2", "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    first = (run / "samples_ddim2_n2_seed0.png").read_bytes()
    one_line_error(capsys, args, "samples_ddim2_n2_seed0.png exists: add --overwrite")
    assert main([*args, "--seed", "1"]) == 0 and (run / "samples_ddim2_n2_seed1.pt").exists()
    assert main([*args, "--overwrite"]) == 0
    assert (run / "samples_ddim2_n2_seed0.png").read_bytes() == first       # same request, same images


# 4. resume is exact with shots: every RNG is saved
def interrupt_in_epoch(monkeypatch, step):
    """Make training raise KeyboardInterrupt at its ``step``-th training step (1-based)."""
    calls = {"n": 0}
    real = Diffusion.loss

    def loss(self, *a, **k):
        calls["n"] += torch.is_grad_enabled()
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(Diffusion, "loss", loss)


def test_resume_with_shots_is_bit_identical(tmp_path, monkeypatch):
    cfg = fast_cfg(model="quantum", quantum={"ansatz": "paper", "shots": 100})
    train(cfg, tmp_path / "straight", progress=False, data=blobs())
    interrupt_in_epoch(monkeypatch, cfg.steps_per_epoch + 1)      # the first step of epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False, data=blobs())
    monkeypatch.undo()
    train(cfg, tmp_path / "resumed", resume=True, progress=False, data=blobs())
    assert same_weights(tmp_path / "straight" / "last.pt", tmp_path / "resumed" / "last.pt")


# 5. a kill at any point leaves a run that resumes (or restarts)
@pytest.mark.parametrize("killed_at", ["last.pt", "best.pt"])
def test_killed_while_writing_the_first_checkpoints(tmp_path, monkeypatch, killed_at):
    import qdm.train
    cfg = fast_cfg()
    train(cfg, tmp_path / "straight", progress=False, data=blobs())
    real = qdm.train.save_checkpoint

    def killed(path, state):
        if path.name == killed_at:
            raise KeyboardInterrupt
        return real(path, state)
    monkeypatch.setattr(qdm.train, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", progress=False, data=blobs())
    monkeypatch.undo()
    train(cfg, tmp_path / "r", resume=True, progress=False, data=blobs())
    assert same_weights(tmp_path / "straight" / "last.pt", tmp_path / "r" / "last.pt")
    a, b = load_checkpoint(tmp_path / "straight" / "best.pt"), load_checkpoint(tmp_path / "r" / "best.pt")
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["ema"][n], b["ema"][n]) for n in a["ema"])


def test_resume_without_best_pt(run):
    (run / "best.pt").unlink()
    (run / "summary.json").unlink()
    s = train(fast_cfg(snapshot_every=1, epochs=3), run, resume=True, progress=False, data=blobs())
    assert s["epochs"] == 3 and load_checkpoint(run / "best.pt")["epoch"] == s["best_epoch"]


def dead_pid() -> int:
    return next(p for p in range(4_000_000, 3_000_000, -1) if not pid_alive(p))


def test_stale_temporary_files_are_removed(run):
    dead, alive = run / f".last.tmp{dead_pid()}.pt", run / "samples" / f".epoch_009.tmp{os.getppid()}.png"
    dead.write_bytes(b"half a checkpoint")
    alive.write_bytes(b"being written")
    train(fast_cfg(snapshot_every=1, epochs=3), run, resume=True, progress=False, data=blobs())
    assert not dead.exists() and alive.exists()


def test_two_trainers_never_write_one_folder(run, capsys):
    """A live process training a folder holds its lease (.<name>.lock beside it): a second trainer
    of that folder stops with one line and leaves it as it was; a dead holder's lease is taken over
    and released when the run ends."""
    import socket
    lease = run.parent / f".{run.name}.lock"
    lease.write_text(f"{socket.gethostname()} {os.getppid()}")        # alive: the process that ran pytest
    stamp = (run / "last.pt").stat().st_mtime_ns
    one_line_error(capsys, ["train", "--preset", "fast", "--device", "cpu", "--out", str(run), "--resume",
                            "--no-progress"], f"is being trained by {socket.gethostname()} {os.getppid()}")
    assert (run / "last.pt").stat().st_mtime_ns == stamp and lease.read_text().endswith(str(os.getppid()))
    lease.write_text(f"{socket.gethostname()} {dead_pid()}")
    s = train(fast_cfg(snapshot_every=1, epochs=3), run, resume=True, progress=False, data=blobs())
    assert s["epochs"] == 3 and not lease.exists()


def test_a_lease_that_cannot_be_written_blocks_nobody(tmp_path, monkeypatch):
    """A full disk while a lease is written leaves no empty lock file (which would read as held);
    a folder whose parent cannot be written trains without a lease, after a warning."""
    from qdm import locks
    real_fdopen = os.fdopen

    def full(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        f.write = lambda text: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
        return f
    monkeypatch.setattr(locks.os, "fdopen", full)
    with pytest.raises(OSError):
        locks.try_lock(tmp_path / "cell.lock")
    assert not (tmp_path / "cell.lock").exists()
    monkeypatch.undo()

    def read_only(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(locks, "try_lock", read_only)
    with pytest.warns(UserWarning, match="training without a lease"):
        s = train(fast_cfg(epochs=1), tmp_path / "run", progress=False, data=blobs())
    assert s["epochs"] == 1 and (tmp_path / "run" / "last.pt").is_file()


def test_atomic_write_flushes_before_renaming(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "x.txt", lambda tmp: tmp.write_text("data"))
    assert events == ["fsync", "replace", "fsync"]          # the file, the rename, the folder
    assert (tmp_path / "x.txt").read_text() == "data"


# 6. values out of range: one line, before any work
@pytest.mark.parametrize("args, says", [
    (["--batch-size", "0"], "--batch-size must be a whole number of at least 1, got 0"),
    (["--batch-size", "-4"], "--batch-size must be"),
    (["--val-size", "0"], "--val-size must be"),
    (["--val-size", "-1"], "--val-size must be"),
    (["--lr", "0"], "--lr must be a positive finite number"),
    (["--lr=-1e-3"], "--lr must be"),
    (["--lr", "nan"], "--lr must be"),
    (["--lr", "inf"], "--lr must be"),
    (["--T", "0"], "--T must be"),
    (["--final-samples", "0"], "--final-samples must be"),
    (["--epochs", "0"], "--epochs must be"),
    (["--steps-per-epoch", "0"], "--steps-per-epoch must be"),
    (["--grad-clip", "0"], "--grad-clip must be"),
    (["--grad-clip", "-1"], "--grad-clip must be"),
    (["--ema-decay", "1"], "--ema-decay must be at least 0 and below 1"),
    (["--ema-decay", "-0.5"], "--ema-decay must be"),
    (["--best-by", "fid"], "unknown --best-by 'fid'"),
])
def test_train_values_out_of_range(tmp_path, capsys, args, says):
    one_line_error(capsys, ["train", "--preset", "fast", "--out", str(tmp_path / "r"), *args], says)
    assert not (tmp_path / "r").exists()


def test_sample_and_evaluate_values_out_of_range(tmp_path, capsys):
    ckpt = str(tmp_path / "never-read.pt")
    for cmd, args, says in [("evaluate", ["--n", "0"], "--n must be"), ("evaluate", ["--n", "-5"], "--n must be"),
                            ("evaluate", ["--steps", "0"], "--steps must be"),
                            ("sample", ["--n", "0"], "--n must be"), ("sample", ["--n", "-1"], "--n must be"),
                            ("sample", ["--steps", "0"], "--steps must be"),
                            ("sample", ["--steps", "-3"], "--steps must be")]:
        one_line_error(capsys, [cmd, ckpt, *args], says)


def test_out_that_is_a_file_or_under_one(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    one_line_error(capsys, ["train", "--preset", "fast", "--out", str(tmp_path / "file.txt")],
                   "is a file, not a folder")
    one_line_error(capsys, ["train", "--preset", "fast", "--out", str(tmp_path / "file.txt" / "run")],
                   "which is a file, not a folder")
    assert (tmp_path / "file.txt").read_text() == "x"


def test_best_pt_copied_over_last_pt(run, capsys):
    shutil.copy(run / "best.pt", run / "last.pt")
    one_line_error(capsys, ["train", "--preset", "fast", "--batch-size", "8", "--val-size", "8", "--device", "cpu",
                            "--out", str(run), "--resume"], "its last.pt has no model, optimizer")


# 7. the system's errors and bad data files: one line, naming the file
def test_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    import qdm.train
    monkeypatch.setattr(qdm.train, "train_val_images", lambda *a, **k: blobs())

    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))
    monkeypatch.setattr(torch, "save", full)
    one_line_error(capsys, ["train", "--preset", "fast", "--batch-size", "8", "--val-size", "8", "--device", "cpu",
                            "--out", str(tmp_path / "r"), "--no-progress"], "the disk is full: free some space")
    import qdm.reproduce

    def damaged(*a, **k):
        raise zipfile.BadZipFile("File is not a zip file")
    monkeypatch.setattr(qdm.reproduce, "evaluate_checkpoint", damaged)
    monkeypatch.setattr(qdm.train, "model_from_checkpoint", lambda *a, **k: (None, make_config("fast")))
    one_line_error(capsys, ["evaluate", str(tmp_path / "x.pt"), "--out", str(tmp_path / "e.json")],
                   "truncated or not in its expected format (BadZipFile")


def idx(array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape) + array.tobytes()


def synthetic_mnist(raw, gz: bool) -> dict:
    """MNIST-format files of random pixels in ``raw``: {file name: its md5}."""
    rng = np.random.default_rng(0)
    raw.mkdir(parents=True)
    sums = {}
    for name, n in (("train", 40), ("t10k", 20)):
        for kind, array in (("images", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                            ("labels", (np.arange(n) % 10).astype(np.uint8))):
            f = f"{name}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
            data = idx(array)
            sums[f] = hashlib.md5(data).hexdigest()
            if gz:
                data = gzip.compress(data, mtime=0)
                sums[f"{f}.gz"] = hashlib.md5(data).hexdigest()
            (raw / (f + ".gz" * gz)).write_bytes(data)
    return sums


@pytest.fixture
def offline(monkeypatch, tmp_path):
    from torchvision.datasets import MNIST

    def no_network(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(MNIST, "download", no_network)
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))


def test_bad_idx_files_are_named(tmp_path, offline):
    from qdm.data import load_images
    raw = tmp_path / "MNIST" / "raw"
    synthetic_mnist(raw, gz=False)
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(data[:1000])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte is truncated or too long \(1,000 bytes"):
        load_images("mnist", "train", [0], str(tmp_path))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(20))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte is not an MNIST IDX file"):
        load_images("mnist", "test", [0], str(tmp_path))
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match=r"no \S+/MNIST/raw/t10k-labels-idx1-ubyte\(\.gz\)"):
        load_images("mnist", "train", [0], str(tmp_path))


def test_mnist_md5_is_checked_once(tmp_path, offline, monkeypatch):
    import qdm.data
    from qdm.data import load_images
    sums = synthetic_mnist(tmp_path / "MNIST" / "raw", gz=False)
    with pytest.raises(UserError, match="is not the published MNIST file train-images-idx3-ubyte"):
        load_images("mnist", "train", [0], str(tmp_path))
    monkeypatch.setattr(qdm.data, "MNIST_MD5", sums)           # as if these were the published files
    hashed = []
    real_md5 = hashlib.md5
    monkeypatch.setattr(qdm.data.hashlib, "md5", lambda *a: (hashed.append(1), real_md5(*a))[1])
    assert len(load_images("mnist", "train", [0], str(tmp_path))) == 4
    assert len(hashed) == 1          # the labels file; the images were hashed by the refused call
    assert len(load_images("mnist", "train", [0], str(tmp_path))) == 4 and len(hashed) == 1
    os.utime(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", ns=(1, 1))    # changed: hashed again
    load_images("mnist", "train", [0], str(tmp_path))
    assert len(hashed) == 2


def test_truncated_gz_leaves_nothing_in_the_cache(tmp_path, offline, monkeypatch):
    import qdm.data
    from qdm.data import load_images
    raw = tmp_path / "MNIST" / "raw"
    monkeypatch.setattr(qdm.data, "MNIST_MD5", synthetic_mnist(raw, gz=True))
    gz = raw / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:300])
    for _ in range(2):
        with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz is truncated or not a gzip file"):
            load_images("mnist", "train", [0], str(tmp_path))
        unpacked = tmp_path / "cache" / "mnist" / "MNIST" / "raw"
        assert not [p.name for p in unpacked.iterdir() if p.name.startswith(".")]
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz is not the published MNIST file"):
        load_images("mnist", "test", [0], str(tmp_path))


def test_pathmnist_md5_is_checked(tmp_path, monkeypatch):
    from qdm.data import load_images, write_synthetic_pathmnist
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    arrays = write_synthetic_pathmnist(tmp_path)
    assert len(load_images("pathmnist", "train", [1], str(tmp_path))) > 0        # marked synthetic: accepted
    del arrays["qdm_synthetic"]
    np.savez_compressed(tmp_path / "medmnist" / "pathmnist.npz", **arrays)
    with pytest.raises(UserError, match="not the published pathmnist.npz .*expected a8b06965200029087d5bd730944a56c1"):
        load_images("pathmnist", "train", [1], str(tmp_path))


def test_a_full_disk_inside_torch_save_is_an_os_error_naming_the_file(tmp_path, monkeypatch, capsys):
    """torch's writer reports a full disk as a RuntimeError from C++ ("unexpected pos"): the
    checkpoint writer re-raises it as an OSError naming the file, which the CLI prints as one line;
    the target file is not created and no temporary file is left."""
    from qdm.checkpoint import save_checkpoint

    def full_disk(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 512 vs 448")
    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 0))   # full
    with pytest.raises(OSError, match="could not write .*best.pt") as e:
        save_checkpoint(tmp_path / "best.pt", {"ema": {}})
    assert e.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
    one_line_error(capsys, ["train", "--preset", "fast", "--out", str(tmp_path / "r"), "--device", "cpu",
                            "--no-progress"], "the disk is full")


def test_a_bad_circuit_width_fails_before_any_layer_is_built():
    """--qubits 0 is one line: no zero-width Linear (and its torch warning) is built first."""
    import warnings
    from qdm.quantum import QuantumGate
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserError, match="at least 1 qubit"):
            QuantumGate(n_qubits=0)


def test_a_run_killed_while_writing_its_first_config_resumes(tmp_path):
    """Killed inside its very first write, a run folder holds only a dead process's temporary
    config: --resume starts the run (the leftover is removed), it is not 'other files'."""
    out = tmp_path / "run"
    out.mkdir()
    (out / f".config.tmp{dead_pid()}.json").write_text("{")
    train(fast_cfg(), out, resume=True, progress=False, data=blobs())
    assert (out / "summary.json").exists() and not list(out.glob(".config.tmp*"))


def test_a_ledgers_folder_is_cleared_of_dead_writers_temporary_files(tmp_path):
    """Under a ledger's lock, temporary files that killed writers left beside it are removed; a
    live writer's stays."""
    from qdm.locks import ledger_lock
    dead, alive = tmp_path / f".table1_cells.tmp{dead_pid()}.csv", tmp_path / f".table1.tmp{os.getppid()}.md"
    dead.write_text("half")
    alive.write_text("being written")
    with ledger_lock(tmp_path / "table1_cells.csv"):
        pass
    assert not dead.exists() and alive.exists()
