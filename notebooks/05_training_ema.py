# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Training with an exponential moving average
#
# **One idea:** training is regression on noise, and the weights we sample with are not the
# weights we train but their running average.
#
# Each step draws a batch of clean images $x_0$, a timestep $t$ uniformly and a noise
# $\epsilon \sim \mathcal{N}(0, \mathbf{I})$ per image, forms $x_t$ with Eq. 1 (the paper's Eq. 9 and 13),
# and asks the U-Net to recover the noise:
#
# $$
# \mathcal{L}_{\text{MSE}} = \mathbb{E}_{x_0, \epsilon, t}\left[\big\|f_\theta(x_t, t) - \epsilon\big\|_2^2\right].
# \tag{4}
# $$
#
# A network that always answers 0 scores 1 (the variance of $\epsilon$), so the loss starts
# near 1. The paper trains with Adam ($3 \times 10^{-4}$), batch 64, 30 epochs on one class, and
# keeps an exponential moving average (EMA) of the weights after every step:
#
# $$
# \theta_{\text{EMA}} \leftarrow \beta\,\theta_{\text{EMA}} + (1-\beta)\,\theta, \qquad \beta = 0.999.
# \tag{10}
# $$
#
# The samples after each epoch and the final ones come from $\theta_{\text{EMA}}$. This notebook
# runs `qdm.train.train` (the paper's loop: Adam, Eq. 4, Eq. 10, a sample grid per epoch, the
# best EMA weights kept), plots its loss from the run's `loss.csv`, samples from the raw and
# the EMA weights side by side, and works out how much of the *random initial* weights an EMA
# with $\beta = 0.999$ still holds after $n$ steps.

# %% tags=["hide-input"]
import csv
import json
import math
from dataclasses import asdict
import os
import shutil
import tempfile
import warnings
from pathlib import Path

# Notebooks start in notebooks/ (Jupyter, nbmake, the book); work from the repository root so
# that QDM_DATA_DIR=../shared/data and runs/ mean what they mean on the command line.
os.chdir(next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").is_file()))
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import matplotlib.pyplot as plt
import torch
from torch import nn

import qdm
from qdm.data import load_images
from qdm.diffusion import Diffusion
from qdm.plots import image_grid
from qdm.schedule import make_schedule
from qdm.train import ema_decay_at, ema_update, make_config, model_from_checkpoint, train

# qdm.plots selects matplotlib's Agg backend when it is imported: switch back to inline figures.
# %matplotlib inline

FAST = qdm.fast_mode()   # QDM_FAST=1: the seconds-long CI version of this notebook
print(f"fast mode: {FAST}")
paper = make_config("paper")
for preset in ["quick", "fast"]:
    changed = {k: v for k, v in asdict(make_config(preset)).items() if k != "preset" and v != asdict(paper)[k]}
    print(f"the {preset} preset is the paper's recipe with {changed}")

# %% [markdown]
# ## A short run: load it if present, else train
#
# * **Fast mode** (CI) trains the `fast` preset into a temporary folder: 2 epochs of 3 steps.
#   It checks the machinery, not the images: after 6 steps the samples are noise *by design*.
# * **Full mode** trains the `quick` preset on digit 0 (the paper's recipe with a larger learning
#   rate and EMA warm-up, printed below; minutes on 2 CPU cores) into `runs/notebook05`, and reuses
#   that run when its `summary.json` exists. Notebook 6 samples from the same run. Delete the folder
#   to retrain; an interrupted run is resumed from its `last.pt`.
#
# The command-line equivalent is `python -m qdm train --preset quick --digit 0 --out runs/notebook05`.

# %%
if FAST:
    run_dir = Path(tempfile.mkdtemp(prefix="qdm-notebook05-"))
    cfg = make_config("fast")
    summary = train(cfg, run_dir, progress=False)
else:
    run_dir = Path("runs/notebook05")
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        print(f"reusing the run in {run_dir} (delete the folder to train again)")
    else:
        summary = train(make_config("quick"), run_dir, resume=True, progress=False)
    _, cfg = model_from_checkpoint(run_dir / "best.pt")

print(f"run folder: {run_dir}  ({', '.join(sorted(p.name for p in run_dir.iterdir()))})")
for key in ["preset", "dataset", "classes", "parameters", "epochs", "steps", "seconds_per_step",
            "final_train_loss", "final_val_loss_ema", "best_epoch", "samples"]:
    value = summary[key]
    print(f"  {key:>20}: {value:.4f}" if isinstance(value, float) else f"  {key:>20}: {value}")

# %% [markdown]
# ## The loss curve
#
# `loss.csv` holds the loss of every step (one batch, one random $t$ per image: noisy), and
# `epochs.csv` the validation loss of the raw and the EMA weights after each epoch, measured on
# held-out images of the same digit with fixed $t$ and $\epsilon$, so epochs compare.

# %%
def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


steps = read_csv(run_dir / "loss.csv")
epochs = read_csv(run_dir / "epochs.csv")
loss = torch.tensor([r["loss"] for r in steps])
window = max(1, min(50, len(loss) // 5))
smooth = loss.unfold(0, window, 1).mean(1)

fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(range(1, len(loss) + 1), loss, color="0.75", lw=0.8, label="training loss, per step (Eq. 4)")
ax.plot(range(window, len(loss) + 1), smooth, color="C0", label=f"running mean of {window} steps")
ax.plot([r["step"] for r in epochs], [r["val_loss_raw"] for r in epochs], "o-", color="C1", label="validation, raw weights")
ax.plot([r["step"] for r in epochs], [r["val_loss_ema"] for r in epochs], "s-", color="C2", label="validation, EMA weights (Eq. 10)")
ax.axhline(1.0, color="k", ls=":", lw=0.8, label=r"predicting $\hat\epsilon = 0$")
ax.set(xlabel="step", ylabel=r"$\epsilon$-MSE", yscale="log", title=f"{cfg.preset} preset, digit {cfg.classes}")
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Raw weights vs EMA weights
#
# `last.pt` holds both sets of weights at the end of training (`best.pt` only the EMA ones).
# Both are sampled from the *same* starting noise with deterministic DDIM (notebook 6), so any
# difference comes from the weights alone.

# %%
n_images, ddim_steps = (8, 10) if FAST else (16, 100)
diffusion = Diffusion(make_schedule(cfg.schedule, cfg.T))
samples = {}
for weights in ["model", "ema"]:
    net, _ = model_from_checkpoint(run_dir / "last.pt", weights=weights)
    samples[weights] = diffusion.sample_ddim(net, (n_images, 1, 28, 28), steps=ddim_steps,
                                             generator=torch.Generator().manual_seed(0))
last = epochs[-1]
fig, axes = plt.subplots(1, 2, figsize=(9, 1.2 + 4.2 * math.ceil(n_images / 4) / 4))
for ax, (weights, title) in zip(axes, [("model", "raw weights"), ("ema", "EMA weights")]):
    ax.imshow(image_grid(samples[weights], nrow=4).permute(1, 2, 0))
    val = last["val_loss_raw" if weights == "model" else "val_loss_ema"]
    ax.set_title(f"{title}: validation loss {val:.3f}")
    ax.axis("off")
fig.suptitle(f"DDIM-{ddim_steps} samples after {int(last['step'])} steps"
             + (" (fast mode: noise by design)" if FAST else ""))
fig.tight_layout()
plt.show()

# %% [markdown]
# ## How much of the initial weights does the EMA keep?
#
# Unrolling Eq. 10 from $\theta_{\text{EMA}} = \theta_0$ (the random initial weights) gives
#
# $$
# \theta_{\text{EMA}}^{(n)} = \beta^{\,n}\,\theta_0 + (1-\beta)\sum_{i=1}^{n}\beta^{\,n-i}\,\theta_i ,
# $$
#
# so after $n$ steps the average still holds a share $\beta^n$ of the untrained network.
# With $\beta = 0.999$ that is $e^{-1}$ after 1000 steps. A *warm-up* (used by many
# implementations, not by the paper; the `quick` preset turns it on) uses
# $\beta_i = \min\!\big(\beta, \tfrac{1+i}{10+i}\big)$ at step $i$, which forgets $\theta_0$ almost at once:
# the share is $\prod_{i=1}^{n} \beta_i$.
#
# First a check that `ema_update` and `ema_decay_at` implement exactly this: a one-weight model
# whose EMA starts at 1 (the "initial weights") while the trained weight sits at 0.

# %%
def initial_share(cfg, n: int) -> float:
    """Share of the initial weights left in the EMA after n updates, by running qdm's ema_update."""
    ema, model = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    nn.init.ones_(ema.weight), nn.init.zeros_(model.weight)
    for step in range(1, n + 1):           # qdm.train counts steps from 1
        ema_update(ema, model, ema_decay_at(cfg, step))
    return ema.weight.item()


plain, warm = make_config("paper"), make_config("paper", ema_warmup=True)
for n in [10, 100, 1000]:
    by_formula = (plain.ema_decay ** n, math.prod(min(0.999, (1 + i) / (10 + i)) for i in range(1, n + 1)))
    by_qdm = (initial_share(plain, n), initial_share(warm, n))
    print(f"n = {n:4d}: 0.999^n = {by_formula[0]:.4f} (ema_update: {by_qdm[0]:.4f}); "
          f"with warm-up {by_formula[1]:.2e} (ema_update: {by_qdm[1]:.2e})")
    assert math.isclose(by_formula[0], by_qdm[0], rel_tol=1e-4) and math.isclose(by_formula[1], by_qdm[1], rel_tol=1e-3)

# %% [markdown]
# Now the numbers that matter for the runs in this project: how many steps each preset takes on
# digit 0, and what share of the initial weights its EMA keeps with and without warm-up.

# %%
n_images_digit = len(load_images(paper.dataset, "train", paper.classes))
runs = {}   # number of steps -> the presets that take that many
for preset in ["fast", "quick", "paper"]:
    c = make_config(preset)
    per_epoch = math.ceil((n_images_digit - c.val_size) / c.batch_size)
    runs.setdefault(c.epochs * min(per_epoch, c.steps_per_epoch or per_epoch), []).append(preset)
runs = {" and ".join(presets) + (" presets" if len(presets) > 1 else " preset"): n for n, presets in runs.items()}
print(f"digit {paper.classes[0]}: {n_images_digit:,} training images, {paper.val_size} held out for validation")
n = torch.arange(1, 5001, dtype=torch.float64)
share_plain = 0.999 ** n
share_warm = torch.cumprod(torch.minimum(torch.tensor(0.999, dtype=torch.float64), (1 + n) / (10 + n)), 0)

print(f"{'run':>26} {'steps':>6} {'0.999^n':>9} {'with warm-up':>13}")
for name, steps_ in runs.items():
    print(f"{name:>26} {steps_:6d} {0.999 ** steps_:9.3f} {share_warm[steps_ - 1]:13.1e}")

fig, ax = plt.subplots(figsize=(8, 4))
ax.loglog(n, share_plain, label=r"$\beta = 0.999$ (the paper, Eq. 10)")
ax.loglog(n, share_warm, label=r"warm-up $\min(0.999, \frac{1+i}{10+i})$")
for (name, steps_), color in zip(runs.items(), ["C3", "C4", "C5"]):
    ax.axvline(steps_, color=color, ls="--", lw=0.8, label=f"{name}: {steps_} steps")
ax.set(xlabel="training steps n", ylabel=r"share of $\theta_0$ in $\theta_{\mathrm{EMA}}$",
       ylim=(1e-12, 2), title="how much of the random initial weights the EMA still holds")
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What this means.** With the paper's $\beta = 0.999$ and no warm-up, the EMA weights after
# the paper's 30 epochs on digit 0 still contain several percent of the random initialisation,
# and after a run of a few hundred steps more than half of it: sampling from such an EMA mostly
# samples an untrained network, and the raw weights can look better. This is why the `quick`
# preset turns the warm-up on, and why the validation loss of *both* weight sets is logged after
# every epoch. The fast preset's 6 steps leave the EMA at $0.999^6 \approx 99.4\%$ initial
# weights: its samples are noise, as they are meant to be in CI.

# %%
if FAST:
    shutil.rmtree(run_dir)   # the fast run only served this notebook
