"""Lock files for what several processes share: a cell (its run folder; a held cell is skipped), a
training run's folder (a second trainer stops with one line) and a ledger (a results file that
processes read, merge and write back; its lock is waited for).

A lock is a file holding ``<host> <pid>`` of its holder, created atomically (O_EXCL) and removed
on release, so it also works for machines that share a folder. It is a lease: its holder touches
the file (a heartbeat) every quarter of ``LEASE_SECONDS`` while it holds a cell, and a lock not
touched for longer than that is stale, whichever machine wrote it (a machine that died, a job its
scheduler killed); so is, at once, a lock of a dead process on this host. A stale lock is taken
over; the takeover is itself exclusive (first a marker named after the dead holder is created
with O_EXCL, then the holder is checked again and replaced), so two processes that find the same
stale lock never both hold it.
"""
import errno
import os
import random
import socket
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path

from qdm.checkpoint import TEMP_NAME, pid_alive
from qdm.errors import UserError

LEASE_SECONDS = float(os.environ.get("QDM_LEASE_SECONDS", 900))   # a lock untouched this long is stale


def me() -> str:
    """This process, as a lock file names its holder."""
    return f"{socket.gethostname()} {os.getpid()}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _stale(holder: str, path: Path) -> bool:
    """A lock whose holder is a dead process on this host, or whose lease ran out (not touched for
    LEASE_SECONDS; an empty file is being written: held)."""
    host, _, pid = holder.strip().partition(" ")
    if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
        return True
    try:
        return time.time() - path.stat().st_mtime > LEASE_SECONDS
    except FileNotFoundError:
        return False


def _take_over(path: Path, holder: str) -> bool:
    """Replace the stale lock ``holder`` by ours; False when another process got there first."""
    marker = path.with_name(f"{path.name}.takeover-{holder.split()[-1]}")    # one taker per dead holder
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    try:
        if _read(path) != holder:            # taken over (or released) meanwhile
            return False
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(me())
        os.replace(tmp, path)                # nobody else may replace this holder while we hold the marker
        return True
    finally:
        marker.unlink(missing_ok=True)


def try_lock(path) -> bool:
    """Take the lock file ``path`` if it is free or stale; False when a live process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):                       # again when the lock is released while we look at it
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _read(path)
            if holder is None:
                continue
            return _stale(holder, path) and _take_over(path, holder)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(me())
        except BaseException:                # a full disk: no empty lock left behind to block others
            path.unlink(missing_ok=True)
            raise
        return True
    return False


def unlock(path) -> None:
    """Release a lock this process holds (a lock of another holder is left alone)."""
    if _read(Path(path)) == me():
        Path(path).unlink(missing_ok=True)


def _heartbeat(path: Path, stop: threading.Event) -> None:
    """Touch the lock ``path`` every quarter lease while this process holds it."""
    while not stop.wait(LEASE_SECONDS / 4):
        if _read(path) != me():
            return
        try:
            os.utime(path)
        except FileNotFoundError:
            return


@contextmanager
def _kept(path: Path, mine: bool):
    """While the block runs, keep the lease ``path`` (taken by this process if ``mine``) alive with
    a heartbeat; release it at the end, however the block ends."""
    stop = threading.Event()
    if mine:
        threading.Thread(target=_heartbeat, args=(path, stop), daemon=True).start()
    try:
        yield mine
    finally:
        stop.set()
        if mine:
            unlock(path)


def cell_lock(path):
    """Hold ``path`` as a cell's lease; yields False (and holds nothing) when another live process
    holds it, so that two workers, or two machines sharing the runs folder, never run the same cell.
    A heartbeat keeps the lease while the cell runs."""
    return _kept(Path(path), try_lock(path))


@contextmanager
def run_lease(out: Path, hold: bool = True):
    """A training run's lease on its folder, ``.<name>.lock`` beside it: a second process told to
    train the same folder (``--resume`` twice, two grids) stops with one line instead of writing it
    too. Where the folder's parent cannot be written (a writable folder in a read-only one), the run
    trains without a lease, after a warning. ``hold=False`` (the other ranks of a torchrun job)
    takes nothing."""
    out = Path(out).resolve()                # one lease per folder, whatever path names it
    path = out.parent / f".{out.name}.lock"
    try:
        mine = hold and try_lock(path)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        warnings.warn(f"cannot write {path} ({e.strerror}): training without a lease, so nothing stops "
                      "a second trainer of this folder")
        hold = mine = False
    if hold and not mine:
        raise UserError(f"{out} is being trained by {(_read(path) or 'another process').strip()}: wait for it "
                        f"to finish, or delete {path} if that process is gone, or choose another --out")
    with _kept(path, mine):
        yield


def ledger_lock_path(ledger) -> Path:
    return Path(ledger).with_name(f".{Path(ledger).name}.lock")


@contextmanager
def ledger_lock(ledger, timeout: float = 600.0):
    """Hold the lock of the results file ``ledger`` (``.<name>.lock`` beside it), waiting for it:
    every read-merge-write of a ledger, and of the files written from it, happens inside."""
    path = ledger_lock_path(ledger)
    deadline = time.monotonic() + timeout
    while not try_lock(path):
        holder = _read(path)
        if holder == me():
            raise RuntimeError(f"{path} is already held by this process")
        if time.monotonic() > deadline:
            raise UserError(f"{path} has been held by {holder or 'another process'} for over {timeout:.0f} s: "
                            "delete it (and any .takeover file beside it) if that process is gone")
        time.sleep(random.uniform(0.005, 0.05))
    try:
        for tmp in Path(ledger).parent.glob(".*.tmp*"):        # what writers killed meanwhile left
            if TEMP_NAME.match(tmp.name) and not pid_alive(int(TEMP_NAME.match(tmp.name).group(2))):
                tmp.unlink(missing_ok=True)
        yield
    finally:
        unlock(path)
