"""The fast statevector kernel of the exact backend (skippable on a first read).

Not needed to understand the circuit (qdm.quantum.circuit) or the model: this is the engine
for small widths (below ``qdm.quantum.mps.exact_simulator``'s crossover) and the reference the
MPS is tested against, written for speed. It gives the same numbers as the plain
``qdm.quantum.circuit.final_state`` and as PennyLane (tests/test_quantum.py).
"""
from __future__ import annotations

import functools
import itertools
import threading

import torch

from qdm.quantum.circuit import (bit_table, chain_permutation, check_ansatz, encoded_qubits, kron,
                                 layer_gates, parity_sets, product_state, qubit_groups)


def z_string_signs(n_qubits: int, sets: list[tuple[int, ...]]) -> torch.Tensor:
    """(2^n, n) matrix of (-1)^(XOR of the bits of basis state y in sets[i]): the eigenvalue of
    prod_{j in sets[i]} Z_j on |y>. With sets = parity_sets(n, 1) it is the value of Z_i measured
    *after* one more CNOT chain, so the last chain never has to be applied to the state."""
    bits = bit_table(n_qubits)
    parity = torch.stack([bits[:, list(s)].sum(1) % 2 for s in sets], 1)
    return (1.0 - 2.0 * parity).float()


@functools.lru_cache(maxsize=8)
def _chain_tables(n_qubits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(perm, inverse perm, signs) for n qubits, computed once."""
    perm = chain_permutation(n_qubits)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    return perm, inv, z_string_signs(n_qubits, parity_sets(n_qubits, 1))


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
    a = encoded_qubits(x, gates)                                   # step 1, (B, n, 2)
    left, right = product_state(a[:, :n // 2]), product_state(a[:, n // 2:])
    sim = _Simulator.get(n, qubit_groups(n, group), gates.dtype, x.device)
    mats = [kron(layer[q:q + g]) for layer in gates[1:] for q, g in zip(sim.starts, sim.sizes)]
    return _Evolve.apply(left, right, sim, *mats)


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
    comes from the OS as new zeroed pages, measured here to cost as much as the arithmetic.
    A buffer that no call has taken in the last ``KEEP_CALLS`` calls is let go, so the pool
    shrinks to what the current calls use (a training step makes two: forward and backward)."""

    KEEP_CALLS = 4

    def __init__(self):
        self._local = threading.local()

    def _state(self):
        local = self._local.__dict__
        local.setdefault("calls", 0)
        return local.setdefault("free", [])          # (buffer, the call that gave it back)

    def take(self, count, numel, dtype, device):
        free = self._state()
        self._local.calls += 1
        out, rest = [], []
        for buf, call in sorted(free, key=lambda e: (e[0].numel(), -e[1])):   # the smallest that fit,
            # the most recently used first, so that the ones no call needs grow old and go
            fits = len(out) < count and buf.dtype == dtype and buf.device == device and buf.numel() >= numel
            if fits:
                out.append(buf)
            elif self._local.calls - call <= self.KEEP_CALLS:
                rest.append((buf, call))
        free[:] = rest
        out += [torch.empty(numel, dtype=dtype, device=device) for _ in range(count - len(out))]
        return [buf[:numel] for buf in out]

    def give_back(self, bufs):
        free = self._state()
        free.extend((buf._base if buf._base is not None else buf, self._local.calls) for buf in bufs)

    def held_bytes(self) -> int:
        """Bytes of the buffers this thread's pool holds."""
        return sum(buf.numel() * buf.element_size() for buf, _ in self._state())


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
