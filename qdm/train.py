"""Training (paper Section IV-E and V-A): Adam, epsilon-MSE, EMA (Eq. 10), best model kept.

A run lives in one folder:
    config.json   the full configuration, the qdm and torch versions
    loss.csv      the training loss of every step;  epochs.csv  one row per epoch
    samples/epoch_NNN.png   EMA samples after every epoch (fixed noise, so epochs compare)
    loss.png      the loss curves;  samples.png  the final EMA samples;  summary.json
    last.pt       everything needed to resume (written every epoch)
    best.pt       the EMA weights with the lowest validation loss
"""
import copy
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

import qdm
from qdm.checkpoint import atomic_write, csv_text, load_checkpoint, save_checkpoint, write_json, write_text
from qdm.data import DATASETS, check_dataset, train_val_images
from qdm.diffusion import Diffusion
from qdm.errors import UserError
from qdm.gates import CONTROL_GATES
from qdm.noise import T_SAMPLING, check_choice, eps_function, sample_t
from qdm.plots import plot_losses, save_grid
from qdm.schedule import make_schedule
from qdm.unet import UNet, count_parameters


@dataclass
class TrainConfig:
    """Defaults are the paper's recipe (Section V-A): 30 epochs, batch 64, Adam 3e-4, EMA 0.999."""
    dataset: str = "mnist"
    classes: list | None = field(default_factory=lambda: [0])   # None: all classes
    model: str = "classical"            # classical | quantum | cosine | mlp | se (see MODELS)
    quantum: dict = field(default_factory=dict)  # options of qdm.quantum.QuantumGate
    epochs: int = 30
    steps_per_epoch: int | None = None  # None: every batch of the training set
    batch_size: int = 64
    lr: float = 3e-4
    lr_schedule: str = "constant"       # constant (the paper) | warmup_cosine: linear warm-up, cosine decay to lr/10
    warmup_steps: int = 0               # (warmup_cosine only)
    grad_clip: float | None = None      # clip the gradient's global norm (not in the paper)
    unet: dict = field(default_factory=dict)    # options of qdm.unet.UNet: time_every_scale, skip_mid
    snapshot_every: int = 0             # > 0: keep the EMA weights every this many epochs (learning curves)
    ema_decay: float = 0.999
    ema_warmup: bool = False            # decay min(beta, (1+n)/(10+n)) at update n (not in the paper)
    schedule: str = "cosine"            # cosine (the paper) | linear | sigmoid
    T: int = 1000
    # quantum noise and noise scheduling (qdm.noise); the gate's shots, channel, noise_p and
    # noise_schedule live in `quantum`
    eps_source: str = "torch"           # torch | quantum: the source of the diffusion noise epsilon
    t_sampling: str = "uniform"         # uniform (the paper) | linear | cosine: weighted t in training
    t_reweight: bool = False            # with a weighted t: importance weights 1/(T p(t)) on the loss
    seed: int = 0
    val_size: int = 256
    best_by: str = "val"                # val (EMA validation loss) | last_batch (the official code)
    grid_size: int = 16                 # EMA samples drawn after every epoch
    grid_sampler: str = "ddpm"          # the paper samples with its 1000-step sampler
    grid_steps: int = 100               # (DDIM only)
    final_samples: int = 64             # EMA samples drawn from best.pt at the end
    final_sampler: str = "ddpm"
    final_steps: int = 1000
    device: str = "auto"                # auto | cpu | cuda
    data_dir: str | None = None         # None: $QDM_DATA_DIR, else ./data (see qdm.data)
    preset: str = "paper"


PRESETS = {
    # exactly the paper's recipe: 30 epochs over one class (about 90 steps an epoch on MNIST)
    "paper": {},
    # the README's main job, a few minutes per model on 2 CPU cores: the paper's 30 epochs with
    # lr 1e-3 and EMA warm-up (so the EMA forgets the random initial weights), DDIM previews
    "quick": dict(lr=1e-3, ema_warmup=True, grid_sampler="ddim"),
    # the ablation and noise studies (many cells, 3 seeds): the quick recipe for 10 epochs (890 steps,
    # about a minute per classical model on 2 CPU cores); its images are rough zeros, its purpose is
    # comparing gates and noise options trained alike
    "study": dict(lr=1e-3, ema_warmup=True, epochs=10, grid_sampler="ddim", final_sampler="ddim", final_steps=50),
    # the qdm recipe (issue 10): the paper's architecture family and gate hook, with what is meant
    # to make digits: time embedding at every scale, a second skip, lr 1e-3 with warm-up and cosine
    # decay, gradient clipping, EMA warm-up, 100 epochs (8,900 steps), EMA snapshots for learning curves
    "qdm": dict(lr=1e-3, lr_schedule="warmup_cosine", warmup_steps=200, grad_clip=1.0, ema_warmup=True,
                unet={"time_every_scale": True, "skip_mid": True}, epochs=100, snapshot_every=10,
                grid_sampler="ddim"),
    # seconds, for tests and CI: it checks the machinery, not the images
    "fast": dict(epochs=2, steps_per_epoch=3, val_size=32, grid_size=4, grid_sampler="ddim", grid_steps=5,
                 final_samples=8, final_sampler="ddim", final_steps=10),
}


def make_config(preset: str = "paper", **overrides) -> TrainConfig:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}, "preset": preset}
    return TrainConfig(**values)


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
    """The config's diffusion schedule and epsilon source (torch.randn, or qdm.noise.quantum_randn)."""
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


RESUME_MUST_MATCH = ("dataset", "classes", "model", "quantum", "batch_size", "lr", "lr_schedule", "warmup_steps",
                     "grad_clip", "unet", "ema_decay",
                     "ema_warmup", "schedule", "T", "seed", "val_size", "steps_per_epoch",
                     "eps_source", "t_sampling", "t_reweight")


RUN_LOGS = {"config.json", "loss.csv", "epochs.csv", "loss.png", "samples"}   # what a run writes besides .pt


def _prepare_folder(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> dict | None:
    """Return the state to resume from, or None for a fresh run; refuse to clobber a run. With
    ``resume``, a run stopped before its first checkpoint (its config.json and logs, no .pt
    file) has nothing to resume and starts again."""
    last = out / "last.pt"
    if resume and last.exists():
        state = load_checkpoint(last)
        old = state["config"]
        defaults = asdict(TrainConfig())    # for fields newer than the run
        diff = [k for k in RESUME_MUST_MATCH if old.get(k, defaults[k]) != asdict(cfg).get(k)]
        if diff:
            raise UserError(f"cannot resume {out}: its run has a different {', '.join(diff)} "
                            f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); choose another --out")
        return state
    if out.exists() and any(out.iterdir()):
        entries = {p.name for p in out.iterdir()}
        unstarted = "config.json" in entries and entries <= RUN_LOGS and not any(out.rglob("*.pt"))
        if overwrite or (resume and unstarted):
            shutil.rmtree(out)
        elif resume:
            raise UserError(f"{out} holds files but no last.pt to resume from: use --overwrite or another --out")
        else:
            raise UserError(f"{out} already holds a run: --resume continues it, --overwrite replaces it, "
                            "or choose another --out")
    return None


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
    import torch.distributed as dist
    out = Path(out_dir)
    rank, world, device = _join_process_group(resolve_device(cfg.device))
    if cfg.batch_size % world:
        raise UserError(f"batch size {cfg.batch_size} does not split evenly over {world} processes")
    if rank == 0:
        state = _prepare_folder(out, cfg, resume, overwrite)
    if world > 1:
        dist.barrier()                                   # rank 0 has checked (or cleared) the folder
        if rank > 0:
            state = load_checkpoint(out / "last.pt") if resume and (out / "last.pt").exists() else None
    train_x, val_x = data if data is not None else train_val_images(cfg.dataset, cfg.classes, cfg.val_size, cfg.data_dir)
    expected = (DATASETS[cfg.dataset][0], 28, 28)
    if tuple(train_x.shape[1:]) != expected:
        raise UserError(f"training images have shape {tuple(train_x.shape[1:])}, the model expects {expected}")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    diffusion = make_diffusion(cfg)
    check_choice(cfg.t_sampling, T_SAMPLING, "t sampling")
    check_choice(cfg.lr_schedule, LR_SCHEDULES, "lr schedule")
    gen = torch.Generator().manual_seed(cfg.seed)        # all training randomness
    fixed = torch.Generator().manual_seed(10_000 + cfg.seed)  # validation t and noise
    val_t = torch.randint(0, cfg.T, (len(val_x),), generator=fixed)
    val_noise = torch.randn(val_x.shape, generator=fixed)
    history = {"steps": [], "epochs": [], "best": float("inf"), "best_epoch": 0, "step": 0, "epoch": 0,
               "train_seconds": 0.0}
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        history = state["history"]
    config = {**asdict(cfg), "qdm_version": qdm.__version__, "torch_version": torch.__version__,
              "device_used": str(device), "parameters": count_parameters(model), "processes": world,
              "batch_per_process": cfg.batch_size // world}
    if rank == 0:
        write_json(out / "config.json", config)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    share = slice(rank, None, world)                     # this rank's samples of each global batch
    global_loss = torch.zeros((), device=device)         # the one tensor this code all-reduces itself

    @torch.no_grad()
    def val_loss(m):
        m.eval()
        losses = [diffusion.loss(m, val_x[i:i + 256].to(device), t=val_t[i:i + 256].to(device),
                                 noise=val_noise[i:i + 256].to(device)).item() * len(val_x[i:i + 256])
                  for i in range(0, len(val_x), 256)]
        m.train()
        return sum(losses) / len(val_x)

    n_batches = -(-len(train_x) // cfg.batch_size)
    steps_per_epoch = min(n_batches, cfg.steps_per_epoch or n_batches)
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
            if world > 1:                                # log the global batch's loss
                global_loss.copy_(loss.detach())
                dist.all_reduce(global_loss)
                loss = global_loss / world
            if rank > 0:
                continue
            ema_update(ema, model, ema_decay_at(cfg, history["step"]))
            history["steps"].append({"step": history["step"], "epoch": epoch, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        seconds = time.perf_counter() - t0
        if rank > 0:
            continue
        history["train_seconds"] += seconds
        row = {"epoch": epoch, "step": history["step"],
               "train_loss": sum(r["loss"] for r in history["steps"][-steps_per_epoch:]) / steps_per_epoch,
               "last_batch_loss": history["steps"][-1]["loss"],
               "val_loss_raw": val_loss(model), "val_loss_ema": val_loss(ema),
               "seconds_per_step": seconds / steps_per_epoch}
        history["epochs"].append(row)
        grid = diffusion.sample(ema.eval(), (cfg.grid_size, *expected), cfg.grid_sampler, cfg.grid_steps,
                                generator=torch.Generator().manual_seed(cfg.seed), device=device)
        save_grid(grid, out / "samples" / f"epoch_{epoch:03d}.png")
        score = row["val_loss_ema"] if cfg.best_by == "val" else row["last_batch_loss"]
        if score < history["best"]:
            history["best"], history["best_epoch"] = score, epoch
            save_checkpoint(out / "best.pt", {"config": asdict(cfg), "ema": ema.state_dict(),
                                               "epoch": epoch, "step": history["step"], "score": score})
        if cfg.snapshot_every and epoch % cfg.snapshot_every == 0:
            save_checkpoint(out / "snapshots" / f"epoch_{epoch:03d}.pt",
                            {"config": asdict(cfg), "ema": ema.state_dict(), "epoch": epoch, "step": history["step"]})
        history["epoch"] = epoch
        write_text(out / "loss.csv", csv_text(history["steps"]))
        write_text(out / "epochs.csv", csv_text(history["epochs"]))
        plot_losses([r["loss"] for r in history["steps"]], history["epochs"], out / "loss.png",
                    title=f"{cfg.dataset} {cfg.classes} {cfg.model}")
        save_checkpoint(out / "last.pt", {"config": asdict(cfg), "model": model.state_dict(),
                                          "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                                          "rng": gen.get_state(), "history": history})
        if progress:
            tqdm.write(f"epoch {epoch}: train {row['train_loss']:.4f}  val raw {row['val_loss_raw']:.4f}  "
                       f"val EMA {row['val_loss_ema']:.4f}  ({row['seconds_per_step'] * 1000:.0f} ms/step)")
    summary = finish(out, cfg, device, progress) if rank == 0 else {}
    if world > 1:
        _leave_process_group(global_loss)
    return summary


def _leave_process_group(reduced: torch.Tensor, wait_seconds: float = 30.0) -> None:
    """Leave the process group once no collective still holds ``reduced``, the one Python tensor
    this code all-reduces. A backend's worker thread frees a finished collective a moment after
    the caller moves on; if Python has dropped the tensor by then, freeing it needs the GIL, and
    the main thread holds the GIL while it joins that worker as the group is destroyed (when the
    DDP wrapper goes), so both wait forever. Waiting until the worker has let go of the tensor
    (its use count is back to Python's one reference) removes the race."""
    import torch.distributed as dist
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
    images = diffusion.sample(model, shape, cfg.final_sampler, cfg.final_steps,
                              generator=torch.Generator().manual_seed(cfg.seed), device=device, progress=progress)
    sample_seconds = time.perf_counter() - t0
    save_grid(images, out / "samples.png")
    atomic_write(out / "samples.pt", lambda tmp: torch.save(images.cpu(), tmp))
    summary = {
        "run": str(out), "preset": cfg.preset, "dataset": cfg.dataset, "classes": cfg.classes, "model": cfg.model,
        "parameters": count_parameters(model), "epochs": history["epoch"], "steps": history["step"],
        "seconds_per_step": history["train_seconds"] / max(1, history["step"]),
        "train_seconds": history["train_seconds"],
        "final_train_loss": history["epochs"][-1]["train_loss"],
        "final_val_loss_ema": history["epochs"][-1]["val_loss_ema"],
        "best_epoch": history["best_epoch"], "best_score": history["best"], "best_by": cfg.best_by,
        "samples": f"{cfg.final_samples} from best.pt with {cfg.final_sampler}"
                   + f"-{cfg.final_steps if cfg.final_sampler == 'ddim' else cfg.T}",
        "sample_seconds": sample_seconds, "device": str(device),
    }
    write_json(out / "summary.json", summary)
    return summary
