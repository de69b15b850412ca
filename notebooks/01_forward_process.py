# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. The forward process and the cosine schedule
#
# **One idea:** a diffusion model never learns how to destroy an image; that half is fixed.
# The *forward process* mixes a clean image $x_0$ with Gaussian noise, a little more at every
# step $t = 1, \dots, T$, and the *schedule* $\beta_1, \dots, \beta_T$ says how much. The
# paper (Section IV-B) uses the standard DDPM forward process with $T = 1000$ and the cosine
# schedule of Nichol & Dhariwal (2021):
#
# $$
# q(x_t \mid x_0) = \mathcal{N}\!\left(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,\mathbf{I}\right),
# \qquad \bar\alpha_t = \prod_{s=1}^{t} (1-\beta_s),
# \tag{1}
# $$
#
# $$
# \bar\alpha_t = \cos^2\!\left(\frac{t/T + s}{1+s}\cdot\frac{\pi}{2}\right),
# \tag{2}
# $$
#
# $$
# \beta_t = 1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}}.
# \tag{3}
# $$
#
# Eq. 1 is what makes training cheap: $x_t$ for any $t$ is one line,
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ with $\epsilon \sim \mathcal{N}(0, \mathbf{I})$
# (the paper's Eq. 9 writes $\alpha_t$ there; the cumulative $\bar\alpha_t$ is meant, as its Eq. 13 says).
#
# This notebook computes Eq. 2-3 from scratch and checks them against `qdm.schedule`, compares
# the cosine schedule with the linear one of Ho et al. (2020), noises an MNIST digit with
# `Diffusion.q_sample`, and checks Eq. 1 by simulation: running the one-step process
# $x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\epsilon_t$ a thousand times must give
# the mean and variance that Eq. 1 promises.
#
# **Index convention.** The paper counts $t = 1, \dots, T$; qdm stores step $t$ at index
# $t - 1$, so `alpha_bars[i]` is $\bar\alpha_{i+1}$ and the model sees the index $0, \dots, T-1$.
#
# **Time:** about a minute in the full build on 2 CPU cores (the one-step chain of 1,000 steps on
# 1,024 copies of an image); seconds in fast mode.

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
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from qdm.data import load_images
from qdm.diffusion import Diffusion
from qdm.schedule import cosine_alpha_bar, cosine_betas, make_schedule

T = 1000
N_DRAWS = 256 if FAST else 1024  # noise draws per checkpoint in the Eq. 1 check
print(f"{N_DRAWS} noise draws")

# %% [markdown]
# ## Eq. 2-3 from scratch, against `qdm.schedule`
#
# Two details of the official code are not in the paper's text, and qdm follows the code:
#
# * Eq. 2 as printed gives $\bar\alpha_0 = \cos^2\!\big(\tfrac{s}{1+s}\tfrac{\pi}{2}\big) \ne 1$.
#   Nichol & Dhariwal divide by that value so that $\bar\alpha_0 = 1$; the ratio in Eq. 3 is the
#   same either way, so the betas do not care.
# * The betas are clipped to $[10^{-4}, 0.999]$. At the end Eq. 2 reaches $\bar\alpha_T = 0$,
#   so Eq. 3 gives $\beta_T = 1$; the clip keeps the last step finite (the reverse process
#   divides by $\sqrt{\alpha_t}$).

# %%
s = 0.008
t = torch.arange(T + 1, dtype=torch.float64)
f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # Eq. 2 as printed, t = 0..T
beta_raw = 1 - f[1:] / f[:-1]  # Eq. 3, t = 1..T
beta = beta_raw.clamp(1e-4, 0.999)  # the official code's clip

assert torch.allclose(beta, cosine_betas(T, s))  # qdm's Eq. 3
assert torch.allclose(f / f[0], cosine_alpha_bar(t, T, s))  # qdm's normalised Eq. 2

cosine, linear = make_schedule("cosine", T), make_schedule("linear", T)
assert torch.allclose(cosine.alpha_bars, torch.cumprod(1 - beta, 0))  # Eq. 1's product

print(f"Eq. 2 as printed: alpha-bar_0 = {f[0]:.6f}")
print(
    f"betas clipped up to 1e-4: {(beta_raw < 1e-4).sum().item()} (the first steps); "
    f"clipped down to 0.999: {(beta_raw > 0.999).sum().item()} (beta_T = {beta_raw[-1]:.3f})"
)
print(
    f"largest |prod(1 - beta) - Eq. 2| = {(cosine.alpha_bars - (f / f[0])[1:]).abs().max():.1e} "
    "(the clipping)"
)
print(f"alpha-bar_T: cosine {cosine.alpha_bars[-1]:.1e}, linear {linear.alpha_bars[-1]:.1e}")
print(
    f"alpha-bar at t = T/2: cosine {cosine.alpha_bars[T // 2 - 1]:.3f}, linear "
    f"{linear.alpha_bars[T // 2 - 1]:.3f}"
)

# %% [markdown]
# The linear schedule destroys the signal early: half-way through it has kept a small fraction
# of $\bar\alpha$ where the cosine schedule still keeps about half, and its last few hundred
# steps all look like pure noise. The cosine schedule spends its steps more evenly, which is
# visible on the log signal-to-noise ratio $\log\big(\bar\alpha_t / (1-\bar\alpha_t)\big)$: nearly a
# straight line in $t$ for the cosine schedule.

# %%
steps = torch.arange(1, T + 1)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for sched, name in [(cosine, "cosine (Eq. 2-3)"), (linear, "linear (Ho et al.)")]:
    ab = sched.alpha_bars
    axes[0].plot(steps, ab, label=name)
    axes[1].plot(steps, sched.betas, label=name)
    axes[2].plot(steps, torch.log(ab / (1 - ab)), label=name)
axes[0].set(title=r"$\bar\alpha_t$ (Eq. 1)", xlabel="t")
axes[1].set(title=r"$\beta_t$ (Eq. 3), clipped to [1e-4, 0.999]", xlabel="t", yscale="log")
axes[2].set(title=r"log SNR $= \log \bar\alpha_t / (1-\bar\alpha_t)$", xlabel="t")
for ax in axes:
    ax.grid(alpha=0.3)
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## A digit noised at several $t$
#
# `Diffusion.q_sample(x0, t, noise)` is Eq. 1 in one line. The same noise $\epsilon$ is used
# in every panel, so only $\bar\alpha_t$ changes from left to right.

# %%
x0 = load_images("mnist", "test")[3:4]  # one digit, (1, 1, 28, 28) in [-1, 1]
shown = [1, 50, 100, 200, 300, 500, 700, 850, 1000]  # the paper's t
idx = torch.tensor(shown) - 1  # qdm's indices
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).expand(
    len(shown), -1, -1, -1
)

fig, axes = plt.subplots(2, len(shown), figsize=(1.45 * len(shown), 3.6))
for row, (sched, name) in enumerate([(cosine, "cosine"), (linear, "linear")]):
    xt = Diffusion(sched).q_sample(x0.expand(len(shown), -1, -1, -1), idx, eps)
    for ax, img, t_, ab in zip(axes[row], xt, shown, sched.alpha_bars[idx]):
        ax.imshow(img[0], cmap="gray")  # each panel on its own grey scale
        ax.set_title(f"t={t_}\n" + r"$\bar\alpha$" + f"={ab:.3f}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    axes[row, 0].set_ylabel(name)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Checking Eq. 1 by simulation
#
# Eq. 1 is a closed form for the $t$-fold composition of the one-step kernels
# $q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t\mathbf{I})$. We take one
# image, run the one-step chain on `N_DRAWS` independent copies for all $T$ steps, and at a few
# checkpoints compare, against Eq. 1:
#
# * the **signal coefficient**: the least-squares fit of the per-pixel mean of $x_t$ onto
#   $x_0$, which Eq. 1 says is $\sqrt{\bar\alpha_t}$;
# * the **noise variance**: the per-pixel variance of $x_t$ averaged over pixels, which Eq. 1
#   says is $1 - \bar\alpha_t$.
#
# The same statistics of `q_sample` (the closed form) are computed alongside.


# %%
def stats(xt: torch.Tensor, x0: torch.Tensor) -> tuple[float, float]:
    """(signal coefficient, mean per-pixel variance) of N samples xt (N,1,28,28) of one image x0."""
    mean, var = xt.mean(0), xt.var(0)
    return ((mean * x0[0]).sum() / (x0[0] ** 2).sum()).item(), var.mean().item()


gen = torch.Generator().manual_seed(1)
checkpoints = [1, 10, 50, 100, 250, 500, 750, 900, 1000]  # the paper's t
diffusion = Diffusion(cosine)
rows = []
x = x0.double().expand(N_DRAWS, -1, -1, -1).clone()
for t_ in range(1, T + 1):
    b = cosine.betas[t_ - 1]
    x = (1 - b).sqrt() * x + b.sqrt() * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    if t_ in checkpoints:
        ab = cosine.alpha_bars[t_ - 1].item()
        closed = diffusion.q_sample(
            x0.expand(N_DRAWS, -1, -1, -1),
            torch.full((N_DRAWS,), t_ - 1),
            torch.randn((N_DRAWS, 1, 28, 28), generator=gen),
        )
        rows.append((t_, ab, *stats(x, x0.double()), *stats(closed, x0)))

print(
    f"{'t':>5} {'sqrt(ab)':>9} {'chain':>8} {'q_sample':>9} | {'1-ab':>7} {'chain':>8} "
    f"{'q_sample':>9}"
)
for t_, ab, c_chain, v_chain, c_closed, v_closed in rows:
    print(
        f"{t_:5d} {math.sqrt(ab):9.4f} {c_chain:8.4f} {c_closed:9.4f} | {1 - ab:7.4f} "
        f"{v_chain:8.4f} {v_closed:9.4f}"
    )
worst = max(
    max(abs(c1 - math.sqrt(ab)), abs(c2 - math.sqrt(ab)), abs(v1 - (1 - ab)), abs(v2 - (1 - ab)))
    for _, ab, c1, v1, c2, v2 in rows
)
print(f"largest deviation from Eq. 1: {worst:.4f}")
assert worst < 0.02, "the simulated chain does not match Eq. 1"

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
ab = cosine.alpha_bars
cols = list(zip(*rows))
axes[0].plot(steps, ab.sqrt(), color="0.3", label=r"Eq. 1: $\sqrt{\bar\alpha_t}$")
axes[0].plot(cols[0], cols[2], "o", mfc="none", label="one-step chain")
axes[0].plot(cols[0], cols[4], "x", label="q_sample")
axes[0].set(title="signal coefficient of the mean of $x_t$", xlabel="t")
axes[1].plot(steps, 1 - ab, color="0.3", label=r"Eq. 1: $1-\bar\alpha_t$")
axes[1].plot(cols[0], cols[3], "o", mfc="none", label="one-step chain")
axes[1].plot(cols[0], cols[5], "x", label="q_sample")
axes[1].set(title="per-pixel variance of $x_t$", xlabel="t")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# **What we checked.** `qdm.schedule` implements Eq. 2-3 with the official code's
# normalisation and clipping, its $\bar\alpha_t$ is the running product of Eq. 1, and both the
# one-step chain and `q_sample` have the mean and variance Eq. 1 gives, at every checkpoint.
# Because the clip keeps $\beta_T = 0.999$ rather than 1, $\bar\alpha_T$ is tiny but not zero:
# $x_T$ is pure noise for all practical purposes, which is what the samplers of notebook 6 start from.
