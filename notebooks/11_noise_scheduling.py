# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11. Noise scheduling, and do the quantum noise options help?
#
# **One idea:** the abstract's second promise, "a newly developed noise scheduling method, applying
# different noise levels strategically across time steps during the training process", made
# concrete: the level of the quantum layer's noise (notebook 10) as a function of the diffusion
# step $t$, the diffusion schedule itself, and how $t$ is drawn in training. Then the measurement
# the paper never shows: the paper's quantum model trained with each noise option, with and
# without the schedule, over three seeds, beside the noiseless quantum model, the classical model
# and the real-vs-real floor.
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
import torch
from IPython.display import Image, Markdown, display

from qdm.ablations import NOISE
from qdm.noise import LEVEL_SHAPES, T_SAMPLING, noise_level, sample_t, shots_at, t_probabilities
from qdm.quantum import QuantumGate, circuit_outputs, closed_form_outputs, weight_shape
from qdm.schedule import SCHEDULES, make_schedule

N_QUBITS, N_LAYERS = 4, 3  # a small circuit: the schedule does not depend on its size
S = 100  # shots at the largest noise level
COPIES = 1000 if FAST else 5000  # independent shot estimates per point
print(f"{N_QUBITS} qubits, {N_LAYERS} layers, S = {S}, {COPIES} estimates per point")


def random_case(ansatz: str, seed: int, n: int = N_QUBITS, L: int = N_LAYERS):
    """One input x in [-2.5, 2.5)^n, shape (1, n), and weights in [0, 2 pi), float64."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(1, n, generator=g, dtype=torch.float64) * 2 - 1) * 2.5
    w = torch.rand(weight_shape(ansatz, n, L), generator=g, dtype=torch.float64) * 2 * math.pi
    return x, w


# %% [markdown]
# ## Noise levels across the diffusion steps
#
# The abstract's "different noise levels strategically across time steps" is made concrete as a
# level $g(t) \in [0, 1]$ of the gate's quantum noise at diffusion step $t = 0, \dots, T-1$ (the
# code's indices; the paper's $t = 1, \dots, T$):
#
# $$
# g_{\text{constant}}(t) = 1, \qquad g_{\text{linear}}(t) = \frac{t}{T-1}, \qquad
# g_{\text{cosine}}(t) = \frac{1 - \cos\big(\pi\,t/(T-1)\big)}{2} .
# $$
#
# A channel's probability becomes $p\,g(t)$, and a shot count becomes $\lceil S / g(t)^2\rceil$,
# so that the shot noise's standard deviation is proportional to $g(t)$ ($g = 0$: the exact
# expectation). The noise is large at large $t$, where $x_t$ is nearly pure noise anyway, and
# vanishes near $t = 0$, where the model must get the details right. The U-Net passes each
# sample's $t$ to the gate, so one batch mixes levels:

# %%
T, p0 = 1000, 0.1
t_all = torch.arange(T)
t_marks = torch.linspace(0, T - 1, 11).round().long()
torch.manual_seed(4)
x, w = random_case("paper", seed=1)
mu = closed_form_outputs(x, N_LAYERS)[0]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for c, shape in enumerate(LEVEL_SHAPES):
    g = noise_level(t_all, T, shape)
    axes[0].plot(t_all, g, color=f"C{c}", label=shape)
    axes[1].plot(t_all, shots_at(S, g), color=f"C{c}", label=shape)
    gm = noise_level(t_marks, T, shape)  # measured: the exact sampler, per-sample shots
    shots = shots_at(S, gm).repeat_interleave(COPIES)
    est = circuit_outputs(x.repeat(len(t_marks) * COPIES, 1), w, "paper", shots=shots).detach()
    sd = est[:, 0].view(len(t_marks), COPIES).std(1)
    predicted = gm * math.sqrt((1 - mu[0] ** 2) / S)
    axes[2].plot(
        t_all, noise_level(t_all, T, shape) * math.sqrt((1 - mu[0] ** 2) / S), color=f"C{c}", lw=1
    )
    axes[2].plot(t_marks, sd, "o", color=f"C{c}", ms=4, label=shape)
    assert (sd[gm == 0] == 0).all() and ((sd - predicted).abs() <= 0.15 * predicted + 1e-3).all()
axes[0].secondary_yaxis("right", functions=(lambda v: p0 * v, lambda v: v / p0)).set_ylabel(
    f"channel p g(t), p = {p0}"
)
axes[0].set(xlabel="t", ylabel="level g(t)", title="the gate's noise level")
axes[1].set(
    xlabel="t",
    yscale="log",
    ylabel=r"shots $\lceil S/g(t)^2\rceil$",
    title=f"shots per estimate, S = {S}",
)
axes[2].set(
    xlabel="t",
    ylabel=r"sd of the estimate of $\langle Z_0\rangle$",
    title="shot noise over t: measured (dots), predicted (lines)",
)
for ax in axes:
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# The same schedule inside the gate: with `noise_schedule="cosine"` a sample at $t = 0$ gets the
# exact outputs (the same as a gate without shots), one at $t = T-1$ gets $S$ shots:

# %%
torch.manual_seed(5)
noisy = QuantumGate(channels=8, n_qubits=N_QUBITS, shots=S, noise_schedule="cosine", T=T)
exact = QuantumGate(channels=8, n_qubits=N_QUBITS)
exact.load_state_dict(noisy.state_dict())
h = torch.randn(2, 8, 7, 7)
with torch.no_grad():
    at_0 = noisy(h, torch.tensor([0, 0]))
    at_end = noisy(h, torch.tensor([T - 1, T - 1]))
    plain = exact(h)
print(
    f"t = 0: equal to the noiseless gate: {torch.equal(at_0, plain)}; "
    f"t = {T - 1}: largest difference {(at_end - plain).abs().max():.3f}"
)
assert torch.equal(at_0, plain) and not torch.allclose(at_end, plain)

# %% [markdown]
# Two other knobs act on the diffusion itself rather than on the gate. The **diffusion
# schedule** $\bar\alpha_t$ (Eq. 1-3): the paper's cosine (Eq. 2), the linear $\beta_t$ of Ho et
# al. (2020), and the sigmoid schedule of Chen (2023), $\bar\alpha(t) = \frac{v_{\text{end}} -
# \sigma((t/T)(e - s) + s)}{v_{\text{end}} - v_{\text{start}}}$ with $s = -3$, $e = 3$ and
# $v = \sigma(e), \sigma(s)$. And the **sampling of $t$** in training: the paper draws $t$
# uniformly in Eq. 4; the option `t_sampling` draws it with
#
# $$
# p(t) \propto 1 - \tfrac12\, g(t) ,
# $$
#
# twice as often at $t = 0$ as at $t = T-1$ (more training where the details are), and `t_reweight`
# multiplies each sample's loss by the importance weight $w(t) = 1/(T\,p(t))$, so that
# $\mathbb{E}_{t\sim p}[w(t)\,\ell(t)] = \frac1T\sum_t \ell(t)$, the uniform loss of Eq. 4, in expectation.

# %%
n_draws = 200_000 if FAST else 2_000_000
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for c, name in enumerate(SCHEDULES):
    axes[0].plot(
        t_all,
        make_schedule(name, T).alpha_bars,
        color=f"C{c}",
        label=name + (" (the paper)" if name == "cosine" else ""),
    )
ell = torch.rand(
    T, dtype=torch.float64, generator=torch.Generator().manual_seed(6)
)  # any per-t loss
for c, kind in enumerate(T_SAMPLING):
    p = t_probabilities(T, kind)
    t, weights = sample_t(n_draws, T, kind, torch.Generator().manual_seed(7), reweight=True)
    weights = torch.ones(n_draws) if weights is None else weights
    axes[1].plot(
        t_all, T * p, color=f"C{c}", label=kind + (" (the paper)" if kind == "uniform" else "")
    )
    axes[1].plot(
        t_all[::50] + 24.5,
        T * torch.bincount(t, minlength=T).double().view(-1, 50).mean(1) / n_draws,
        "o",
        color=f"C{c}",
        ms=3,
    )
    axes[2].plot(t_all, 1 / (T * p), color=f"C{c}", label=kind)
    assert torch.isclose((p * ell / (T * p)).sum(), ell.mean())  # the importance weights, exactly
    assert abs((weights.double() * ell[t]).mean() - ell.mean()) < 0.01  # and by sampling
axes[0].set(xlabel="t", ylabel=r"$\bar\alpha_t$", title="diffusion schedules (Eq. 1-3)")
axes[1].set(
    xlabel="t", ylabel="T p(t)", ylim=(0, 1.5), title="t in training: T p(t) (lines), draws (dots)"
)
axes[2].set(xlabel="t", ylabel="w(t) = 1 / (T p(t))", title="importance weights with t_reweight")
for ax in axes:
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# Without `t_reweight`, the weighted sampling changes the objective: it is Eq. 4 with a loss
# weighted by $T p(t)$, a different training target from the paper's. With it, the objective is
# the paper's and only the variance of its estimate changes.
#
#
# ## Do the options help? The measurement
#
# ```bash
# python -m qdm ablate --study noise --digits 0 --seeds 0,1,2 --preset study    # 27 new cells; resumable
# ```
#
# trains the paper's quantum model (RZ circuit, input detached, as Table I) with each option of
# `qdm.ablations.NOISE` and scores it with the protocol of notebook 7 (N = 500 DDIM-50 images at
# the `study` preset, so that 33 training runs fit in an afternoon on 2 CPU cores). The noiseless
# quantum model and the classical model are the ablation study's cells, trained once for both
# tables. The column "FID - quantum-paper-detached" is each option's mean FID minus the noiseless
# model's, ± the standard error of that difference from the seed-to-seed spread.

# %%
variants = "\n".join(f"| `{name}` | {what} |" for name, (_, _, what) in NOISE.items())
display(Markdown("| variant | what it is |\n|---|---|\n" + variants))
table = Path("results/noise.md")
if table.exists():
    display(Markdown(table.read_text()))
    display(Image(filename="results/noise.png"))
else:
    display(Markdown("**Not measured yet**: `results/noise.md` is written by the command above."))

# %% [markdown]
# **What the table can say.** A row differs from the noiseless quantum model only if its FID
# difference is larger than about twice its standard error; with three seeds that standard error
# is itself rough. The table above is the committed run, not edited. On digit 0 with three seeds
# it says: no option, shot noise or channel noise, constant or scheduled over $t$, nor the quantum
# source of $\epsilon$, moved FID by more than twice its standard error (differences from -29 to
# +2 FID, standard errors 16 to 20). With ten options compared, one difference near 2 s.e. is
# expected by chance; the quantum $\epsilon$ (-29 ± 16) draws from the same $N(0, 1)$ as
# `torch.randn` (notebook 10 tests it), so it acts as another draw of random numbers, not as a new
# kind of noise. A simulator cannot show more: on hardware, shot and channel noise would come
# from the device, here they come from a pseudo-random generator with the same statistics.
