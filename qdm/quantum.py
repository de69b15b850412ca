"""The quantum layer (paper Section IV-D, Eq. 7-8): what the circuit is, and what it computes.

The gate (Eq. 8), applied to the U-Net's bottleneck map h of shape (B, 128, 7, 7)::

    v = mean over the 7x7 pixels of h              (B, 128)   global average pool
    x = Linear(128 -> n)(v)                        (B, n)     n = 16 qubits
    z = circuit(x)                                 (B, n)     Eq. 7: z_i = <Z_i>
    z~ = Linear(n -> 128)(z), reshaped (B,128,1,1)
    return h * z~                                  Eq. 8, no sigmoid (as in the official code)

The circuit on n qubits, L layers (Fig. 2; wire 0 is the most significant bit of a basis index)::

    RY(x_i) on every qubit                         angle encoding
    L times:  [single-qubit gates with trainable angles w_l on every qubit]
              CNOT(0,1) CNOT(1,2) ... CNOT(n-2,n-1)  the "CNOT chain"
    measure <Z_i> on every qubit                   Eq. 7

Ansaetze (the single-qubit gates of one layer):
    "paper"  RZ(w_{l,i})                  the paper's circuit (weights of shape (L, n, 1))
    "rz_ry"  RZ(w_{l,i,0}) then RY(w_{l,i,1}) the official repository's later fix ("v8")
    "ry"     RY(w_{l,i})                  real amplitudes: the state stays real (cheapest)

What the paper's circuit really computes. RZ is diagonal: it only multiplies each
computational-basis amplitude by a phase. A CNOT only permutes basis states. So after the
RY encoding, every later gate of the "paper" ansatz leaves the *magnitudes* of the amplitudes
those of the RY product state, moved around by the CNOT permutation; the Z-basis probabilities,
hence every <Z_i>, cannot depend on the RZ angles. Concretely, the CNOT network maps a basis state
with bits b to one with bits M b (a linear map over GF(2)); output bit i is the XOR of the input
bits in a "parity set" S_i (see ``parity_sets``). The input bits are independent, with
<(-1)^{b_j}> = cos(x_j) after RY(x_j), so

    <Z_i> = prod_{j in S_i} cos(x_j)          (closed form of Eq. 7 for the paper's circuit)

whatever the weights: the paper's "quantum attention" is a fixed function of its n inputs with
no trainable quantum parameter (their gradient is exactly zero). The "rz_ry" and "ry" ansaetze
put a non-diagonal gate after the first CNOT chain, so their weights do change the outputs.

Backends:
    "exact"      plain torch, batched over the minibatch, autograd gradients, the default:
                 the closed form for "paper"; for the others a matrix product state of bond
                 2^(L-1) (``mps_outputs``, qdm.mps) or a statevector (``statevector_outputs``),
                 whichever is faster for the circuit's size (``exact_simulator``), both exact
                 up to float rounding.
    "pennylane"  a real PennyLane QNode (interface torch) on any device name, with a diff_method
                 and finite shots: the reference, and the road to hardware.

Entry points: ``QuantumGate`` (the nn.Module for ``UNet(gate=...)``), ``circuit_outputs`` (the
circuit alone, on (B, n) inputs), ``parity_sets``, ``closed_form_outputs``,
``statevector_outputs``, ``mps_outputs``, ``make_qnode``.
"""
from __future__ import annotations

import functools
import itertools
import math
import threading

import torch
from torch import nn

from qdm.errors import UserError
from qdm.mps import circuit_mps, one_thread, z_strings

ANSATZE = ("paper", "rz_ry", "ry")
BACKENDS = ("exact", "pennylane")
SIMULATORS = ("auto", "mps", "statevector")   # the exact backend's engine for "ry" and "rz_ry"
# trainable angles per qubit and layer, for each ansatz
ANGLES_PER_GATE = {"paper": 1, "rz_ry": 2, "ry": 1}


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------
def check_ansatz(ansatz: str) -> None:
    if ansatz not in ANSATZE:
        raise UserError(f"unknown quantum ansatz {ansatz!r}: use one of {', '.join(ANSATZE)}")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"unknown quantum backend {backend!r}: use one of {', '.join(BACKENDS)}")


def check_simulator(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise UserError(f"unknown exact simulator {simulator!r}: use one of {', '.join(SIMULATORS)}")


def weight_shape(ansatz: str, n_qubits: int, n_layers: int) -> tuple[int, int, int]:
    """Shape (L, n, k) of the trainable angles: k = 1 for "paper" and "ry", 2 for "rz_ry"."""
    check_ansatz(ansatz)
    if n_qubits < 1 or n_layers < 1:
        raise UserError(f"the circuit needs at least 1 qubit and 1 layer, got n_qubits={n_qubits}, "
                        f"n_layers={n_layers}")
    return (n_layers, n_qubits, ANGLES_PER_GATE[ansatz])


# ---------------------------------------------------------------------------------------------
# The CNOT chain: parity sets (closed form) and the permutation of basis states (statevector)
# ---------------------------------------------------------------------------------------------
def cnot_chain(n_qubits: int) -> list[tuple[int, int]]:
    """The (control, target) pairs of one entangling layer, in order: (0,1), (1,2), ..., (n-2,n-1)."""
    return [(i, i + 1) for i in range(n_qubits - 1)]


def parity_sets(n_qubits: int, n_layers: int) -> list[tuple[int, ...]]:
    """S_i for every output qubit i after ``n_layers`` CNOT chains: the input qubits whose bits
    XOR to the output bit i. Then <Z_i> = prod_{j in S_i} cos(x_j) for the "paper" ansatz.

    Derivation: track each qubit's bit as a set of input bits (a row of a matrix over GF(2)).
    CNOT(c, t) replaces bit t by bit_t XOR bit_c, i.e. S_t <- S_t symmetric-difference S_c.
    One chain runs CNOT(0,1), CNOT(1,2), ... in order, so qubit t sees the *already updated*
    qubit t-1 and one chain gives prefix parities, S_i = {0, ..., i}. L chains give
    j in S_i iff binomial(i - j + L - 1, L - 1) is odd. For n = 16, L = 3 there are 16 sets,
    e.g. S_0 = {0}, S_1 = {0, 1}, S_2 = {1, 2}, S_3 = {2, 3}, S_4 = {0, 3, 4}, ..."""
    sets = [{i} for i in range(n_qubits)]
    for _ in range(n_layers):
        for c, t in cnot_chain(n_qubits):
            sets[t] = sets[t] ^ sets[c]
    return [tuple(sorted(s)) for s in sets]


def chain_permutation(n_qubits: int) -> torch.Tensor:
    """The CNOT chain as one index map on the 2^n basis states: ``new = old[..., perm]``.

    Basis state x (bit of qubit q = (x >> (n-1-q)) & 1) goes to y = chain(x); a gather with
    the inverse map (perm[y] = x) applies the chain to a whole statevector at once. For this
    chain perm[y] = y ^ (y >> 1): it is the Gray code."""
    n = n_qubits
    x = torch.arange(2 ** n)
    y = x.clone()
    for c, t in cnot_chain(n):
        y ^= ((y >> (n - 1 - c)) & 1) << (n - 1 - t)
    perm = torch.empty_like(y)
    perm[y] = x
    return perm


def _z_string_signs(n_qubits: int, sets: list[tuple[int, ...]]) -> torch.Tensor:
    """(2^n, n) matrix of (-1)^(XOR of the bits of basis state y in sets[i]): the eigenvalue of
    prod_{j in sets[i]} Z_j on |y>. With sets = parity_sets(n, 1) it is the value of Z_i measured
    *after* one more CNOT chain, so the last chain never has to be applied to the state."""
    n = n_qubits
    y = torch.arange(2 ** n)
    signs = torch.empty(2 ** n, n)
    for i, s in enumerate(sets):
        parity = torch.zeros_like(y)
        for j in s:
            parity ^= (y >> (n - 1 - j)) & 1
        signs[:, i] = 1.0 - 2.0 * parity
    return signs


@functools.lru_cache(maxsize=8)
def _chain_tables(n_qubits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(perm, inverse perm, signs) for n qubits, computed once."""
    perm = chain_permutation(n_qubits)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    return perm, inv, _z_string_signs(n_qubits, parity_sets(n_qubits, 1))


# ---------------------------------------------------------------------------------------------
# Exact backend 1: the closed form of the paper's circuit
# ---------------------------------------------------------------------------------------------
def closed_form_outputs(x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """<Z_i> = prod_{j in S_i} cos(x_j) for the "paper" ansatz (any RZ weights): x (B, n) -> (B, n)."""
    n = x.shape[-1]
    mask = torch.zeros(n, n, dtype=torch.bool, device=x.device)
    for i, s in enumerate(parity_sets(n, n_layers)):
        mask[i, list(s)] = True
    c = torch.cos(x)[..., None, :]                     # (B, 1, n): the factor of qubit j
    return torch.where(mask, c, torch.ones_like(c)).prod(dim=-1)


# ---------------------------------------------------------------------------------------------
# Exact backend 2: a batched statevector simulation
# ---------------------------------------------------------------------------------------------
def _ry(theta: torch.Tensor) -> torch.Tensor:
    """RY(theta) = [[cos t/2, -sin t/2], [sin t/2, cos t/2]], batched: (...) -> (..., 2, 2)."""
    c, s = torch.cos(theta / 2), torch.sin(theta / 2)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _rz(phi: torch.Tensor) -> torch.Tensor:
    """RZ(phi) = diag(exp(-i phi/2), exp(i phi/2)), batched: (...) -> (..., 2, 2) complex."""
    e = torch.polar(torch.ones_like(phi), -phi / 2)
    zero = torch.zeros_like(e)
    return torch.stack([torch.stack([e, zero], -1), torch.stack([zero, e.conj()], -1)], -2)


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def layer_gates(weights: torch.Tensor, ansatz: str) -> torch.Tensor:
    """The single-qubit gate of every qubit in every layer: weights (L, n, k) -> (L, n, 2, 2),
    real for "ry", complex for "paper" and "rz_ry" (RZ first, then RY: the matrix RY @ RZ)."""
    if ansatz == "ry":
        return _ry(weights[..., 0])
    if ansatz == "paper":
        return _rz(weights[..., 0])
    return _ry(weights[..., 1]).to(_complex(weights.dtype)) @ _rz(weights[..., 0])


def _kron(mats: torch.Tensor) -> torch.Tensor:
    """(g, 2, 2) -> (2^g, 2^g): the gates of g neighbouring qubits as one matrix."""
    out = mats[0]
    for m in mats[1:]:
        out = torch.kron(out, m)
    return out


def _qubit_groups(n_qubits: int, group: int) -> list[int]:
    """Split n qubits into consecutive groups of at most ``group`` qubits, sizes as even as possible."""
    k = -(-n_qubits // group)
    return [n_qubits // k + (1 if i < n_qubits % k else 0) for i in range(k)]


def statevector_outputs(x: torch.Tensor, weights: torch.Tensor, ansatz: str,
                        group: int = 4) -> torch.Tensor:
    """Exact <Z_i> of the circuit by batched statevector simulation: x (B, n), weights (L, n, k).

    The steps (n = 16, L = 3; float32 for "ry", complex64 otherwise; see ``_Simulator``):
    1. Layer 0's gates act on the RY-encoded product state, so they are folded into it: qubit
       i's 2-vector is a_i = U_{0,i} RY(x_i)|0>, and the state is their Kronecker product,
       built as (product of the first n/2 qubits) x (product of the others).
    2. Each later layer: the CNOT chain as one gather with a precomputed permutation, then the
       n single-qubit gates as a few matrix products: the gates of ``group`` = 4 neighbouring
       qubits form one 16x16 matrix (their Kronecker product) applied to the state at once.
    3. The last CNOT chain is never applied: measuring Z_i after it is measuring the Z-string
       over parity_sets(n, 1)[i] before it, so z = |state|^2 @ signs (one matrix product).
    Everything on vectors of 2^(n/2) entries or fewer is autograd; the 2^n-entry part
    (``_Evolve``) has its own backward."""
    check_ansatz(ansatz)
    B, n = x.shape
    gates = layer_gates(weights, ansatz)                           # (L, n, 2, 2)
    ket0 = torch.stack([torch.cos(x / 2), torch.sin(x / 2)], -1)   # RY(x_i)|0>, (B, n, 2)
    a = (gates[0] @ ket0.to(gates.dtype)[..., None])[..., 0]       # step 1, (B, n, 2)
    left, right = _product_state(a[:, :n // 2]), _product_state(a[:, n // 2:])
    sim = _Simulator.get(n, _qubit_groups(n, group), gates.dtype, x.device)
    mats = [_kron(layer[q:q + g]) for layer in gates[1:] for q, g in zip(sim.starts, sim.sizes)]
    return _Evolve.apply(left, right, sim, *mats)


def _product_state(a: torch.Tensor) -> torch.Tensor:
    """Kronecker product of per-qubit states: a (B, m, 2) -> (B, 2^m), qubit 0 most significant."""
    state = torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)
    for i in range(a.shape[1]):
        state = (state[:, :, None] * a[:, i, None, :]).reshape(a.shape[0], -1)
    return state


class _Evolve(torch.autograd.Function):
    """(left, right) product-state halves and the group matrices of layers 1..L-1 -> z (B, n).

    The batch runs in chunks of a few samples (``_Simulator.CHUNK`` amplitudes), so that each
    step's input is still in the CPU cache. When a gradient is needed, every intermediate state
    is kept for backward (about 11 statevectors for n = 16, L = 3); all big buffers come from a
    pool that keeps them from call to call."""

    @staticmethod
    def forward(ctx, left, right, sim, *mats):
        B, N = left.shape[0], sim.N
        z = left.new_empty(B, sim.n, dtype=sim.real_dtype)
        keep = any(ctx.needs_input_grad)
        count = sim.n_states(len(mats)) if keep else 2
        chunk = sim.chunk_size(B)
        buffers = _pool.take(count, (B if keep else chunk) * N, sim.dtype, left.device)
        traces = []
        for lo in range(0, B, chunk):
            b = min(chunk, B - lo)
            states = [buf[lo * N:(lo + b) * N] if keep else buf[:b * N] for buf in buffers]
            trace, psi, batch_first = sim.run(left[lo:lo + b], right[lo:lo + b], mats, states, keep)
            z[lo:lo + b] = sim.measure(psi, batch_first, b)
            traces.append((trace, psi, batch_first))
        if keep:
            ctx.sim, ctx.chunk, ctx.saved = sim, chunk, _Saved(traces, buffers)
            ctx.save_for_backward(left, right, *mats)
        else:
            _pool.give_back(buffers)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z):
        if ctx.saved.traces is None:
            raise RuntimeError("the exact simulator frees its saved states after one backward pass "
                               "(retain_graph=True is not supported)")
        left, right, *mats = ctx.saved_tensors
        sim, chunk = ctx.sim, ctx.chunk
        grad_left, grad_right = torch.empty_like(left), torch.empty_like(right)
        grad_mats = [torch.zeros_like(U) for U in mats]
        for c, (trace, psi, batch_first) in enumerate(ctx.saved.traces):
            sl = slice(c * chunk, (c + 1) * chunk)
            grad_left[sl], grad_right[sl] = sim.backward(
                trace, psi, batch_first, left[sl], right[sl], mats,
                grad_z[sl].to(sim.real_dtype), grad_mats)
        ctx.saved.release()
        return (grad_left, grad_right, None, *grad_mats)


class _Saved:
    """The forward's intermediate states; their buffers go back to the pool after backward,
    or when the graph is dropped without one (e.g. a loss computed outside torch.no_grad)."""

    def __init__(self, traces, buffers):
        self.traces, self.buffers = traces, buffers

    def release(self):
        if self.buffers is not None:
            _pool.give_back(self.buffers)
        self.traces = self.buffers = None

    __del__ = release


class _BufferPool:
    """Big scratch vectors kept from call to call, per thread. A fresh allocation of tens of MB
    comes from the OS as new zeroed pages, measured here to cost as much as the arithmetic."""

    def __init__(self):
        self._local = threading.local()

    def take(self, count, numel, dtype, device):
        free = self._local.__dict__.setdefault("free", [])
        out, rest = [], []
        for buf in sorted(free, key=lambda t: t.numel()):    # the smallest that fit
            fits = len(out) < count and buf.dtype == dtype and buf.device == device and buf.numel() >= numel
            (out if fits else rest).append(buf)
        free[:] = rest
        out += [torch.empty(numel, dtype=dtype, device=device) for _ in range(count - len(out))]
        return [buf[:numel] for buf in out]

    def give_back(self, bufs):
        self._local.__dict__.setdefault("free", []).extend(buf._base if buf._base is not None else buf
                                                           for buf in bufs)


_pool = _BufferPool()


class _Simulator:
    """Statevector kernels for one (n, qubit groups, dtype), with the CNOT-chain tables.

    State layout. A chunk of b states is a flat buffer; qubit 0 is the most significant bit.
    A g-qubit matrix U acts on one group of qubit axes. Apply it to the *trailing* group by
    viewing the state as a (R, 2^g) matrix X and computing U @ X^T: the result (2^g, R) is
    contiguous with the new group *first*. Doing this for the groups from last to first turns
    the layout (batch, G1..Gk) into (G1'..Gk', batch) in k matrix products, each one pass over
    the state, with no transposes or copies. The next layer goes the other way (X^T @ U^T on
    the leading group, first to last) and ends at (batch, ...) again. The chain's gather, the
    measurement and the backward pass work in either layout (``batch_first`` says which).

    Backward (complex gradients in torch's convention, dLoss/dconj(.)): for Y = U X, dU = dY X^H
    and dX = U^H dY; for a gather by perm, the gather by the inverse perm; for z = |psi|^2 @
    signs, dpsi = 2 psi (dz @ signs^T); for psi = left (x) right, dleft = dpsi conj(right) and
    dright = left^H dpsi (psi seen as a (2^(n/2), 2^(n/2)) matrix per sample)."""

    _cache: dict = {}
    CHUNK = 2 ** 19      # amplitudes per chunk: a few MB, so a step's input is still in cache

    @classmethod
    def get(cls, n, sizes, dtype, device):
        key = (n, tuple(sizes), dtype, torch.device(device))
        if key not in cls._cache:
            cls._cache[key] = cls(n, sizes, dtype, device)
        return cls._cache[key]

    def __init__(self, n, sizes, dtype, device):
        self.n, self.N, self.sizes, self.dtype = n, 2 ** n, list(sizes), dtype
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.real_dtype = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
        perm, inv, signs = _chain_tables(n)           # built on the CPU once, copied per device
        self.perm, self.inv, self.signs = perm.to(device), inv.to(device), signs.to(device, self.real_dtype)

    def n_states(self, n_mats):
        """States in a trace: the product state, then one per gather and per matrix."""
        return 1 + n_mats + n_mats // len(self.sizes)

    def chunk_size(self, B):
        return max(1, min(B, self.CHUNK // self.N))

    def run(self, left, right, mats, states, keep):
        """Forward for one chunk of b samples, writing into ``states`` (all of them in order if
        ``keep``, else alternating between two). Returns (trace, final state, batch_first); the
        trace lists (kind, matrix index, input state, its layout) of every step."""
        b, N, k = left.shape[0], self.N, len(self.sizes)
        fresh = iter(states[1:]) if keep else itertools.cycle([states[1], states[0]])
        psi = states[0]                                            # 1. the product state
        torch.mul(left[:, :, None], right[:, None, :], out=psi.view(b, left.shape[1], -1))
        trace, batch_first = [], True
        for layer in range(len(mats) // k):
            out = next(fresh)                                      # 2a. the CNOT chain
            trace.append(("gather", None, psi, batch_first))
            if batch_first:
                torch.index_select(psi.view(b, N), 1, self.perm, out=out.view(b, N))
            else:
                torch.index_select(psi.view(N, b), 0, self.perm, out=out.view(N, b))
            psi = out
            for j in (reversed(range(k)) if batch_first else range(k)):   # 2b. the gates
                U = mats[layer * k + j]
                d, out = U.shape[0], next(fresh)
                trace.append(("gates", layer * k + j, psi, batch_first))
                if batch_first:
                    torch.mm(U, psi.view(-1, d).T, out=out.view(d, -1))
                else:
                    torch.mm(psi.view(d, -1).T, U.T, out=out.view(-1, d))
                psi = out
            batch_first = not batch_first
        return trace, psi, batch_first

    def measure(self, psi, batch_first, b):
        """3. z_i = sum_y |psi_y|^2 signs[y, i] for a chunk: (b, n)."""
        probs = psi.abs().square_() if psi.is_complex() else psi.square()
        if batch_first:
            return probs.view(b, self.N) @ self.signs
        return (self.signs.T @ probs.view(self.N, b)).T

    def backward(self, trace, psi, batch_first, left, right, mats, grad_z, grad_mats):
        """One chunk: returns (dLoss/dleft, dLoss/dright) and adds dLoss/dU into grad_mats."""
        b, N = left.shape[0], self.N
        adj = _pool.take(2, b * N, self.dtype, psi.device)
        w = grad_z @ self.signs.T if batch_first else self.signs @ grad_z.T
        phi = adj[0]
        torch.mul(psi, w.view(-1), out=phi)
        phi.mul_(2)                                          # dLoss/dpsi = 2 psi (dz @ signs^T)
        for kind, j, x, bf in reversed(trace):
            out = adj[1] if phi is adj[0] else adj[0]
            if kind == "gather":
                if bf:
                    torch.index_select(phi.view(b, N), 1, self.inv, out=out.view(b, N))
                else:
                    torch.index_select(phi.view(N, b), 0, self.inv, out=out.view(N, b))
            else:
                U = mats[j]
                d = U.shape[0]
                if bf:    # forward Y = U X^T, X = x as (R, d): dU = dY conj(X), dX^T = U^H dY
                    grad_mats[j] += torch.mm(x.view(-1, d).T, phi.view(d, -1).mH).mH
                    torch.mm(phi.view(d, -1).T, U.conj(), out=out.view(-1, d))
                else:     # forward Y^T = X^T U^T, X = x as (d, R): dU = dY X^H, dX = U^H dY
                    grad_mats[j] += torch.mm(phi.view(-1, d).T, x.view(d, -1).mH)
                    torch.mm(U.mH, phi.view(-1, d).T, out=out.view(d, -1))
            phi = out
        phi = phi.view(b, left.shape[1], right.shape[1])     # 1. back through left (x) right
        grad_left = torch.bmm(phi, right.conj()[:, :, None])[:, :, 0]
        grad_right = torch.bmm(left[:, :, None].mH, phi)[:, 0, :]
        _pool.give_back(adj)
        return grad_left, grad_right


# ---------------------------------------------------------------------------------------------
# Exact backend 3: a matrix product state, and the choice between it and the statevector
# ---------------------------------------------------------------------------------------------
def mps_outputs(x: torch.Tensor, weights: torch.Tensor, ansatz: str) -> torch.Tensor:
    """Exact <Z_i> from the circuit's matrix product state (qdm.mps): the input is a product
    state and each CNOT chain crosses every cut once, so the state before the last chain has
    bond 2^(L-1), and <Z_i> is the Z-string <Z_0 ... Z_i> of that state. x (B, n) -> (B, n)."""
    check_ansatz(ansatz)
    return one_thread(lambda x, w: z_strings(circuit_mps(x, layer_gates(w, ansatz))), x, weights)


def exact_simulator(n_qubits: int, n_layers: int, simulator: str = "auto") -> str:
    """"mps" or "statevector": ``simulator`` itself, or for "auto" the faster one at this size.
    The statevector costs O(2^n), the MPS O(n 8^(L-1)) plus a fixed overhead; measured
    (benchmarks/bench_quantum.py --crossover, batch 64, forward and backward) the MPS is the
    faster from about n = 8-10 for L <= 3, 12 for L = 4 and 15 for L = 5: n >= max(10, 3L)."""
    check_simulator(simulator)
    if simulator != "auto":
        return simulator
    return "mps" if n_qubits >= max(10, 3 * n_layers) else "statevector"


# ---------------------------------------------------------------------------------------------
# PennyLane backend
# ---------------------------------------------------------------------------------------------
def _pennylane():
    try:
        import pennylane as qml
    except ImportError as e:  # pragma: no cover - pennylane is a pinned dependency
        raise UserError("the pennylane backend needs PennyLane: pip install -r requirements.txt "
                        "-c requirements.txt, or use the exact backend") from e
    return qml


@functools.lru_cache(maxsize=32)
def make_qnode(n_qubits: int, n_layers: int, ansatz: str = "paper", pl_device: str = "default.qubit",
               diff_method: str = "backprop", shots: int | None = None, seed: int | None = None,
               channel: str | None = None, p: float = 0.0):
    """The circuit as a PennyLane QNode (interface torch): qnode(x, weights) -> tuple of n
    expectation values. x may be (n,) or (B, n): a batch runs as one broadcast execution.
    Cached per configuration, so copies of a gate share one device. channel ("depolarizing" or
    "bitflip", qdm.noise) with probability p acts on every qubit after each layer's CNOT chain;
    it needs a mixed-state device, so default.qubit is then replaced by default.mixed."""
    check_ansatz(ansatz)
    if channel is not None and pl_device == "default.qubit":
        pl_device = "default.mixed"
    if shots is not None and diff_method == "backprop":
        raise UserError("diff_method='backprop' cannot differentiate finite-shot estimates: use "
                        "diff_method='parameter-shift' with shots, or shots=None")
    qml = _pennylane()
    kwargs = {"seed": seed} if seed is not None else {}
    try:
        dev = qml.device(pl_device, wires=n_qubits, **kwargs)
    except Exception as e:
        raise UserError(f"cannot create the PennyLane device {pl_device!r} ({e}): check the name "
                        "and that its plugin is installed") from e

    def circuit(x, weights):
        for i in range(n_qubits):
            qml.RY(x[..., i], wires=i)
        for layer in range(n_layers):
            for i in range(n_qubits):
                if ansatz in ("paper", "rz_ry"):
                    qml.RZ(weights[layer, i, 0], wires=i)
                if ansatz == "rz_ry":
                    qml.RY(weights[layer, i, 1], wires=i)
                if ansatz == "ry":
                    qml.RY(weights[layer, i, 0], wires=i)
            for c, t in cnot_chain(n_qubits):
                qml.CNOT(wires=[c, t])
            for i in range(n_qubits if channel is not None else 0):
                {"depolarizing": qml.DepolarizingChannel, "bitflip": qml.BitFlip}[channel](p, wires=i)
        return [qml.expval(qml.PauliZ(i)) for i in range(n_qubits)]

    return qml.QNode(circuit, dev, interface="torch", diff_method=diff_method, shots=shots)


def pennylane_outputs(x, weights, ansatz, pl_device="default.qubit", diff_method="backprop",
                      shots=None, seed=None, channel=None, p=0.0) -> torch.Tensor:
    """<Z_i> from a PennyLane QNode, x (B, n) -> (B, n) in x's dtype."""
    L, n, _ = weights.shape
    qnode = make_qnode(n, L, ansatz, pl_device, diff_method, shots, seed, channel, p)
    out = qnode(x, weights)
    return torch.stack([torch.as_tensor(o) for o in out], dim=-1).reshape(x.shape).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# One entry point for the circuit alone, and the gate
# ---------------------------------------------------------------------------------------------
def circuit_outputs(x: torch.Tensor, weights: torch.Tensor, ansatz: str = "paper",
                    backend: str = "exact", *, pl_device: str = "default.qubit",
                    diff_method: str = "backprop", shots: int | None = None,
                    seed: int | None = None, channel: str | None = None, p=0.0,
                    simulator: str = "auto") -> torch.Tensor:
    """Eq. 7, z_i = <Z_i>, for a batch of circuit inputs x (B, n) and weights (L, n, k).
    shots and channel noise (qdm.noise): with the exact backend shots are sampled exactly
    (an int, or per-sample counts (B,) with inf = exact) and p may be per sample (B,).
    simulator: the exact backend's engine for "ry" and "rz_ry", "mps", "statevector" or "auto"
    (``exact_simulator``); the "paper" ansatz always takes its closed form."""
    check_ansatz(ansatz)
    check_backend(backend)
    check_simulator(simulator)
    if x.dim() != 2 or weights.shape != weight_shape(ansatz, x.shape[1], weights.shape[0]):
        raise ValueError(f"expected x (B, n) and weights {weight_shape(ansatz, x.shape[-1], 1)[1:]} "
                         f"per layer, got {tuple(x.shape)} and {tuple(weights.shape)}")
    if backend == "pennylane":
        return pennylane_outputs(x, weights, ansatz, pl_device, diff_method, shots, seed, channel, p)
    if shots is not None or channel is not None:
        from qdm.noise import noisy_outputs
        return noisy_outputs(x, weights, ansatz, shots, channel, p, simulator=simulator)
    if ansatz == "paper":
        # The weights do not enter (module docstring); 0 * sum keeps them in the graph so
        # that they receive the exact zero gradient that PennyLane also gives them.
        return closed_form_outputs(x, weights.shape[0]) + 0 * weights.sum()
    if exact_simulator(x.shape[1], weights.shape[0], simulator) == "mps":
        return mps_outputs(x, weights, ansatz)
    return statevector_outputs(x, weights, ansatz)


class QuantumGate(nn.Module):
    """Eq. 8: h -> h * Linear(circuit(Linear(avgpool(h)))), the paper's "quantum attention".

    channels: width of the bottleneck map (128). n_qubits, n_layers: the circuit (16, 3).
    ansatz: "paper" | "rz_ry" | "ry" (module docstring). backend: "exact" | "pennylane".
    detach_input: reproduce the official code, which detaches the circuit's input so that the
        Linear in front of the circuit never trains (off by default).
    pl_device, diff_method: the PennyLane device name and differentiation method.
    simulator: the exact backend's engine for "ry" and "rz_ry": "auto" (the faster one at this
        size), "mps" or "statevector" (``exact_simulator``).
    shots: finite shots (None = exact expectation values): PennyLane's, or with the exact backend
        bitstrings sampled exactly, forward = estimate, backward = exact gradient (qdm.noise).
    channel, noise_p: "depolarizing" | "bitflip" with probability noise_p after every layer
        (qdm.noise: closed form for "paper", Monte-Carlo trajectories otherwise; default.mixed
        with the pennylane backend). None: no channel (the default).
    noise_schedule, T: the noise level g(t) over the T diffusion steps, "constant" (default),
        "linear" or "cosine": p g(t) and S / g(t)^2 shots for a sample at step t (exact backend).
        The U-Net passes t because ``takes_t`` is True; called without t the level is 1.
    The circuit weights are one parameter of shape (L, n, k), uniform in [0, 2 pi) from torch's
    global RNG, as PennyLane's TorchLayer initialises them; both backends use the same weights,
    so a checkpoint trained with one runs with the other."""

    def __init__(self, channels: int = 128, n_qubits: int = 16, n_layers: int = 3,
                 ansatz: str = "paper", backend: str = "exact", detach_input: bool = False,
                 pl_device: str = "default.qubit", diff_method: str = "backprop",
                 shots: int | None = None, channel: str | None = None, noise_p: float = 0.0,
                 noise_schedule: str = "constant", T: int = 1000, simulator: str = "auto"):
        super().__init__()
        check_ansatz(ansatz)
        check_backend(backend)
        weight_shape(ansatz, n_qubits, n_layers)          # a bad width or depth: one line, before any layer
        check_simulator(simulator)
        if shots is not None or channel is not None or noise_p != 0.0 or noise_schedule != "constant":
            from qdm.noise import check_gate_noise
            check_gate_noise(backend, shots, channel, noise_p, noise_schedule)
        if backend == "pennylane" and shots is not None and diff_method == "backprop":
            raise UserError("diff_method='backprop' cannot differentiate finite-shot estimates: "
                            "use diff_method='parameter-shift' with shots, or shots=None")
        self.channels, self.n_qubits, self.n_layers = channels, n_qubits, n_layers
        self.ansatz, self.backend, self.detach_input = ansatz, backend, detach_input
        self.pl_device, self.diff_method, self.shots = pl_device, diff_method, shots
        self.channel, self.noise_p, self.noise_schedule, self.T = channel, noise_p, noise_schedule, T
        self.simulator = simulator
        self.to_qubits = nn.Linear(channels, n_qubits)
        self.weights = nn.Parameter(torch.empty(weight_shape(ansatz, n_qubits, n_layers)))
        nn.init.uniform_(self.weights, 0.0, 2 * math.pi)
        self.from_qubits = nn.Linear(n_qubits, channels)

    def config(self) -> dict:
        """The constructor arguments, for a run's config JSON."""
        return {k: getattr(self, k) for k in ("channels", "n_qubits", "n_layers", "ansatz", "backend",
                                              "detach_input", "pl_device", "diff_method", "shots",
                                              "channel", "noise_p", "noise_schedule", "T", "simulator")}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())

    takes_t = True   # the U-Net passes the diffusion step t to forward (for noise_schedule)

    def forward(self, h: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        B, C = h.shape[:2]
        x = self.to_qubits(h.mean(dim=(2, 3)))                        # (B, n)
        if self.detach_input:
            x = x.detach()
        shots, p = self.shots, self.noise_p
        if t is not None and self.noise_schedule != "constant":      # per-sample level g(t)
            from qdm.noise import noise_level, shots_at
            g = noise_level(t.cpu(), self.T, self.noise_schedule)
            shots, p = (None if shots is None else shots_at(shots, g)), p * g
        z = circuit_outputs(x, self.weights, self.ansatz, self.backend, pl_device=self.pl_device,
                            diff_method=self.diff_method, shots=shots, channel=self.channel,
                            p=p, simulator=self.simulator)            # Eq. 7, (B, n)
        return h * self.from_qubits(z).view(B, C, 1, 1)               # Eq. 8
