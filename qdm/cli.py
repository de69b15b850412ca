"""Command line: ``python -m qdm train|sample|evaluate|reproduce|ablate|curve|info`` (each with --help).

User mistakes (unknown dataset or digit, missing data, a corrupt or mismatched checkpoint,
a wrong shape, a value out of range) and what the system refuses (a full or read-only disk,
a permission) end with one line on stderr and exit status 2, never a traceback.
"""
import argparse
import errno
import json
import pickle
import sys
import zipfile
from pathlib import Path

from qdm.diffusion import SAMPLERS
from qdm.errors import UserError
from qdm.inference import check_precision, for_sampling

QUANTUM_OPTIONS = {  # CLI flag -> QuantumGate argument
    "quantum_backend": "backend", "ansatz": "ansatz", "qubits": "n_qubits", "qlayers": "n_layers",
    "detach_input": "detach_input", "pl_device": "pl_device", "diff_method": "diff_method", "shots": "shots",
    "channel": "channel", "noise_p": "noise_p", "noise_schedule": "noise_schedule",
}


def _add_train(sub):
    p = sub.add_parser("train", help="train a model on one class (or several) and sample from it",
                       description="Train the paper's U-Net (classical or quantum gate) with EMA; writes a run "
                                   "folder with config.json, loss.csv, epochs.csv, loss.png, per-epoch sample "
                                   "grids, best.pt, last.pt, samples.png and summary.json.")
    p.add_argument("--preset", default="paper",
                   help="paper (the paper's recipe), quick (the ~5 min demo), study (quick for 10 epochs: the "
                        "ablation and noise studies), qdm (the qdm recipe) or fast (CI)")
    p.add_argument("--dataset", default="mnist", help="mnist or pathmnist")
    p.add_argument("--classes", "--digit", dest="classes", default="0",
                   help="class label(s) to train on: 0, or 0,1, or all (default 0)")
    p.add_argument("--model", default="classical",
                   help="classical, quantum, or a classical control gate (qdm.gates): cosine, mlp or se")
    p.add_argument("--out", help="run folder (default runs/<dataset>-<classes>-<model>-<preset>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt (start it if absent)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out: removes a qdm run's own files, only from a folder holding "
                        "nothing else (never the current folder, home or a repository)")
    for name, typ in [("epochs", int), ("steps-per-epoch", int), ("batch-size", int), ("lr", float),
                      ("lr-schedule", str), ("warmup-steps", int), ("grad-clip", float), ("snapshot-every", int),
                      ("ema-decay", float), ("seed", int), ("val-size", int), ("schedule", str), ("T", int),
                      ("best-by", str), ("final-samples", int), ("final-sampler", str), ("final-steps", int),
                      ("device", str), ("data-dir", str)]:
        p.add_argument(f"--{name}", type=typ, help="(preset value when omitted)")
    p.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction, default=None,
                   help="EMA decay min(beta, (1+n)/(10+n)) at update n")
    u = p.add_argument_group("U-Net options (the qdm recipe; off in the paper's)")
    u.add_argument("--time-every-scale", action=argparse.BooleanOptionalAction, default=None,
                   help="add the time embedding to every encoder and decoder map, not only the bottleneck")
    u.add_argument("--skip-mid", action=argparse.BooleanOptionalAction, default=None,
                   help="a second skip connection (14x14)")
    q = p.add_argument_group("quantum gate (with --model quantum)")
    q.add_argument("--quantum-backend", help="exact (fast torch simulator, default) or pennylane")
    q.add_argument("--ansatz", help="paper (RZ + CNOT chain), rz_ry (official later fix) or ry (real amplitudes)")
    q.add_argument("--qubits", type=int, help="number of qubits (default 16)")
    q.add_argument("--qlayers", type=int, help="number of variational layers (default 3)")
    q.add_argument("--detach-input", action="store_true", default=None,
                   help="detach the circuit input from autograd, as the official code does")
    q.add_argument("--pl-device", help="PennyLane device name for --quantum-backend pennylane (default.qubit)")
    q.add_argument("--diff-method", help="PennyLane diff_method: backprop, adjoint, parameter-shift")
    q.add_argument("--shots", type=int, help="finite shots (default: exact expectations): PennyLane's, or "
                                             "sampled exactly by the exact backend (qdm.noise)")
    z = p.add_argument_group("quantum noise and noise scheduling (qdm.noise; all off by default)")
    z.add_argument("--channel", help="depolarizing or bitflip after every circuit layer, with --noise-p")
    z.add_argument("--noise-p", type=float, help="the channel's probability p (default 0)")
    z.add_argument("--noise-schedule", help="the gate's noise level over t: constant (default), linear or cosine")
    z.add_argument("--eps-source", help="epsilon from torch (default) or quantum (measured |+> bits)")
    z.add_argument("--t-sampling", help="t in training: uniform (default, the paper), linear or cosine weighted")
    z.add_argument("--t-reweight", action=argparse.BooleanOptionalAction, default=None,
                   help="importance weights 1/(T p(t)) on the loss with a weighted --t-sampling")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


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


def _add_protocol(p):
    p.add_argument("--n", type=int, help="generated images per class (default 1000; fast preset 16)")
    p.add_argument("--sampler", help=f"{', '.join(SAMPLERS)} (default: the preset's protocol, ddpm for Tables I and II)")
    p.add_argument("--steps", type=int, help="sampler steps (default 1000 for ddpm, 100 for the others)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--precision", default="fp32",
                   help="fp32 (default) or bf16: the network in bfloat16 while sampling (qdm.inference; a protocol "
                        "of its own, recorded in the results)")
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
    _add_grid_options(p, "runs/reproduce")
    p.add_argument("--jobs", type=int, default=1, help="cells run at once in worker processes (default 1)")


def _add_grid_options(p, runs_dir: str):
    """The options shared by the commands that fill a table cell by cell."""
    _add_protocol(p)
    p.add_argument("--runs-dir", default=runs_dir, help=f"where the cells' run folders go (default {runs_dir})")
    p.add_argument("--results-dir", help="where the tables go (default results/; fast preset: inside --runs-dir)")
    _add_device_and_data(p)


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
    _add_protocol(p)
    p.add_argument("--out", default="results", help="folder for learning_curves.csv and .png (default results/)")
    _add_device_and_data(p)


def _add_info(sub):
    sub.add_parser("info", help="versions, presets and the U-Net's parameter counts",
                   description="Print the versions, the training presets and the model's parameter counts.")


def cmd_train(a):
    from qdm.data import parse_classes
    from qdm.train import PRESETS, make_config, train
    quantum = {arg: getattr(a, flag) for flag, arg in QUANTUM_OPTIONS.items() if getattr(a, flag) is not None}
    unet = {k: getattr(a, k) for k in ("time_every_scale", "skip_mid") if getattr(a, k) is not None}
    classes = parse_classes(a.classes)
    cfg = make_config(a.preset, dataset=a.dataset, classes=classes, model=a.model, quantum=quantum,
                      unet={**PRESETS.get(a.preset, {}).get("unet", {}), **unet} if unet else None,
                      lr_schedule=a.lr_schedule, warmup_steps=a.warmup_steps, grad_clip=a.grad_clip,
                      snapshot_every=a.snapshot_every,
                      epochs=a.epochs, steps_per_epoch=a.steps_per_epoch, batch_size=a.batch_size, lr=a.lr,
                      ema_decay=a.ema_decay, ema_warmup=a.ema_warmup, seed=a.seed, val_size=a.val_size,
                      schedule=a.schedule, T=a.T, best_by=a.best_by, final_samples=a.final_samples,
                      final_sampler=a.final_sampler, final_steps=a.final_steps, device=a.device,
                      data_dir=a.data_dir, eps_source=a.eps_source, t_sampling=a.t_sampling,
                      t_reweight=a.t_reweight)
    label = "all" if classes is None else "-".join(map(str, classes))
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
    from qdm.train import is_run
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
        images = diffusion.sample(for_sampling(model, a.precision), (a.n, DATASETS[cfg.dataset][0], 28, 28),
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
    proto = protocol(cfg.preset, a.n, a.sampler, a.steps, a.seed, a.precision)
    out = Path(a.out or Path(a.checkpoint).with_name(
        f"eval_{proto['sampler']}{proto['steps']}{'_' + proto['precision'] if 'precision' in proto else ''}"
        f"_n{proto['n']}_seed{proto['seed']}.json"))
    _new_output(out, ".json", a.overwrite)
    result, _, _ = evaluate_checkpoint(a.checkpoint, proto, device=a.device, data_dir=a.data_dir,
                                       progress=not a.no_progress)
    write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "protocol"}, indent=2))
    print(f"wrote {out}")


def cmd_reproduce(a):
    from qdm.data import check_dataset
    from qdm.reproduce import TABLES, against_floor, protocol, reproduce
    classes = None
    if a.classes is not None:   # "0,1"; for table2 "all" is the column of all classes together
        classes = [None if c.strip() == "all" else c for c in a.classes.split(",")]
        classes = [c if c is None else _int_list(c, "classes")[0] for c in classes]
        if a.table in TABLES:
            check_dataset(TABLES[a.table][0], [c for c in classes if c is not None])
    _at_least_1(a, "n", "steps", "jobs")
    proto = protocol(a.preset, a.n, a.sampler, a.steps, a.seed, a.precision)
    path = reproduce(a.table, a.preset, classes, [m.strip() for m in a.models.split(",") if m.strip()],
                     _int_list(a.seeds, "seeds"), proto, a.runs_dir, a.results_dir, a.device, a.data_dir,
                     progress=not a.no_progress, jobs=a.jobs)
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
                  a.device, a.data_dir, progress=not a.no_progress, study=a.study)
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
    preset = json.loads(config.read_text())["preset"]     # the protocol of the runs' preset, DDIM by default
    proto = protocol(preset, a.n, a.sampler or "ddim", a.steps, a.seed, a.precision)
    path = write_curves(a.runs, proto, a.out, a.device, a.data_dir, every=a.every)
    print(f"wrote {path} and {path.with_suffix('.png')}")


def cmd_info(a):
    import torch
    import qdm
    from qdm.train import PRESETS, TrainConfig, build_model
    from qdm.unet import count_parameters
    print(f"qdm {qdm.__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    for ds in ("mnist", "pathmnist"):
        n = count_parameters(build_model(TrainConfig(dataset=ds, classes=None)))
        print(f"classical U-Net parameters ({ds}): {n:,}")
    for name, values in PRESETS.items():
        print(f"preset {name}: {values or 'the paper recipe (TrainConfig defaults)'}")


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qdm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_sample, _add_evaluate, _add_reproduce, _add_ablate, _add_curve, _add_info):
        add(sub)
    a = parser.parse_args(argv)
    try:
        {"train": cmd_train, "sample": cmd_sample, "evaluate": cmd_evaluate, "reproduce": cmd_reproduce,
         "ablate": cmd_ablate, "curve": cmd_curve, "info": cmd_info}[a.command](a)
    except UserError as e:
        print(f"qdm {a.command}: error: {e}", file=sys.stderr)
        return 2
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
