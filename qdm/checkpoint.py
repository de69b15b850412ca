"""Files that survive interruptions: atomic writes and checked checkpoint loading.

Every file qdm writes goes to a temporary file in the same folder first, is flushed to disk
and is then renamed over the target (``os.replace`` is atomic), so a crash or a full disk
never leaves half a file behind, and an existing result is only replaced by a complete new one.
Checkpoints are loaded with ``weights_only=True``: tensors and plain values only, so a
checkpoint cannot run code.
"""
import csv
import errno
import hashlib
import io
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import torch

from qdm.errors import UserError

FORMAT = "qdm-checkpoint-v1"
TEMP_NAME = re.compile(r"^\.(.+)\.tmp(\d+)(\.[^.]*)?$")   # atomic_write's .<stem>.tmp<pid><suffix>


def temp_path(path: Path) -> Path:
    """The temporary file atomic_write writes before renaming it to ``path``."""
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)``, flush the result to disk and rename it to ``path``; on any
    error remove the temporary file and leave ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:
        _fsync(path.parent)           # the rename itself (best effort: not every system allows it)
    except OSError:
        pass
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, another user's
        return True
    return True


def remove_stale_temps(folder) -> list[Path]:
    """Remove the temporary files of atomic_write that dead processes left in ``folder`` (and below)."""
    removed = []
    for p in Path(folder).rglob(".*.tmp*"):
        m = TEMP_NAME.match(p.name)
        if m and p.is_file() and not pid_alive(int(m.group(2))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def csv_text(rows: list[dict]) -> str:
    """CSV of a list of dicts, the columns in order of first appearance."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


TORCH_WRITE_FAILED = ("inline_container", "PytorchStreamWriter", "unexpected pos")   # its writer's messages


def _torch_save(obj, tmp, path) -> None:
    """torch.save; torch's zip writer reports a failed write (a full disk) as a RuntimeError from
    its C++ side, re-raised here as the OSError it is, naming the file (other errors pass through)."""
    try:
        torch.save(obj, tmp)
    except RuntimeError as e:
        if not any(mark in str(e) for mark in TORCH_WRITE_FAILED):
            raise
        full = shutil.disk_usage(Path(tmp).parent).free < 2 ** 20       # (the partial file is still there)
        raise OSError(errno.ENOSPC if full else errno.EIO,
                      f"could not write {path} (torch: {str(e).splitlines()[0][:60]})") from None


def sha256(path) -> str:
    """The file's SHA-256 (hex), read in blocks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_tensor(path, tensor: torch.Tensor) -> Path:
    return atomic_write(path, lambda tmp: _torch_save(tensor.cpu(), tmp, path))


def save_checkpoint(path, state: dict) -> Path:
    return atomic_write(path, lambda tmp: _torch_save({"format": FORMAT, **state}, tmp, path))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a qdm checkpoint (tensors and plain values only), or raise a one-line UserError
    saying what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder: give a checkpoint file in it (a run's best.pt)")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (train a model first, or give the path to its best.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        code = re.search(r"GLOBAL ([\w.]+)", str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if code:
            raise UserError(f"{path} is not a qdm checkpoint: it refers to {code.group(1)}, and loading it "
                            "could run code; qdm does not load it (use a checkpoint qdm wrote)") from None
        raise UserError(f"{path} is corrupt or not a torch file ({type(e).__name__}); "
                        "restore it from a copy, or train the run again (--overwrite)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a qdm checkpoint (no '{FORMAT}' marker)")
    return state


def check_out_path(path, what: str = "--out") -> Path:
    """Refuse (one line) an output path that is a file's child; returns it as a Path."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{what} {path} is under {parent}, which is a file, not a folder: choose another {what}")
    return path
