"""Training (paper Section IV-E and V-A): Adam, epsilon-MSE, EMA (Eq. 10), best model kept.

A run lives in one folder:
    config.json   the full configuration, the qdm and torch versions
    loss.csv      the training loss of every step;  epochs.csv  one row per epoch
    samples/epoch_NNN.png   EMA samples after every epoch (fixed noise, so epochs compare)
    loss.png      the loss curves;  samples.png  the final EMA samples;  summary.json
    last.pt       everything needed to resume, every RNG included (written every epoch, before best.pt)
    best.pt       the EMA weights with the lowest validation loss
"""
import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

import qdm
from qdm.checkpoint import (TEMP_NAME, check_out_path, csv_text, load_checkpoint, remove_stale_temps,
                            save_checkpoint, save_tensor, write_json, write_text)
from qdm.data import DATASETS, check_dataset, train_val_images
from qdm.diffusion import SAMPLERS, Diffusion
from qdm.errors import UserError, check_choice
from qdm.gates import CONTROL_GATES
from qdm.inference import for_sampling, memory_layout, preview_precision
from qdm.locks import run_lease
from qdm.plots import plot_losses, save_grid
from qdm.runfolder import RUN_FORMAT, RUN_LOGS, folder_contents, is_run, never_replaced, remove_run, run_files
from qdm.presets import PRESETS as ALL_PRESETS, get_preset
from qdm.quantum.epsilon import eps_function
from qdm.schedule import make_schedule
from qdm.timesteps import T_SAMPLING, sample_t
from qdm.unet import UNet, count_parameters


def option(default, help: str, must_match: bool = False, group: str = "training", **cli):
    """A TrainConfig field: its default (the paper's recipe), its --help text, whether a resumed run
    must have the same value, and how the command line shows it (qdm.cli builds the train command
    from these fields; ``cli`` may hold ``flags``, ``parse`` and, for a dict field, ``options``)."""
    metadata = {"help": help, "must_match": must_match, "group": group, **cli}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


UNET_OPTIONS = {   # flag -> (qdm.unet.UNet argument, type, help)
    "time_every_scale": ("time_every_scale", bool, "add the time embedding to every encoder and decoder map, "
                                                   "not only the bottleneck"),
    "skip_mid": ("skip_mid", bool, "a second skip connection (14x14)"),
}
QUANTUM_OPTIONS = {  # flag -> (qdm.quantum.QuantumGate argument, type, help)
    "quantum_backend": ("backend", str, "exact (fast torch simulator, default) or pennylane"),
    "ansatz": ("ansatz", str, "paper (RZ + CNOT chain), rz_ry (official later fix) or ry (real amplitudes)"),
    "qubits": ("n_qubits", int, "number of qubits (default 16)"),
    "qlayers": ("n_layers", int, "number of variational layers (default 3)"),
    "detach_input": ("detach_input", bool, "detach the circuit input from autograd, as the official code does"),
    "pl_device": ("pl_device", str, "PennyLane device for --quantum-backend pennylane (default.qubit)"),
    "diff_method": ("diff_method", str, "PennyLane diff_method: backprop, adjoint, parameter-shift"),
    "shots": ("shots", int, "finite shots (default: exact expectations): PennyLane's, or sampled exactly by "
                            "the exact backend"),
    "channel": ("channel", str, "depolarizing or bitflip after every circuit layer, with --noise-p"),
    "noise_p": ("noise_p", float, "the channel's probability p (default 0)"),
    "noise_schedule": ("noise_schedule", str, "the gate's noise level over t: constant (default), linear or cosine"),
}


NOISE_GROUP = "quantum noise and noise scheduling (qdm.timesteps, qdm.quantum; off by default)"


@dataclass
class TrainConfig:
    """One run's configuration. Defaults are the paper's recipe (Section V-A): 30 epochs, batch 64,
    Adam 3e-4, EMA 0.999; presets (qdm.presets) change some of them."""
    dataset: str = option("mnist", "mnist or pathmnist", must_match=True)
    classes: list | None = option([0], "class label(s) to train on: 0, or 0,1, or all", must_match=True,
                                  flags=("--classes", "--digit"), parse="classes")
    model: str = option("classical", "classical, quantum, or a classical control gate (qdm.gates): cosine, mlp "
                                     "or se", must_match=True)
    quantum: dict = option({}, "options of qdm.quantum.QuantumGate", must_match=True, group="quantum gate "
                           "(with --model quantum; channel and shots: quantum noise)", options=QUANTUM_OPTIONS)
    epochs: int = option(30, "training epochs")
    steps_per_epoch: int | None = option(None, "steps per epoch (omitted: every batch of the training set)",
                                         must_match=True)
    batch_size: int = option(64, "batch size", must_match=True)
    lr: float = option(3e-4, "Adam learning rate", must_match=True)
    lr_schedule: str = option("constant", "constant (the paper) or warmup_cosine: linear warm-up, cosine decay to "
                                          "lr/10", must_match=True)
    warmup_steps: int = option(0, "warm-up steps of warmup_cosine", must_match=True)
    grad_clip: float | None = option(None, "clip the gradient's global norm (not in the paper)", must_match=True)
    unet: dict = option({}, "options of qdm.unet.UNet", must_match=True,
                        group="U-Net options (the qdm recipe; off in the paper's)", options=UNET_OPTIONS)
    snapshot_every: int = option(0, "keep the EMA weights every this many epochs (0: never; learning curves)")
    ema_decay: float = option(0.999, "EMA decay beta (Eq. 10)", must_match=True)
    ema_warmup: bool = option(False, "EMA decay min(beta, (1+n)/(10+n)) at update n (not in the paper)",
                              must_match=True)
    schedule: str = option("cosine", "noise schedule: cosine (the paper), linear or sigmoid", must_match=True)
    T: int = option(1000, "diffusion steps", must_match=True)
    eps_source: str = option("torch", "epsilon from torch or quantum (measured |+> bits)", must_match=True,
                             group=NOISE_GROUP)
    t_sampling: str = option("uniform", "t in training: uniform (the paper), linear or cosine weighted",
                             must_match=True, group=NOISE_GROUP)
    t_reweight: bool = option(False, "importance weights 1/(T p(t)) on the loss with a weighted --t-sampling",
                              must_match=True, group=NOISE_GROUP)
    seed: int = option(0, "training seed", must_match=True)
    val_size: int = option(256, "validation images held out of the training set", must_match=True)
    best_by: str = option("val", "best.pt by the EMA validation loss (val) or the last batch's loss (last_batch, "
                                 "the official code)")
    grid_size: int = option(16, "EMA samples drawn after every epoch", group="sampling during and after training")
    grid_sampler: str = option("ddpm", "their sampler (the paper's: ddpm, all T steps)",
                               group="sampling during and after training")
    grid_steps: int = option(100, "their steps (not ddpm)", group="sampling during and after training")
    final_samples: int = option(64, "EMA samples drawn from best.pt at the end",
                                group="sampling during and after training")
    final_sampler: str = option("ddpm", "their sampler", group="sampling during and after training")
    final_steps: int = option(1000, "their steps (not ddpm)", group="sampling during and after training")
    device: str = option("auto", "auto, cpu or cuda")
    data_dir: str | None = option(None, "data root (omitted: $QDM_DATA_DIR, else ./data)")
    preset: str = option("paper", "the preset these values started from (qdm.presets)")

    def check(self) -> "TrainConfig":
        """Refuse, before any work, a value no run can use (one line naming the option and what it needs)."""
        def need(name, ok, what):
            if not ok:
                raise UserError(f"--{name.replace('_', '-')} must be {what}, got {getattr(self, name)!r}")

        def whole(v, least):
            return isinstance(v, int) and not isinstance(v, bool) and v >= least

        def positive(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

        for name in ("epochs", "batch_size", "val_size", "T", "grid_size", "grid_steps", "final_samples",
                     "final_steps"):
            need(name, whole(getattr(self, name), 1), "a whole number of at least 1")
        for name in ("warmup_steps", "snapshot_every"):
            need(name, whole(getattr(self, name), 0), "a whole number of at least 0")
        need("steps_per_epoch", self.steps_per_epoch is None or whole(self.steps_per_epoch, 1),
             "a whole number of at least 1 (omit it for every batch)")
        need("lr", positive(self.lr), "a positive finite number")
        need("grad_clip", self.grad_clip is None or positive(self.grad_clip),
             "a positive finite number (omit it for no clipping)")
        need("ema_decay", isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1,
             "at least 0 and below 1")
        if self.best_by not in ("val", "last_batch"):
            raise UserError(f"unknown --best-by {self.best_by!r}: choose val or last_batch")
        for name in ("grid_sampler", "final_sampler"):
            if getattr(self, name) not in SAMPLERS:
                raise UserError(f"unknown --{name.replace('_', '-')} {getattr(self, name)!r}: "
                                f"choose one of {', '.join(SAMPLERS)}")
        check_choice(self.lr_schedule, LR_SCHEDULES, "lr schedule")
        check_choice(self.t_sampling, T_SAMPLING, "t sampling")
        return self


PRESETS = {name: p.train for name, p in ALL_PRESETS.items()}   # the training values of each preset


def make_config(preset: str = "paper", **overrides) -> TrainConfig:
    recipe = get_preset(preset).train
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))}")
    values = {**recipe, **{k: v for k, v in overrides.items() if v is not None}, "preset": preset}
    return TrainConfig(**values).check()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA GPU: use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


MODELS = ("classical", "quantum", *CONTROL_GATES)   # the gate at the bottleneck: none, the VQC, qdm.gates


def build_model(cfg: TrainConfig) -> UNet:
    """The U-Net with the gate the config names (Eq. 8): none for classical, the VQC for quantum,
    a classical control gate of qdm.gates for cosine, mlp and se."""
    check_dataset(cfg.dataset, cfg.classes)
    if cfg.model == "classical":
        gate = None
    elif cfg.model == "quantum":
        from qdm.quantum import QuantumGate
        gate = QuantumGate(**{"T": cfg.T, **cfg.quantum})
    elif cfg.model in CONTROL_GATES:
        gate = CONTROL_GATES[cfg.model]()
    else:
        raise UserError(f"unknown model {cfg.model!r}: choose {', '.join(MODELS[:-1])} or {MODELS[-1]}")
    try:
        return UNet(in_channels=DATASETS[cfg.dataset][0], gate=gate, **cfg.unet)
    except TypeError:
        raise UserError(f"unknown U-Net option in {cfg.unet}: choose from time_every_scale, skip_mid") from None


def make_diffusion(cfg: TrainConfig) -> Diffusion:
    """The config's diffusion schedule and epsilon source (torch.randn, or qdm.quantum.epsilon.quantum_randn)."""
    return Diffusion(make_schedule(cfg.schedule, cfg.T), noise=eps_function(cfg.eps_source))


@torch.no_grad()
def ema_update(ema_model, model, decay: float) -> None:
    """Eq. 10: theta_EMA <- beta theta_EMA + (1 - beta) theta, for every parameter;
    buffers (if any) are copied."""
    for p_ema, p in zip(ema_model.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - decay)
    for b_ema, b in zip(ema_model.buffers(), model.buffers()):
        b_ema.copy_(b)


LR_SCHEDULES = ("constant", "warmup_cosine")


def lr_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of update ``step`` (0-based): cfg.lr, or with warmup_cosine a linear
    warm-up over cfg.warmup_steps, then a cosine decay from cfg.lr to cfg.lr / 10 at the last step."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    check_choice(cfg.lr_schedule, LR_SCHEDULES, "lr schedule")
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total_steps - 1 - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    return min(cfg.ema_decay, (1 + step) / (10 + step)) if cfg.ema_warmup else cfg.ema_decay


def model_from_checkpoint(path, device="cpu", weights: str = "ema"):
    """(model with the checkpoint's EMA or raw weights, its TrainConfig)."""
    state = load_checkpoint(path)
    try:
        cfg = TrainConfig(**state["config"])
        model = build_model(cfg)
        model.load_state_dict(state[weights])
    except (KeyError, TypeError, RuntimeError) as e:
        raise UserError(f"{path} does not match this version of qdm's model "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    return model.to(device).eval(), cfg


RESUME_MUST_MATCH = tuple(f.name for f in fields(TrainConfig) if f.metadata["must_match"])


LAST_KEYS = ("config", "model", "ema", "optimizer", "rng", "history")
LOSS_PLOTS = 10              # loss.png is redrawn about this many times a run (each costs a few steps' time)


def _prepare_folder(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> dict | None:
    """Return the state to resume from, or None for a fresh run; refuse to clobber a run or
    anything that is not one. ``overwrite`` removes a run's own files, and only from a folder
    that holds nothing else. With ``resume``, a run stopped before its first checkpoint (its
    config.json and logs, no .pt file) has nothing to resume and starts again."""
    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: choose another --out")
    last = out / "last.pt"
    if resume and last.exists():
        state = load_checkpoint(last)
        old = state.get("config")
        if not isinstance(old, dict):
            raise UserError(f"cannot resume {out}: its last.pt holds no config; "
                            "put the run's own last.pt back, or start again with --overwrite")
        defaults = asdict(TrainConfig())    # for fields newer than the run
        diff = [k for k in RESUME_MUST_MATCH if old.get(k, defaults[k]) != asdict(cfg).get(k)]
        if diff:
            raise UserError(f"cannot resume {out}: its run has a different {', '.join(diff)} "
                            f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); leave out those flags and --preset "
                            "(--resume then takes the run's own), or choose another --out")
        return state
    if not out.exists() or not any(out.iterdir()):
        return None
    run = is_run(out)
    if overwrite:
        reason = never_replaced(out)
        if reason:
            raise UserError(f"--overwrite never empties {out}: it is {reason} "
                            f"(it holds {folder_contents(out, run, [])}); choose another --out")
    ours, other = run_files(out) if run else ([], [])      # only a run's folder is looked through
    unstarted = run and not other and all(p.relative_to(out).parts[0] in RUN_LOGS for p in ours)
    holds = folder_contents(out, run, other)
    if run and not other and (overwrite or (resume and unstarted)):
        remove_run(out, ours)
        return None
    if overwrite:
        raise UserError(f"{out} holds {holds}: --overwrite only replaces a folder holding a qdm run and "
                        "nothing else; move those files or choose another --out")
    if resume:
        raise UserError(f"{out} holds {holds} but no last.pt to resume from: "
                        + ("use --overwrite or another --out" if run and not other
                           else "move those files away or choose another --out"))
    if run:
        raise UserError(f"{out} already holds {holds}: --resume continues it, --overwrite replaces it, "
                        "or choose another --out")
    raise UserError(f"{out} holds {holds}: choose another --out")


def _score(cfg: TrainConfig, row: dict) -> float:
    return row["val_loss_ema"] if cfg.best_by == "val" else row["last_batch_loss"]


def _resume_state(out: Path, cfg: TrainConfig, state: dict) -> dict:
    """Check that last.pt can resume a run, and write what its epoch wrote after it: last.pt comes
    first every epoch, so a run killed before best.pt (or a snapshot) was replaced, or whose best.pt
    is gone, gets them from last.pt's EMA weights (standing in as the best when the best are lost)."""
    missing = [k for k in LAST_KEYS if k not in state]
    if missing:
        raise UserError(f"cannot resume {out}: its last.pt has no {', '.join(missing)} (a copy of best.pt?); "
                        "put the run's own last.pt back, or start again with --overwrite")
    h = state["history"]
    if h["epoch"] == 0:
        return state
    best = out / "best.pt"
    try:
        have = load_checkpoint(best).get("epoch") if best.exists() else None
    except UserError:
        have = None
    if have != h["best_epoch"]:
        if h["best_epoch"] != h["epoch"]:
            h["best"], h["best_epoch"] = _score(cfg, h["epochs"][-1]), h["epoch"]
        save_checkpoint(best, {"config": asdict(cfg), "ema": state["ema"], "epoch": h["epoch"], "step": h["step"],
                               "score": h["best"]})
    snap = out / "snapshots" / f"epoch_{h['epoch']:03d}.pt"
    if cfg.snapshot_every and h["epoch"] % cfg.snapshot_every == 0 and not snap.exists():
        save_checkpoint(snap, {"config": asdict(cfg), "ema": state["ema"], "epoch": h["epoch"], "step": h["step"]})
    return state


def _join_process_group(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device). Under ``torchrun --nproc_per_node=N`` (WORLD_SIZE > 1)
    join the process group: gloo on CPU, nccl on CUDA with one GPU per local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def train(cfg: TrainConfig, out_dir, resume: bool = False, overwrite: bool = False,
          progress: bool = True, data: tuple | None = None) -> dict:
    """Train per ``cfg`` into ``out_dir`` and return the run's summary. ``data`` =
    (train_images, val_images) replaces loading the dataset (tests).

    Data-parallel under torchrun: every rank draws the same global batch (same permutation, t and
    noise from the same seeded generator) and takes its share, the samples rank, rank + N, ...
    (what a DistributedSampler does to an index list, here applied to each global batch so
    that the run equals a one-process run with the same global batch); DistributedDataParallel
    averages the gradients. Rank 0 alone validates, keeps the EMA and writes every file."""
    cfg.check()
    out = check_out_path(out_dir)
    rank, world, device = _join_process_group(resolve_device(cfg.device))
    with run_lease(out, hold=rank == 0):          # one trainer per folder
        return _train(cfg, out, resume, overwrite, progress, data, rank, world, device)


def _train(cfg: TrainConfig, out: Path, resume: bool, overwrite: bool, progress: bool, data: tuple | None,
           rank: int, world: int, device: torch.device) -> dict:
    """train()'s body, run while it holds the folder's lease."""
    state = _open_run(out, cfg, resume, overwrite, rank, world)
    train_x, val_x = _training_images(cfg, data)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device, memory_format=memory_layout(device))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    diffusion = make_diffusion(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)        # all training randomness
    history = {"steps": [], "epochs": [], "best": float("inf"), "best_epoch": 0, "step": 0, "epoch": 0,
               "train_seconds": 0.0}
    if state is not None:
        history = _restore(state, model, ema, opt, gen, device)
    if rank == 0:
        write_json(out / "config.json", _run_config(cfg, model, device, world))
    net, share = _data_parallel(model, device, rank, world)
    val_loss = _validation_loss(cfg, diffusion, val_x, device)
    batches = -(-len(train_x) // cfg.batch_size)
    steps_per_epoch = min(batches, cfg.steps_per_epoch or batches)
    model.train()
    for epoch in range(history["epoch"] + 1, cfg.epochs + 1):
        perm = torch.randperm(len(train_x), generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress or rank > 0,
                   leave=False)
        t0 = time.perf_counter()
        for b in bar:
            x0 = train_x[perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            t, weights = sample_t(len(x0), cfg.T, cfg.t_sampling, gen, cfg.t_reweight)   # uniform: randint
            noise = diffusion.randn(x0.shape, gen)                                        # torch: randn
            loss = diffusion.loss(net, x0[share].to(device), t=t[share].to(device), noise=noise[share].to(device),
                                  weights=None if weights is None else weights[share].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, history["step"], cfg.epochs * steps_per_epoch)
            opt.step()
            history["step"] += 1
            loss = _global_mean(loss.detach(), world)    # the global batch's loss, for the log
            if rank == 0:
                ema_update(ema, model, ema_decay_at(cfg, history["step"]))
                history["steps"].append({"step": history["step"], "epoch": epoch, "loss": loss.item()})
                bar.set_postfix(loss=f"{loss.item():.4f}")
        seconds = time.perf_counter() - t0
        if rank == 0:
            history["train_seconds"] += seconds
            _end_of_epoch(out, cfg, epoch, steps_per_epoch, seconds, history, model, ema, opt, gen, diffusion,
                          val_loss, device, progress)
    summary = finish(out, cfg, device, progress) if rank == 0 else {}
    if world > 1:
        _leave_process_group()
    return summary


def _run_config(cfg: TrainConfig, model, device, world: int) -> dict:
    """config.json: the configuration, what wrote it and where it ran."""
    return {"format": RUN_FORMAT, **asdict(cfg), "qdm_version": qdm.__version__, "torch_version": torch.__version__,
            "device_used": str(device), "parameters": count_parameters(model), "processes": world,
            "batch_per_process": cfg.batch_size // world}


def _open_run(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool, rank: int, world: int) -> dict | None:
    """The state to resume from (None: a fresh run). Rank 0 checks (or clears) the folder first."""
    state = None
    if rank == 0:
        if out.is_dir() and (is_run(out) or all(TEMP_NAME.match(p.name) for p in out.iterdir())):
            remove_stale_temps(out)                      # left by a killed process (even before config.json)
        state = _prepare_folder(out, cfg, resume, overwrite)
        if state is not None:
            state = _resume_state(out, cfg, state)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        if rank > 0 and resume and (out / "last.pt").exists():
            state = load_checkpoint(out / "last.pt")
    return state


def _training_images(cfg: TrainConfig, data: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
    train_x, val_x = data if data is not None else train_val_images(cfg.dataset, cfg.classes, cfg.val_size,
                                                                    cfg.data_dir)
    expected = (DATASETS[cfg.dataset][0], 28, 28)
    if tuple(train_x.shape[1:]) != expected:
        raise UserError(f"training images have shape {tuple(train_x.shape[1:])}, the model expects {expected}")
    return train_x, val_x


def _restore(state: dict, model, ema, opt, gen: torch.Generator, device) -> dict:
    """Load last.pt's weights, optimizer and every RNG; return its history."""
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"])
    if "torch_rng" in state:                             # shots and channel noise draw from these
        torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and len(state.get("cuda_rng", [])) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["history"]


def _validation_loss(cfg: TrainConfig, diffusion: Diffusion, val_x: torch.Tensor, device):
    """The loss on the validation images, at t and noise fixed for the whole run (so epochs compare)."""
    fixed = torch.Generator().manual_seed(10_000 + cfg.seed)
    val_t = torch.randint(0, cfg.T, (len(val_x),), generator=fixed)
    val_noise = torch.randn(val_x.shape, generator=fixed)

    @torch.no_grad()
    def val_loss(m):
        m.eval()
        losses = [diffusion.loss(m, val_x[i:i + 256].to(device), t=val_t[i:i + 256].to(device),
                                 noise=val_noise[i:i + 256].to(device)).item() * len(val_x[i:i + 256])
                  for i in range(0, len(val_x), 256)]
        m.train()
        return sum(losses) / len(val_x)
    return val_loss


def _end_of_epoch(out: Path, cfg: TrainConfig, epoch: int, steps_per_epoch: int, seconds: float, history: dict,
                  model, ema, opt, gen, diffusion: Diffusion, val_loss, device, progress: bool) -> None:
    """Validate, draw the epoch's EMA grid, write the logs, last.pt, then best.pt and the snapshot."""
    row = {"epoch": epoch, "step": history["step"],
           "train_loss": sum(r["loss"] for r in history["steps"][-steps_per_epoch:]) / steps_per_epoch,
           "last_batch_loss": history["steps"][-1]["loss"],
           "val_loss_raw": val_loss(model), "val_loss_ema": val_loss(ema),
           "seconds_per_step": seconds / steps_per_epoch}
    history["epochs"].append(row)
    eps = for_sampling(ema, preview_precision(device))   # a picture: bf16 where the hardware has it
    with torch.inference_mode():
        grid = diffusion.sample(eps, (cfg.grid_size, DATASETS[cfg.dataset][0], 28, 28), cfg.grid_sampler,
                                cfg.grid_steps, generator=torch.Generator().manual_seed(cfg.seed), device=device)
    save_grid(grid, out / "samples" / f"epoch_{epoch:03d}.png")
    score = _score(cfg, row)
    improved = score < history["best"]
    if improved:
        history["best"], history["best_epoch"] = score, epoch
    history["epoch"] = epoch
    write_text(out / "loss.csv", csv_text(history["steps"]))
    write_text(out / "epochs.csv", csv_text(history["epochs"]))
    if epoch % max(1, cfg.epochs // LOSS_PLOTS) == 0 or epoch == cfg.epochs:
        plot_losses([r["loss"] for r in history["steps"]], history["epochs"], out / "loss.png",
                    title=f"{cfg.dataset} {cfg.classes} {cfg.model}")
    # last.pt first: killed before best.pt (or the snapshot), a resumed run writes them from it
    save_checkpoint(out / "last.pt", {"config": asdict(cfg), "model": model.state_dict(),
                                      "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                                      "rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
                                      "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
                                      "history": history})
    if improved:
        save_checkpoint(out / "best.pt", {"config": asdict(cfg), "ema": ema.state_dict(),
                                           "epoch": epoch, "step": history["step"], "score": score})
    if cfg.snapshot_every and epoch % cfg.snapshot_every == 0:
        save_checkpoint(out / "snapshots" / f"epoch_{epoch:03d}.pt",
                        {"config": asdict(cfg), "ema": ema.state_dict(), "epoch": epoch, "step": history["step"]})
    if progress:
        tqdm.write(f"epoch {epoch}: train {row['train_loss']:.4f}  val raw {row['val_loss_raw']:.4f}  "
                   f"val EMA {row['val_loss_ema']:.4f}  ({row['seconds_per_step'] * 1000:.0f} ms/step)")


_reduced = {}     # the one tensor this module all-reduces itself, kept alive until the group is left


def _data_parallel(model, device, rank: int, world: int):
    """(the network to train, this rank's share of each global batch): the model itself and every
    sample in one process; under torchrun, DistributedDataParallel and the samples rank, rank + N, ..."""
    if world == 1:
        return model, slice(None)
    from torch.nn.parallel import DistributedDataParallel
    _reduced["loss"] = torch.zeros((), device=device)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None), \
        slice(rank, None, world)


def _global_mean(loss: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of ``loss`` over the processes (itself in one process)."""
    if world == 1:
        return loss
    import torch.distributed as dist
    reduced = _reduced["loss"]
    reduced.copy_(loss)
    dist.all_reduce(reduced)
    return reduced / world


def _leave_process_group(wait_seconds: float = 30.0) -> None:
    """Leave the process group once no collective still holds the one Python tensor this code
    all-reduces (``_global_mean``). A backend's worker thread frees a finished collective a moment after
    the caller moves on; if Python has dropped the tensor by then, freeing it needs the GIL, and
    the main thread holds the GIL while it joins that worker as the group is destroyed (when the
    DDP wrapper goes), so both wait forever. Waiting until the worker has let go of the tensor
    (its use count is back to Python's one reference) removes the race."""
    import torch.distributed as dist
    reduced = _reduced.pop("loss")
    deadline = time.monotonic() + wait_seconds
    while reduced._use_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    dist.destroy_process_group()


def finish(out: Path, cfg: TrainConfig, device, progress: bool = True) -> dict:
    """Sample from the best EMA model, write samples.png and summary.json."""
    model, _ = model_from_checkpoint(out / "best.pt", device)
    history = load_checkpoint(out / "last.pt")["history"]
    diffusion = make_diffusion(cfg)
    shape = (cfg.final_samples, DATASETS[cfg.dataset][0], 28, 28)
    t0 = time.perf_counter()
    precision = preview_precision(device)
    eps = for_sampling(model, precision)
    with torch.inference_mode():
        images = diffusion.sample(eps, shape, cfg.final_sampler, cfg.final_steps,
                                  generator=torch.Generator().manual_seed(cfg.seed), device=device, progress=progress)
    sample_seconds = time.perf_counter() - t0
    save_grid(images, out / "samples.png")
    save_tensor(out / "samples.pt", images)
    summary = {
        "run": str(out), "preset": cfg.preset, "dataset": cfg.dataset, "classes": cfg.classes, "model": cfg.model,
        "parameters": count_parameters(model), "epochs": history["epoch"], "steps": history["step"],
        "seconds_per_step": history["train_seconds"] / max(1, history["step"]),
        "train_seconds": history["train_seconds"],
        "final_train_loss": history["epochs"][-1]["train_loss"],
        "final_val_loss_ema": history["epochs"][-1]["val_loss_ema"],
        "best_epoch": history["best_epoch"], "best_score": history["best"], "best_by": cfg.best_by,
        "samples": f"{cfg.final_samples} from best.pt with {cfg.final_sampler}"
                   + f"-{cfg.T if cfg.final_sampler == 'ddpm' else cfg.final_steps} in {precision}",
        "sample_seconds": sample_seconds, "device": str(device),
    }
    write_json(out / "summary.json", summary)
    return summary
