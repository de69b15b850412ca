"""Command line: ``python -m qdm train|sample|evaluate|reproduce|ablate|curve|info`` (each with --help).

User mistakes (unknown dataset or digit, missing data, a corrupt or mismatched checkpoint,
a wrong shape, a value out of range) and what the system refuses (a full or read-only disk,
a permission) end with one line on stderr and exit status 2, never a traceback.
"""
import argparse
import errno
import json
import os
import pickle
import sys
import zipfile
from dataclasses import MISSING, fields
from pathlib import Path
from typing import get_args

from qdm.diffusion import SAMPLERS
from qdm.errors import UserError
from qdm.inference import check_precision, for_sampling, worth_compiling

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _preset_values(default, value_in) -> str:
    """'default X; qdm Y, fast Z': the default (the paper's recipe) and under every preset that changes it
    (``value_in(train values)`` is the value a preset sets, or MISSING)."""
    from qdm.presets import PRESETS
    changed = [f"{p.name} {v}" for p in PRESETS.values() if (v := value_in(p.train)) is not MISSING and v != default]
    return f"default {'none' if default is None else default}" + (f"; {', '.join(changed)}" if changed else "")


def _add_option(group, flags, typ, help_text):
    if typ is bool:
        group.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    else:
        group.add_argument(*flags, type=typ, default=None, metavar=typ.__name__.upper(), help=help_text)


def _add_train(sub):
    """The train command, one flag per TrainConfig field (qdm.train), its help and its value under
    each preset read from the field and from qdm.presets; a dict field (the U-Net's and the gate's
    options) gets a flag per option it lists."""
    from qdm.presets import PRESETS
    from qdm.train import TrainConfig
    p = sub.add_parser("train", help="train a model on one class (or several) and sample from it",
                       description="Train the paper's U-Net (classical or quantum gate) with EMA; writes a run "
                                   "folder with config.json, loss.csv, epochs.csv, loss.png, per-epoch sample "
                                   "grids, best.pt, last.pt, samples.png and summary.json. Every value omitted "
                                   "is the preset's (shown as 'default ...; <preset> ...').")
    p.add_argument("--preset", help="default paper; with --resume, the run's own. "
                                    + "; ".join(f"{k}: {v.about}" for k, v in PRESETS.items()))
    p.add_argument("--out", help="run folder (default runs/<dataset>-<classes>-<model>-<preset>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt (start it if absent)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out: removes a qdm run's own files, only from a folder holding "
                        "nothing else (never the current folder, home or a repository)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    groups = {}
    for f in fields(TrainConfig):
        m = f.metadata
        if f.name == "preset":
            continue
        group = groups.get(m["group"]) or groups.setdefault(m["group"], p.add_argument_group(m["group"]))
        if "options" in m:
            for flag, (key, typ, text) in m["options"].items():
                values = "" if f.name == "quantum" else f" ({_preset_values(False, lambda t, n=f.name, k=key: t.get(n, {}).get(k, MISSING))})"
                _add_option(group, [_flag(flag)], typ, text + values)
            continue
        typ = str if "parse" in m else next((t for t in get_args(f.type) if t is not type(None)), f.type)
        default = f.default if f.default is not MISSING else f.default_factory()
        shown = _preset_values(default, lambda t, n=f.name: t.get(n, MISSING))
        _add_option(group, m.get("flags", (_flag(f.name),)), typ, f"{m['help']} ({shown})")


def _add_sample(sub):
    p = sub.add_parser("sample", help="draw samples from a trained checkpoint",
                       description="Sample from a checkpoint's EMA weights; writes a PNG grid (and a .pt tensor).")
    p.add_argument("checkpoint", help="a run's best.pt or last.pt")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--sampler", default="ddim", help=f"{', '.join(SAMPLERS)} (default ddim; ddpm runs all T steps)")
    p.add_argument("--steps", type=int, default=100, help="network evaluations of the other samplers (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="fp32", help="fp32 (default) or bf16: the network in bfloat16 (qdm.inference)")
    p.add_argument("--out", help="PNG path (default: next to the checkpoint, "
                                 "samples_<sampler><steps>_n<N>_seed<seed>.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (never a checkpoint)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="FID, KID and SSIM of a checkpoint's samples against the test images",
                       description="Sample N images from a checkpoint's EMA weights and score them against the "
                                   "test images of its class (the protocol of qdm.reproduce); writes JSON.")
    p.add_argument("checkpoint", help="a run's best.pt or last.pt")
    _add_protocol(p)
    p.add_argument("--out", help="JSON path (default: next to the checkpoint, "
                                 "eval_<sampler><steps>_n<N>_seed<seed>.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (never a run's own files)")
    _add_device_and_data(p)


def _add_device_and_data(p):
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data-dir", help="data root (default $QDM_DATA_DIR, else ./data)")


def _add_protocol(p, sampler_default="the preset's protocol, ddpm for Tables I and II"):
    p.add_argument("--n", type=int, help="generated images per class (default 1000; fast preset 16)")
    p.add_argument("--sampler", help=f"{', '.join(SAMPLERS)} (default: {sampler_default})")
    p.add_argument("--steps", type=int, help="sampler steps (default: all T for ddpm, which runs every one; the "
                                             "preset's for its sampler, else 100)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--precision",
                   help="fp32 or bf16: the network in bfloat16 while sampling (qdm.inference; default: the preset's "
                        "protocol, fp32 for Tables I and II; a protocol of its own, recorded in the results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_reproduce(sub):
    p = sub.add_parser("reproduce", help="fill the paper's Table I (MNIST) or Table II (PathMNIST)",
                       description="Train (or reuse) every cell (model x class x seed), evaluate it and write "
                                   "results/<table>.md, .csv, _cells.csv and a figure per cell, with the paper's "
                                   "numbers beside ours. Resumable cell by cell: rerun the same command to continue.")
    p.add_argument("table", help="table1 (MNIST digits 0-9) or table2 (PathMNIST: all classes, and label 1)")
    p.add_argument("--preset", default="paper", help="paper (default), quick, study, qdm, or fast (minutes, for tests)")
    p.add_argument("--classes", "--digits", dest="classes", help="columns to run, e.g. 0,1 (default: the table's)")
    p.add_argument("--models", default="classical,quantum", help="classical,quantum (default both)")
    p.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--merge", metavar="FOLDER",
                   help="run nothing: add the cells another machine recorded in its results folder FOLDER "
                        "(this preset and protocol; cells recorded here stay) and rewrite the tables")
    _add_grid_options(p, "runs/reproduce")


def _add_grid_options(p, runs_dir: str):
    """The options shared by the commands that fill a table cell by cell."""
    _add_protocol(p)
    p.add_argument("--runs-dir", default=runs_dir, help=f"where the cells' run folders go (default {runs_dir})")
    p.add_argument("--results-dir", help="where the tables go (default results/; fast preset: inside --runs-dir)")
    _add_device_and_data(p)
    _add_executor(p)


def _add_executor(p):
    """How a grid's cells run (qdm.experiments.grid)."""
    g = p.add_argument_group("running the cells (qdm.experiments.grid)")
    g.add_argument("--jobs", type=int, default=1, help="cells run at once in worker processes here (default 1)")
    g.add_argument("--executor", default="local",
                   help="local (here, default), submitit (a job per cell on SLURM, or local processes without "
                        "it) or commands (print one command per cell to run, for SLURM arrays, xargs or any queue)")
    g.add_argument("--cluster", help="submitit's cluster: slurm, local or debug (default: slurm where there is one)")
    g.add_argument("--submitit", default="", metavar="KEY=VALUE,...",
                   help="submitit parameters, e.g. timeout_min=120,slurm_partition=gpu,gpus_per_node=1")


def _add_ablate(sub):
    p = sub.add_parser("ablate", help="compare the gates at the bottleneck (quantum and classical controls)",
                       description="Train (or reuse) every cell (MNIST digit x gate x seed), evaluate it and write "
                                   "results/ablations.md, .csv and _cells.csv: per digit and gate, the gate's "
                                   "trainable parameters, FID, KID, SSIM (mean ± std over seeds) and step time, "
                                   "with the real-vs-real floor. Resumable: rerun the same command to continue.")
    p.add_argument("--digits", "--classes", dest="classes", default="0,1,8", help="MNIST digits (default 0,1,8)")
    p.add_argument("--study", default="ablations",
                   help="ablations (the gates at the bottleneck, default), noise (the quantum noise options) or "
                        "recipe (the qdm recipe's changes, each undone; the preset sets the steps)")
    p.add_argument("--variants", "--gates", dest="variants",
                   help="comma-separated, from the study's variants (default all); ablations: classical, "
                        "quantum-paper-detached, quantum-paper, quantum-rz_ry, quantum-ry, cosine, mlp, se; "
                        "noise: see qdm.ablations.NOISE; recipe: see qdm.ablations.RECIPE")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (default 0,1,2)")
    p.add_argument("--preset", default="paper", help="paper (default), quick, study (the quick recipe, 10 epochs), "
                                                     "qdm, or fast (minutes, for tests)")
    _add_grid_options(p, "runs/ablations")


def _add_curve(sub):
    p = sub.add_parser("curve", help="learning curves: FID and KID of a run's EMA snapshots against training steps",
                       description="Score every snapshots/epoch_NNN.pt of each run (trained with --snapshot-every; "
                                   "the qdm preset keeps one every 10 epochs) and write learning_curves.csv and "
                                   ".png. Scores are cached next to the snapshots: rerun to add new ones.")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--every", type=int, default=1, help="score every K-th snapshot of each run, counted back from its last (default 1: all)")
    _add_protocol(p, sampler_default="ddim with the preset's steps: many snapshots are scored")
    p.add_argument("--out", default="results", help="folder for learning_curves.csv and .png (default results/)")
    _add_device_and_data(p)
    _add_executor(p)


def _add_info(sub):
    sub.add_parser("info", help="versions, presets and the U-Net's parameter counts",
                   description="Print the versions, the training presets and the model's parameter counts.")


def resumed_config(a) -> dict | None:
    """With --resume, --out holding a qdm run and no --preset: the run's own configuration (config.json),
    so that a run continues with only the flags given changed; otherwise None."""
    from qdm.runfolder import is_run
    from qdm.train import TrainConfig
    if not (a.resume and a.out and a.preset is None and is_run(Path(a.out))):
        return None
    names = {f.name for f in fields(TrainConfig)}
    run = {k: v for k, v in json.loads((Path(a.out) / "config.json").read_text()).items() if k in names}
    return run if "preset" in run else None          # None: a config.json of a qdm from before presets


def train_config(a):
    """The TrainConfig of a parsed train command: the preset's values (with --resume of a run, the run's
    own), then the flags given (a dict field: the preset's or run's options, then the given ones)."""
    import dataclasses
    from qdm.data import parse_classes
    from qdm.presets import get_preset
    from qdm.train import TrainConfig, make_config
    run = resumed_config(a) or {}
    preset = a.preset or run.pop("preset", "paper")
    recipe, values = {**get_preset(preset).train, **run}, {}   # a field newer than the run: its preset's value
    for f in fields(TrainConfig):
        if "options" in f.metadata:
            given = {key: getattr(a, flag) for flag, (key, _, _) in f.metadata["options"].items()
                     if getattr(a, flag) is not None}
            values[f.name] = {**recipe.get(f.name, {}), **given} if given else None
        elif f.name != "preset":
            values[f.name] = getattr(a, f.name)
    values["classes"] = None if a.classes is None else parse_classes(a.classes)
    given = {k: v for k, v in values.items() if k != "classes" and v is not None}
    cfg = make_config(preset, **{**run, **given})
    if a.classes is not None:                     # "all" is None: every class, not "omitted"
        cfg = dataclasses.replace(cfg, classes=values["classes"]).check()
    return cfg


def cmd_train(a):
    from qdm.train import train
    cfg = train_config(a)
    label = "all" if cfg.classes is None else "-".join(map(str, cfg.classes))
    out = Path(a.out or f"runs/{cfg.dataset}-{label}-{cfg.model}-{cfg.preset}-seed{cfg.seed}")
    summary = train(cfg, out, resume=a.resume, overwrite=a.overwrite, progress=not a.no_progress)
    if summary:                                   # under torchrun, only rank 0 has one
        print(json.dumps(summary, indent=2))
        print(f"run folder: {out}  (samples.png, loss.png, summary.json)")


def _at_least_1(a, *names):
    for name in names:
        value = getattr(a, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be a whole number of at least 1, got {value}")


def _is_checkpoint(path: Path) -> bool:
    from qdm.checkpoint import load_checkpoint
    try:
        load_checkpoint(path)
    except UserError:
        return False
    return True


def _new_output(path: Path, suffix: str, overwrite: bool) -> Path:
    """Refuse to write ``path`` over a checkpoint or a run's config.json or summary.json (ever), or over
    any other existing file without --overwrite."""
    from qdm.checkpoint import check_out_path
    from qdm.runfolder import is_run
    path = check_out_path(path)
    if path.suffix.lower() != suffix:
        raise UserError(f"--out {path} must end in {suffix}")
    if path.is_dir():
        raise UserError(f"--out {path} is a folder: give a file name ending in {suffix}")
    if path.name in ("best.pt", "last.pt", "config.json", "summary.json") and is_run(path.parent):
        raise UserError(f"{path} is a run's own {path.name}: qdm never writes over it; choose another --out")
    if not path.exists():
        return path
    if path.suffix == ".pt" and _is_checkpoint(path):
        raise UserError(f"{path} is a checkpoint: qdm never writes over it; choose another --out")
    if not overwrite:
        raise UserError(f"{path} exists: add --overwrite to replace it, or choose another --out")
    return path


def cmd_sample(a):
    import torch
    from qdm.checkpoint import save_tensor
    from qdm.data import DATASETS
    from qdm.plots import save_grid
    from qdm.train import make_diffusion, model_from_checkpoint, resolve_device
    _at_least_1(a, "n", "steps")
    if a.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {a.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    check_precision(a.precision)
    device = resolve_device(a.device)
    model, cfg = model_from_checkpoint(a.checkpoint, device)
    steps = cfg.T if a.sampler == "ddpm" else a.steps
    tag = "" if a.precision == "fp32" else f"_{a.precision}"
    out = Path(a.out or Path(a.checkpoint).with_name(f"samples_{a.sampler}{steps}{tag}_n{a.n}_seed{a.seed}.png"))
    _new_output(out, ".png", a.overwrite)
    _new_output(out.with_suffix(".pt"), ".pt", a.overwrite)
    diffusion = make_diffusion(cfg)
    with torch.inference_mode():
        eps = for_sampling(model, a.precision, worth_compiling(steps * a.n, a.precision))
        images = diffusion.sample(eps, (a.n, DATASETS[cfg.dataset][0], 28, 28),
                                  a.sampler, a.steps, generator=torch.Generator().manual_seed(a.seed), device=device,
                                  progress=not a.no_progress)
    save_tensor(out.with_suffix(".pt"), images)
    save_grid(images, out)
    print(f"wrote {out} and {out.with_suffix('.pt')}")


def _int_list(spec: str, what: str) -> list[int]:
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--{what} must be comma-separated integers, got {spec!r}") from None


def cmd_evaluate(a):
    from qdm.checkpoint import write_json
    from qdm.reproduce import evaluate_checkpoint, protocol
    from qdm.train import model_from_checkpoint
    _at_least_1(a, "n", "steps")
    _, cfg = model_from_checkpoint(a.checkpoint)
    proto = protocol(cfg.preset, a.n, a.sampler, a.steps, a.seed, a.precision, T=cfg.T)
    out = Path(a.out or Path(a.checkpoint).with_name(
        f"eval_{proto['sampler']}{proto['steps']}{'_' + proto['precision'] if 'precision' in proto else ''}"
        f"_n{proto['n']}_seed{proto['seed']}.json"))
    _new_output(out, ".json", a.overwrite)
    result, _, _ = evaluate_checkpoint(a.checkpoint, proto, device=a.device, data_dir=a.data_dir,
                                       progress=not a.no_progress)
    write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "protocol"}, indent=2))
    print(f"wrote {out}")


def _grid(a) -> dict:
    """The grid options of a parsed command, for reproduce, ablate and write_curves."""
    slurm = {}
    for item in filter(None, (x.strip() for x in a.submitit.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--submitit takes key=value pairs separated by commas, got {item!r}")
        slurm[key] = int(value) if value.isdigit() else value
    return {"jobs": a.jobs, "executor": a.executor, "cluster": a.cluster, "slurm": slurm}


def cmd_reproduce(a):
    from qdm.data import check_dataset
    from qdm.reproduce import TABLES, against_floor, merge_results, protocol, reproduce
    classes = None
    if a.classes is not None:   # "0,1"; for table2 "all" is the column of all classes together
        classes = [None if c.strip() == "all" else c for c in a.classes.split(",") if c.strip()]
        classes = [c if c is None else _int_list(c, "classes")[0] for c in classes]
        if a.table in TABLES:
            check_dataset(TABLES[a.table][0], [c for c in classes if c is not None])
    _at_least_1(a, "n", "steps", "jobs")
    proto = protocol(a.preset, a.n, a.sampler, a.steps, a.seed, a.precision)
    if a.merge:
        path, added = merge_results(a.table, a.merge, a.preset, proto, a.runs_dir, a.results_dir)
        print(f"added {added} cells from {a.merge}; wrote {path} (and .csv, _cells.csv, figures in {path.parent})")
        return
    path = reproduce(a.table, a.preset, classes, [m.strip() for m in a.models.split(",") if m.strip()],
                     _int_list(a.seeds, "seeds"), proto, a.runs_dir, a.results_dir, a.device, a.data_dir,
                     progress=not a.no_progress, **_grid(a))
    if path is None:                              # --executor commands: the cells' commands are printed
        return
    print(path.read_text())
    for r in against_floor(path.parent, a.table, a.preset, proto):
        print(f"class {r['class']} {r['model']} seed {r['seed']}: FID {r['FID']:.2f} = {r['FID / floor']:.2f}x the "
              f"real-vs-real floor {r['floor']:.2f} ({r['train_minutes']:.0f} min training, "
              f"{r['sample_minutes']:.0f} min sampling)")
    print(f"wrote {path} (and .csv, _cells.csv, figures in {path.parent})")


def cmd_ablate(a):
    from qdm.ablations import ablate
    from qdm.reproduce import protocol
    classes = _int_list(a.classes, "digits")
    variants = [v.strip() for v in a.variants.split(",") if v.strip()] if a.variants else None
    _at_least_1(a, "n", "steps")
    proto = protocol(a.preset, a.n, a.sampler, a.steps, a.seed, a.precision)
    path = ablate(classes, variants, _int_list(a.seeds, "seeds"), a.preset, proto, a.runs_dir, a.results_dir,
                  a.device, a.data_dir, progress=not a.no_progress, study=a.study, **_grid(a))
    if path is None:
        return
    print(path.read_text())
    print(f"wrote {path} (and .csv, _cells.csv in {path.parent})")


def cmd_curve(a):
    from qdm.curves import write_curves
    from qdm.reproduce import protocol
    config = Path(a.runs[0]) / "config.json"
    if not config.exists():
        raise UserError(f"{a.runs[0]} is not a run folder (no config.json)")
    if a.every < 1:
        raise UserError(f"--every must be a positive whole number (every K-th snapshot), got {a.every}")
    _at_least_1(a, "n", "steps")
    run = json.loads(config.read_text())                 # the protocol of the runs' preset, DDIM by default
    proto = protocol(run["preset"], a.n, a.sampler or "ddim", a.steps, a.seed, a.precision, T=run.get("T"))
    path = write_curves(a.runs, proto, a.out, a.device, a.data_dir, every=a.every, **_grid(a))
    if path is None:
        return
    print(f"wrote {path} and {path.with_suffix('.png')}")


def cmd_info(a):
    import torch
    import qdm
    from qdm.presets import PRESETS
    from qdm.train import TrainConfig, build_model
    from qdm.unet import count_parameters
    print(f"qdm {qdm.__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    for ds in ("mnist", "pathmnist"):
        n = count_parameters(build_model(TrainConfig(dataset=ds, classes=None)))
        print(f"classical U-Net parameters ({ds}): {n:,}")
    for p in PRESETS.values():
        print(f"preset {p.name}: {p.train or 'the paper recipe (TrainConfig defaults)'}; scored with "
              f"{p.sampler}-{p.steps}, N = {p.n}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


SYSTEM_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space, or write elsewhere (--out, QDM_CACHE)",
    errno.EDQUOT: "the disk quota is used up: free some space, or write elsewhere (--out, QDM_CACHE)",
    errno.EROFS: "the file system is read-only: write elsewhere (--out, QDM_CACHE)",
    errno.EACCES: "permission denied: write elsewhere (--out, QDM_CACHE) or fix the permissions",
    errno.EPERM: "not permitted: write elsewhere (--out, QDM_CACHE) or fix the permissions",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "it is a folder, not a file: check the path",
}


def _system_error(e: OSError) -> str:
    """An error of the system (a full or read-only disk, a permission) as one line: the file and what to do."""
    where = f"{e.filename}: " if e.filename else ""
    advice = SYSTEM_ADVICE.get(e.errno, "check the path, its permissions and the free disk space")
    return f"{where}{_one_line(e.strerror or e)}; {advice}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qdm", description=__doc__.splitlines()[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_sample, _add_evaluate, _add_reproduce, _add_ablate, _add_curve, _add_info):
        add(sub)
    return parser


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        {"train": cmd_train, "sample": cmd_sample, "evaluate": cmd_evaluate, "reproduce": cmd_reproduce,
         "ablate": cmd_ablate, "curve": cmd_curve, "info": cmd_info}[a.command](a)
    except UserError as e:
        print(f"qdm {a.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:            # the reader of the output stopped (| head): nothing went wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())     # no second error at exit
        return 0
    except OSError as e:
        print(f"qdm {a.command}: error: {_system_error(e)}", file=sys.stderr)
        return 2
    except (EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        print(f"qdm {a.command}: error: a file is truncated or not in its expected format ({type(e).__name__}: "
              f"{_one_line(e)}); delete it to have it downloaded or written again, or check --data-dir",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qdm {a.command}: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130
    return 0
