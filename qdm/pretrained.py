"""Trained weights for the book: the few models its chapters show, committed in ``pretrained/``.

``pretrained/manifest.json`` lists each model: its weights file (the EMA weights and the training
configuration, as a run's ``best.pt`` holds them), the exact ``TrainConfig``, the command and the
run that trained it, and the sha256 and size of every committed file (the weights and the small
training logs the chapters plot: ``loss.csv``, ``epochs.csv`` and some per-epoch EMA sample grids).

    from qdm.pretrained import load, log_folder
    model, cfg = load("qdm-mnist0-classical")

``load`` is "load if present, else train": a committed file is checked against the manifest (a
checksum mismatch or an unreadable file is a one-line error, never a quiet retrain); an absent
file is replaced by training the manifest's exact configuration into ``runs/pretrained/<name>``
(once; later calls reuse that run). ``python -m qdm.pretrained RUN NAME --command "..."`` adds or
updates an entry from a finished run.
"""
import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from qdm.checkpoint import sha256
from qdm.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "pretrained"
MANIFEST = FOLDER / "manifest.json"
RUNS = ROOT / "runs" / "pretrained"          # where an absent model is trained
LOGS = ("loss.csv", "epochs.csv")


def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def entry(name: str) -> dict:
    models = manifest()
    if name not in models:
        raise UserError(f"no pretrained model {name!r} in {MANIFEST.relative_to(ROOT)}: "
                        f"choose one of {', '.join(models)}")
    return models[name]


def checked(name: str, file: str) -> Path:
    """The committed ``file`` of model ``name``, after checking its size and sha256."""
    expected = entry(name)["files"][file]
    path = FOLDER / file
    try:
        size, digest = path.stat().st_size, sha256(path)
    except OSError as e:
        raise UserError(f"cannot read {path.relative_to(ROOT)}: {e.strerror}") from None
    if (size, digest) != (expected["bytes"], expected["sha256"]):
        raise UserError(f"{path.relative_to(ROOT)} does not match {MANIFEST.relative_to(ROOT)} "
                        f"(sha256 {digest[:12]}..., {size} bytes; expected {expected['sha256'][:12]}..., "
                        f"{expected['bytes']} bytes): restore it with `git checkout -- pretrained/`")
    return path


def load(name: str, device="cpu"):
    """(model with the EMA weights of ``name``, its TrainConfig): the committed weights when
    present (checked), else the manifest's configuration trained into runs/pretrained/<name>."""
    from qdm.train import TrainConfig, model_from_checkpoint, train
    info = entry(name)
    path = FOLDER / info["weights"]
    if path.exists():
        model, cfg = model_from_checkpoint(checked(name, info["weights"]), device)
        if any(asdict(cfg).get(key) != value for key, value in info["config"].items()):
            raise UserError(f"{path.relative_to(ROOT)} holds another configuration than "
                            f"{MANIFEST.relative_to(ROOT)} lists for {name}")
        return model, cfg
    run = RUNS / name
    if not (run / "summary.json").exists():
        print(f"{path.relative_to(ROOT)} is absent: training its manifest configuration into "
              f"{run.relative_to(ROOT)} ({info['command']}; {info['trained']['train_minutes']:.0f} min "
              f"on the machine that trained it)")
        train(TrainConfig(**info["config"]), run, resume=True, progress=False)
    return model_from_checkpoint(run / "best.pt", device)


def log_folder(name: str) -> Path:
    """The folder holding ``loss.csv``, ``epochs.csv`` and ``samples/epoch_NNN.png`` of ``name``:
    the committed one (every file checked), else the run that ``load`` trained."""
    info = entry(name)
    logs = [f for f in info["files"] if f != info["weights"]]
    if all((FOLDER / f).exists() for f in logs):
        for f in logs:
            checked(name, f)
        return FOLDER / name
    run = RUNS / name
    if not (run / "epochs.csv").exists():
        load(name)
    return run


def export(run: Path, name: str, command: str, epochs: list[int]) -> dict:
    """Copy a finished run's EMA weights (its best.pt), its logs and the sample grids of
    ``epochs`` into pretrained/, and write their manifest entry."""
    import torch

    from qdm.checkpoint import load_checkpoint, write_json
    from qdm.train import model_from_checkpoint
    run = Path(run)
    summary = json.loads((run / "summary.json").read_text())
    _, cfg = model_from_checkpoint(run / "best.pt")           # a readable checkpoint of this qdm
    files = {**{f"{name}/{f}": run / f for f in LOGS},
             **{f"{name}/samples/epoch_{e:03d}.png": run / "samples" / f"epoch_{e:03d}.png" for e in epochs}}
    shutil.rmtree(FOLDER / name, ignore_errors=True)
    for target, source in files.items():
        (FOLDER / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, FOLDER / target)
    # Saved again rather than copied: the archive inside is then named after the file.
    torch.save(load_checkpoint(run / "best.pt"), FOLDER / f"{name}.pt")
    files[f"{name}.pt"] = run / "best.pt"
    models = manifest() if MANIFEST.exists() else {}
    models[name] = {
        "weights": f"{name}.pt",
        "what": f"EMA weights (best by {summary['best_by']}, epoch {summary['best_epoch']}) of the "
                f"{cfg.preset} recipe, {cfg.model} model, {cfg.dataset} {cfg.classes}, seed {cfg.seed}",
        "command": command,
        "config": asdict(cfg),
        "trained": {"epochs": summary["epochs"], "steps": summary["steps"], "device": summary["device"],
                    "train_minutes": round(summary["train_seconds"] / 60, 1),
                    "parameters": summary["parameters"]},
        "files": {target: {"sha256": sha256(FOLDER / target), "bytes": (FOLDER / target).stat().st_size}
                  for target in files},
    }
    write_json(MANIFEST, models)
    return models[name]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m qdm.pretrained", description=export.__doc__)
    parser.add_argument("run", type=Path, help="a finished run folder (summary.json, best.pt, logs)")
    parser.add_argument("name", help="the model's name in the manifest")
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--epochs", default="1,2,3,5,10,20,30", help="epochs whose sample grids to keep")
    args = parser.parse_args(argv)
    info = export(args.run, args.name, args.command, [int(e) for e in args.epochs.split(",")])
    total = sum(f["bytes"] for f in info["files"].values())
    print(f"{args.name}: {len(info['files'])} files, {total / 1e6:.1f} MB, in {FOLDER.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
