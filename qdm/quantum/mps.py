"""Exact matrix-product-state (MPS) simulation of the circuit family of qdm.quantum.circuit.

Why the circuit is an MPS of bond dimension 2^(L-1), with no truncation:

1. RY(x_i)|0> on every qubit, then layer 0's single-qubit gates: a product state, bond 1.
2. One CNOT chain CNOT(0,1) CNOT(1,2) ... CNOT(n-2,n-1) maps basis state b to c with
   c_i = c_{i-1} xor b_i (each CNOT reads the already updated qubit before it), so the new
   amplitude is psi'(c) = psi(b) with b_i = c_i xor c_{i-1}. Qubit i needs one bit, c_{i-1},
   from its left neighbour: the chain is an MPO of bond 2 and doubles the bond exactly,
       A'_i[(a, c'), c, (b, c'')] = A_i[a, c xor c', b] delta(c, c'').
   The carry into qubit 0 is 0 (left boundary vector e_0); the carry out of qubit n-1 is free
   (right boundary vector (1, 1)).
3. Single-qubit gates act on one qubit each: the bond is unchanged.
4. The last chain is never applied. It maps the bits b to c_i = b_0 xor ... xor b_i, so Z_i
   after it is the Z-string Z_0 Z_1 ... Z_i before it: <Z_i> = <Z_0 ... Z_i> of the state after
   L-1 chains, whose bond is 2^(L-1).

Any state's Schmidt rank across the cut after k qubits is also at most 2^k and 2^(n-k). The
sweeps run over sites of g >= L-1 neighbouring qubits each (``GROUP``; physical dimension 2^g),
so every cut between sites has at least L-1 qubits on either side and its bond 2^(L-1) is
within min(2^L, 2^k, 2^(n-k)) (asserted). Fewer, bigger sites also mean fewer sequential steps.

<Z_0 ... Z_i> for all i in one sweep each way: left environments with Z on every qubit so far
(a prefix product of transfer maps), right environments without (a suffix product), then each
site's outcomes y weighted by the parity of their first bits. The cost is linear in n (n/g
sites of 2^g 4^(L-1) numbers per sample) against the statevector's 2^n. Plain torch: autograd
gradients, any device and dtype. ``exact_simulator`` says where it is faster than the statevector.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
from dataclasses import dataclass

import torch

from qdm.errors import UserError
from qdm.quantum.circuit import bit_table, chain_bits, check_ansatz, encoded_qubits, layer_gates

SIMULATORS = ("auto", "mps", "statevector")   # the exact backend's engine for "ry" and "rz_ry"
GROUP = 4           # qubits per MPS site (at least L-1); measured fastest for L = 3, n = 16..128


@dataclass
class MPS:
    """The state before the last CNOT chain: psi(y) = l^T A_0[y_0] ... A_{G-1}[y_{G-1}] r.

    sites (B, G, D, 2^g, D): site j holds qubits slot j*g .. j*g+g-1, qubit at slot 0 most
    significant; a slot that is not a qubit (``slots`` lists those that are) is a phantom qubit in
    |0>, which changes nothing. left, right: (D,) boundary vectors. n_layers: L."""
    sites: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    slots: torch.Tensor
    n_layers: int

    @property
    def n_qubits(self) -> int:
        return len(self.slots)


def site_sizes(n_qubits: int, n_layers: int, group: int = GROUP) -> list[int]:
    """Qubits per MPS site: as even as possible, each at least max(group, L-1) (one site if n is small)."""
    G = max(1, n_qubits // max(group, n_layers - 1))
    return [n_qubits // G + (1 if j < n_qubits % G else 0) for j in range(G)]


@functools.lru_cache(maxsize=64)
def _site_tables(sizes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(slots, index). slots (n,): each qubit's slot among the G*g, a smaller site's phantom
    first. index (2, G*p): the CNOT chain inside every site as a gather over the flattened
    (site, outcome) axis, for carry-in c' = 0 and 1 (module docstring, 2): new outcome c reads
    old outcome b, b_t = c_t xor c_(t-1) over the site's qubits, c_(-1) = c'."""
    G, g = len(sizes), max(sizes)
    c = torch.arange(2 ** g)
    bits = bit_table(g).unbind(1)
    index = torch.empty(2, G, 2 ** g, dtype=torch.long)
    for j, size in enumerate(sizes):
        for carry in (0, 1):
            prev, b = torch.full_like(c, carry), torch.zeros_like(c)
            for t in range(g):
                real = t >= g - size                        # a phantom's bit stays as it is
                b |= (bits[t] ^ prev if real else bits[t]) << (g - 1 - t)
                prev = bits[t] if real else prev
            index[carry, j] = j * 2 ** g + b
    slots = torch.tensor([j * g + g - size + t for j, size in enumerate(sizes) for t in range(size)])
    return slots, index.view(2, -1)


def circuit_mps(x: torch.Tensor, gates: torch.Tensor, group: int = GROUP) -> MPS:
    """The MPS of the circuit for inputs x (B, n) and every layer's gates (L, n, 2, 2)
    (qdm.quantum.circuit.layer_gates), evolved directly on sites of ``site_sizes`` qubits.

    A layer on all sites at once, in the layout (site, outcome y, left bond, right bond, batch):
    the chain inside every site is one gather, for carry-in c' = 0 and 1; the new bonds
    (a, c') and (b, c''), c'' the site's last bit, are a few copies; the gates are one matrix
    product per site (the Kronecker product of its qubits' gates, shared by the batch).
    Batch last: every step is a pass over contiguous rows of B values (tiny per-sample
    matrix products are slow)."""
    L, n = gates.shape[:2]
    B, dev, dtype = x.shape[0], x.device, gates.dtype
    sizes = site_sizes(n, L, group)
    G, g = len(sizes), max(sizes)
    p = 2 ** g
    slots, index = (t.to(dev) for t in _site_tables(tuple(sizes)))
    which = torch.full((G * g,), n, dtype=torch.long, device=dev)      # slot -> qubit, n: phantom
    which[slots] = torch.arange(n, device=dev)
    kets = encoded_qubits(x, gates).permute(1, 2, 0)                   # step 1: (n, 2, B)
    zero_ket = torch.tensor([1.0, 0.0], dtype=dtype, device=dev)
    kets = torch.cat([kets, zero_ket.view(1, 2, 1).expand(1, 2, B)])[which].view(G, g, 2, B)
    a = kets[:, 0]
    for t in range(1, g):                                               # product state per site
        a = (a[:, :, None] * kets[:, t, None]).reshape(G, -1, B)
    eye = torch.eye(2, dtype=dtype, device=dev)[None, None]
    U = torch.cat([gates[1:], eye.expand(L - 1, 1, 2, 2)], 1)[:, which].view(L - 1, G, g, 2, 2)
    K = U[:, :, 0]
    for t in range(1, g):                                               # a site's gates: kron
        K = (K[:, :, :, None, :, None] * U[:, :, t, None, :, None, :]).flatten(4, 5).flatten(2, 3)
    a = a.view(G, p, 1, 1, B)
    left = right = torch.ones(1, dtype=dtype, device=dev)
    for layer in range(1, L):
        D = a.shape[2]
        f = a.reshape(G * p, -1).index_select(0, index.view(-1))        # step 2: (2 G p, D D B)
        if G == 1:   # one site: the carry in is 0 and the carry out is summed, bond 1
            a = f[:p].view(1, p, 1, 1, B)
        else:        # new bonds (a, c') and (b, c''), c'' = the site's last bit
            f = f.view(2, G, p // 2, 2, D, D, B).permute(1, 2, 3, 4, 0, 5, 6)
            zero = torch.zeros_like(f[:, :, 0])
            a = torch.stack([torch.stack([f[:, :, 0], zero], -2),
                             torch.stack([zero, f[:, :, 1]], -2)], 2).reshape(G, p, 2 * D, 2 * D, B)
            left, right = torch.kron(left, zero_ket), torch.kron(right, torch.ones_like(zero_ket))
        a = (K[layer - 1] @ a.reshape(G, p, -1)).view(a.shape)          # step 3
    D = a.shape[2]
    for k in itertools.accumulate(sizes[:-1]):      # exact: no bond above the Schmidt-rank bound
        assert D <= min(2 ** L, 2 ** k, 2 ** (n - k)), (n, L, sizes)
    return MPS(a.permute(4, 0, 2, 1, 3).contiguous(), left, right, slots, L)


def environments(mps: MPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(EA, R): EA_j = E_j A_j (B, G, D p, D) with E_j the left environment with Z on every
    qubit left of site j, E_(j+1) = sum_y par(y) A_j[y]^H E_j A_j[y]; R_j (B, G, D, D) the right
    environment of site j, R_(j-1) = sum_y A_j[y] R_j A_j[y]^H. Index order: bra then ket in E,
    ket then bra in R."""
    A = mps.sites
    B, G, D, p, _ = A.shape
    g = p.bit_length() - 1
    par = (1.0 - 2.0 * (bit_table(g).sum(1) % 2)).to(A.device, A.real.dtype)   # (-1)^(parity of y)
    par = par.view(1, p, 1).expand(D, p, D).contiguous()     # full rows: fast where (p, 1) is not
    sites, zsites = A.unbind(1), (A[:, :-1] * par).unbind(1)     # no E after the last site
    E = torch.outer(mps.left.conj(), mps.left).expand(B, D, D)
    EA = [(E @ sites[0].reshape(B, D, p * D)).view(B, D * p, D)]
    for a, az in zip(sites[1:], zsites):
        E = az.reshape(B, D * p, D).mH @ EA[-1]
        EA.append((E @ a.reshape(B, D, p * D)).view(B, D * p, D))
    R = [torch.outer(mps.right, mps.right.conj()).expand(B, D, D)]
    for a in sites[:0:-1]:
        R.append((a.reshape(B, D * p, D) @ R[-1]).view(B, D, p * D) @ a.reshape(B, D, p * D).mH)
    return torch.stack(EA, 1), torch.stack(R[::-1], 1)


def z_strings(mps: MPS) -> torch.Tensor:
    """<Z_0 Z_1 ... Z_i> for every qubit i, (B, n) real (= <Z_i> of the circuit, docstring 4):
    with E, R the environments of site j, each outcome y has weight
    w(y) = sum conj(A[y]) * (E A[y] R) (its probability with Z on every qubit left of the site),
    and the Z-string ending at the site's t-th qubit is sum_y w(y) (-1)^(y_0 + ... + y_t)."""
    A = mps.sites
    B, G, D, p, _ = A.shape
    EA, R = environments(mps)
    w = (A.conj() * (EA @ R).view(A.shape)).sum((2, 4))              # (B, G, p)
    w = w.real if w.is_complex() else w
    signs = 1.0 - 2.0 * chain_bits(bit_table(p.bit_length() - 1)).to(w.device, w.dtype)   # (p, g)
    return (w @ signs).reshape(B, -1)[:, mps.slots.to(w.device)]


def sample_bits(mps: MPS, shots: int, generator=None) -> torch.Tensor:
    """(B, shots, n) bitstrings measured after the last chain, drawn exactly from the MPS.

    Sequential conditional sampling, in float64: with v the left vector of the outcomes drawn so
    far (normalised), P(y_j = y | y_<j) is proportional to v M_j[y] v^H, M_j[y] = A_j[y] R_j A_j[y]^H
    (computed once per site for all shots). The bits are those of the state before the last
    chain; the chain gives the measured bits, c_i = b_0 xor ... xor b_i (prefix parities)."""
    with torch.no_grad():
        wide = torch.complex128 if mps.sites.is_complex() else torch.float64
        A, left = mps.sites.to(wide), mps.left.to(wide)
        B, G, D, p, _ = A.shape
        dev = A.device
        R = environments(MPS(A, left, mps.right.to(wide), mps.slots, mps.n_layers))[1]
        AR = (A.reshape(B, G, D * p, D) @ R).view(A.shape)
        M = (AR.transpose(2, 3)[..., None, :] * A.conj().transpose(2, 3)[:, :, :, None]).sum(-1)
        M = M.permute(0, 1, 3, 4, 2).reshape(B, G, D * D, p)              # M[(a, a'), y]
        Ay, offset = A.transpose(2, 3).contiguous(), p * torch.arange(B, device=dev)[:, None]   # (B, G, y, a, b)
        v = left.expand(B, shots, D)
        ys = []
        for j in range(G):
            vv = (v[..., :, None] * v.conj()[..., None, :]).view(B, shots, D * D)
            prob = vv @ M[:, j]
            prob = (prob.real if prob.is_complex() else prob).clamp(min=0)  # (B, shots, p)
            cdf = prob.cumsum(-1)                   # y: the first outcome with cdf >= u total
            level = (1 - torch.rand(B, shots, 1, generator=generator, dtype=cdf.dtype, device=dev)) * cdf[..., -1:]
            y = (cdf < level).sum(-1)
            a = Ay[:, j].reshape(B * p, D * D).index_select(0, (y + offset).view(-1))   # A_j[y] per shot
            v = (v[..., None] * a.view(B, shots, D, D)).sum(-2) / prob.gather(2, y[..., None]).sqrt()
            ys.append(y)
        bits = bit_table(p.bit_length() - 1).to(dev)[torch.stack(ys, -1)].reshape(B, shots, -1)
        return chain_bits(bits[..., mps.slots.to(dev)])


# ---------------------------------------------------------------------------------------------
# One CPU thread
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _OneThread(torch.autograd.Function):
    """fn(*inputs) with its forward and its backward on one CPU thread: the graph of fn is built
    inside forward and differentiated in backward (once: retain_graph is not supported)."""

    @staticmethod
    def forward(ctx, fn, *inputs):
        with torch.enable_grad(), _threads(1):
            ctx.inputs = [t.detach().requires_grad_(t.requires_grad) for t in inputs]
            ctx.out = fn(*ctx.inputs)
        return ctx.out.detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        wanted = [t for t in ctx.inputs if t.requires_grad]
        with _threads(1):
            grads = iter(torch.autograd.grad(ctx.out, wanted, grad))
        return (None, *[next(grads) if t.requires_grad else None for t in ctx.inputs])


def one_thread(fn, *inputs: torch.Tensor) -> torch.Tensor:
    """fn(*inputs), forward and backward, on one thread if on the CPU. The MPS's steps work on
    tens of thousands of numbers: shared between two threads, each step waits for both, which
    costs more than it saves (measured in the train step on 2 shared cores: +12-14% of the
    classical step on two threads, +1-5% on one; benchmarks/bench_quantum.py)."""
    if inputs[0].device.type != "cpu" or torch.get_num_threads() == 1:
        return fn(*inputs)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs)):
        with _threads(1):
            return fn(*inputs)
    return _OneThread.apply(fn, *inputs)


# ---------------------------------------------------------------------------------------------
# The exact backend's outputs from the MPS, and where the MPS is the faster engine
# ---------------------------------------------------------------------------------------------
def mps_outputs(x: torch.Tensor, weights: torch.Tensor, ansatz: str) -> torch.Tensor:
    """Exact <Z_i> of the circuit from its MPS (module docstring): x (B, n) -> (B, n)."""
    check_ansatz(ansatz)
    return one_thread(lambda x, w: z_strings(circuit_mps(x, layer_gates(w, ansatz))), x, weights)


def check_simulator(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise UserError(f"unknown exact simulator {simulator!r}: use one of {', '.join(SIMULATORS)}")


def exact_simulator(n_qubits: int, n_layers: int, simulator: str = "auto") -> str:
    """"mps" or "statevector": ``simulator`` itself, or for "auto" the faster one at this size.
    The statevector costs O(2^n), the MPS O(n 8^(L-1)) plus a fixed overhead; measured
    (benchmarks/bench_quantum.py --crossover, batch 64, forward and backward) the MPS is the
    faster from about n = 8-10 for L <= 3, 12 for L = 4 and 15 for L = 5: n >= max(10, 3L)."""
    check_simulator(simulator)
    if simulator != "auto":
        return simulator
    return "mps" if n_qubits >= max(10, 3 * n_layers) else "statevector"
