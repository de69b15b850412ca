# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. The quantum layer, and what the paper's circuit really computes
#
# **One idea:** the paper's 16-qubit "quantum attention" has trainable rotation angles that
# cannot change its outputs: every $\langle Z_i \rangle$ is a fixed product of cosines of the
# circuit's inputs. A trainable ansatz gives the honest version of the experiment.
#
# The gate of the quantum model (Section IV-D) sits where notebook 3 put the hook. The
# bottleneck map is pooled to $z \in \mathbb{R}^{128}$, a Linear layer projects it to
# $x \in \mathbb{R}^{16}$, and a circuit on 16 qubits returns the Pauli-Z expectations
#
# $$
# z_{\text{quantum}} = \big[\langle \psi(x, w) | Z_i | \psi(x, w) \rangle\big]_{i=1}^{16},
# \qquad |\psi(x, w)\rangle = U(w)\, \textstyle\bigotimes_{i} R_Y(x_i) |0\rangle ,
# \tag{7}
# $$
#
# which a second Linear layer maps back to $\tilde z \in \mathbb{R}^{128}$, multiplied into the map:
#
# $$
# x_{\text{quantum}} = x_{\text{bottleneck}} \odot \tilde z .
# \tag{8}
# $$
#
# $U(w)$ is $L = 3$ layers, each a trainable $R_Z(w_{l,i})$ on every qubit followed by the
# CNOT chain $\mathrm{CNOT}(0,1)\,\mathrm{CNOT}(1,2) \cdots \mathrm{CNOT}(14,15)$. `qdm.quantum`
# has this circuit (ansatz `"paper"`), the official repository's later fix (`"rz_ry"`: a
# trainable $R_Y$ after each $R_Z$) and a real-amplitude one (`"ry"`: trainable $R_Y$ only), on two
# backends: `"pennylane"`, a real PennyLane QNode (any device, diff method, shots), and `"exact"`,
# a batched torch simulator (the closed form below for `"paper"`, a statevector for the others).

# %% tags=["hide-input"]
import os
import time
import warnings
from math import comb
from pathlib import Path

# Notebooks start in notebooks/ (Jupyter, nbmake, the book); work from the repository root so
# that results/ means what it means on the command line.
os.chdir(next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").is_file()))
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import matplotlib.pyplot as plt
import pennylane as qml
import torch
from IPython.display import Markdown, display

import qdm
from qdm.quantum import QuantumGate, circuit_outputs, make_qnode, parity_sets, weight_shape

# %matplotlib inline

FAST = qdm.fast_mode()    # QDM_FAST=1: the seconds-long CI version of this notebook
N_CHECK = 6 if FAST else 16   # qubits of the PennyLane comparisons (the paper's 16 in full mode)
print(f"fast mode: {FAST}; PennyLane comparisons on {N_CHECK} qubits")


def random_case(ansatz: str, n: int, batch: int, seed: int, L: int = 3, dtype=torch.float64):
    """Inputs x in [-pi, pi) of shape (batch, n) and weights in [0, 2 pi), both requiring grad."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, n, generator=g, dtype=dtype) * 2 - 1) * torch.pi
    w = torch.rand(weight_shape(ansatz, n, L), generator=g, dtype=dtype) * 2 * torch.pi
    return x.requires_grad_(), w.requires_grad_()


# %% [markdown]
# ## The circuit, drawn by PennyLane
#
# `make_qnode` builds the QNode that the `pennylane` backend runs. At 4 qubits the structure is
# visible: the $R_Y$ encoding, then three times the $R_Z$ column and the CNOT chain.

# %%
x4, w4 = random_case("paper", 4, batch=1, seed=0)
fig, ax = qml.draw_mpl(make_qnode(4, 3, "paper"), decimals=1)(x4[0].detach(), w4.detach())
fig.suptitle('the "paper" ansatz at n = 4, L = 3')
plt.show()

# %% [markdown]
# The paper's size, 16 qubits and 3 layers, as text (the RZ angles are the random initial weights):

# %%
x16, w16 = random_case("paper", 16, batch=1, seed=0)
print(qml.draw(make_qnode(16, 3, "paper"), decimals=1, max_length=200)(x16[0].detach(), w16.detach()))

# %% [markdown]
# ## Why the RZ weights cannot matter
#
# Write a computational-basis state as a bit string $b = (b_0, \dots, b_{n-1})$.
#
# 1. After the encoding, the state is a product state with real amplitudes:
#    $R_Y(x_j)|0\rangle = \cos\frac{x_j}{2}|0\rangle + \sin\frac{x_j}{2}|1\rangle$, so
#    $|\psi_0\rangle = \sum_b a(b)\,|b\rangle$ with $a(b) = \prod_j \cos\frac{x_j}{2}^{1-b_j}\sin\frac{x_j}{2}^{b_j}$.
# 2. $R_Z(w) = \mathrm{diag}(e^{-iw/2}, e^{iw/2})$ is diagonal: it multiplies each amplitude by a
#    phase, $a(b) \to e^{i\varphi(b)} a(b)$, and leaves $|a(b)|$ alone.
# 3. $\mathrm{CNOT}(c, t)$ maps $|b\rangle$ to the basis state with $b_t \leftarrow b_t \oplus b_c$: it
#    permutes basis states. The whole network of CNOTs is a linear map $b \mapsto Mb$ over
#    GF(2), and the phases from any RZ layer travel along with their amplitude.
#
# So the final state is $\sum_b e^{i\varphi_w(b)} a(b)\,|Mb\rangle$: the probability of measuring
# $Mb$ is $a(b)^2$ whatever the weights. Measuring is therefore drawing independent bits $b_j$ with
# $P(b_j = 1) = \sin^2\frac{x_j}{2}$ and reading $Mb$. Output bit $i$ is the XOR of the input bits
# in a **parity set** $S_i$ (row $i$ of $M$), and $Z_i = (-1)^{(Mb)_i} = \prod_{j \in S_i} (-1)^{b_j}$.
# The bits are independent and $\mathbb{E}[(-1)^{b_j}] = \cos^2\frac{x_j}{2} - \sin^2\frac{x_j}{2} = \cos x_j$, so
#
# $$
# \langle Z_i \rangle = \prod_{j \in S_i} \cos x_j \qquad \text{for all } w .
# $$
#
# One chain, applied in order, turns qubit $t$'s bit into $b_t \oplus (\text{qubit } t-1\text{'s already
# updated bit})$: the prefix parities, $S_i = \{0, \dots, i\}$. Three chains give
# $j \in S_i \iff \binom{i - j + 2}{2}$ is odd. `parity_sets` tracks the sets gate by gate:

# %%
sets = parity_sets(16, 3)
for i, s in enumerate(sets):
    print(f"<Z_{i:<2}> = " + " * ".join(f"cos x_{j}" for j in s))
assert all((j in s) == (j <= i and comb(i - j + 2, 2) % 2 == 1) for i, s in enumerate(sets) for j in range(16))

# %%
M = torch.zeros(16, 16)
for i, s in enumerate(sets):
    M[i, list(s)] = 1
fig, ax = plt.subplots(figsize=(5.5, 5))
ax.imshow(M, cmap="Greys")
ax.set(xticks=range(16), yticks=range(16), xlabel="input qubit j (its angle x_j)", ylabel="output qubit i",
       title=r"parity sets $S_i$ of 3 CNOT chains: $\langle Z_i\rangle = \prod_{j \in S_i} \cos x_j$")
ax.set_xticks(torch.arange(16) - 0.5, minor=True)
ax.set_yticks(torch.arange(16) - 0.5, minor=True)
ax.grid(which="minor", color="0.8")
fig.tight_layout()
plt.show()
print("set sizes:", [len(s) for s in sets])

# %% [markdown]
# The paper's quantum layer is therefore a *fixed* function of its 16 inputs: each output is a
# product of 1 to 8 cosines, and the 48 RZ angles are dead parameters. All that trains in the
# gate are the two Linear layers around it. The paper does not report this.
#
# ## The zero-gradient check, with PennyLane itself
#
# The gradient of a random linear function of the outputs with respect to the weights, on both
# backends, and the outputs for two different random weight settings:

# %%
def grads(ansatz, backend, x, w, seed=0):
    """Outputs z, dL/dx and dL/dw for L = a random linear function of z."""
    z = circuit_outputs(x, w, ansatz, backend)
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed), dtype=z.dtype)
    gx, gw = torch.autograd.grad((z * v).sum(), [x, w])
    return z.detach(), gx, gw


x, w = random_case("paper", N_CHECK, batch=4, seed=1)
_, w_other = random_case("paper", N_CHECK, batch=1, seed=2)
rows = ["| backend | max abs dL/dw | max abs dL/dx | max abs change of the outputs for other weights |",
        "|---|---:|---:|---:|"]
for backend in ("exact", "pennylane"):
    z, gx, gw = grads("paper", backend, x, w)
    change = (circuit_outputs(x, w_other, "paper", backend).detach() - z).abs().max()
    rows.append(f"| {backend} | {gw.abs().max():.1e} | {gx.abs().max():.2f} | {change:.1e} |")
    assert gw.abs().max() < 1e-12 and change < 1e-12
display(Markdown("\n".join(rows)))

# %% [markdown]
# Zero: exactly on the closed form, and to float64 rounding (about 1e-15) on PennyLane's statevector. The two trainable ansaetze put a non-diagonal
# $R_Y$ after a CNOT chain, which mixes amplitudes, so their weights do move the outputs:

# %%
for ansatz in ("rz_ry", "ry"):
    x, w = random_case(ansatz, N_CHECK, batch=4, seed=1)
    _, gw = grads(ansatz, "pennylane", x, w)[1:]
    print(f"{ansatz:6s}: PennyLane weight gradients nonzero for {(gw.abs() > 1e-9).float().mean():.0%} "
          f"of the {gw.numel()} angles, largest {gw.abs().max():.2f}")

# %% [markdown]
# ## The exact simulator agrees with PennyLane
#
# For each ansatz, random inputs and weights in float64, the largest absolute difference between
# the `exact` and `pennylane` (default.qubit, backprop) backends, for the outputs and for the
# gradients with respect to inputs and weights (the tests check the same at 16 qubits):

# %%
rows = ["| ansatz | qubits | outputs | dL/dx | dL/dw |", "|---|---:|---:|---:|---:|"]
for ansatz in ("paper", "rz_ry", "ry"):
    x, w = random_case(ansatz, N_CHECK, batch=3, seed=3)
    diffs = [(a - b).abs().max().item() for a, b in zip(grads(ansatz, "exact", x, w), grads(ansatz, "pennylane", x, w))]
    rows.append(f"| {ansatz} | {N_CHECK} | " + " | ".join(f"{d:.1e}" for d in diffs) + " |")
    assert max(diffs) < 1e-10
display(Markdown("\n".join(rows)))

# %% [markdown]
# ## Speed
#
# The exact backend never builds a circuit: for `"paper"` it is 16 products of cosines, for the
# others a batched statevector ($2^{16}$ amplitudes per sample, each layer one permutation and four
# $16 \times 16$ matrix products). `benchmarks/bench_quantum.py` times a full training step at the
# paper's size (batch 64, 16 qubits) on one machine and writes `results/bench_quantum.md`; in fast
# mode this notebook only times the circuit alone at a small size.

# %%
def seconds(fn, repeats=3):
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def fwd_bwd(ansatz, backend, n, batch=64):
    x, w = random_case(ansatz, n, batch, seed=4, dtype=torch.float32)
    return lambda: circuit_outputs(x, w, ansatz, backend).sum().backward()


bench = Path("results/bench_quantum.md")
if not FAST and bench.exists():
    display(Markdown(bench.read_text()))
else:
    n = 8 if FAST else 12
    rows = [f"| circuit alone, batch 64, {n} qubits, 3 layers | exact (s) | PennyLane backprop (s) | speed-up |",
            "|---|---:|---:|---:|"]
    for ansatz in ("paper", "rz_ry", "ry"):
        t_exact, t_pl = seconds(fwd_bwd(ansatz, "exact", n)), seconds(fwd_bwd(ansatz, "pennylane", n), 1)
        rows.append(f"| {ansatz} | {t_exact:.4f} | {t_pl:.3f} | {t_pl / t_exact:.0f}x |")
    display(Markdown("\n".join(rows)))

# %% [markdown]
# ## Other PennyLane devices, and finite shots
#
# The `pennylane` backend takes any device name, so the same layer runs on PennyLane's C++
# simulator (`lightning.qubit`, with the adjoint gradient method) or on a hardware plugin's
# device. From the command line: `python -m qdm train --model quantum --quantum-backend pennylane
# --pl-device lightning.qubit --diff-method adjoint`; in code, `QuantumGate(backend="pennylane",
# pl_device=..., diff_method=..., shots=...)` or, for the circuit alone:

# %%
x, w = random_case("ry", N_CHECK, batch=2, seed=5)
z_l = circuit_outputs(x, w, "ry", "pennylane", pl_device="lightning.qubit", diff_method="adjoint")
gw_l = torch.autograd.grad(z_l.sum(), w)[0]
z_e = circuit_outputs(x, w, "ry", "exact")
gw_e = torch.autograd.grad(z_e.sum(), w)[0]
print(f"lightning.qubit (adjoint) vs exact: outputs {(z_l - z_e).abs().max():.1e}, "
      f"weight gradients {(gw_l - gw_e).abs().max():.1e}")
# lightning's forward values carry ~1e-8 errors; its adjoint gradients are float64-exact
assert (z_l - z_e).abs().max() < 1e-6 and (gw_l - gw_e).abs().max() < 1e-8

# %% [markdown]
# Hardware gives estimates from a finite number of shots $S$. Each estimate of $\langle Z_i \rangle$
# is a mean of $S$ independent $\pm 1$ outcomes, so its variance is $(1 - \langle Z_i\rangle^2)/S$.
# Many copies of one input in one batch give many independent estimates (`shots` needs
# `diff_method="parameter-shift"`, as the paper says; backprop cannot differentiate samples):

# %%
shots, copies = 200, 300 if FAST else 2000
x1, w1 = random_case("ry", 4, batch=1, seed=6)
mu = circuit_outputs(x1, w1, "ry", "exact").detach()[0]
with torch.no_grad():
    est = circuit_outputs(x1.detach().repeat(copies, 1), w1.detach(), "ry", "pennylane", shots=shots,
                          diff_method="parameter-shift", seed=0)
fig, axes = plt.subplots(1, 4, figsize=(13, 3), sharey=True)
for i, ax in enumerate(axes):
    sd = ((1 - mu[i] ** 2) / shots).sqrt()
    ax.hist(est[:, i], bins=25, density=True, color="C0", alpha=0.7, label=f"{copies} estimates")
    grid = torch.linspace(mu[i] - 4 * sd, mu[i] + 4 * sd, 200)
    ax.plot(grid, torch.exp(-0.5 * ((grid - mu[i]) / sd) ** 2) / (sd * (2 * torch.pi) ** 0.5), "C3",
            label=r"normal, var $(1-\langle Z\rangle^2)/S$")
    ax.axvline(mu[i], color="k", lw=1)
    ax.set(title=f"qubit {i}: exact {mu[i]:.3f}\nsd measured {est[:, i].std():.4f}, predicted {sd:.4f}",
           xlabel=r"estimate of $\langle Z_i\rangle$")
axes[0].legend(fontsize=7)
fig.suptitle(f'"ry" ansatz, 4 qubits, {shots} shots per estimate')
fig.tight_layout()
plt.show()
ratio = est.var(dim=0) / ((1 - mu ** 2) / shots)
print("measured / predicted variance per qubit:", [f"{r:.2f}" for r in ratio])
assert ((ratio > 0.7) & (ratio < 1.3)).all()

# %% [markdown]
# ## What the paper actually ran: `detach_input`
#
# The official code detaches the circuit's input from the autograd graph, so no gradient flows
# into the Linear layer in front of the circuit, which keeps its random initial weights for the
# whole training. `QuantumGate(detach_input=True)` (command line: `--detach-input`) reproduces
# that; the default lets it train. With the `"paper"` ansatz and detached input, only the Linear
# layer *after* the circuit learns anything in the gate.

# %%
h = torch.randn(4, 128, 7, 7)
for detach in (False, True):
    torch.manual_seed(0)
    gate = QuantumGate(n_qubits=8, detach_input=detach)
    gate(h).square().mean().backward()
    grad_in = gate.to_qubits.weight.grad
    print(f"detach_input={detach!s:5}: gradient into the Linear before the circuit "
          f"{'none' if grad_in is None else f'{grad_in.abs().max():.1e}'}, after it "
          f"{gate.from_qubits.weight.grad.abs().max():.1e}, circuit weights {gate.weights.grad.abs().max():.0e}")

# %% [markdown]
# **What we checked.** The paper's circuit (RY encoding, three layers of RZ and a CNOT chain) gives
# $\langle Z_i\rangle = \prod_{j \in S_i} \cos x_j$ for the 16 parity sets shown above, whatever its
# weights; PennyLane confirms that the weight gradients are exactly zero and the outputs do not move
# with the weights. The exact simulator equals PennyLane for all three ansaetze to float64
# rounding on default.qubit (to about 1e-8 on `lightning.qubit`, whose forward pass
# is less precise; its adjoint gradients agree to 1e-15), and finite-shot estimates spread as $(1-\langle Z\rangle^2)/S$.
