"""A run folder: what qdm writes into one, how to tell one from any other folder, and what
``--overwrite`` may remove (a run's own files, and only from a folder holding nothing else)."""
import json
import re
from pathlib import Path

RUN_FORMAT = "qdm-run-v1"        # in every run's config.json: what --overwrite may replace
RUN_LOGS = {"config.json", "loss.csv", "epochs.csv", "loss.png", "samples"}   # what a run writes besides .pt
RUN_FILES = re.compile("|".join([     # every file qdm writes into a run folder, by the name it gives it
    r"(config|summary)\.json", r"(loss|epochs)\.csv", r"(loss|samples)\.png", r"(best|last|samples)\.pt",
    r"samples/epoch_\d{3,}\.png", r"snapshots/epoch_\d{3,}\.pt",                    # train
    r"samples_\w+_n\d+_seed-?\d+\.(png|pt)", r"eval_\w+_n\d+_seed-?\d+\.json",       # sample, evaluate
    r"metrics-[\w-]+-seed-?\d+\.json", r"generated-[\w-]+-batch\d+\.pt",              # a table's cell
    r"snapshots/epoch_\d{3,}-[\w-]+\.json"]))                                       # curve
# A file a person put there (best_keep.pt, samples_for_paper.png) is not one: --overwrite refuses.
RUN_FOLDERS = ("samples", "snapshots")


def is_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run's config.json written by qdm (older runs: with a qdm_version)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (config.get("format") == RUN_FORMAT or "qdm_version" in config)


def run_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(the files in ``folder`` that qdm writes into a run, everything else)."""
    ours, other = [], []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_dir() and not p.is_symlink():
            if rel.as_posix() not in RUN_FOLDERS and rel.parts[0] not in RUN_FOLDERS:
                other.append(p)
            continue
        mine = RUN_FILES.fullmatch(rel.as_posix()) is not None
        (ours if mine else other).append(p)
    return ours, other


def folder_contents(folder: Path, run: bool, other: list[Path]) -> str:
    """What a folder holds, in words: a run, a run and other files, or other files."""
    if not run:
        other = sorted(folder.iterdir())
    names = ", ".join(p.relative_to(folder).as_posix() for p in other[:3]) + (", ..." if len(other) > 3 else "")
    if run:
        return f"a run and other files ({names})" if other else "a run"
    return f"other files ({names}), not a qdm run"


def never_replaced(folder: Path) -> str | None:
    """Why --overwrite must never empty ``folder`` (the cwd or above it, home, a root, a repository), or None."""
    here, cwd, home = folder.resolve(), Path.cwd().resolve(), Path.home().resolve()
    if here == cwd or here in cwd.parents:
        return "the current folder or one above it"
    if here == home or here in home.parents:
        return "the home folder or one above it"
    if here.parent == here:
        return "a filesystem root"
    if (here / ".git").exists():
        return "a repository's root (it holds .git)"
    return None


def remove_run(folder: Path, files: list[Path]) -> None:
    """Remove a run's own files (and its samples/ and snapshots/ folders once empty); nothing else."""
    for p in files:
        p.unlink()
    for name in RUN_FOLDERS:
        if (folder / name).is_dir() and not any((folder / name).iterdir()):
            (folder / name).rmdir()
