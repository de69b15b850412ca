"""The circuit of the quantum layer (paper Section IV-D, Fig. 2, Eq. 7), and what it computes.

The circuit on n qubits, L layers (wire 0 is the most significant bit of a basis index)::

    RY(x_i) on every qubit                         angle encoding
    L times:  [single-qubit gates with trainable angles w_l on every qubit]
              CNOT(0,1) CNOT(1,2) ... CNOT(n-2,n-1)  the "CNOT chain"
    measure <Z_i> on every qubit                   Eq. 7

Ansaetze (the single-qubit gates of one layer):
    "paper"  RZ(w_{l,i})                  the paper's circuit (weights of shape (L, n, 1))
    "rz_ry"  RZ(w_{l,i,0}) then RY(w_{l,i,1}) the official repository's later fix ("v8")
    "ry"     RY(w_{l,i})                  real amplitudes: the state stays real (cheapest)

The CNOT chain on basis states. CNOT(c, t) replaces bit t by b_t xor b_c; the chain runs them
in order, so qubit t sees the already updated qubit t-1, and one chain maps the bits b to their
prefix parities, c_i = b_0 xor ... xor b_i (``chain_bits``). As a linear map over GF(2), output
bit i after L chains is the XOR of the input bits in a "parity set" S_i (``parity_sets``).

What the paper's circuit really computes. RZ is diagonal: it only multiplies each
computational-basis amplitude by a phase. A CNOT only permutes basis states. So after the RY
encoding, every later gate of the "paper" ansatz leaves the *magnitudes* of the amplitudes those
of the RY product state, moved around by the CNOT permutation: the Z-basis probabilities, hence
every <Z_i>, cannot depend on the RZ angles. The input bits are independent, with
<(-1)^{b_j}> = cos(x_j) after RY(x_j), so

    <Z_i> = prod_{j in S_i} cos(x_j)          (closed form of Eq. 7 for the paper's circuit)

whatever the weights: the paper's "quantum attention" is a fixed function of its n inputs with
no trainable quantum parameter (their gradient is exactly zero). The "rz_ry" and "ry" ansaetze
put a non-diagonal gate after the first CNOT chain, so their weights do change the outputs.

``final_state`` is the plain statevector of the circuit (plain torch autograd): the reference
that the fast simulators (qdm.quantum.statevector, qdm.quantum.mps) are tested against.
"""
from __future__ import annotations

import functools

import torch

from qdm.errors import UserError

ANSATZE = ("paper", "rz_ry", "ry")
ANGLES_PER_GATE = {"paper": 1, "rz_ry": 2, "ry": 1}   # trainable angles per qubit and layer


def check_ansatz(ansatz: str) -> None:
    if ansatz not in ANSATZE:
        raise UserError(f"unknown quantum ansatz {ansatz!r}: use one of {', '.join(ANSATZE)}")


def weight_shape(ansatz: str, n_qubits: int, n_layers: int) -> tuple[int, int, int]:
    """Shape (L, n, k) of the trainable angles: k = 1 for "paper" and "ry", 2 for "rz_ry"."""
    check_ansatz(ansatz)
    if n_qubits < 1 or n_layers < 1:
        raise UserError(f"the circuit needs at least 1 qubit and 1 layer, got n_qubits={n_qubits}, "
                        f"n_layers={n_layers}")
    return (n_layers, n_qubits, ANGLES_PER_GATE[ansatz])


# ---------------------------------------------------------------------------------------------
# The CNOT chain: as gates, on bits, as parity sets, as a permutation of basis states
# ---------------------------------------------------------------------------------------------
def cnot_chain(n_qubits: int) -> list[tuple[int, int]]:
    """The (control, target) pairs of one entangling layer, in order: (0,1), (1,2), ..., (n-2,n-1)."""
    return [(i, i + 1) for i in range(n_qubits - 1)]


def chain_bits(bits: torch.Tensor) -> torch.Tensor:
    """One CNOT chain on basis states given as bits (..., n): bit i <- b_0 xor ... xor b_i."""
    return bits.cumsum(-1) % 2


@functools.lru_cache(maxsize=16)
def bit_table(n_qubits: int) -> torch.Tensor:
    """(2^n, n): the bit of qubit q in basis state y (qubit 0 most significant)."""
    y = torch.arange(2 ** n_qubits)
    return torch.stack([(y >> (n_qubits - 1 - q)) & 1 for q in range(n_qubits)], dim=1)


def parity_sets(n_qubits: int, n_layers: int) -> list[tuple[int, ...]]:
    """S_i for every output qubit i after ``n_layers`` CNOT chains: the input qubits whose bits
    XOR to the output bit i. Then <Z_i> = prod_{j in S_i} cos(x_j) for the "paper" ansatz.

    Derivation: track each qubit's bit as a set of input bits (a row of a matrix over GF(2)).
    CNOT(c, t) replaces bit t by bit_t XOR bit_c, i.e. S_t <- S_t symmetric-difference S_c.
    One chain gives prefix parities, S_i = {0, ..., i}; L chains give j in S_i iff
    binomial(i - j + L - 1, L - 1) is odd. For n = 16, L = 3 there are 16 sets,
    e.g. S_0 = {0}, S_1 = {0, 1}, S_2 = {1, 2}, S_3 = {2, 3}, S_4 = {0, 3, 4}, ..."""
    sets = [{i} for i in range(n_qubits)]
    for _ in range(n_layers):
        for c, t in cnot_chain(n_qubits):
            sets[t] = sets[t] ^ sets[c]
    return [tuple(sorted(s)) for s in sets]


def chain_permutation(n_qubits: int) -> torch.Tensor:
    """The CNOT chain as one index map on the 2^n basis states: ``new = old[..., perm]``.
    Basis state x goes to y = chain(x); a gather with the inverse map (perm[y] = x) applies the
    chain to a whole statevector at once. (For this chain perm[y] = y ^ (y >> 1), the Gray code.)"""
    n = n_qubits
    y = (chain_bits(bit_table(n)) << torch.arange(n - 1, -1, -1)).sum(1)
    perm = torch.empty_like(y)
    perm[y] = torch.arange(2 ** n)
    return perm


# ---------------------------------------------------------------------------------------------
# The closed form of the paper's circuit
# ---------------------------------------------------------------------------------------------
def closed_form_outputs(x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """<Z_i> = prod_{j in S_i} cos(x_j) for the "paper" ansatz (any RZ weights): x (B, n) -> (B, n)."""
    n = x.shape[-1]
    mask = torch.zeros(n, n, dtype=torch.bool, device=x.device)
    for i, s in enumerate(parity_sets(n, n_layers)):
        mask[i, list(s)] = True
    c = torch.cos(x)[..., None, :]                     # (B, 1, n): the factor of qubit j
    return torch.where(mask, c, torch.ones_like(c)).prod(dim=-1)


def with_inert_weights(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """z + 0 * sum(weights): outputs of the "paper" ansatz, which its weights do not enter, with
    the weights kept in the graph so that they get the exact zero gradient PennyLane gives them."""
    return z + 0 * weights.sum()


# ---------------------------------------------------------------------------------------------
# The gates, and the plain statevector
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


def encoded_qubits(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Each qubit's state after the RY encoding and layer 0's gates, U_{0,i} RY(x_i)|0>: (B, n, 2)."""
    ket0 = torch.stack([torch.cos(x / 2), torch.sin(x / 2)], -1)      # RY(x_i)|0>
    return (gates[0] @ ket0.to(gates.dtype)[..., None])[..., 0]


def product_state(a: torch.Tensor) -> torch.Tensor:
    """Kronecker product of per-qubit states: a (B, m, 2) -> (B, 2^m), qubit 0 most significant."""
    state = torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)
    for i in range(a.shape[1]):
        state = (state[:, :, None] * a[:, i, None, :]).reshape(a.shape[0], -1)
    return state


def kron(mats: torch.Tensor) -> torch.Tensor:
    """(g, 2, 2) -> (2^g, 2^g): the gates of g neighbouring qubits as one matrix."""
    out = mats[0]
    for m in mats[1:]:
        out = torch.kron(out, m)
    return out


def qubit_groups(n_qubits: int, group: int) -> list[int]:
    """Split n qubits into consecutive groups of at most ``group`` qubits, sizes as even as possible."""
    k = -(-n_qubits // group)
    return [n_qubits // k + (1 if i < n_qubits % k else 0) for i in range(k)]


def final_state(x: torch.Tensor, weights: torch.Tensor, ansatz: str, after_chain=None) -> torch.Tensor:
    """The circuit's final state (B, 2^n), every CNOT chain applied, by plain autograd: layer 0's
    gates folded into the product state, then per layer the gates of 4 neighbouring qubits as one
    matrix (``kron``) and the chain as a gather. after_chain(psi, layer) -> psi, if given, acts
    after each layer's chain (qdm.quantum.noisy: a trajectory's Pauli errors)."""
    B, n = x.shape
    gates = layer_gates(weights, ansatz)                              # (L, n, 2, 2)
    psi = product_state(encoded_qubits(x, gates))
    perm = chain_permutation(n).to(x.device)
    for layer in range(gates.shape[0]):
        start = 0
        for g in (qubit_groups(n, 4) if layer > 0 else []):           # layer 0 is in the product
            U, rest = kron(gates[layer, start:start + g]), n - start - g
            if rest:                                                  # U on the group's axis
                psi = (U @ psi.reshape(B * 2 ** start, 2 ** g, 2 ** rest)).reshape(B, -1)
            else:                                                     # the last group: one mm
                psi = (psi.reshape(-1, 2 ** g) @ U.T).reshape(B, -1)
            start += g
        psi = psi[:, perm]
        if after_chain is not None:
            psi = after_chain(psi, layer)
    return psi
