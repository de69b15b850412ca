"""qdm attacked as an adversary would: kill -9 at random points, bad inputs and bad files, and
processes racing for the same results. Every case runs against the code as it is now, in a
temporary folder of its own, and is judged on what it leaves behind: exit status, stderr, the
sha256 of every file in the folders it must not touch (before and after), and for kills the
final weights against an uninterrupted run of the same configuration (bit for bit).

1. kills: ``python -m qdm train --preset fast --epochs 4`` (classical, quantum, quantum with
   --shots 100) killed with SIGKILL at seeded random points (any time, inside an epoch, in the
   final sampling; once or twice), then ``--resume`` to the end: last.pt (model, EMA, optimizer,
   losses), best.pt and samples.pt must equal the uninterrupted run's. ``reproduce table1 --preset
   fast --digits 0 --models classical`` killed while scoring, rerun: the table complete, its
   numbers those of an uninterrupted run. A process writing a cells ledger killed many times: the
   file always parses and holds every cell a write returned for.
2. bad inputs: each must exit 2 with exactly one stderr line, no traceback, and change no file.
   The cases in FRESH run as a fresh ``python -m qdm``; the others (all of them with --fresh) as a
   process forked from a warm interpreter that has imported qdm (--serve), which runs the same
   code after the imports and spares a few seconds of CPU per case.
3. concurrency: N processes x M cells into one ledger at once; processes taking over one stale
   lock at once; two ``reproduce --preset fast`` on the same two cells at once.

Writes a Markdown report (a summary per category, then every case):

    QDM_DATA_DIR=../shared/data TORCH_HOME=../shared/data/torch_hub OMP_WAIT_POLICY=PASSIVE \\
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_reliability.py --out results/reliability.md

Mounting tmpfs (full disk, read-only file system) needs root; without it those cases are
reported as not applicable. Everything is written under one temporary folder, removed at the
end (--keep keeps it).
"""
import argparse
import csv
import datetime
import gzip
import hashlib
import json
import multiprocessing
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for key, value in (("OMP_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE")):
    os.environ.setdefault(key, value)
SHARED = ROOT.parent / "shared" / "data"
os.environ.setdefault("QDM_DATA_DIR", str(SHARED))
os.environ.setdefault("TORCH_HOME", str(Path(os.environ["QDM_DATA_DIR"]) / "torch_hub"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

torch.set_num_threads(1)

PY = sys.executable
EPOCHS = 4
TRAIN = ["train", "--preset", "fast", "--epochs", str(EPOCHS), "--device", "cpu", "--no-progress"]
CONFIGS = {"classical": [], "quantum": ["--model", "quantum"], "shots": ["--model", "quantum", "--shots", "100"]}
REPRODUCE = ["reproduce", "table1", "--preset", "fast", "--digits", "0", "--models", "classical", "--device", "cpu"]
CATEGORIES = {1: "kill -9 at random points", 2: "bad inputs and bad files", 3: "concurrency"}
METRIC_KEYS = ("FID", "KID", "KID_std", "SSIM", "SSIM_nearest")


# ---------------------------------------------------------------------------------------------
# the bench's own machinery


class Bench:
    def __init__(self, tmp: Path, seed: int, data: Path):
        self.T, self.seed, self.data = tmp, seed, data
        self.env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        self.env.update(QDM_DATA_DIR=str(data), QDM_CACHE=str(tmp / "cache"), PYTHONUNBUFFERED="1",
                        OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", MPLCONFIGDIR=str(tmp / "matplotlib"),
                        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.fixtures: dict[str, Future] = {}
        self.results: list[dict] = []
        self.lock = threading.Lock()
        self.mounts: list[Path] = []
        self.server, self.server_lock, self.calls = None, threading.Lock(), 0
        self.fresh_all = False

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    def folder(self, *parts) -> Path:
        d = self.T.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def show(self, text) -> str:
        """A path or command as the report shows it: the temporary folder as $T."""
        return str(text).replace(str(self.T), "$T")

    def cmd(self, args) -> str:
        return self.show("python -m qdm " + shlex.join(str(a) for a in args))

    def qdm(self, args, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([PY, "-m", "qdm", *map(str, args)], cwd=cwd, env={**self.env, **(env or {})},
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, -999, e.stdout or "", f"(timed out after {timeout} s)")

    def launch(self, args, cwd, log: Path, env=None, errors: Path | None = None) -> subprocess.Popen:
        with open(log, "ab") as out, open(errors or os.devnull, "ab") as err:
            return subprocess.Popen([PY, "-m", "qdm", *map(str, args)], cwd=cwd, env={**self.env, **(env or {})},
                                    stdout=out, stderr=err if errors else subprocess.STDOUT)

    def fixture(self, name: str):
        return self.fixtures[name].result()

    def warm(self, args, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
        """``python -m qdm args`` as a process forked from a warm interpreter (qdm already imported):
        what a fresh one does after its imports, without their seconds of CPU (see serve())."""
        with self.lock:
            if self.server is None:
                self.server = subprocess.Popen([PY, __file__, "--serve"], stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, env=self.env, text=True, cwd=self.T)
        with self.server_lock:
            self.calls += 1
            out, err = self.T / "warm" / f"{self.calls}.out", self.T / "warm" / f"{self.calls}.err"
            out.parent.mkdir(exist_ok=True)
            request = {"argv": list(map(str, args)), "cwd": str(cwd), "env": {**self.env, **(env or {})},
                       "stdout": str(out), "stderr": str(err), "timeout": timeout}
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
            answer = json.loads(self.server.stdout.readline())
        stderr = err.read_text(errors="replace") + ("" if answer["rc"] != -999 else f"(timed out after {timeout} s)")
        return subprocess.CompletedProcess(args, answer["rc"], out.read_text(errors="replace"), stderr)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(folders) -> dict:
    """sha256 of every file under ``folders`` (symbolic links: their target, not followed)."""
    files = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            continue
        items = [folder] if folder.is_file() else folder.rglob("*")
        for p in items:
            try:
                if p.is_symlink():
                    files[str(p)] = "link -> " + os.readlink(p)
                elif p.is_file():
                    files[str(p)] = sha256(p)
            except OSError as e:
                files[str(p)] = f"unreadable ({e.strerror})"
    return files


def changes(before: dict, after: dict) -> list[str]:
    return ([f"+{p}" for p in sorted(set(after) - set(before))] + [f"-{p}" for p in sorted(set(before) - set(after))]
            + [f"~{p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]])


def stderr_lines(r) -> list[str]:
    return [line for line in (r.stderr or "").strip().splitlines() if line.strip()]


def equal(a, b) -> bool:
    """Nested dicts, lists and tensors, equal bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
            a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


def load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def same_run(ref: Path, run: Path) -> tuple[bool, str]:
    """Whether ``run`` ended where the uninterrupted ``ref`` did: every weight, the optimizer, the
    losses of every step, best.pt and the final samples, bit for bit; and the same files."""
    diffs = []
    la, lb = load(ref / "last.pt"), load(run / "last.pt")
    for key in ("model", "ema", "optimizer", "rng", "torch_rng"):
        if not equal(la.get(key), lb.get(key)):
            diffs.append(f"last.pt {key}")
    ha, hb = la["history"], lb["history"]
    for key in ("epoch", "step", "best_epoch", "best"):
        if ha[key] != hb[key]:
            diffs.append(f"history {key} {ha[key]} vs {hb[key]}")
    if [r["loss"] for r in ha["steps"]] != [r["loss"] for r in hb["steps"]]:
        diffs.append("step losses")
    if [(r["val_loss_raw"], r["val_loss_ema"]) for r in ha["epochs"]] != \
            [(r["val_loss_raw"], r["val_loss_ema"]) for r in hb["epochs"]]:
        diffs.append("validation losses")
    ba, bb = load(ref / "best.pt"), load(run / "best.pt")
    if not equal(ba["ema"], bb["ema"]) or ba["epoch"] != bb["epoch"]:
        diffs.append("best.pt")
    if not equal(load(ref / "samples.pt"), load(run / "samples.pt")):
        diffs.append("samples.pt")
    names = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())  # noqa: E731
    extra = sorted(set(names(run)) ^ set(names(ref)))
    if extra:
        diffs.append("files differ: " + ", ".join(extra[:4]))
    if diffs:
        return False, "differs: " + "; ".join(diffs)
    return True, (f"bit-identical to the uninterrupted run (model, EMA, optimizer, RNGs, {hb['step']} step losses, "
                  f"best.pt of epoch {bb['epoch']}, samples.pt; same files)")


def wait_until(cond, proc, timeout: float, every: float = 0.02) -> bool:
    """Poll ``cond`` until true (True), ``proc`` ended or ``timeout`` passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            return False
        time.sleep(every)
    return False


def csv_rows(path: Path) -> int:
    with open(path) as f:
        return sum(1 for _ in csv.DictReader(f))


def kill(proc) -> bool:
    """SIGKILL ``proc``; False if it had already ended."""
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def mount_tmpfs(b: Bench, where: Path, size: str, ro: bool = False, files: dict | None = None) -> str | None:
    """A tmpfs at ``where`` holding ``files`` (then remounted read-only with ``ro``); None, or why not."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if r.returncode:
        return f"cannot mount a tmpfs ({(r.stderr or r.stdout).strip()[:80] or 'mount failed'}; needs root)"
    with b.lock:
        b.mounts.append(where)
    for name, text in (files or {}).items():
        (where / name).write_text(text)
    if ro:
        r = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True)
        if r.returncode:
            return f"cannot remount read-only ({r.stderr.strip()[:80]})"
    return None


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def serve() -> None:
    """The warm interpreter of Bench.warm: import qdm once, then for each request (a JSON line on
    stdin) fork a child that does what ``python -m qdm`` does after its imports: in the request's
    folder and environment, stdout and stderr to files, ``sys.exit(qdm.cli.main(argv))`` with an
    uncaught exception printed as a traceback (exit 1); answer its exit status (a JSON line)."""
    import qdm.cli  # noqa: F401
    import qdm.data  # noqa: F401
    import qdm.reproduce  # noqa: F401
    import qdm.train  # noqa: F401
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.chdir(req["cwd"])
                os.environ.clear()
                os.environ.update(req["env"])
                for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                try:
                    code = qdm.cli.main(req["argv"])
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                    if not isinstance(e.code, (int, type(None))):
                        print(e.code, file=sys.stderr)
                except BaseException:  # noqa: BLE001 (as the interpreter does: the traceback, exit 1)
                    traceback.print_exc()
                    code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code or 0)
        deadline = time.monotonic() + req["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                rc = -999
                break
            time.sleep(0.01)
        sys.stdout.write(json.dumps({"rc": rc}) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# fixtures: uninterrupted runs


def train_reference(b: Bench, config: str) -> Path:
    d = b.folder("ref", config)
    r = b.qdm([*TRAIN, *CONFIGS[config], "--out", d / "run"], cwd=d)
    if r.returncode:
        raise RuntimeError(f"reference run {config} failed: {stderr_lines(r)[-1:]}")
    print(f"  fixture: reference run {config} done", flush=True)
    return d / "run"


def reproduce_reference(b: Bench) -> Path:
    d = b.folder("ref", "reproduce")
    r = b.qdm([*REPRODUCE, "--runs-dir", d / "runs", "--results-dir", d / "results", "--no-progress"], cwd=d,
              timeout=600)
    if r.returncode:
        raise RuntimeError(f"reference reproduce failed: {stderr_lines(r)[-1:]}")
    print("  fixture: reference reproduce done", flush=True)
    return d / "results"


def plain_mnist(b: Bench) -> Path:
    """The four MNIST files unpacked (the plain layout), once."""
    with b.lock:
        raw = b.T / "plain-mnist" / "MNIST" / "raw"
        if not raw.exists():
            tmp = b.folder("plain-mnist-tmp")
            for gz in sorted((b.data / "MNIST" / "raw").glob("*.gz")):
                (tmp / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
            raw.parent.mkdir(parents=True)
            tmp.rename(raw)
        return raw


# ---------------------------------------------------------------------------------------------
# 1. kill -9


def where_killed(out: Path) -> str:
    """Where a killed run stood, from what it left."""
    if not out.exists():
        return "start-up (no run folder yet)"
    if not (out / "config.json").exists():
        return "start-up (no config.json yet)"
    if not (out / "last.pt").exists():
        return "epoch 1 (no last.pt yet)"
    try:
        epoch = load(out / "last.pt")["history"]["epoch"]
    except Exception as e:  # noqa: BLE001 (what a kill left is reported, whatever it is)
        return f"last.pt unreadable ({type(e).__name__})"
    rows = csv_rows(out / "epochs.csv") if (out / "epochs.csv").exists() else 0
    if rows > epoch:
        return f"end of epoch {rows}, between its epochs.csv row and its last.pt (last.pt at epoch {epoch})"
    if epoch < EPOCHS:
        return f"epoch {epoch + 1} (last.pt at epoch {epoch})"
    if not (out / "summary.json").exists():
        done = [f for f in ("samples.png", "samples.pt") if (out / f).exists()]
        return "final sampling (last.pt at epoch 4, no summary.json" + (f"; {', '.join(done)} written" if done else "") + ")"
    return "after the end (summary.json written)"


def kill_train_case(b: Bench, config: str, plan: list[tuple]):
    """Kill a fast run at the points of ``plan`` (one kill per launch), then resume it to the end."""
    name = f"{config}-" + "-".join(p[0] for p in plan)
    d = b.folder("kill", name)
    (d / "bystander").mkdir()
    (d / "bystander" / "notes.txt").write_text("not qdm's")
    out, args = d / "run", [*TRAIN, *CONFIGS[config], "--out", d / "run"]
    rng = b.rng(name)
    ref = b.fixture(config)
    before = snapshot([d / "bystander", ref, b.data])
    points, killed_all = [], True
    for i, (kind, *spec) in enumerate(plan):
        p = b.launch([*args, *(["--resume"] if i else [])], d, d / "log.txt")
        t0 = time.monotonic()
        if kind == "any":                      # a random moment after the start
            delay = rng.uniform(*spec)
            wait_until(lambda: time.monotonic() - t0 > delay, p, delay + 1)
        elif kind == "epoch":                  # a random moment after a random epoch's row
            k = rng.randint(*spec[0])
            wait_until(lambda: csv_rows(out / "epochs.csv") >= k, p, 240)
            time.sleep(rng.uniform(0, spec[1]))
        else:                                  # after the last epoch's last.pt: best.pt, final sampling
            wait_until(lambda: csv_rows(out / "epochs.csv") >= EPOCHS and (out / "last.pt").stat().st_mtime_ns >=
                       (out / "epochs.csv").stat().st_mtime_ns, p, 240, every=0.01)
            time.sleep(rng.uniform(0, spec[0]))
        at = time.monotonic() - t0
        if kill(p):
            points.append(f"kill {i + 1} at {at:.1f} s: {where_killed(out)}")
        else:
            killed_all = False
            points.append(f"launch {i + 1} ended (exit {p.returncode}) before its kill at {at:.1f} s")
    r = b.qdm([*args, "--resume"], cwd=d)
    changed = changes(before, snapshot([d / "bystander", ref, b.data]))
    if r.returncode:
        return "resumed to the end; bit-identical", "; ".join(points) + f"; resume failed: exit {r.returncode}: " \
               + " | ".join(stderr_lines(r)[-2:]), False, changed
    same, detail = same_run(ref, out)
    temps = [p.name for p in out.rglob(".*") if ".tmp" in p.name]
    if temps:
        same, detail = False, detail + f"; temporary files left: {temps}"
    return ("resume to the end: final weights, optimizer, losses, best.pt, samples bit-identical to an "
            "uninterrupted run", "; ".join(points) + "; then --resume: " + detail, same and killed_all, changed)


def killed_while_writing_first_config(b: Bench):
    """Simulated: killed between creating the run folder and renaming config.json into it (the folder holds
    only the dead process's temporary file); --resume must start the run."""
    d = b.folder("kill", "first-config")
    out = d / "run"
    out.mkdir()
    dead = dead_pid()
    (out / f".config.tmp{dead}.json").write_text('{"format": "qdm-ru')
    r = b.qdm([*TRAIN, "--out", out, "--resume"], cwd=d)
    lines = stderr_lines(r)
    ok = r.returncode == 0 and (out / "summary.json").exists()
    return ("--resume starts the run (the dead process's temporary file removed)",
            f"exit {r.returncode}" + (f": {lines[-1][:200]}" if r.returncode else "; run finished"), ok, [])


def kill_reproduce_case(b: Bench):
    d = b.folder("kill", "reproduce")
    args = [*REPRODUCE, "--runs-dir", d / "runs", "--results-dir", d / "results", "--no-progress"]
    cell = d / "runs" / "fast" / "mnist-0-classical-seed0"
    rng = b.rng("reproduce")
    before = snapshot([b.data])
    points = []
    p = b.launch(args, d, d / "log.txt")       # killed while the cell is scored (trained, no metrics file yet)
    t0 = time.monotonic()
    wait_until(lambda: (cell / "summary.json").exists(), p, 300)
    time.sleep(rng.uniform(0, 3))
    scored = list(cell.glob("metrics-*.json"))
    points.append(f"killed at {time.monotonic() - t0:.1f} s " + ("while scoring (no metrics file yet)" if not scored
                  else "after scoring") if kill(p) else f"run ended before its kill (exit {p.returncode})")
    r = b.qdm(args, cwd=d, timeout=600)
    changed = changes(before, snapshot([b.data]))
    ref = b.fixture("reproduce")
    if r.returncode:
        return "table complete, numbers equal", "; ".join(points) + f"; rerun exit {r.returncode}: " + \
               " | ".join(stderr_lines(r)[-2:]), False, changed
    ours = list(csv.DictReader(open(d / "results" / "table1_fast_cells.csv")))
    theirs = [r for r in csv.DictReader(open(ref / "table1_fast_cells.csv")) if (r["cls"], r["model"]) == ("0", "classical")]
    same = len(ours) == len(theirs) == 1 and all(ours[0][k] == theirs[0][k] for k in METRIC_KEYS)
    table_ok = "| FID | ours classical |" in (d / "results" / "table1_fast.md").read_text()
    locks = [p.name for p in (d / "runs").rglob("*.lock*")]
    observed = "; ".join(points) + f"; rerun: {len(ours)} cell(s), " + \
        ", ".join(f"{k} {ours[0][k][:8]} vs {theirs[0][k][:8]}" for k in ("FID", "KID", "SSIM") if ours) + \
        ("; table shows the cell" if table_ok else "; table lacks the cell") + (f"; locks left: {locks}" if locks else "")
    return ("rerun completes; cells CSV has the one cell with FID, KID, SSIM, KID_std, SSIM_nearest equal to an "
            "uninterrupted run's; no lock left", observed, same and table_ok and not locks and "ended before" not in observed, changed)


def fake_cell(seed: int, cls: int) -> dict:
    from qdm.reproduce import protocol
    return {"FID": 10.0 + seed, "KID": 0.5, "KID_std": 0.1, "SSIM": 0.2, "SSIM_nearest": 0.3, "sample_seconds": 1.0,
            "protocol": protocol("fast"), "model": "classical", "cls": str(cls), "seed": seed, "preset": "fast",
            "train_seconds": 2.0, "seconds_per_step": 0.01, "steps": 6, "cell_seconds": 3.0}


REFS = {k: {"real-vs-real": {m: 1.0 + k for m in METRIC_KEYS}, "noise-vs-real": {m: 100.0 + k for m in METRIC_KEYS}}
        for k in range(3)}


def _ledger_writer(results: Path, first: int, fd: int, limit: int) -> None:
    """In a forked child: record cells first, first+1, ... into the fast Table I ledger, one
    record_table per cell, reporting each cell after its write returned."""
    import qdm.reproduce as R
    cells = {}
    for i in range(limit):
        cell = fake_cell(first + i, (first + i) % 3)
        cells[R.cell_key(cell)] = cell
        R.record_table("table1", cells, dict(REFS), [0, 1, 2], R.protocol("fast"), "fast", results)
        os.write(fd, f"{first + i}\n".encode())


def fork_writer(results: Path, first: int, limit: int = 10 ** 6) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            _ledger_writer(results, first, w, limit)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        os._exit(code)
    os.close(w)
    return pid, r


def read_all(fd: int) -> str:
    chunks = []
    while True:
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    return b"".join(chunks).decode()


def kill_ledger_case(b: Bench, rounds: int = 30):
    """A process writing the cells ledger, killed ``rounds`` times at random moments; each next writer
    starts on what the killed one left (its stale lock included)."""
    from qdm.reproduce import cell_key, protocol, recorded_cells
    results = b.folder("kill", "ledger", "results")
    ledger = results / "table1_fast_cells.csv"
    rng = b.rng("ledger")
    committed, problems, kills_in_lock, stuck = set(), [], 0, 0
    for k in range(rounds):
        pid, fd = fork_writer(results, k * 100_000)
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            stuck += 1
            problems.append(f"round {k}: the writer recorded nothing in 60 s (lock: "
                            f"{(results / '.table1_fast_cells.csv.lock').read_text() if (results / '.table1_fast_cells.csv.lock').exists() else 'none'})")
        time.sleep(rng.uniform(0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        committed |= {int(x) for x in read_all(fd).split()}
        lock = results / ".table1_fast_cells.csv.lock"
        kills_in_lock += lock.exists() and lock.read_text().endswith(f" {pid}")
        try:
            with open(ledger) as f:
                rows = list(csv.DictReader(f))
            cells, _ = recorded_cells(ledger, "fast", protocol("fast"), cell_key)
            seeds = {c["seed"] for c in cells.values()}
            if len(rows) != len(cells):
                problems.append(f"round {k}: {len(rows)} rows but {len(cells)} cells")
            lost = committed - seeds
            if lost:
                problems.append(f"round {k}: {len(lost)} committed cells missing")
        except Exception as e:  # noqa: BLE001
            problems.append(f"round {k}: unparseable ({type(e).__name__}: {e})")
    pid, fd = fork_writer(results, 9_000_000, limit=3)          # a last writer that finishes
    _, status = os.waitpid(pid, 0)
    committed |= {int(x) for x in read_all(fd).split()}
    cells, _ = recorded_cells(ledger, "fast", protocol("fast"), cell_key)
    missing = committed - {c["seed"] for c in cells.values()}
    stray = sorted(p.name for p in results.iterdir() if p.name.startswith("."))
    ok = not problems and not missing and os.waitstatus_to_exitcode(status) == 0 and \
        not [s for s in stray if "lock" in s]
    observed = (f"{rounds} kills ({kills_in_lock} while the dead writer held the ledger lock); the file parsed after "
                f"every kill; {len(cells)} cells recorded, {len(committed)} committed, {len(missing)} missing; "
                f"last writer exit {os.waitstatus_to_exitcode(status)}"
                + (f"; problems: {problems[:3]}" if problems else "")
                + f"; lock left: {[s for s in stray if 'lock' in s]}")
    return ("after every kill the cells CSV parses (csv and qdm's reader) and holds every cell whose write "
            "returned; the next writer takes over the dead one's lock; no lock left at the end",
            observed, ok, [])


def ledger_leftovers_case(b: Bench):
    """What the killed writers of kill_ledger_case left beside the ledger, after a writer finished."""
    results = b.T / "kill" / "ledger" / "results"
    if not results.exists():
        return "—", "kill_ledger_case did not run", None, []
    stray = sorted(p.name for p in results.iterdir() if p.name.startswith("."))
    return ("no temporary (or lock) file of a killed writer left in the results folder once a writer has finished "
            "(results/ is committed: hidden leftovers get added with it)",
            f"{len(stray)} left: {', '.join(stray[:4])}{', ...' if len(stray) > 4 else ''}" if stray else "nothing left",
            not stray, [])


def dead_pid() -> int:
    from qdm.checkpoint import pid_alive
    return next(p for p in range(999_999, 900_000, -1) if not pid_alive(p))


# ---------------------------------------------------------------------------------------------
# 2. bad inputs


FRESH = {   # bad-input cases always run as a fresh ``python -m qdm`` (the others: forked from a warm one)
    "train --lr nan", "train --epochs abc", "train quantum --qubits 0", "sample a malicious pickle",
    "train --resume, malicious last.pt", "--overwrite --out . (cwd: a repository)", "--overwrite on $HOME that looks like a run",
    "sample --out <run>/best.png --overwrite", "MNIST: missing t10k-labels", "MNIST: wrong bytes idx",
    "train --out on a full disk (1 MiB tmpfs: the checkpoint does not fit)", "sample --out on a full disk (64 KiB tmpfs)"}


class Evil:
    """Unpickling this runs a shell command (touch a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def bad_case(b: Bench, name: str, args, pattern: str | None = None, setup=None, cwd=None, env=None,
             check=None, protect=None, expect_rc: int = 2, argparse_usage: bool = False, fresh: bool = False):
    """Run ``args`` (a function of the case folder) once; it must exit 2 with one stderr line holding
    ``pattern``, no traceback, and no file under the case folder (and the data) changed."""
    d = b.folder("bad", slug(name))
    extra = setup(d) if setup else None
    if isinstance(extra, str):                                   # setup says why the case cannot run
        return "—", extra, None, []
    argv = args(d)
    protected = [d, b.data] if protect is None else protect(d)
    before = snapshot(protected)
    run = b.qdm if fresh or b.fresh_all else b.warm
    r = run(argv, cwd=cwd(d) if cwd else d, env=env(d) if env else None, timeout=240)
    changed = changes(before, snapshot(protected))
    lines = stderr_lines(r)
    ok = r.returncode == expect_rc and "Traceback" not in r.stderr and (len(lines) == 1 or argparse_usage) \
        and (pattern is None or pattern in (lines[-1] if lines else "")) and not changed
    note = "" if len(lines) < 2 else f"first line: {b.show(lines[0])[:120]}"
    if check:
        good, note = check(d)
        ok = ok and good
    shown = b.show(lines[-1] if lines else "(nothing on stderr)")
    observed = f"exit {r.returncode}, {len(lines)} stderr line(s): {shown[:240]}" + (f"; {note}" if note else "")
    observed += "" if fresh or b.fresh_all else " [warm]"
    if "Traceback" in r.stderr:
        observed += " [TRACEBACK]"
    expected = f"exit {expect_rc}, " + ("usage + one error line (argparse)" if argparse_usage else "one line") + \
        (f" with '{pattern}'" if pattern else "") + ", no traceback, no file changed"
    return expected, observed, ok, changed


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:80]


def not_torch_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "hello")


def copy_run(b: Bench, d: Path, config: str = "classical") -> Path:
    return Path(shutil.copytree(b.fixture(config), d / "run", symlinks=True))


def bad_cases(b: Bench) -> list:
    """(name, action shown, function) of every bad-input case."""
    cases = []

    def add(name, args, pattern=None, **kw):
        shown = kw.pop("shown", None)
        kw["fresh"] = name in FRESH

        def run():
            return bad_case(b, name, args, pattern, **kw)
        probe = Path("CASE")
        action = shown or b.cmd(args(probe)).replace("CASE/", "").replace(" CASE", " .")
        cases.append((name, action, run))

    train = lambda *a: lambda d: ["train", "--preset", "fast", "--device", "cpu", "--out", d / "r", *a]  # noqa: E731
    for opt, value, says in [("--batch-size", "0", "--batch-size must be"), ("--batch-size", "-1", "--batch-size must be"),
                             ("--val-size", "0", "--val-size must be"), ("--lr", "-1", "--lr must be"),
                             ("--lr", "nan", "--lr must be"), ("--lr", "inf", "--lr must be"),
                             ("--warmup-steps", "-1", "--warmup-steps must be"),
                             ("--T", "0", "--T must be"), ("--final-samples", "0", "--final-samples must be"),
                             ("--epochs", "0", "--epochs must be"), ("--steps-per-epoch", "0", "--steps-per-epoch must be"),
                             ("--ema-decay", "1", "--ema-decay must be")]:
        add(f"train {opt} {value}", train(opt, value), says)
    for extra, says in [(["--qubits", "0"], "at least 1 qubit"), (["--shots", "0"], "shots must be"),
                        (["--shots", "-5"], "shots must be"), (["--channel", "depolarizing", "--noise-p", "2"], "[0, 1]"),
                        (["--ansatz", "magic"], "unknown quantum ansatz")]:
        add(f"train quantum {' '.join(extra)}", train("--model", "quantum", *extra), says)
    add("train --epochs abc", train("--epochs", "abc"), "invalid int value", argparse_usage=True)
    # unknown names
    for extra, says in [(["--dataset", "cifar10"], "unknown dataset"), (["--digit", "12"], "unknown class 12"),
                        (["--digit", "-1"], "unknown class -1"), (["--digit", "a,b"], "bad class list"),
                        (["--t-sampling", "magic"], "unknown t sampling"), (["--preset", "huge"], "unknown preset"), (["--model", "transformer"], "unknown model"),
                        (["--device", "tpu"], "unknown device"), (["--final-sampler", "euler"], "unknown --final-sampler"),
                        (["--schedule", "exp"], None)]:
        add(f"train {' '.join(extra)}", train(*extra), says)

    # sample / evaluate values (on a real checkpoint: a missing check would write files)
    need_run = lambda d: copy_run(b, d) and None  # noqa: E731
    ck = lambda *a: lambda d: [a[0], d / "run" / "best.pt", *a[1:]]  # noqa: E731
    for cmd, extra, says in [("evaluate", ["--n", "-3"], "--n must be"), ("evaluate", ["--n", "0"], "--n must be"),
                             ("evaluate", ["--n", "1"], "--n must be at least 2"),
                             ("sample", ["--steps", "-2"], "--steps must be"), ("sample", ["--steps", "0"], "--steps must be"),
                             ("sample", ["--sampler", "euler"], "unknown sampler"),
                             ("sample", ["--precision", "fp8"], "unknown precision"),
                             ("evaluate", ["--sampler", "euler"], "unknown sampler"),
                             ("evaluate", ["--precision", "fp8"], "unknown precision"),
                             ("sample", ["--device", "tpu"], "unknown device")]:
        add(f"{cmd} {' '.join(extra)}", ck(cmd, *extra, "--device", "cpu") if "--device" not in extra else ck(cmd, *extra),
            says, setup=need_run)
    add("reproduce table3", lambda d: ["reproduce", "table3", "--preset", "fast", "--runs-dir", d / "runs"], "unknown table")
    add("reproduce --models foo", lambda d: [*REPRODUCE, "--models", "foo", "--runs-dir", d / "runs"], "unknown model")
    add("reproduce --digits 10", lambda d: [*REPRODUCE[:5], "10", *REPRODUCE[6:], "--runs-dir", d / "runs"], "class 10")
    add("reproduce --jobs 0", lambda d: [*REPRODUCE, "--jobs", "0", "--runs-dir", d / "runs"], "--jobs must be")
    add("ablate --study foo", lambda d: ["ablate", "--study", "foo", "--preset", "fast", "--runs-dir", d / "runs"],
        "unknown study")
    add("curve --every 0", lambda d: ["curve", d / "run", "--every", "0", "--out", d / "curves"], "--every must be",
        setup=need_run)

    # --out
    def a_file(d):
        (d / "file.txt").write_text("mine")
    add("train --out is a file", lambda d: ["train", "--preset", "fast", "--out", d / "file.txt"], "is a file",
        setup=a_file)
    add("train --out under a file", lambda d: ["train", "--preset", "fast", "--out", d / "file.txt" / "run"],
        "which is a file", setup=a_file)
    add("sample --out under a file", lambda d: ["sample", d / "run" / "best.pt", "--out", d / "file.txt" / "s.png"],
        "which is a file", setup=lambda d: (a_file(d), copy_run(b, d)) and None)
    add("evaluate --out under a file", lambda d: ["evaluate", d / "run" / "best.pt", "--out", d / "file.txt" / "e.json"],
        "which is a file", setup=lambda d: (a_file(d), copy_run(b, d)) and None)
    add("sample --out a folder named grid.png", lambda d: ["sample", d / "run" / "best.pt", "--out", d / "grid.png"],
        "is a folder", setup=lambda d: (copy_run(b, d), (d / "grid.png").mkdir(), (d / "grid.png" / "x").write_text("mine"))
        and None)
    add("sample --out x.jpg", lambda d: ["sample", d / "run" / "best.pt", "--out", d / "x.jpg"], "must end in .png",
        setup=need_run)

    # checkpoints
    def truncated(d):
        copy_run(b, d)
        data = (d / "run" / "best.pt").read_bytes()
        (d / "trunc.pt").write_bytes(data[:len(data) // 2])
        last = (d / "run" / "last.pt").read_bytes()
        (d / "run" / "last.pt").write_bytes(last[:len(last) // 3])
    add("sample a truncated checkpoint", lambda d: ["sample", d / "trunc.pt", "--device", "cpu"], "corrupt",
        setup=truncated)
    add("evaluate a truncated checkpoint", lambda d: ["evaluate", d / "trunc.pt", "--device", "cpu"], "corrupt",
        setup=truncated)
    add("sample an empty file", lambda d: ["sample", d / "empty.pt"], "corrupt",
        setup=lambda d: (d / "empty.pt").write_bytes(b"") and None)
    add("sample a folder as checkpoint", lambda d: ["sample", d / "run"], "not found", setup=need_run)
    add("train --resume, last.pt truncated", lambda d: [*TRAIN, "--out", d / "run", "--resume"], "corrupt",
        setup=truncated)
    add("sample a zip that is not torch", lambda d: ["sample", d / "zip.pt"], None,
        setup=lambda d: not_torch_zip(d / "zip.pt"))

    def evil(legacy):
        def setup(d):
            state = {"format": "qdm-checkpoint-v1", "config": Evil(d / "PWNED")}
            torch.save(state, d / "evil.pt", **({"_use_new_zipfile_serialization": False} if legacy else {}))
        return setup

    def no_marker(d):
        return not (d / "PWNED").exists(), ("marker file CREATED: code ran" if (d / "PWNED").exists()
                                            else "marker not created")
    for legacy in (False, True):
        tag = " (legacy format)" if legacy else ""
        add(f"sample a malicious pickle{tag}", lambda d: ["sample", d / "evil.pt"], "could run code",
            setup=evil(legacy), check=no_marker)
    add("evaluate a malicious pickle", lambda d: ["evaluate", d / "evil.pt"], "could run code", setup=evil(False),
        check=no_marker)

    def evil_last(d):
        copy_run(b, d)
        torch.save({"format": "qdm-checkpoint-v1", "config": Evil(d / "PWNED")}, d / "run" / "last.pt")
    add("train --resume, malicious last.pt", lambda d: [*TRAIN, "--out", d / "run", "--resume"], "could run code",
        setup=evil_last, check=no_marker)

    def best_over_last(d):
        copy_run(b, d)
        shutil.copy(d / "run" / "best.pt", d / "run" / "last.pt")
    add("best.pt copied over last.pt, --resume", lambda d: [*TRAIN, "--out", d / "run", "--resume"],
        "has no model", setup=best_over_last)

    def foreign_last(d):
        copy_run(b, d)
        shutil.copy(b.fixture("quantum") / "last.pt", d / "run" / "last.pt")
    add("quantum last.pt in a classical run, --resume", lambda d: [*TRAIN, "--out", d / "run", "--resume"],
        "different model", setup=foreign_last)

    # --overwrite never destroys what is not a run
    def thesis(forged):
        def setup(d):
            (d / "thesis").mkdir()
            (d / "thesis" / "thesis.tex").write_text("years of work")
            if forged:
                (d / "thesis" / "config.json").write_text('{"format": "qdm-run-v1"}')
        return setup
    add("--overwrite on a folder holding thesis.tex", lambda d: [*TRAIN, "--out", d / "thesis", "--overwrite"],
        "thesis.tex", setup=thesis(False))
    add("--overwrite on thesis.tex + a forged run config.json",
        lambda d: [*TRAIN, "--out", d / "thesis", "--overwrite"], "thesis.tex", setup=thesis(True))

    def repo(d):
        (d / "proj" / ".git").mkdir(parents=True)
        (d / "proj" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (d / "proj" / "paper.md").write_text("mine")
        (d / "proj" / "sub").mkdir()
        (d / "proj" / "sub" / "notes.txt").write_text("mine too")
    add("--overwrite --out . (cwd: a repository)", lambda d: [*TRAIN, "--out", ".", "--overwrite"],
        "current folder", setup=repo, cwd=lambda d: d / "proj")
    add("--overwrite --out .. (cwd: inside a repository)", lambda d: [*TRAIN, "--out", "..", "--overwrite"],
        "current folder", setup=repo, cwd=lambda d: d / "proj" / "sub")

    def forged_repo(d):
        repo(d)
        (d / "proj" / "config.json").write_text('{"format": "qdm-run-v1"}')
        (d / "proj" / "loss.csv").write_text("step,loss\n")
    add("--overwrite on a repository root that looks like a run", lambda d: [*TRAIN, "--out", d / "proj", "--overwrite"],
        "repository", setup=forged_repo)

    def home(d):
        (d / "home").mkdir()
        (d / "home" / "config.json").write_text('{"format": "qdm-run-v1"}')
        (d / "home" / "loss.csv").write_text("step,loss\n")
    add("--overwrite on $HOME that looks like a run", lambda d: [*TRAIN, "--out", d / "home", "--overwrite"],
        "home folder", setup=home, env=lambda d: {"HOME": str(d / "home")})

    def symlinked_samples(d):
        copy_run(b, d)
        (d / "victim").mkdir()
        for f in ("epoch_001.png", "epoch_002.png", "thesis.tex"):
            (d / "victim" / f).write_text("mine")
        shutil.rmtree(d / "run" / "samples")
        os.symlink(d / "victim", d / "run" / "samples")
    add("--overwrite on a run whose samples/ links to another folder",
        lambda d: [*TRAIN, "--out", d / "run", "--overwrite"], "samples", setup=symlinked_samples)

    # sample and evaluate never replace a run's own files or earlier results
    for extra in ([], ["--overwrite"]):
        tag = " --overwrite" if extra else ""
        add(f"sample --out <run>/best.png{tag}", lambda d, e=extra: ["sample", d / "run" / "best.pt", "--out",
                                                                     d / "run" / "best.png", *e], "best.pt",
            setup=need_run)
        add(f"evaluate --out <run>/config.json{tag}", lambda d, e=extra: ["evaluate", d / "run" / "best.pt", "--out",
                                                                          d / "run" / "config.json", *e],
            "config.json", setup=need_run)
    add("sample --out <run>/last.png --overwrite", lambda d: ["sample", d / "run" / "best.pt", "--out",
                                                              d / "run" / "last.png", "--overwrite"], "last.pt",
        setup=need_run)

    def mine(d):
        copy_run(b, d)
        shutil.copy(d / "run" / "best.pt", d / "mine.pt")
    add("sample --out mine.png --overwrite (mine.pt is a checkpoint)",
        lambda d: ["sample", d / "run" / "best.pt", "--out", d / "mine.png", "--overwrite"], "is a checkpoint",
        setup=mine)

    def old_json(d):
        copy_run(b, d)
        (d / "old.json").write_text("{}")
    add("evaluate --out an existing file", lambda d: ["evaluate", d / "run" / "best.pt", "--out", d / "old.json"],
        "exists", setup=old_json)

    sample_args = lambda d: ["sample", d / "run" / "best.pt", "--n", "2", "--steps", "2", "--device", "cpu",  # noqa: E731
                             "--no-progress"]

    def sampled_once(d):
        copy_run(b, d)
        r = b.warm(sample_args(d), cwd=d) if not b.fresh_all else b.qdm(sample_args(d), cwd=d)
        if r.returncode:
            return f"the first sample failed (exit {r.returncode}): {stderr_lines(r)[-1:]}"
    add("sample repeated without --overwrite", sample_args, "exists: add --overwrite", setup=sampled_once,
        shown=b.cmd(sample_args(Path("."))) + " (twice)")

    # MNIST files
    def mnist(kind):
        def setup(d):
            raw = d / "data" / "MNIST" / "raw"
            raw.mkdir(parents=True)
            plain = kind in ("bad magic", "truncated idx", "wrong bytes idx")
            src = plain_mnist(b) if plain else b.data / "MNIST" / "raw"
            for f in sorted(src.iterdir()):
                if kind == "missing t10k-labels" and f.name.startswith("t10k-labels"):
                    continue
                shutil.copy(f, raw / f.name)
            if kind == "truncated gz":
                p = raw / "train-images-idx3-ubyte.gz"
                p.write_bytes(p.read_bytes()[:300_000])
            if kind == "truncated t10k gz":
                p = raw / "t10k-images-idx3-ubyte.gz"
                p.write_bytes(p.read_bytes()[:300_000])
            if kind == "wrong bytes gz":
                p = raw / "train-labels-idx1-ubyte.gz"
                data = bytearray(p.read_bytes())
                data[100:120] = bytes(20)
                p.write_bytes(bytes(data))
            if kind == "bad magic":
                p = raw / "train-images-idx3-ubyte"
                data = bytearray(p.read_bytes())
                data[:4] = b"\x00\x00\x09\x03"
                p.write_bytes(bytes(data))
            if kind == "truncated idx":
                p = raw / "train-labels-idx1-ubyte"
                p.write_bytes(p.read_bytes()[:5000])
            if kind == "wrong bytes idx":
                p = raw / "train-images-idx3-ubyte"
                data = bytearray(p.read_bytes())
                data[5000:6000] = bytes(range(256)) * 3 + bytes(232)
                p.write_bytes(bytes(data))
        return setup
    data_env = lambda d: {"QDM_DATA_DIR": str(d / "data"), "QDM_CACHE": str(d / "cache")}  # noqa: E731
    for kind, says in [("truncated gz", "train-images-idx3-ubyte.gz"), ("truncated t10k gz", "t10k-images-idx3-ubyte.gz"),
                       ("wrong bytes gz", "train-labels-idx1-ubyte.gz is not the published"),
                       ("bad magic", "bad magic number"),
                       ("missing t10k-labels", "t10k-labels-idx1-ubyte"),
                       ("wrong bytes idx", "train-images-idx3-ubyte is not the published MNIST file")]:
        add(f"MNIST: {kind}", lambda d: [*TRAIN, "--out", d / "r"], says, setup=mnist(kind), env=data_env,
            protect=lambda d: [d / "data", d / "r", b.data],
            shown=f"QDM_DATA_DIR=<copy with {kind}> " + b.cmd([*TRAIN, "--out", "r"]))

    # the system refuses: permissions, read-only file system, full disk
    def read_only_dir(d):
        ro = d / "ro"
        ro.mkdir()
        (ro / "keep.txt").write_text("mine")
        ro.chmod(0o555)
        try:
            (ro / "probe").write_text("x")
        except PermissionError:
            return None
        (ro / "probe").unlink()
        ro.chmod(0o755)
        return "not applicable as root: root writes into a chmod 555 folder (see the read-only mount cases)"
    add("train --out in a chmod 555 folder", lambda d: [*TRAIN, "--out", d / "ro" / "r"], "permission denied",
        setup=read_only_dir)

    def ro_mount(d):
        return mount_tmpfs(b, d / "mnt", "1m", ro=True, files={"keep.txt": "mine"})
    add("train --out on a read-only file system", lambda d: [*TRAIN, "--out", d / "mnt" / "r"], "read-only",
        setup=ro_mount, shown="mount -t tmpfs -o ro; " + b.cmd([*TRAIN, "--out", "mnt/r"]))
    add("sample --out on a read-only file system",
        lambda d: ["sample", d / "run" / "best.pt", "--n", "2", "--steps", "2", "--no-progress", "--out", d / "mnt" / "s.png"],
        "read-only", setup=lambda d: (copy_run(b, d), ro_mount(d))[1],
        shown="mount -t tmpfs -o ro; python -m qdm sample run/best.pt --out mnt/s.png")

    def full(d, size="64k"):
        return mount_tmpfs(b, d / "mnt", size, files={"keep.txt": "mine"})

    def no_temps(d):
        temps = [p.name for p in (d / "mnt").rglob(".*") if ".tmp" in p.name]
        left = sorted(p.relative_to(d / "mnt").as_posix() for p in (d / "mnt").rglob("*") if p.is_file())
        return not temps, (f"temporary files left: {temps}" if temps else "no temporary file left") + \
            f"; on the disk: {', '.join(left)}"
    add("train --out on a full disk (64 KiB tmpfs)", lambda d: [*TRAIN, "--out", d / "mnt" / "r"], "disk is full",
        setup=full, check=no_temps, protect=lambda d: [d / "mnt" / "keep.txt", b.data],
        shown="mount -t tmpfs -o size=64k; " + b.cmd([*TRAIN, "--out", "mnt/r"]) + " (only keep.txt protected)")
    add("train --out on a full disk (1 MiB tmpfs: the checkpoint does not fit)", lambda d: [*TRAIN, "--out", d / "mnt" / "r"],
        "disk is full", setup=lambda d: full(d, "1m"), check=no_temps, protect=lambda d: [d / "mnt" / "keep.txt", b.data],
        shown="mount -t tmpfs -o size=1m; " + b.cmd([*TRAIN, "--out", "mnt/r"]) + " (only keep.txt protected)")
    add("sample --out on a full disk (64 KiB tmpfs)",
        lambda d: ["sample", d / "run" / "best.pt", "--device", "cpu", "--no-progress", "--out", d / "mnt" / "s.png"],
        "disk is full", setup=lambda d: (copy_run(b, d), full(d))[1], check=no_temps,
        shown="mount -t tmpfs -o size=64k; python -m qdm sample run/best.pt --out mnt/s.png")
    return cases


# ---------------------------------------------------------------------------------------------
# 3. concurrency


def _no_training():
    import qdm.ablations
    import qdm.metrics
    import qdm.reproduce

    def run_cell(folder, preset, dataset, cls, model, seed, proto, *a, **k):
        return fake_cell(seed, cls) | {"preset": preset, "protocol": proto, "model": model}

    def reference_rows(root, dataset, cls, proto, *a, **k):
        return REFS.get(cls, REFS[0]) if cls is not None else REFS[0]
    qdm.metrics.inception = lambda device, compiled=False: None
    for module in (qdm.reproduce, qdm.ablations):
        module.run_cell = run_cell
        module.reference_rows = reference_rows


def _fill_worker(results, runs, index, m, trials, barrier, direct):
    """One of N processes: per trial, m cells of its own column recorded at once with the others."""
    import qdm.reproduce as R
    _no_training()
    for trial in range(trials):
        barrier.wait(timeout=120)
        where = dict(runs_dir=f"{runs}/{trial}", results_dir=f"{results}/{trial}", device="cpu", progress=False)
        if direct:               # one record_table per cell, as fast as possible
            cells = {}
            for s in range(m):
                cell = fake_cell(s, index) | {"preset": "quick", "protocol": R.protocol("quick")}
                cells[R.cell_key(cell)] = cell
                R.record_table("table1", cells, {index: REFS.get(index, REFS[0])}, [index], R.protocol("quick"),
                               "quick", Path(where["results_dir"]))
        else:                    # the real reproduce loop: cell locks, reference rows, record_table
            R.reproduce("table1", "quick", classes=[index], models=["classical"], seeds=range(m), **where)


def ledger_race_case(b: Bench, n: int, m: int, trials: int, direct: bool):
    ctx = multiprocessing.get_context("fork")
    d = b.folder("race", f"ledger-{'direct' if direct else 'reproduce'}")
    barrier = ctx.Barrier(n)
    workers = [ctx.Process(target=_fill_worker, args=(d / "results", d / "runs", i, m, trials, barrier, direct))
               for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    codes = [w.exitcode for w in workers]
    complete, notes = 0, []
    for trial in range(trials):
        out = d / "results" / str(trial)
        try:
            with open(out / "table1_quick_cells.csv") as f:
                got = sorted((r["cls"], r["seed"]) for r in csv.DictReader(f))
            want = sorted((str(i), str(s)) for i in range(n) for s in range(m))
            with open(out / "table1_quick.csv") as f:
                fid = next(r for r in csv.DictReader(f) if r["metric"] == "FID" and r["row"] == "ours classical")
            columns = all(fid.get(str(i)) not in (None, "") for i in range(n))
            locks = list(out.glob(".*.lock*"))
            if got == want and columns and not locks:
                complete += 1
            else:
                notes.append(f"trial {trial}: {len(got)} of {len(want)} rows, all columns shown: {columns}, locks: {len(locks)}")
        except Exception as e:  # noqa: BLE001
            notes.append(f"trial {trial}: {type(e).__name__}: {e}")
    how = "record_table per cell" if direct else "reproduce() with synthetic cells"
    return (f"{n} processes x {m} cells ({how}) at once, {trials} trials: all {n * m} rows in the cells CSV, every "
            "column in the table, no lock left, every process exits 0",
            f"exit codes {codes}; {complete}/{trials} trials complete" + (f"; {'; '.join(notes[:3])}" if notes else ""),
            complete == trials and codes == [0] * n, [])


def _takeover_worker(paths, barrier, queue, index):
    from qdm.locks import me, try_lock
    mine = []
    for p in paths:
        barrier.wait(timeout=60)
        mine.append(try_lock(p))
    queue.put((index, me(), mine))


def stale_takeover_case(b: Bench, n: int = 4, trials: int = 60):
    """``n`` processes find the same stale lock at once (``trials`` locks, each of a dead process)."""
    ctx = multiprocessing.get_context("fork")
    d = b.folder("race", "takeover")
    dead = dead_pid()
    paths = []
    for k in range(trials):
        p = d / f"cell{k}.lock"
        p.write_text(f"{socket.gethostname()} {dead - k % 7}")
        paths.append(p)
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    workers = [ctx.Process(target=_takeover_worker, args=(paths, barrier, queue, i)) for i in range(n)]
    for w in workers:
        w.start()
    got = dict((i, (who, mine)) for i, who, mine in (queue.get(timeout=120) for _ in workers))
    for w in workers:
        w.join(60)
    one_holder = sum(sum(got[i][1][k] for i in got) == 1 and
                     paths[k].read_text() == next(got[i][0] for i in got if got[i][1][k]) for k in range(trials))
    markers = [p.name for p in d.glob("*.takeover-*")]
    return (f"{n} processes take over the same stale lock at once, {trials} locks: each has exactly one holder, "
            "named in the file; no takeover marker left",
            f"{one_holder}/{trials} locks with exactly one holder; wins per process "
            f"{[sum(got[i][1]) for i in sorted(got)]}; markers left: {len(markers)}",
            one_holder == trials and not markers, [])


def _counter_worker(ledger, k, barrier):
    from qdm.locks import ledger_lock
    barrier.wait(timeout=60)
    for _ in range(k):
        with ledger_lock(ledger, timeout=120):
            value = int(Path(ledger).read_text())
            time.sleep(0.001)
            Path(ledger).write_text(str(value + 1))


def mutual_exclusion_case(b: Bench, n: int = 4, k: int = 40):
    """A read-modify-write counter under ledger_lock, its lock first left by a dead process."""
    from qdm.locks import ledger_lock_path
    ctx = multiprocessing.get_context("fork")
    d = b.folder("race", "counter")
    ledger = d / "counter.txt"
    ledger.write_text("0")
    ledger_lock_path(ledger).write_text(f"{socket.gethostname()} {dead_pid()}")
    barrier = ctx.Barrier(n)
    workers = [ctx.Process(target=_counter_worker, args=(ledger, k, barrier)) for _ in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    value = int(ledger.read_text())
    left = [p.name for p in d.iterdir() if p.name != "counter.txt"]
    return (f"{n} processes x {k} increments under ledger_lock (lock first held by a dead process): counter "
            f"{n * k}, nothing left", f"counter {value}; exit codes {[w.exitcode for w in workers]}; left: {left}",
            value == n * k and not left and all(w.exitcode == 0 for w in workers), [])


def two_reproduce_case(b: Bench):
    try:
        return _two_reproduce(b)
    finally:
        if "reproduce" in b.fixtures and not b.fixtures["reproduce"].done():
            b.fixtures["reproduce"].set_result(b.T / "race" / "reproduce" / "results")


def _two_reproduce(b: Bench):
    d = b.folder("race", "reproduce")
    args = [*REPRODUCE[:5], "0,1", *REPRODUCE[6:], "--runs-dir", d / "runs", "--results-dir", d / "results"]
    procs = [b.launch(args, d, d / f"log{i}.txt", errors=d / f"err{i}.txt") for i in range(2)]
    for p in procs:
        p.wait(timeout=900)
    trained, scored = {}, {}
    for i in range(2):
        current = None
        for line in (d / f"log{i}.txt").read_text(errors="replace").splitlines():
            if line.startswith("[reproduce table1] cell ("):
                current = line.split("cell ", 1)[1].split(")")[0] + ")"
                if " done" in line:
                    scored[current] = scored.get(current, 0) + 1
                if "skipped" in line:
                    current = None
            elif "epoch 1:" in line and current:
                trained[current] = trained.get(current, 0) + 1
    cells_csv = d / "results" / "table1_fast_cells.csv"
    rows = sorted((r["cls"], r["model"]) for r in csv.DictReader(open(cells_csv))) if cells_csv.exists() else []
    md = (d / "results" / "table1_fast.md").read_text() if (d / "results" / "table1_fast.md").exists() else ""
    header = next((line for line in md.splitlines() if line.startswith("| Metric")), "")
    locks = [p.name for p in (d / "runs").rglob("*.lock*")]
    codes = [p.returncode for p in procs]
    ok = (rows == [("0", "classical"), ("1", "classical")] and sorted(trained.values()) == [1, 1] and
          len(trained) == 2 and "| 0 | 1 |" in header and not locks and all(c in (0, 2) for c in codes) and 0 in codes)
    return ("each of the 2 cells trained once (in one process), cells CSV and table with both, no lock left, "
            "exit 0 (or 2: every cell held by the other)",
            f"exit codes {codes}; trained per cell {trained}; reported done per cell {scored} (a finished cell is reused, not rescored); cells CSV rows {rows}; "
            f"table columns: {header.strip()}; locks left: {locks}", ok, [])


# ---------------------------------------------------------------------------------------------
# driver


def run_case(b: Bench, category: int, name: str, action: str, fn) -> dict:
    t0 = time.monotonic()
    try:
        expected, observed, passed, changed = fn()
    except Exception as e:  # noqa: BLE001 (a case that breaks is reported as failed, with why)
        expected, observed, passed, changed = "—", f"the case raised {type(e).__name__}: {e}", False, []
        traceback.print_exc()
    result = dict(category=category, name=name, action=action, expected=expected, observed=b.show(observed),
                  passed=passed, changed=[b.show(c) for c in changed], seconds=time.monotonic() - t0)
    mark = {True: "pass", False: "FAIL", None: "n/a"}[passed]
    print(f"[{category}] {mark:4} {name} ({result['seconds']:.0f} s)" +
          ("" if passed is not False else f"\n       expected: {expected}\n       observed: {result['observed']}"),
          flush=True)
    return result


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report(b: Bench, results: list[dict], started: float, load_before, load_after, argv) -> str:
    now = datetime.datetime.now().astimezone()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        head, dirty = "?", False
    lines = [
        "# qdm reliability under attack",
        "",
        f"Generated {now:%Y-%m-%d %H:%M %Z} by `benchmarks/bench_reliability.py` on {socket.gethostname()} "
        f"({os.cpu_count()} CPU cores), code at {head}{' with uncommitted changes' if dirty else ''}; "
        f"{time.monotonic() - started:.0f} s in all, seed {b.seed}.",
        f"Machine load (1, 5, 15 min averages): {', '.join(f'{x:.2f}' for x in load_before)} at the start, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} at the end (other jobs were running: timings and where the "
        "random kills landed depend on it; the verdicts should not).",
        "",
        "Regenerate:",
        "",
        "```",
        "QDM_DATA_DIR=../shared/data TORCH_HOME=../shared/data/torch_hub OMP_WAIT_POLICY=PASSIVE "
        "OMP_NUM_THREADS=1 \\",
        "  .venv/bin/python benchmarks/bench_reliability.py " + shlex.join(argv),
        "```",
        "",
        "Every case ran in a temporary folder of its own (`$T` below). *Changed* counts the files (added, removed or "
        "modified, by sha256) in the folders a case must not touch: for bad inputs the whole case folder and the "
        "MNIST data; for kills a bystander folder, the reference run and the data. *n/a*: the case cannot run "
        "here (the reason is in its row). Bad-input cases marked [warm] ran as a process forked from a warm "
        "interpreter that had imported qdm (`--serve`: the path of `python -m qdm` after its imports, sparing seconds of "
        "CPU per case on a loaded machine); the others, and all of them with `--fresh`, as a fresh `python -m qdm`. "
        "Matplotlib's cache goes to `$T/matplotlib` (MPLCONFIGDIR), so that a case's HOME holds only what qdm writes.",
        "",
        "| Category | Cases | Passed | Failed | n/a | Files changed that should not have been |",
        "|---|---|---|---|---|---|",
    ]
    for c, title in CATEGORIES.items():
        rows = [r for r in results if r["category"] == c]
        if rows:
            lines.append(f"| {c}. {title} | {len(rows)} | {sum(r['passed'] is True for r in rows)} | "
                         f"{sum(r['passed'] is False for r in rows)} | {sum(r['passed'] is None for r in rows)} | "
                         f"{sum(len(r['changed']) for r in rows)} |")
    lines.append(f"| all | {len(results)} | {sum(r['passed'] is True for r in results)} | "
                 f"{sum(r['passed'] is False for r in results)} | {sum(r['passed'] is None for r in results)} | "
                 f"{sum(len(r['changed']) for r in results)} |")
    failed = [r for r in results if r["passed"] is False]
    if failed:
        lines += ["", "Failed: " + "; ".join(f"{r['category']}. {r['name']}" for r in failed) + "."]
    for c, title in CATEGORIES.items():
        rows = [r for r in results if r["category"] == c]
        if not rows:
            continue
        lines += ["", f"## {c}. {title}", "", "| # | Case | Command or action | Expected | Observed | Changed | Pass |",
                  "|---|---|---|---|---|---|---|"]
        for i, r in enumerate(rows, 1):
            changed = str(len(r["changed"])) + (": " + ", ".join(r["changed"][:4]) + (", ..." if len(r["changed"]) > 4
                                                                                        else "") if r["changed"] else "")
            verdict = {True: "pass", False: "**FAIL**", None: "n/a"}[r["passed"]]
            lines.append(f"| {i} | {cell(r['name'])} | `{cell(r['action'])}` | {cell(r['expected'])} | "
                         f"{cell(r['observed'])} | {cell(changed)} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/reliability.md", help="the Markdown report (default results/reliability.md)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points (default 0)")
    ap.add_argument("--jobs", type=int, default=3, help="cases run at once (default 3)")
    ap.add_argument("--only", default="1,2,3", help="categories to run (default 1,2,3)")
    ap.add_argument("--match", help="only the cases whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--fresh", action="store_true", help="run every bad-input case as a fresh python -m qdm "
                    "(slower; default: the cases in FRESH fresh, the others forked from a warm interpreter)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve()
        return 0
    only = {int(x) for x in a.only.split(",")}
    data = Path(os.environ["QDM_DATA_DIR"])
    if not (data / "MNIST" / "raw").is_dir():
        sys.exit(f"no MNIST under {data}: set QDM_DATA_DIR")
    started, load_before = time.monotonic(), os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="qdm-reliability-"))
    b = Bench(tmp, a.seed, data)
    b.fresh_all = a.fresh
    print(f"temporary folder {tmp}", flush=True)
    results = []
    want = lambda name: a.match is None or a.match in name  # noqa: E731
    try:
        # in-process races and kills first, from this thread alone (they fork)
        serial = []
        if 1 in only:
            serial.append((1, "kill a ledger writer 30 times", "fork a process recording cells into "
                           "table1_fast_cells.csv (qdm.reproduce.record_table) in a loop; SIGKILL it after 0-0.25 s; "
                           "check the file; repeat", lambda: kill_ledger_case(b)))
            serial.append((1, "leftovers of the killed ledger writers", "list the hidden files beside the ledger "
                           "after the case above (its last writer finished normally)", lambda: ledger_leftovers_case(b)))
        if 3 in only:
            serial += [
                (3, "4 processes x 6 cells via reproduce(), 3 trials", "fork 4 processes, each reproduce() of its "
                 "own digit, 6 seeds, synthetic cells, same results folder, started on a barrier",
                 lambda: ledger_race_case(b, 4, 6, 3, direct=False)),
                (3, "6 processes x 10 cells via record_table, 3 trials", "fork 6 processes, each record_table once "
                 "per cell as fast as it can, same ledger, started on a barrier",
                 lambda: ledger_race_case(b, 6, 10, 3, direct=True)),
                (3, "4 processes take over one stale lock, 60 times", "60 lock files naming dead processes; 4 "
                 "processes call qdm.locks.try_lock on each, released together by a barrier",
                 lambda: stale_takeover_case(b)),
                (3, "4 processes x 40 increments under ledger_lock", "a counter file read, incremented and written "
                 "under qdm.locks.ledger_lock; its lock first names a dead process",
                 lambda: mutual_exclusion_case(b)),
            ]
        for c, name, action, fn in serial:
            if want(name):
                results.append(run_case(b, c, name, action, fn))

        pooled = []
        pool = ThreadPoolExecutor(max(1, a.jobs))
        if 1 in only:               # the longest chain first
            pooled.append((1, "reproduce killed while scoring", b.cmd(REPRODUCE) + "; SIGKILL 0-3 s after the cell's "
                           "training ended (scoring); rerun to the end; compare with an uninterrupted run",
                           lambda: kill_reproduce_case(b)))
        if 3 in only:
            pooled.append((3, "two reproduce processes on the same 2 cells",
                           b.cmd([*REPRODUCE[:5], "0,1", *REPRODUCE[6:]]) + " (twice at once, same --runs-dir and "
                           "--results-dir)", lambda: two_reproduce_case(b)))
        if 1 in only:
            plans = [("classical", [("any", 3.0, 9.0)]), ("classical", [("final", 0.5)]),
                     ("classical", [("epoch", (1, 3), 4.0), ("final", 0.5)]),
                     ("quantum", [("epoch", (1, 3), 4.0), ("final", 0.5)]),
                     ("shots", [("any", 3.0, 9.0)]), ("shots", [("epoch", (1, 3), 4.0), ("final", 0.5)])]
            words = {"any": "at a random moment", "epoch": "inside a random epoch", "final": "in the final sampling"}
            for config, plan in plans:
                name = f"train {config}: killed " + ", then ".join(words[p[0]] for p in plan)
                action = (b.cmd([*TRAIN, *CONFIGS[config], "--out", "run"]) + "; SIGKILL " +
                          "; again with --resume, SIGKILL ".join(
                              f"{p[1]:.0f}-{p[2]:.0f} s after the start" if p[0] == "any" else
                              f"0-{p[2]:.1f} s after a random epoch {p[1][0]}-{p[1][1]} ended" if p[0] == "epoch" else
                              f"0-{p[1]:.1f} s after the last epoch's last.pt (best.pt, final sampling)" for p in plan)
                          + "; --resume to the end; compare with an uninterrupted run")
                pooled.append((1, name, action, lambda c=config, p=plan: kill_train_case(b, c, p)))
            pooled.append((1, "train: killed while writing its first config.json (simulated)",
                           "run folder holding only .config.tmp<dead pid>.json; " + b.cmd([*TRAIN, "--out", "run",
                                                                                             "--resume"]),
                           lambda: killed_while_writing_first_config(b)))
        if 2 in only:
            pooled += [(2, name, action, fn) for name, action, fn in bad_cases(b)]
        first = [p for p in pooled[:1] if p[0] == 1 and want(p[1])]      # before the fixtures
        futures = [(c, name, pool.submit(run_case, b, c, name, action, fn)) for c, name, action, fn in first]
        for config in CONFIGS if (1 in only or 2 in only) else ():
            b.fixtures[config] = pool.submit(train_reference, b, config)
        if 1 in only:                  # the race of category 3 is an uninterrupted run of the same cell
            race = 3 in only and want("two reproduce processes on the same 2 cells")
            b.fixtures["reproduce"] = Future() if race else pool.submit(reproduce_reference, b)
        futures += [(c, name, pool.submit(run_case, b, c, name, action, fn)) for c, name, action, fn in pooled
                    if want(name) and (c, name) not in {(f[0], f[1]) for f in first}]
        for c, name, f in futures:
            results.append(f.result())
        pool.shutdown()
    finally:
        if b.server is not None:
            b.server.stdin.close()
            b.server.wait(timeout=60)
        for m in b.mounts:
            unmount(m)
        if a.keep:
            print(f"kept {tmp}", flush=True)
        elif tmp.parent == Path(tempfile.gettempdir()) and tmp.name.startswith("qdm-reliability-") and \
                not any(os.path.ismount(m) for m in b.mounts):
            shutil.rmtree(tmp, ignore_errors=True)
    order = {c: i for i, c in enumerate(CATEGORIES)}
    results.sort(key=lambda r: order[r["category"]])        # stable: within a category, the order tried
    text = report(b, results, started, load_before, os.getloadavg(), argv)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp_out.write_text(text)
    os.replace(tmp_out, out)
    failed = [r for r in results if r["passed"] is False]
    print(f"\nwrote {out}: {len(results)} cases, {sum(r['passed'] is True for r in results)} passed, {len(failed)} "
          f"failed, {sum(r['passed'] is None for r in results)} n/a ({time.monotonic() - started:.0f} s)", flush=True)
    for r in failed:
        print(f"  FAILED [{r['category']}] {r['name']}: {r['observed']}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
