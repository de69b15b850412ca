# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10. Quantum-generated noise
#
# **One idea:** the paper's abstract promises "quantum-generated noise inherent to quantum
# circuits" and "a newly developed noise scheduling method, applying different noise levels
# strategically across time steps during the training process", but its method section never
# specifies either and its code implements neither. `qdm.noise` builds concrete versions, all off
# by default, and this notebook checks each one against its reference: shot noise and channel
# noise in the quantum layer, and a quantum source for the diffusion noise $\epsilon$. Noise levels
# that change with the diffusion step $t$, and the measured effect of every option on the images,
# are the next notebook's.
#
# What each option is:
#
# | option | what it does | reference it is checked against here |
# |---|---|---|
# | `shots` | the circuit's $\langle Z_i\rangle$ (Eq. 7) estimated from $S$ measured bitstrings | PennyLane `default.qubit` at the same $S$; the binomial variance |
# | `channel`, `noise_p` | a depolarizing or bit-flip channel on every qubit after each layer | PennyLane `default.mixed` |
# | `eps_source="quantum"` | $\epsilon$ of Eq. 1 and of sampling from measured $\lvert+\rangle$ qubits | $\mathcal{N}(0, 1)$, Kolmogorov-Smirnov |
# | `noise_schedule` | the level of the gate's noise over $t$: constant, linear, cosine | its formula |
# | `schedule`, `t_sampling`, `t_reweight` | the diffusion schedule (Eq. 2) and how $t$ is drawn in training (Eq. 4) | their formulas |
#
# No model is trained in this notebook. The last three rows, and whether any option changes image
# quality, are notebook 11's.
#
# **Time:** under a minute in the full build on 2 CPU cores; seconds in fast mode.

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
from IPython.display import Markdown, display
from scipy import stats

from qdm.noise import CHANNELS, paper_channel_exponents, quantum_randn, quantum_uniform
from qdm.quantum import circuit_outputs, closed_form_outputs, parity_sets, weight_shape
from qdm.train import make_config, make_diffusion

N_QUBITS, N_LAYERS = 4, 3  # small circuits, so that PennyLane's references take milliseconds
COPIES = 1000 if FAST else 5000  # independent shot estimates per histogram
N_EPS = 20_000 if FAST else 1_000_000  # epsilon values for the KS test
print(
    f"{N_QUBITS} qubits, {N_LAYERS} layers; {COPIES} estimates per histogram, "
    f"{N_EPS} epsilon values"
)


def random_case(ansatz: str, seed: int, n: int = N_QUBITS, L: int = N_LAYERS):
    """One input x in [-2.5, 2.5)^n, shape (1, n), and weights in [0, 2 pi), float64."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(1, n, generator=g, dtype=torch.float64) * 2 - 1) * 2.5
    w = torch.rand(weight_shape(ansatz, n, L), generator=g, dtype=torch.float64) * 2 * math.pi
    return x, w


# %% [markdown]
# ## (a) Shot noise: what hardware returns
#
# A quantum computer does not return $\langle Z_i\rangle$ of Eq. 7; it returns $S$ measured
# bitstrings, and the layer's output is their average, $\hat z_i = \frac1S\sum_{s=1}^S (-1)^{b^{(s)}_i}$.
# Each term is $\pm1$ with mean $\langle Z_i\rangle$, so
#
# $$
# \mathbb{E}\,\hat z_i = \langle Z_i\rangle, \qquad \operatorname{Var}\hat z_i = \frac{1 - \langle Z_i\rangle^2}{S} .
# $$
#
# The `exact` backend samples these bitstrings exactly rather than simulating a device. For the
# paper's ansatz the sampling is cheap because of notebook 4's argument: after the $R_Y(x_j)$
# encoding the bits $b_j \sim \mathrm{Bernoulli}(\sin^2\frac{x_j}{2})$ are independent, $R_Z$ only
# adds phases, and each CNOT chain replaces the bits by their prefix parities. A shot is
# therefore $n$ coin flips pushed through the chain $L$ times. (Statevector ansaetze draw from
# $|\psi|^2$; beyond 4096 shots, multinomial counts over the $2^n$ outcomes come from a tree of
# binomial splits, so the cost does not grow with $S$.) In training, the forward pass uses the
# estimate and the backward pass the exact gradient of its expectation (a straight-through estimator).
#
# Below, one input with many copies, so that each copy gives an independent estimate: the exact
# sampler against PennyLane's `default.qubit` at the same $S$, and the binomial prediction.

# %%
S = 100
x, w = random_case("paper", seed=1)
mu = closed_form_outputs(x, N_LAYERS)[0]  # <Z_i>, the closed form of notebook 4
torch.manual_seed(0)
ours = circuit_outputs(x.repeat(COPIES, 1), w, "paper", shots=S).detach()
with torch.no_grad():
    theirs = circuit_outputs(
        x.repeat(COPIES, 1), w, "paper", "pennylane", shots=S, diff_method="parameter-shift", seed=1
    )

edges = np.arange(-S - 1, S + 2, 2) / S  # the estimates live on the lattice k/S
fig, axes = plt.subplots(1, N_QUBITS, figsize=(13, 3), sharey=True)
for i, ax in enumerate(axes):
    m = mu[i].item()
    sd = math.sqrt((1 - m**2) / S)
    ax.hist(
        ours[:, i].numpy(), bins=edges, density=True, alpha=0.6, color="C0", label="exact sampler"
    )
    ax.hist(
        theirs[:, i].numpy(),
        bins=edges,
        density=True,
        histtype="step",
        lw=1.5,
        color="C1",
        label="PennyLane",
    )
    grid = np.linspace(m - 4.5 * sd, m + 4.5 * sd, 200)
    ax.plot(
        grid,
        stats.norm.pdf(grid, m, sd),
        "k",
        lw=1,
        label=r"$\mathcal{N}(\langle Z\rangle, (1-\langle Z\rangle^2)/S)$",
    )
    ax.set(
        xlim=(m - 4.5 * sd, m + 4.5 * sd),
        xlabel=rf"estimate of $\langle Z_{i}\rangle$",
        title=rf"qubit {i}: $\langle Z_{i}\rangle$ = {m:.3f}",
    )
axes[0].legend(fontsize=7, loc="upper left")
fig.suptitle(f'"paper" ansatz, {N_QUBITS} qubits, S = {S} shots, {COPIES} estimates each')
fig.tight_layout()
plt.show()

rows = [
    "| qubit | exact | mean, exact sampler | mean, PennyLane | var / binomial, exact sampler | "
    "var / binomial, PennyLane | KS p-value (two samples) |",
    "|---:|---:|---:|---:|---:|---:|---:|",
]
for i in range(N_QUBITS):
    binom = (1 - mu[i] ** 2) / S
    counts = [
        (S * (1 - e[:, i]) / 2).round().numpy() for e in (ours, theirs)
    ]  # integer counts of 1s
    p_ks = stats.ks_2samp(*counts).pvalue
    r_ours, r_theirs = ours[:, i].var() / binom, theirs[:, i].var() / binom
    rows.append(
        f"| {i} | {mu[i]:.3f} | {ours[:, i].mean():.3f} | {theirs[:, i].mean():.3f} | "
        f"{r_ours:.2f} | {r_theirs:.2f} | {p_ks:.2f} |"
    )
    se = math.sqrt(binom / COPIES)
    assert abs(ours[:, i].mean() - mu[i]) < 4.5 * se and abs(theirs[:, i].mean() - mu[i]) < 4.5 * se
    assert 0.75 < r_ours < 1.3 and 0.75 < r_theirs < 1.3 and p_ks > 1e-3
display(Markdown("\n".join(rows)))

# %% [markdown]
# Both samplers are unbiased, their variances match $(1-\langle Z\rangle^2)/S$, and the two-sample
# Kolmogorov-Smirnov test finds no difference between them (`tests/test_noise.py` runs the same
# tests, and checks the covariances between qubits as well). The spread shrinks as $1/\sqrt{S}$;
# the exact sampler costs the same at $10^5$ shots as at 10:

# %%
shot_counts = [10, 30, 100, 300, 1000, 10_000, 100_000]
torch.manual_seed(1)
sds = torch.stack(
    [circuit_outputs(x.repeat(COPIES, 1), w, "paper", shots=s).detach().std(0) for s in shot_counts]
)
predicted = torch.stack([((1 - mu**2) / s).sqrt() for s in shot_counts])
fig, ax = plt.subplots(figsize=(6, 3.8))
for i in range(N_QUBITS):
    ax.plot(shot_counts, predicted[:, i], color=f"C{i}", lw=1)
    ax.plot(
        shot_counts,
        sds[:, i],
        "o",
        color=f"C{i}",
        ms=4,
        label=rf"qubit {i}, $\langle Z\rangle$ = {mu[i]:.2f}",
    )
ax.set(
    xscale="log",
    yscale="log",
    xlabel="shots S",
    ylabel=r"sd of the estimate of $\langle Z_i\rangle$",
    title=r"measured (dots) vs $\sqrt{(1-\langle Z\rangle^2)/S}$ (lines)",
)
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()
ratio = sds / predicted
print(f"measured / predicted sd over all S and qubits: {ratio.min():.3f} to {ratio.max():.3f}")
assert ((ratio > 0.85) & (ratio < 1.15)).all()

# %% [markdown]
# ## (b) Channel noise: a noisy device, in closed form
#
# Real qubits also decohere. The option `channel` puts one of PennyLane's channels on every qubit
# after each layer's CNOT chain, with probability $p$:
#
# $$
# \mathcal{E}_{\text{dep}}(\rho) = (1-p)\,\rho + \tfrac{p}{3}\,(X\rho X + Y\rho Y + Z\rho Z),
# \qquad
# \mathcal{E}_{\text{flip}}(\rho) = (1-p)\,\rho + p\,X\rho X .
# $$
#
# Measured in the $Z$ basis, both flip a bit with probability $q$ ($X$ and $Y$ flip it, $Z$ does
# not): $q = 2p/3$ for the depolarizing channel, $q = p$ for the bit flip. A flip multiplies
# $(-1)^{\text{bit}}$ by $-1$, so each channel multiplies the expectation of a $Z$-string by
# $\lambda = 1 - 2q$ per qubit it covers. For the paper's ansatz, follow $Z_i$ backwards through
# the circuit (Heisenberg picture): just after layer $l$'s chain it is the $Z$-string over the
# parity set of the $L - 1 - l$ chains still to come, and the $R_Z$ gates commute with it. So the
# channel after layer $l$ scales it by $\lambda$ to the size of that set, and
#
# $$
# \langle Z_i\rangle_{p} = \lambda^{k_i} \prod_{j \in S_i} \cos x_j ,
# \qquad k_i = \sum_{m=0}^{L-1} \big|S_i^{(m)}\big| ,
# $$
#
# where $S_i^{(m)}$ is qubit $i$'s parity set after $m$ chains (notebook 4) and $S_i = S_i^{(L)}$.
# The other ansaetze have no such closed form; there the `exact` backend draws one Pauli
# trajectory per sample and forward pass (Monte Carlo), whose average is the channel's expectation.
# The closed form against PennyLane's density-matrix simulator `default.mixed`:

# %%
k = paper_channel_exponents(N_QUBITS, N_LAYERS)
print("parity sets after m chains:", {m: parity_sets(N_QUBITS, m) for m in range(N_LAYERS)})
print("exponents k_i:", k.tolist())

x, w = random_case("paper", seed=2)
p_line = torch.linspace(0, 0.75 if FAST else 1.0, 61)
p_marks = (
    [0.0, 0.05, 0.1, 0.2, 0.35, 0.5]
    if FAST
    else [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0]
)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
worst = 0.0
for ax, channel in zip(axes, CHANNELS):
    closed = torch.cat(
        [circuit_outputs(x, w, "paper", channel=channel, p=float(p)) for p in p_line]
    )
    mixed = torch.cat(
        [circuit_outputs(x, w, "paper", "pennylane", channel=channel, p=p) for p in p_marks]
    )
    ours = torch.cat([circuit_outputs(x, w, "paper", channel=channel, p=p) for p in p_marks])
    worst = max(worst, (ours - mixed).abs().max().item())
    for i in range(N_QUBITS):
        ax.plot(
            p_line, closed[:, i], color=f"C{i}", label=rf"$\langle Z_{i}\rangle$, $k_{i}$ = {k[i]}"
        )
        ax.plot(p_marks, mixed[:, i], "o", color=f"C{i}", mfc="none")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="p", title=f"{channel}: closed form (lines), default.mixed (circles)")
axes[0].set_ylabel(r"$\langle Z_i \rangle$")
axes[0].legend(fontsize=7)
fig.tight_layout()
plt.show()
print(f"largest |closed form - default.mixed| over both channels: {worst:.1e}")
assert worst < 1e-6

# %% [markdown]
# Each output decays geometrically toward 0 as $\lambda^{k_i}$, faster for the qubits whose
# parity sets were larger along the way (the bit flip at $p = \frac12$ and the depolarizing
# channel at $p = \frac34$ erase everything: $\lambda = 0$). For the paper's ansatz the channel
# therefore adds no randomness: the layer's output (the channel's expectation, as a device would
# give with unlimited shots) is the noiseless output times a fixed factor $\lambda^{k_i}$ per qubit,
# which the Linear layer after the circuit could in principle absorb (for $\lambda \neq 0$) by
# scaling its weights by $\lambda^{-k_i}$. Only the shots, and the trajectories of the other
# ansaetze, make the output random.
#
# The trajectories for the `"ry"` ansatz, averaged over many samples, against `default.mixed`:

# %%
x, w = random_case("ry", seed=3)
torch.manual_seed(2)
rows = [
    "| channel, p = 0.1 | default.mixed | mean of trajectories | its standard error | largest "
    "deviation / se |",
    "|---|---|---|---|---:|",
]
for channel in CHANNELS:
    ref = circuit_outputs(x, w, "ry", "pennylane", channel=channel, p=0.1)[0]
    traj = circuit_outputs(x.repeat(COPIES, 1), w, "ry", channel=channel, p=0.1).detach()
    se = traj.std(0) / math.sqrt(COPIES)
    dev = ((traj.mean(0) - ref).abs() / se).max().item()
    fmt = lambda v: ", ".join(f"{a:.3f}" for a in v)
    rows.append(f"| {channel} | {fmt(ref)} | {fmt(traj.mean(0))} | {fmt(se)} | {dev:.1f} |")
    assert dev < 4.5
display(Markdown("\n".join(rows)))

# %% [markdown]
# ## (c) A quantum source for $\epsilon$
#
# The diffusion model needs Gaussian noise $\epsilon \sim \mathcal{N}(0, \mathbf{I})$ twice: to
# form $x_t$ in training (Eq. 1) and at every step of sampling. The option `eps_source="quantum"`
# makes it from qubit measurements: $H|0\rangle = |+\rangle$ measured in $Z$ gives a fair bit,
# $P(1) = |\langle 1|H|0\rangle|^2 = \frac12$; $k = 32$ such bits make a uniform number on the
# midpoints of $2^{32}$ equal cells of $[0, 1]$, and the inverse normal CDF makes it Gaussian,
#
# $$
# u = \sum_{i=1}^{k} b_i\, 2^{-i} + 2^{-k-1}, \qquad \epsilon = \Phi^{-1}(u) ,
# $$
#
# with $|\epsilon| \le 6.2$ at $k = 32$ (the $2^{-33}$ quantile). Below, $\epsilon$ from the
# `exact` bit source (fair coins drawn by torch), from bits that PennyLane's `default.qubit`
# measures on Hadamard circuits (slow, so only a few thousand bits), and from `torch.randn`,
# against the normal density, with a one-sample Kolmogorov-Smirnov test against $\mathcal{N}(0,1)$:

# %%
gen = torch.Generator().manual_seed(3)
n_pl = 300 if FAST else 3000  # PennyLane: 32 measured qubits per number
sources = {
    "quantum (exact bit source)": quantum_randn((N_EPS,), generator=gen),
    "quantum (PennyLane-measured bits)": torch.special.ndtri(
        quantum_uniform(n_pl, backend="pennylane", seed=4)
    ).float(),
    "torch.randn": torch.randn(N_EPS, generator=gen),
}
fig, ax = plt.subplots(figsize=(7, 3.8))
grid = np.linspace(-4.5, 4.5, 300)
for (name, eps), style in zip(
    sources.items(),
    [dict(alpha=0.5), dict(histtype="step", lw=1.5), dict(histtype="step", lw=1, ls="--")],
):
    ax.hist(
        eps.numpy(),
        bins=np.linspace(-4.5, 4.5, 61 if len(eps) > 1000 else 25),
        density=True,
        label=f"{name}, n = {len(eps)}",
        **style,
    )
ax.plot(grid, stats.norm.pdf(grid), "k", lw=1, label=r"$\mathcal{N}(0, 1)$")
ax.set(
    xlabel=r"$\epsilon$",
    ylabel="density",
    title=r"$\epsilon$ from measured $|+\rangle$ qubits vs the normal density",
)
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

rows = [
    "| source | n | mean | variance | KS statistic | KS p-value |",
    "|---|---:|---:|---:|---:|---:|",
]
for name, eps in sources.items():
    ks = stats.kstest(eps.double().numpy(), "norm")
    rows.append(
        f"| {name} | {len(eps)} | {eps.mean():.4f} | {eps.var():.4f} | {ks.statistic:.4f} | "
        f"{ks.pvalue:.2f} |"
    )
    assert ks.pvalue > 1e-3 and abs(eps.mean()) < 4.5 / math.sqrt(len(eps))
display(Markdown("\n".join(rows)))

d = make_diffusion(make_config("paper", eps_source="quantum"))  # what --eps-source quantum builds
print(
    "the training's epsilon, from the quantum source:",
    d.randn((2, 3), torch.Generator().manual_seed(0)),
)

# %% [markdown]
# **What a simulator can and cannot show here.** In simulation the circuit only supplies the
# outcome probabilities ($\frac12$, computed from the statevector of $H|0\rangle$); the coin flips
# themselves come from a pseudo-random generator (torch's, or PennyLane's NumPy generator). A
# simulated quantum random number generator *is* a pseudo-random generator, so statistically it
# cannot differ from `torch.randn`, and the tests above can only confirm that the construction
# turns fair bits into $\mathcal{N}(0,1)$. Hardware would make the bits physically random
# (unpredictable, not merely hard to predict), but the distribution it would feed the diffusion
# model is the same Gaussian. A diffusion model sees only that distribution, so no effect on
# training or on image quality is expected from the source of $\epsilon$ alone. The option exists
# so that this can be checked, and to show where hardware bits would plug in.


# %% [markdown]
# ## Training with each option
#
# Every option is a flag of `python -m qdm train` and is recorded in the run's `config.json`.
# Shots and channel need `--model quantum`; the epsilon source applies to any model:
#
# ```bash
# python -m qdm train --preset quick --digit 0 --model quantum --shots 100 --out runs/shots100                          # (a)
# python -m qdm train --preset quick --digit 0 --model quantum --channel depolarizing --noise-p 0.05 --out runs/dep05   # (b)
# python -m qdm train --preset quick --digit 0 --model quantum --eps-source quantum --out runs/epsq                     # (c)
# ```
#
# `python -m qdm ablate --study noise` trains and scores all of them side by side; notebook 11
# shows its table.
#
# **What we checked.** (a) Finite-shot estimates of the paper circuit's outputs from qdm's exact
# sampler have the mean $\langle Z_i\rangle$ and the variance $(1-\langle Z_i\rangle^2)/S$, and
# are indistinguishable (two-sample KS) from PennyLane's at the same shots; their spread falls as
# $1/\sqrt S$ up to $10^5$ shots. (b) With a depolarizing or bit-flip channel after each layer,
# $\langle Z_i\rangle = \lambda^{k_i}\prod_{j\in S_i}\cos x_j$ equals PennyLane's `default.mixed`
# to float rounding for every $p$ shown, and the trajectory average of the `"ry"` ansatz agrees with
# `default.mixed` within its standard error. (c) $\epsilon$ built from measured $|+\rangle$ qubits
# passes a KS test against $\mathcal{N}(0,1)$, as does `torch.randn`; in simulation it is a
# pseudo-random generator, and on hardware it would still be the same Gaussian.
