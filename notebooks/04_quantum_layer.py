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
# batched torch (the closed form below for `"paper"`; for the others an exact matrix product
# state, the last section, or a statevector at small widths).
#
# **Time:** under a minute in the full build on 2 CPU cores (28 s measured); seconds in fast mode.

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

import time
from math import comb
from pathlib import Path

import matplotlib.pyplot as plt
import pennylane as qml
import torch
from IPython.display import Markdown, display

from qdm.quantum import (QuantumGate, circuit_outputs, final_state, layer_gates, mps_outputs,
                         parity_sets, statevector_outputs, weight_shape)
from qdm.quantum.mps import circuit_mps

N_CHECK = 6 if FAST else 16   # qubits of the PennyLane checks (the paper's 16 in full mode)
print(f"PennyLane checks on {N_CHECK} qubits")


def random_case(ansatz: str, n: int, batch: int, seed: int, L: int = 3, dtype=torch.float64):
    """Inputs x in [-pi, pi) of shape (batch, n) and weights in [0, 2 pi), both requiring grad."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, n, generator=g, dtype=dtype) * 2 - 1) * torch.pi
    w = torch.rand(weight_shape(ansatz, n, L), generator=g, dtype=dtype) * 2 * torch.pi
    return x.requires_grad_(), w.requires_grad_()


# %% [markdown]
# ## The circuit, written out as a PennyLane QNode
#
# Here is the whole circuit in PennyLane, on `n` qubits and `L` layers: the $R_Y$ encoding, then
# per layer the single-qubit gates of the ansatz and the CNOT chain, then the $n$ expectations of
# Eq. 7. The package's `circuit_outputs` must give the same numbers and gradients:

# %%
def make_circuit(n: int, L: int, ansatz: str):
    """The circuit of Eq. 7 as a QNode: circuit(x, w) -> the n expectations <Z_i>,
    x (n,) or (B, n), w (L, n, k)."""
    @qml.qnode(qml.device("default.qubit", wires=n), interface="torch")
    def circuit(x, w):
        for i in range(n):
            qml.RY(x[..., i], wires=i)                 # angle encoding
        for layer in range(L):
            for i in range(n):                         # the layer's trainable single-qubit gates
                if ansatz in ("paper", "rz_ry"):
                    qml.RZ(w[layer, i, 0], wires=i)
                if ansatz in ("rz_ry", "ry"):
                    qml.RY(w[layer, i, -1], wires=i)
            for i in range(n - 1):                     # the CNOT chain
                qml.CNOT(wires=[i, i + 1])
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]
    return circuit


def grads(fn, x, w, seed=0):
    """Outputs z = fn(x, w), dL/dx and dL/dw for L = a random linear function of z."""
    z = fn(x, w)
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed), dtype=z.dtype)
    gx, gw = torch.autograd.grad((z * v).sum(), [x, w])
    return z.detach(), gx, gw


for ansatz in ("paper", "rz_ry", "ry"):
    x, w = random_case(ansatz, N_CHECK, batch=3, seed=3)
    inline = make_circuit(N_CHECK, 3, ansatz)
    ours = grads(lambda x, w: circuit_outputs(x, w, ansatz), x, w)
    theirs = grads(lambda x, w: torch.stack(inline(x, w), -1), x, w)
    diff = max((a - b).abs().max().item() for a, b in zip(ours, theirs))
    print(f"{ansatz:6s} n = {N_CHECK}: largest difference of outputs and gradients {diff:.1e}")
    assert diff < 1e-10

# %% [markdown]
# At 4 qubits the structure is visible: the $R_Y$ encoding, then three times the $R_Z$ column and
# the CNOT chain.

# %%
x4, w4 = random_case("paper", 4, batch=1, seed=0)
fig, ax = qml.draw_mpl(make_circuit(4, 3, "paper"), decimals=1)(x4[0].detach(), w4.detach())
fig.suptitle('the "paper" ansatz at n = 4, L = 3')
plt.show()

# %% [markdown]
# The paper's size, 16 qubits and 3 layers, as text (the RZ angles are the random initial weights):

# %%
x16, w16 = random_case("paper", 16, batch=1, seed=0)
drawer = qml.draw(make_circuit(16, 3, "paper"), decimals=1, max_length=200)
print(drawer(x16[0].detach(), w16.detach()))

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
assert all((j in s) == (j <= i and comb(i - j + 2, 2) % 2 == 1)
           for i, s in enumerate(sets) for j in range(16))

# %%
M = torch.zeros(16, 16)
for i, s in enumerate(sets):
    M[i, list(s)] = 1
fig, ax = plt.subplots(figsize=(5.5, 5))
ax.imshow(M, cmap="Greys")
ax.set(xticks=range(16), yticks=range(16), xlabel="input qubit j (its angle x_j)",
       ylabel="output qubit i",
       title=r"parity sets $S_i$ of 3 CNOT chains: "
             r"$\langle Z_i\rangle = \prod_{j \in S_i} \cos x_j$")
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
x, w = random_case("paper", N_CHECK, batch=4, seed=1)
_, w_other = random_case("paper", N_CHECK, batch=1, seed=2)
rows = ["| backend | max abs dL/dw | max abs dL/dx "
        "| max abs change of the outputs for other weights |",
        "|---|---:|---:|---:|"]
for backend in ("exact", "pennylane"):
    z, gx, gw = grads(lambda x, w: circuit_outputs(x, w, "paper", backend), x, w)
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
    _, gw = grads(lambda x, w: circuit_outputs(x, w, ansatz, "pennylane"), x, w)[1:]
    nonzero = (gw.abs() > 1e-9).float().mean()
    print(f"{ansatz:6s}: PennyLane weight gradients nonzero for {nonzero:.0%} "
          f"of the {gw.numel()} angles, largest {gw.abs().max():.2f}")

# %% [markdown]
# ## The circuit at any width: an exact matrix product state
#
# The trainable ansaetze have no closed form, and a statevector holds $2^n$ amplitudes per
# sample: 16 qubits are 65,536 numbers, 40 would be a terabyte. Yet the circuit's state stays
# small in another sense. Write it as a **matrix product state** (MPS),
# $\psi(b_0, \dots, b_{n-1}) = A_0[b_0]\,A_1[b_1] \cdots A_{n-1}[b_{n-1}]$, a product of
# $D \times D$ matrices; the smallest $D$ that works across the cut after qubit $k$ is the
# state's Schmidt rank there (the rank of $\psi$ seen as a $2^k \times 2^{n-k}$ matrix).
#
# 1. After the encoding and layer 0's gates the state is a product state: $D = 1$.
# 2. One CNOT chain maps $b$ to its prefix parities, $c_i = c_{i-1} \oplus b_i$, so
#    $\psi'(c) = \psi(b)$ with $b_i = c_i \oplus c_{i-1}$: to find its own old bit, qubit $i$ needs
#    one bit from its left neighbour, $c_{i-1}$. Across any cut, the chain passes exactly one bit.
#    It is a matrix product operator of bond 2, and each chain at most doubles $D$:
#    $A'_i[c] = \sum_{c'} A_i[c \oplus c'] \otimes |c'\rangle\langle c|$ on the bond (carry $c'$ in, $c$ out).
# 3. The single-qubit gates act inside one qubit each: $D$ does not change.
#
# So after $L$ layers the Schmidt rank across every cut is at most $2^L$, whatever $n$ (and at
# most $2^k$ and $2^{n-k}$, as for any state). One more saving: the last chain need not be
# simulated at all. It maps $b$ to $c_i = b_0 \oplus \dots \oplus b_i$, so measuring $Z_i$ after it
# is measuring the Z-string $Z_0 Z_1 \cdots Z_i$ before it:
#
# $$
# \langle Z_i \rangle = \langle \psi_{L-1} |\, Z_0 Z_1 \cdots Z_i \,| \psi_{L-1} \rangle ,
# $$
#
# with $\psi_{L-1}$ the state before the last chain, of bond $D = 2^{L-1} = 4$ for the paper's
# $L = 3$. `qdm.quantum.mps` evolves that MPS directly (step 2 on every site at once) and reads all
# $n$ Z-strings in one sweep each way: a cost of order $n\,D^3$ per sample instead of $2^n$.
#
# The ranks, checked on the statevector at a small width (singular values above $10^{-10}$):

# %%
n_small = 8 if FAST else 12
x, w = random_case("ry", n_small, batch=1, seed=7)


def schmidt_ranks(psi: torch.Tensor) -> list[int]:
    """Schmidt rank of a state (2^n,) across the cut after k qubits, k = 1..n-1."""
    n = psi.numel().bit_length() - 1
    svals = [torch.linalg.svdvals(psi.reshape(2 ** k, -1)) for k in range(1, n)]
    return [int((s > 1e-10 * s[0]).sum()) for s in svals]


with torch.no_grad():
    before_last = schmidt_ranks(final_state(x, w[:2], "ry")[0])   # 2 chains: what the MPS holds
    after_all = schmidt_ranks(final_state(x, w, "ry")[0])         # all 3 chains
bound = [min(2 ** 3, 2 ** k, 2 ** (n_small - k)) for k in range(1, n_small)]
print("cut after qubit k:       ", list(range(1, n_small)))
print("rank before last chain:  ", before_last)
print("rank after all 3 chains: ", after_all)
print("bound min(2^L, 2^k, 2^(n-k)):", bound)
assert max(before_last) <= 4 and all(r <= b for r, b in zip(after_all, bound))
mps = circuit_mps(x, layer_gates(w, "ry"))
print("the MPS's sites (batch, sites, bond, 2^qubits per site, bond):", tuple(mps.sites.shape))

# %% [markdown]
# The MPS gives the statevector's outputs and gradients to float64 rounding where both run:

# %%
for n in (5, 9, n_small):
    for ansatz in ("rz_ry", "ry"):
        x, w = random_case(ansatz, n, batch=3, seed=n)
        diff = max((a - b).abs().max().item() for a, b in zip(
            grads(lambda x, w: mps_outputs(x, w, ansatz), x, w),
            grads(lambda x, w: statevector_outputs(x, w, ansatz), x, w)))
        assert diff < 1e-10, (n, ansatz, diff)
print("MPS == statevector (outputs and gradients, to 1e-10) at n = 5, 9 and", n_small)

# %% [markdown]
# **What this says about the paper's quantum layer.** At a fixed depth $L$, the circuit family is
# classically simulable *exactly* at any width, in time linear in $n$: the layer can never be
# hard for a classical computer, whether it has 16 qubits or 1,000. (The paper's own ansatz is
# simpler still: a product of cosines.) A circuit that might be hard to simulate needs an
# entanglement that grows with the width, e.g. a depth that grows with $n$, since the bond
# $2^{L-1}$ is exponential in $L$ only. The figure times one forward and backward pass of the
# `ry` circuit, batch 64, float32, on this machine (log scale in time): the statevector's time
# doubles with every qubit once its $2^n$ amplitudes dominate, the MPS's grows linearly.

# %%
def seconds(fn, repeats: int = 3) -> float:
    """Best of a few timed calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def forward_backward(outputs, n: int, batch: int = 64):
    x, w = random_case("ry", n, batch, seed=n, dtype=torch.float32)
    return lambda: outputs(x, w, "ry").sum().backward()


widths_sv = [4, 6, 8, 10] if FAST else [4, 6, 8, 10, 12, 14, 16]
widths_mps = [4, 8, 16, 32] if FAST else [4, 8, 16, 32, 64, 128]
t_sv = [seconds(forward_backward(statevector_outputs, n)) for n in widths_sv]
t_mps = [seconds(forward_backward(mps_outputs, n)) for n in widths_mps]
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(widths_sv, t_sv, "o-", label="statevector ($2^n$ amplitudes per sample)")
ax.plot(widths_mps, t_mps, "s-", label="matrix product state (bond $2^{L-1} = 4$)")
ax.set(yscale="log", xlabel="qubits n", ylabel="seconds (forward + backward)",
       title='"ry" ansatz, L = 3, batch 64: exponential against linear in n', xticks=widths_mps)
ax.legend()
fig.tight_layout()
plt.show()
bench = Path("results/bench_quantum.md")
if not FAST and bench.exists():   # the benchmark's full measurement: train steps, peers, widths
    display(Markdown(bench.read_text()))

# %% [markdown]
# ## Other PennyLane devices, and finite shots
#
# The `pennylane` backend takes any device name, so the same layer runs on PennyLane's C++
# simulator (`lightning.qubit`, with the adjoint gradient method) or on a hardware plugin's
# device. From the command line: `python -m qdm train --model quantum --quantum-backend pennylane
# --pl-device lightning.qubit --diff-method adjoint`; in code, `QuantumGate(backend="pennylane",
# pl_device=..., diff_method=..., shots=...)`. (`tests/test_quantum.py` checks that the backends
# and devices give the exact backend's numbers; `benchmarks/bench_quantum.py` times them.)
#
# Hardware gives estimates from a finite number of shots $S$. Each estimate of $\langle Z_i \rangle$
# is a mean of $S$ independent $\pm 1$ outcomes, so its variance is $(1 - \langle Z_i\rangle^2)/S$.
# Many copies of one input in one batch give many independent estimates (`shots` needs
# `diff_method="parameter-shift"`, as the paper says; backprop cannot differentiate samples):

# %%
shots, copies = 200, 300 if FAST else 2000
x1, w1 = random_case("ry", 4, batch=1, seed=6)
mu = circuit_outputs(x1, w1, "ry", "exact").detach()[0]
with torch.no_grad():
    est = circuit_outputs(x1.detach().repeat(copies, 1), w1.detach(), "ry", "pennylane",
                          shots=shots, diff_method="parameter-shift", seed=0)
fig, axes = plt.subplots(1, 4, figsize=(13, 3), sharey=True)
for i, ax in enumerate(axes):
    sd = ((1 - mu[i] ** 2) / shots).sqrt()
    ax.hist(est[:, i], bins=25, density=True, color="C0", alpha=0.7, label=f"{copies} estimates")
    grid = torch.linspace(mu[i] - 4 * sd, mu[i] + 4 * sd, 200)
    ax.plot(grid, torch.exp(-0.5 * ((grid - mu[i]) / sd) ** 2) / (sd * (2 * torch.pi) ** 0.5), "C3",
            label=r"normal, var $(1-\langle Z\rangle^2)/S$")
    ax.axvline(mu[i], color="k", lw=1)
    ax.set(title=f"qubit {i}: exact {mu[i]:.3f}\n"
                 f"sd measured {est[:, i].std():.4f}, predicted {sd:.4f}",
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
          f"{gate.from_qubits.weight.grad.abs().max():.1e}, "
          f"circuit weights {gate.weights.grad.abs().max():.0e}")

# %% [markdown]
# **What we checked.** The paper's circuit (RY encoding, three layers of RZ and a CNOT chain) gives
# $\langle Z_i\rangle = \prod_{j \in S_i} \cos x_j$ for the 16 parity sets shown above, whatever its
# weights; PennyLane confirms that the weight gradients are exactly zero and the outputs do not move
# with the weights. The circuit written out above as a QNode equals the package's for all three
# ansaetze to float64 rounding, outputs and gradients. Whatever the width, the circuit's state
# before its last CNOT chain is an exact matrix product state of bond $2^{L-1} = 4$ (checked
# against the statevector's Schmidt ranks), so the layer is simulated exactly in time linear in
# $n$: 128 qubits take milliseconds. Finite-shot estimates spread as $(1-\langle Z\rangle^2)/S$.
