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
# $\epsilon \sim \mathcal{N}(0, \mathbf{I})$ per image, forms $x_t$ with Eq. 1 (the paper's
# Eq. 9 and 13), and asks the U-Net to recover the noise:
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
# The samples after each epoch and the final ones come from $\theta_{\text{EMA}}$. This chapter
# writes the training loop out in a few lines and checks it against `qdm.train.train`, then shows
# two real runs on digit 0 from their committed logs and weights (`pretrained/`): the paper's
# recipe and the `qdm` recipe of chapter 13. It ends with how much of the *random initial*
# weights an EMA with $\beta = 0.999$ still holds after $n$ steps.
#
# **Time:** about a minute in the full build (64 samples drawn and scored; the test images'
# Inception features, computed once and shared with chapters 6 and 7, take a few minutes more on
# a cold cache); seconds in fast mode. Nothing is trained for long here: the runs shown are
# committed (`pretrained/manifest.json` says how each was trained, and for how long).

# %% tags=["remove-cell"]
# On Colab: fetch qdm and the packages Colab lacks (does nothing anywhere else).
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    url = os.environ.get("QDM_REPOSITORY") or input("URL of the qdm repository (for git clone): ")
    if not os.path.isdir("qdm"):
        subprocess.run(["git", "clone", "--depth", "1", url, "qdm"], check=True)
    packages = ["pytorch-fid", "medmnist", "pennylane", "-e", "qdm"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)
    sys.path.insert(0, os.path.abspath("qdm"))

# %% tags=["hide-input"]
from qdm.notebook import setup

FAST = setup()

import copy
import csv
import json
import math
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from qdm import metrics
from qdm.data import load_images, train_val_images
from qdm.inference import for_sampling, memory_layout, preview_precision
from qdm.plots import image_grid
from qdm.pretrained import entry, load, log_folder
from qdm.train import build_model, ema_decay_at, ema_update, make_config, make_diffusion, train

# %% [markdown]
# ## The loop itself
#
# One training step is five lines: a batch $x_0$, a timestep $t$ and a noise $\epsilon$ per image,
# the loss of Eq. 4, an Adam step, and the EMA update of Eq. 10. Written out for the paper's recipe
# (constant learning rate, no gradient clipping, no EMA warm-up), with the random numbers drawn in
# the order `qdm.train.train` draws them. On a CPU the weights live in channels-last memory, the
# layout in which oneDNN's convolutions run fastest (`qdm.inference.memory_layout`); it changes
# the order of some sums, not the function, but Adam's first steps amplify rounding, so the loop
# uses it too, and its weights match `train`'s:


# %%
def train_loop(cfg, images, n_steps):
    """The paper's training loop, plainly: returns the raw model, its EMA and the losses."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(memory_format=memory_layout(torch.device("cpu")))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    diffusion = make_diffusion(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(images), generator=gen)  # one epoch's shuffle
    losses = []
    for step in range(1, n_steps + 1):
        x0 = images[order[(step - 1) * cfg.batch_size : step * cfg.batch_size]]  # a batch
        t = torch.randint(0, cfg.T, (len(x0),), generator=gen)  # a timestep per image
        eps = torch.randn(x0.shape, generator=gen)  # a noise per image
        loss = F.mse_loss(model(diffusion.q_sample(x0, t, eps), t), eps)  # Eq. 4
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(ema, model, ema_decay_at(cfg, step))  # Eq. 10
        losses.append(loss.item())
    return model, ema, losses


# %% [markdown]
# The same three steps through `qdm.train.train` (the `fast` preset for one epoch: the paper's
# recipe, 3 steps), which also validates, samples a grid and writes checkpoints. Its raw weights,
# EMA weights and per-step losses must be the loop's:

# %%
cfg = make_config("fast", epochs=1, device="cpu")
images, _ = train_val_images(cfg.dataset, cfg.classes, cfg.val_size)
model, ema, losses = train_loop(cfg, images, cfg.steps_per_epoch)

folder = Path(tempfile.mkdtemp(prefix="qdm-nb05-"))
train(cfg, folder / "run", progress=False)
state = torch.load(folder / "run" / "last.pt", weights_only=True)
with open(folder / "run" / "loss.csv", newline="") as f:
    losses_qdm = [float(row["loss"]) for row in csv.DictReader(f)]
shutil.rmtree(folder)

for name, mine in [("model", model), ("ema", ema)]:
    gap = max((p - state[name][k]).abs().max().item() for k, p in mine.state_dict().items())
    print(f"{name:>5} weights: largest difference from train() {gap:.1e}")
    assert gap < 1e-6
print("losses, loop:   ", [f"{v:.4f}" for v in losses])
print("losses, train():", [f"{v:.4f}" for v in losses_qdm])
assert torch.allclose(torch.tensor(losses), torch.tensor(losses_qdm), atol=1e-6)

# %% [markdown]
# `train` adds what a real run needs around these lines: the learning-rate schedule and gradient
# clipping of the `qdm` recipe, validation of the raw and the EMA weights after each epoch, a
# sample grid per epoch, and checkpoints to resume from.
#
# ## Two real runs: the loss and the validation loss
#
# Both runs trained the same U-Net family on digit 0 with batch 64: the paper's recipe for 30
# epochs (2,670 steps) and the `qdm` recipe for 100 epochs (8,900 steps; learning rate $10^{-3}$
# with warm-up and decay, EMA warm-up, chapter 13). `loss.csv` holds the loss of every step (one
# batch, one random $t$ per image: noisy), `epochs.csv` the validation loss of the raw and the
# EMA weights after each epoch, on held-out images of the same digit with fixed $t$ and
# $\epsilon$, so epochs compare. Both come with the weights in `pretrained/`, checked against
# their manifest.

# %%
RUNS = {"paper recipe": "paper-mnist0-classical", "qdm recipe": "qdm-mnist0-classical"}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, (title, name) in zip(axes, RUNS.items()):
    logs = log_folder(name)
    loss = torch.tensor([r["loss"] for r in read_csv(logs / "loss.csv")])
    epochs = read_csv(logs / "epochs.csv")
    smooth = loss.unfold(0, 50, 1).mean(1)
    steps = [r["step"] for r in epochs]
    ax.plot(range(1, len(loss) + 1), loss, color="0.8", lw=0.5, label="training loss per step")
    ax.plot(range(50, len(loss) + 1), smooth, color="C0", label="running mean of 50 steps")
    ax.plot(steps, [r["val_loss_raw"] for r in epochs], color="C1", label="validation, raw weights")
    ax.plot(steps, [r["val_loss_ema"] for r in epochs], color="C2", label="validation, EMA weights")
    ax.axhline(1.0, color="k", ls=":", lw=0.8, label=r"predicting $\hat\epsilon = 0$")
    ax.set(xlabel="step", yscale="log", title=f"{title}: {entry(name)['trained']['steps']:,} steps")
    ax.grid(alpha=0.3, which="both")
axes[0].set_ylabel(r"$\epsilon$-MSE (Eq. 4)")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# In the paper's run the EMA's validation loss trails the raw weights' for most of the run: the
# average still holds much of the random start (the last section computes how much). With the
# EMA warm-up the two curves meet within the first epochs.
#
# ## The EMA's samples after each epoch
#
# After every epoch `train` draws 16 samples from the EMA weights, always from the same starting
# noise (DDIM-100 in both runs), so the grids show the same 16
# images growing from noise into digits, or not:

# %%
EPOCHS = {"paper recipe": [1, 2, 3, 5, 10, 20, 30], "qdm recipe": [1, 2, 3, 5, 10, 20, 50, 100]}
fig, axes = plt.subplots(2, 8, figsize=(13, 4.2))
for row, (title, name) in enumerate(RUNS.items()):
    logs = log_folder(name)
    for col, ax in enumerate(axes[row]):
        ax.axis("off")
        if col < len(EPOCHS[title]):
            epoch = EPOCHS[title][col]
            ax.imshow(plt.imread(logs / "samples" / f"epoch_{epoch:03d}.png"))
            ax.set_title(f"epoch {epoch}", fontsize=9)
    axes[row, 0].text(
        -0.15, 0.5, title, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right"
    )
fig.suptitle("EMA samples after each epoch, digit 0 (same starting noise in every grid)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The trained EMA weights, sampled and scored
#
# The `qdm` recipe's EMA weights (`pretrained/qdm-mnist0-classical.pt`), sampled with the
# respaced ancestral sampler of chapter 6 (100 steps, in bfloat16 where the CPU computes it
# natively, else float32: `qdm.inference.preview_precision`; in the sampler study,
# `results/samplers.md`, it scored no worse than DDPM-1000 on this model at a tenth of the cost).
# The FID against the digit's test images (chapter 7) is the check that these pictures come from
# trained weights. The bound sits between real images at the same $N$ (computed below) and the
# paper recipe's model, whose FID is above 200 already at $N = 1000$ and only grows at smaller $N$
# (the estimate's bias, chapter 7); noise scores about 400.

# %%
N, FID_BOUND = (16, 150) if FAST else (64, 100)  # images, and the FID they must stay below
N_REAL = 64 if FAST else 980  # the digit's test images (all 980 in full mode)
model, cfg = load("qdm-mnist0-classical")
diffusion = make_diffusion(cfg)
samples = diffusion.sample(
    for_sampling(model, preview_precision(torch.device("cpu"))),
    (N, 1, 28, 28),
    "ddpm_respaced",
    100,
    generator=torch.Generator().manual_seed(0),
)
inception = metrics.inception()
real = metrics.reference_features("mnist", cfg.classes, "test", N_REAL, inception)
fid = metrics.frechet_distance(metrics.inception_features(samples, inception), real)
train_f = metrics.reference_features("mnist", cfg.classes, "train", N, inception)
floor = metrics.frechet_distance(train_f, real)

fig, ax = plt.subplots(figsize=(5, 5.4))
ax.imshow(image_grid(samples, nrow=8).permute(1, 2, 0))
ax.set_title(f"{N} EMA samples, qdm recipe, digit 0\nFID {fid:.1f} against {N_REAL} test images")
ax.axis("off")
plt.show()
print(f"FID at N = {N}: {fid:.1f} (bound {FID_BOUND}); {N} real training zeros: {floor:.1f}")
assert fid < FID_BOUND, f"FID {fid:.1f}: these samples do not look like the trained model's"

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
# implementations, not by the paper; the `quick` and `qdm` presets turn it on) uses
# $\beta_i = \min\!\big(\beta, \tfrac{1+i}{10+i}\big)$ at step $i$, which forgets $\theta_0$
# almost at once: the share is $\prod_{i=1}^{n} \beta_i$.
#
# First a check that `ema_update` and `ema_decay_at` implement exactly this: a one-weight model
# whose EMA starts at 1 (the "initial weights") while the trained weight sits at 0.


# %%
def initial_share(cfg, n: int) -> float:
    """Share of the initial weights left in the EMA after n updates, by running qdm's ema_update."""
    ema, model = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    nn.init.ones_(ema.weight), nn.init.zeros_(model.weight)
    for step in range(1, n + 1):  # qdm.train counts steps from 1
        ema_update(ema, model, ema_decay_at(cfg, step))
    return ema.weight.item()


plain, warm = make_config("paper"), make_config("paper", ema_warmup=True)
for n in [10, 100, 1000]:
    warm_formula = math.prod(min(0.999, (1 + i) / (10 + i)) for i in range(1, n + 1))
    by_formula = (plain.ema_decay**n, warm_formula)
    by_qdm = (initial_share(plain, n), initial_share(warm, n))
    print(
        f"n = {n:4d}: 0.999^n = {by_formula[0]:.4f} (ema_update: {by_qdm[0]:.4f}); "
        f"with warm-up {by_formula[1]:.2e} (ema_update: {by_qdm[1]:.2e})"
    )
    assert math.isclose(by_formula[0], by_qdm[0], rel_tol=1e-4)
    assert math.isclose(by_formula[1], by_qdm[1], rel_tol=1e-3)

# %% [markdown]
# Now the numbers that matter for the runs in this project: how many steps each preset takes on
# digit 0, and what share of the initial weights its EMA keeps with and without warm-up.

# %%
paper = make_config("paper")
n_images_digit = len(load_images(paper.dataset, "train", paper.classes))
runs = {}  # number of steps -> the presets that take that many
for preset in ["fast", "quick", "paper", "qdm"]:
    c = make_config(preset)
    per_epoch = math.ceil((n_images_digit - c.val_size) / c.batch_size)
    runs.setdefault(c.epochs * min(per_epoch, c.steps_per_epoch or per_epoch), []).append(preset)
runs = {" and ".join(p) + (" presets" if len(p) > 1 else " preset"): n for n, p in runs.items()}
print(
    f"digit {paper.classes[0]}: {n_images_digit:,} training images, "
    f"{paper.val_size} held out for validation"
)
n = torch.arange(1, 10001, dtype=torch.float64)
share_plain = 0.999**n
beta_warm = torch.minimum(torch.tensor(0.999, dtype=torch.float64), (1 + n) / (10 + n))
share_warm = torch.cumprod(beta_warm, 0)

print(f"{'run':>26} {'steps':>6} {'0.999^n':>9} {'with warm-up':>13}")
for name, steps_ in runs.items():
    print(f"{name:>26} {steps_:6d} {0.999 ** steps_:9.3f} {share_warm[steps_ - 1]:13.1e}")

fig, ax = plt.subplots(figsize=(8, 4))
ax.loglog(n, share_plain, label=r"$\beta = 0.999$ (the paper, Eq. 10)")
ax.loglog(n, share_warm, label=r"warm-up $\min(0.999, \frac{1+i}{10+i})$")
for (name, steps_), color in zip(runs.items(), ["C3", "C4", "C5", "C6"]):
    ax.axvline(steps_, color=color, ls="--", lw=0.8, label=f"{name}: {steps_} steps")
ax.set(
    xlabel="training steps n",
    ylabel=r"share of $\theta_0$ in $\theta_{\mathrm{EMA}}$",
    ylim=(1e-12, 2),
    title="how much of the random initial weights the EMA still holds",
)
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What this means.** With the paper's $\beta = 0.999$ and no warm-up, the EMA weights after
# the paper's 30 epochs on digit 0 still contain several percent of the random initialisation,
# and after a run of a few hundred steps more than half of it: sampling from such an EMA mostly
# samples an untrained network, and the raw weights can look better. The paper-recipe grids above
# show it: noise for the first epochs, strokes at the end. This is why the `quick` and `qdm`
# presets turn the warm-up on, and why the validation loss of *both* weight sets is logged after
# every epoch.
#
# **What we checked.** The five-line loop equals `qdm.train.train` step for step (weights, EMA,
# losses); the committed runs' logs and weights match their manifest; the `qdm` recipe's EMA
# samples score an FID below the bound above at this chapter's $N$; `ema_update` with and without
# warm-up keeps exactly the share of the initial weights that Eq. 10 unrolled predicts.
