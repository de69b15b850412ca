"""Files that survive interruptions: atomic writes and checked checkpoint loading.

Every file qdm writes goes to a temporary file in the same folder first and is then renamed
over the target (``os.replace`` is atomic), so a crash or a full disk never leaves half a
file behind, and an existing result is only replaced by a complete new one.
"""
import csv
import io
import json
import os
from pathlib import Path

import torch

from qdm.errors import UserError

FORMAT = "qdm-checkpoint-v1"


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``; on any error remove the
    temporary file and leave ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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


def save_checkpoint(path, state: dict) -> Path:
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a qdm checkpoint, or raise a one-line UserError saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (train a model first, or give the path to its best.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise UserError(f"{path} is corrupt or not a torch file ({type(e).__name__}); "
                        "re-run training or use the run's last.pt") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a qdm checkpoint (no '{FORMAT}' marker)")
    return state
