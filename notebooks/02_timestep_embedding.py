# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. The timestep embedding
#
# **One idea:** one network $\epsilon_\theta(x_t, t)$ denoises at every noise level, so it must
# be told $t$. The integer $t$ is turned into a vector of sines and cosines at geometrically
# spaced frequencies (the Transformer's positional encoding), and a Linear layer maps that to
# the width of the U-Net's bottleneck (Section IV-C):
#
# $$
# \gamma(t) = \big[\sin(t\,\omega_k),\ \cos(t\,\omega_k)\big]_{k=1}^{d/2},
# \qquad \omega_k = 10000^{-2k/d},
# \tag{5}
# $$
#
# $$
# \mathrm{Embed}(t) = \mathrm{Linear}\big(\gamma(t)\big) \in \mathbb{R}^{128}.
# \tag{6}
# $$
#
# with $d = 128$. The U-Net adds $\mathrm{Embed}(t)$ to every pixel of its $128 \times 7 \times 7$
# bottleneck map, one value per channel (notebook 3).
#
# **The code differs from the formula.** Eq. 5 as written runs $k = 1..d/2$, so its fastest
# frequency is $10000^{-2/d} \approx 0.87$, not 1. The official code (like DDPM's) uses
# $k = 0..d/2-1$ and spaces the frequencies so that they run exactly from 1 down to $10^{-4}$:
#
# $$
# \omega_k^{\text{code}} = 10000^{-k/(d/2-1)}, \qquad k = 0, \dots, d/2 - 1 .
# $$
#
# qdm follows the code (`qdm.embedding.sinusoidal_embedding`), and returns all the sines first,
# then all the cosines. The difference is harmless (the Linear layer of Eq. 6 is learned on
# top), but it means the paper's Eq. 5 is not literally what was trained.
#
# **Time:** seconds in both modes.

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
import numpy as np
import torch

from qdm.embedding import TimeEmbedding, sinusoidal_embedding
from qdm.unet import UNet

T, D = 1000, 128
STRIDE = 4 if FAST else 1  # timestep spacing of the T x T similarity matrix

# %% [markdown]
# ## From scratch, against `qdm`
#
# A NumPy version of the code's formula, and the paper's Eq. 5 as written, for every timestep
# index the model sees ($0, \dots, T-1$; see notebook 1 for the index convention).


# %%
def gamma(t: np.ndarray, d: int, paper: bool = False) -> np.ndarray:
    """[sin(t w_k) for all k, cos(t w_k) for all k] with the code's or the paper's w_k."""
    half = d // 2
    omega = (
        10000.0 ** (-2 * np.arange(1, half + 1) / d)
        if paper
        else 10000.0 ** (-np.arange(half) / (half - 1))
    )
    angles = np.outer(t, omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


ts = np.arange(T)
emb = sinusoidal_embedding(torch.arange(T), D).numpy()  # qdm, float32
assert emb.shape == (T, D)
err = np.abs(emb - gamma(ts, D)).max()
print(f"qdm vs the code's formula: largest difference {err:.1e} (float32 rounding of t * omega)")
assert err < 1e-3
print(
    "qdm vs the paper's Eq. 5 as written: largest difference "
    f"{np.abs(emb - gamma(ts, D, paper=True)).max():.2f}"
)
print(
    f"|gamma(t)|^2 = d/2 = {D // 2} for every t: {np.allclose((emb ** 2).sum(1), D / 2, atol=1e-3)}"
)

# %% [markdown]
# ## The sin/cos matrix
#
# Each row is one $\gamma(t)$. The left half holds the sines, the right half the cosines; the
# frequency falls from left to right within each half. The first columns oscillate every few
# steps and tell neighbouring timesteps apart; the last columns barely move over the whole
# diffusion and encode coarsely *where* in $[0, T)$ the step lies.

# %%
fig, ax = plt.subplots(figsize=(9, 4.5))
im = ax.imshow(emb, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
ax.axvline(D // 2 - 0.5, color="k", lw=0.8)
ax.set(
    xlabel="dimension (sines | cosines)",
    ylabel="timestep index t",
    title=r"$\gamma(t)$, Eq. 5 with the code's frequencies ($d = 128$)",
)
fig.colorbar(im, ax=ax, fraction=0.03)
plt.show()

# %% [markdown]
# ## Frequency spacing: the code vs the paper's formula
#
# Both are geometric series ending at $10^{-4}$; the code's starts at 1, the paper's at
# $10000^{-2/d}$. A frequency whose period $2\pi/\omega_k$ is longer than $T$ never completes a
# cycle during the diffusion: its sine is monotonic in $t$ over the whole range.

# %%
k = np.arange(D // 2)
omega_code = 10000.0 ** (-k / (D // 2 - 1))
omega_paper = 10000.0 ** (-2 * (k + 1) / D)
slow = (2 * np.pi / omega_code > T).sum()
print(
    f"fastest: code {omega_code[0]:.3f}, paper {omega_paper[0]:.3f}; slowest: both "
    f"{omega_code[-1]:.0e}"
)
print(
    f"ratio between neighbours: code {omega_code[1] / omega_code[0]:.4f}, paper "
    f"{omega_paper[1] / omega_paper[0]:.4f}"
)
print(f"{slow} of {D // 2} frequencies have a period longer than T = {T} steps")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].semilogy(k, omega_code, "o", ms=3, label=r"code: $10000^{-k/(d/2-1)}$, $k=0..d/2-1$")
axes[0].semilogy(k, omega_paper, "x", ms=3, label=r"paper Eq. 5: $10000^{-2k/d}$, $k=1..d/2$")
axes[0].set(xlabel="frequency number (0-based)", ylabel=r"$\omega_k$", title="frequencies")
axes[0].legend()
axes[1].semilogy(k, 2 * np.pi / omega_code, "o", ms=3, label="code")
axes[1].semilogy(k, 2 * np.pi / omega_paper, "x", ms=3, label="paper")
axes[1].axhline(T, color="k", ls="--", lw=0.8, label=f"T = {T}")
axes[1].set(
    xlabel="frequency number (0-based)", ylabel=r"period $2\pi/\omega_k$ (steps)", title="periods"
)
axes[1].legend()
for ax in axes:
    ax.grid(alpha=0.3, which="both")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Similarity between timesteps
#
# The dot product of two embeddings only depends on the *distance* between the timesteps:
#
# $$
# \gamma(t)\cdot\gamma(t') = \sum_k \big[\sin(t\omega_k)\sin(t'\omega_k) + \cos(t\omega_k)\cos(t'\omega_k)\big]
# = \sum_k \cos\big((t - t')\,\omega_k\big),
# $$
#
# which is $d/2$ at $t = t'$. Divided by $d/2$ it is a cosine similarity. It falls quickly for
# small $|t - t'|$ (the fast frequencies decorrelate) and then stays positive, held up by the
# slow ones: nearby steps look alike to the network, distant ones less so, everywhere along
# the chain alike.

# %%
sub = emb[::STRIDE].astype(np.float64)
sim = sub @ sub.T / (D / 2)
toeplitz_err = np.abs(sim[1:, 1:] - sim[:-1, :-1]).max()  # constant along diagonals
print(f"similarity matrix {sim.shape}: largest change along a diagonal {toeplitz_err:.1e}")
assert toeplitz_err < 1e-3

lags = np.arange(T)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
im = axes[0].imshow(sim, cmap="viridis", extent=[0, T, T, 0], vmin=-0.2, vmax=1)
axes[0].set(xlabel="t'", ylabel="t", title=r"$\gamma(t)\cdot\gamma(t') \,/\, (d/2)$")
fig.colorbar(im, ax=axes[0], fraction=0.045)
for t0 in [0, 250, 500, 999]:
    axes[1].plot(ts, emb[t0] @ emb.T / (D / 2), lw=1, label=f"t = {t0}")
axes[1].plot(
    lags,
    np.cos(np.outer(lags, omega_code)).mean(1),
    "k:",
    lw=1,
    label=r"$\frac{2}{d}\sum_k\cos(\Delta t\,\omega_k)$",
)
axes[1].set(xlabel="t'", ylabel="cosine similarity", title="similarity to a few fixed t")
axes[1].legend(fontsize=8)
axes[1].grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Eq. 6: the learned projection
#
# `TimeEmbedding` is $\gamma$ followed by one `nn.Linear(128, 128)`; in the U-Net its output is
# broadcast over the $7 \times 7$ bottleneck as a per-channel offset. Here with the U-Net's own
# (untrained, seeded) layer:

# %%
torch.manual_seed(0)
net = UNet()
te = net.time_embed
assert isinstance(te, TimeEmbedding)
t_batch = torch.tensor([0, 1, 500, 999])
out = te(t_batch)
assert torch.allclose(out, te.linear(sinusoidal_embedding(t_batch, D)))  # Eq. 6 = Linear(Eq. 5)
print(
    f"Embed(t) for t = {t_batch.tolist()}: shape {tuple(out.shape)}, "
    f"{sum(p.numel() for p in te.parameters()):,} parameters (128 x 128 + 128)"
)
print(
    "added to the bottleneck map as",
    tuple(out[:, :, None, None].shape),
    "-> broadcast over (B, 128, 7, 7)",
)

# %% [markdown]
# **What we checked.** `sinusoidal_embedding` is the code's version of Eq. 5 (frequencies from 1
# to $10^{-4}$, not the paper's $k = 1..d/2$), every embedding has the same norm, the similarity
# between two timesteps depends only on how far apart they are, and `TimeEmbedding` is Eq. 6.
