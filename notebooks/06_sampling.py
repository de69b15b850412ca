# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Sampling: DDPM's reverse chain and deterministic DDIM
#
# **One idea:** a trained noise predictor $\epsilon_\theta$ turns pure noise into an image by
# running the forward process of notebook 1 backwards, one step at a time (DDPM), or in a few
# large deterministic jumps (DDIM).
#
# The paper does not write its sampler down; the official code uses DDPM ancestral sampling
# (Ho et al. 2020) with the clean-image estimate clamped to the data range. At step $t$ the
# network's noise estimate gives an estimate of $x_0$ by inverting Eq. 1,
#
# $$
# \hat x_0 = \operatorname{clamp}\!\left(\frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}},\ -1,\ 1\right),
# $$
#
# and the next, less noisy, image is drawn from the forward process's posterior
# $q(x_{t-1} \mid x_t, x_0)$ with $\hat x_0$ in place of $x_0$:
#
# $$
# x_{t-1} = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,\hat x_0
# + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t
# + \sqrt{\tilde\beta_t}\, z, \qquad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t, \quad z \sim \mathcal{N}(0, \mathbf{I}),
# $$
#
# for $t = T, \dots, 2$; the last step returns $\hat x_0$. (The two fractions and $\tilde\beta_t$ are
# `NoiseSchedule`'s `posterior_coef_x0`, `posterior_coef_xt` and `posterior_variance`.) That is $T = 1000$ network evaluations
# per image, each adding fresh noise. DDIM (Song et al. 2021) with $\eta = 0$ visits only a
# subsequence $\tau_1 > \tau_2 > \dots$ of the timesteps and moves deterministically,
# keeping the noise estimate that is consistent with $\hat x_0$:
#
# $$
# \hat\epsilon = \frac{x_{\tau_i} - \sqrt{\bar\alpha_{\tau_i}}\,\hat x_0}{\sqrt{1-\bar\alpha_{\tau_i}}}, \qquad
# x_{\tau_{i+1}} = \sqrt{\bar\alpha_{\tau_{i+1}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{\tau_{i+1}}}\,\hat\epsilon .
# $$
#
# The same network serves both: DDIM needs no retraining. This notebook writes both loops out,
# checks them against `Diffusion.sample_ddpm` and `Diffusion.sample_ddim`, shows the reverse
# chain step by step, and times DDPM against DDIM with 1/10 and 1/20 of the steps.

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

import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display

from qdm import metrics
from qdm.diffusion import Diffusion
from qdm.inference import for_sampling, preview_precision
from qdm.plots import image_grid
from qdm.pretrained import load
from qdm.schedule import make_schedule

N_IMAGES = 8 if FAST else 64
print(f"{N_IMAGES} images per sampler")

# %% [markdown]
# **Time:** about 3 minutes in the full build on 2 CPU cores (64 images: DDPM-1000 twice, and once
# more for 16 of them); a minute in fast mode (8 images).
#
# ## A model to sample from
#
# The EMA weights of the `qdm` recipe's digit-0 model (`pretrained/qdm-mnist0-classical.pt`, the
# model of chapter 5, trained for 8,900 steps; `qdm.pretrained.load` checks them against their
# manifest). Both modes sample the same model; fast mode draws fewer images. The network runs in
# bfloat16 where the CPU computes it natively (AMX or AVX-512 BF16: the same weights, about twice
# as fast, and on this model as good as float32 in the sampler study, `results/samplers.md`), and
# in float32 on a CPU that only emulates it (AVX2: several times slower;
# `qdm.inference.preview_precision`); everything the samplers compute from its output stays in
# float32.

# %%
net, cfg = load("qdm-mnist0-classical")
PRECISION = preview_precision(torch.device("cpu"))  # bf16 or fp32, by the CPU
model = for_sampling(net, PRECISION)  # model(x, t): the noise prediction, in PRECISION
sched = make_schedule(cfg.schedule, cfg.T)
diffusion = Diffusion(sched)
T = cfg.T
shape = (N_IMAGES, net.in_channels, 28, 28)
print(f"model: {cfg.preset} recipe, {cfg.dataset} {cfg.classes}, {cfg.schedule} schedule, T = {T}")

# %% [markdown]
# ## The posterior coefficients, from scratch
#
# `NoiseSchedule` precomputes the three arrays of the DDPM step. Recomputed here from the betas:

# %%
beta = sched.betas
alpha = 1 - beta
ab = torch.cumprod(alpha, 0)
ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
coef_x0 = ab_prev.sqrt() * beta / (1 - ab)
coef_xt = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
var = (1 - ab_prev) / (1 - ab) * beta
for name, mine, theirs in [
    ("posterior_coef_x0", coef_x0, sched.posterior_coef_x0),
    ("posterior_coef_xt", coef_xt, sched.posterior_coef_xt),
    ("posterior_variance", var, sched.posterior_variance),
]:
    assert torch.allclose(mine, theirs), name
print(
    "posterior coefficients match NoiseSchedule; beta-tilde at t = 1 is",
    f"{var[0]:.1e}",
    "(no noise is added at the last step)",
)

# %% [markdown]
# ## DDPM written out, against `Diffusion.sample_ddpm`
#
# The loop below is `sample_ddpm` line by line, except that it keeps $x_t$ and $\hat x_0$ at a
# few timesteps. Given the same generator (the starting noise $x_T$, then one fresh $z$ per
# step) it must give the same images.


# %%
@torch.no_grad()
def ddpm(model, x, gen, keep=()):
    """Ancestral sampling from x = x_T; returns x0-hat of the last step and
    {t: (x_t, x0-hat)} for t in keep."""
    kept = {}
    for i in reversed(range(T)):  # index i is the paper's t = i + 1
        t = torch.full((len(x),), i)
        a_bar = ab[i].float()
        x0_hat = ((x - (1 - a_bar).sqrt() * model(x, t)) / a_bar.sqrt()).clamp(-1, 1)
        if i + 1 in keep:
            kept[i + 1] = (x, x0_hat)
        if i == 0:
            return x0_hat, kept
        mean = coef_x0[i].float() * x0_hat + coef_xt[i].float() * x
        x = mean + var[i].float().sqrt() * torch.randn(x.shape, generator=gen)


keep = sorted(
    {T, *(round(T * f) for f in (0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)), 1}, reverse=True
)

start = time.perf_counter()
ddpm_qdm = diffusion.sample_ddpm(model, shape, generator=torch.Generator().manual_seed(0))
timings = {f"DDPM-{T}": (time.perf_counter() - start, T)}

gen = torch.Generator().manual_seed(0)
x_T = torch.randn(shape, generator=gen)  # what sample_ddpm draws first
ddpm_mine, chain = ddpm(model, x_T, gen, keep)
print(f"largest difference from sample_ddpm: {(ddpm_mine - ddpm_qdm).abs().max():.1e}")
assert torch.allclose(ddpm_mine, ddpm_qdm, atol=1e-5)

# %% [markdown]
# ## The reverse chain step by step
#
# For two of the images: the current $x_t$ (top) and the network's current guess $\hat x_0$
# (bottom) as $t$ runs from $T$ down to 1. The guess settles long before the noise is gone:
# the coarse shape is decided at large $t$, the details at small $t$.

# %%
fig, axes = plt.subplots(4, len(keep), figsize=(1.3 * len(keep), 5.8))
for col, t_ in enumerate(keep):
    x_t, x0_hat = chain[t_]
    for img in range(2):
        for row, (tensor, label) in enumerate([(x_t, "$x_t$"), (x0_hat, r"$\hat x_0$")]):
            ax = axes[2 * img + row, col]
            ax.imshow(tensor[img].permute(1, 2, 0).squeeze(-1), cmap="gray")
            ax.set_xticks([]), ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{label} #{img + 1}")
    axes[0, col].set_title(f"t = {t_}", fontsize=9)
fig.suptitle(f"DDPM reverse chain, T = {T}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## DDIM written out, and what "deterministic" means
#
# The DDIM loop visits `steps` evenly spaced timesteps from $T-1$ down to 0 (as indices), exactly
# as `sample_ddim` does.


# %%
@torch.no_grad()
def ddim(model, x, steps):
    """Deterministic DDIM (eta = 0) from x = x_T; returns x0-hat of the last step."""
    times = torch.linspace(T - 1, 0, steps).round().long().unique_consecutive().tolist()
    for k, i in enumerate(times):
        a_bar = ab[i].float()
        x0_hat = (
            (x - (1 - a_bar).sqrt() * model(x, torch.full((len(x),), i))) / a_bar.sqrt()
        ).clamp(-1, 1)
        if k == len(times) - 1:
            return x0_hat
        a, a_next = ab[i].item(), ab[times[k + 1]].item()
        eps_hat = (x - math.sqrt(a) * x0_hat) / math.sqrt(
            1 - a
        )  # the noise consistent with the clamped x0-hat
        x = math.sqrt(a_next) * x0_hat + math.sqrt(1 - a_next) * eps_hat


steps_few, steps_more = T // 20, T // 10  # DDIM-50 and DDIM-100 for T = 1000
for steps in (steps_more, steps_few):
    start = time.perf_counter()
    out = diffusion.sample_ddim(
        model, shape, steps=steps, generator=torch.Generator().manual_seed(0)
    )
    timings[f"DDIM-{steps}"] = (time.perf_counter() - start, steps)
    if steps == steps_more:
        ddim_qdm = out
ddim_mine = ddim(model, x_T, steps_more)
print(f"largest difference from sample_ddim: {(ddim_mine - ddim_qdm).abs().max():.1e}")
assert torch.allclose(ddim_mine, ddim_qdm, atol=1e-4)

# %% [markdown]
# DDPM adds fresh noise at every step, so the same starting noise $x_T$ leads to a different image
# for every stream of $z$'s; DDIM adds none, so $x_T$ alone decides the image (an "encoding" of
# the image in the noise). Both from the same $x_T$:

# %%
few = min(N_IMAGES, 16)  # a chain of 16 is enough here
ddpm_other, _ = ddpm(model, x_T[:few], torch.Generator().manual_seed(1))  # same x_T, other z's
ddim_again = ddim(model, x_T, steps_more)
print(
    f"DDPM, same x_T, other noise stream: mean |difference| "
    f"{(ddpm_other - ddpm_mine[:few]).abs().mean():.3f}"
)
print(
    "DDIM, same x_T, run again:          mean |difference| "
    f"{(ddim_again - ddim_mine).abs().mean():.3f}"
)
assert torch.equal(ddim_again, ddim_mine)

fig, axes = plt.subplots(1, 3, figsize=(11, 4.2))
panels = [
    (ddpm_mine, "DDPM, noise stream 0"),
    (ddpm_other, "DDPM, noise stream 1"),
    (ddim_mine, f"DDIM-{steps_more}, deterministic"),
]
for ax, (images, title) in zip(axes, panels):
    ax.imshow(image_grid(images[:few], nrow=4).permute(1, 2, 0))
    ax.set_title(title)
    ax.axis("off")
fig.suptitle("the same starting noise $x_T$")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Are these the trained model's digits?
#
# The DDPM-1000 samples above, scored with the FID of chapter 7 against all test images of the
# digit, with the bound of chapter 5: between real images at the same $N$ and the paper recipe's
# model (above 200 already at $N = 1000$, higher at smaller $N$), so it says that the pictures come
# from the trained weights.

# %%
FID_BOUND = 150 if FAST else 100
inception = metrics.inception()
real = metrics.reference_features("mnist", cfg.classes, "test", 64 if FAST else 980, inception)
fid = metrics.frechet_distance(metrics.inception_features(ddpm_qdm, inception), real)
fig, ax = plt.subplots(figsize=(5, 5.4))
ax.imshow(image_grid(ddpm_qdm, nrow=8).permute(1, 2, 0))
ax.set_title(f"{N_IMAGES} DDPM-{T} samples: FID {fid:.1f} (N = {N_IMAGES})")
ax.axis("off")
plt.show()
print(f"FID at N = {N_IMAGES}: {fid:.1f} (bound {FID_BOUND})")
assert fid < FID_BOUND, f"FID {fid:.1f}: these samples do not look like the trained model's"

# %% [markdown]
# ## Wall time
#
# The cost of sampling is the number of network evaluations: $T$ for DDPM, `steps` for DDIM.
# The times below are for one batch on this machine's CPU (`time.perf_counter` around the
# `Diffusion` calls above).

# %%
for name, (seconds, evaluations) in timings.items():
    print(
        f"{name:>10}: {seconds:7.2f} s for {N_IMAGES} images, {evaluations:5d} network "
        "evaluations, "
        f"{1000 * seconds / evaluations:6.1f} ms each"
    )
speedup = timings[f"DDPM-{T}"][0] / timings[f"DDIM-{steps_few}"][0]
print(f"DDIM-{steps_few} is {speedup:.0f}x faster than DDPM-{T}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.2, 1]})
names = list(timings)
axes[0].barh(names, [timings[n][0] for n in names], color=["C0", "C1", "C2"])
axes[0].set(xlabel="seconds (one batch, CPU)", title=f"wall time for {N_IMAGES} images")
axes[0].invert_yaxis()
for y, n in enumerate(names):
    axes[0].text(timings[n][0], y, f" {timings[n][0]:.2f} s", va="center")
axes[1].imshow(image_grid(torch.cat([ddpm_qdm[:4], ddim_qdm[:4]]), nrow=4).permute(1, 2, 0))
axes[1].set_title(f"top: DDPM-{T}; bottom: DDIM-{steps_more}")
axes[1].axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What we checked.** The two loops written out from the equations above reproduce
# `Diffusion.sample_ddpm` and `Diffusion.sample_ddim` (same generator, same images); DDPM's
# images depend on every step's noise, DDIM's on the starting noise alone; and DDIM's cost falls
# with its number of steps, which is why qdm draws its per-epoch previews with DDIM-100 and keeps
# DDPM-1000 (the official code's sampler) for the final samples. How good the images are is the
# subject of notebook 7.
#
# ## DDIM against DDPM on trained models, measured
#
# Speed alone does not pick a sampler; its images must score as well. `benchmarks/bench_samplers.py`
# samples N = 1000 images from four trained models (Table I's classical seed-0 models of both
# recipes, digits 0 and 1) with DDPM-1000 and with few-step samplers (DDIM, ancestral sampling on
# a respaced subsequence of the timesteps, DPM-Solver++ 2M and its SDE variant) at 10 to 250
# network evaluations, scores them with the protocol of notebook 7 and times each. Its section
# "DDIM: few steps or no noise?" answers why DDIM-100 scores about twice DDPM-1000's FID on the
# `qdm` digit-0 model, and "The rule" whether any sampler may replace DDPM-1000 in the tables.
# The committed figure and report:

# %%
samplers = Path("results/samplers.md")
if Path("results/samplers.png").exists():
    display(Image("results/samplers.png"))
display(
    Markdown(
        samplers.read_text()
        if samplers.exists()
        else "**Not measured yet**: `results/samplers.md` is written by "
        "`benchmarks/bench_samplers.py`."
    )
)
