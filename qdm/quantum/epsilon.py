"""A quantum source for the diffusion noise epsilon (Eq. 1's eps ~ N(0, I), one of the abstract's
"quantum-generated noise" options; off by default).

Fair bits from |+> = H|0> measured in Z, k = 32 bits per uniform u, then eps = Phi^{-1}(u) (the
inverse normal CDF). In simulation the outcome probabilities come from the circuit but the coin
flips come from torch's pseudo-random generator (or PennyLane's, ``backend="pennylane"``): a
simulator cannot show quantum randomness, only that the construction gives N(0, 1).
"""
from __future__ import annotations

import math

import torch

from qdm.errors import UserError, check_choice

EPS_SOURCES = ("torch", "quantum")


def hadamard_bit_probability() -> float:
    """P(1) when H|0> = |+> is measured in Z: |<1|H|0>|^2, from the 1-qubit statevector (= 1/2)."""
    H = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / math.sqrt(2)
    return (H @ torch.tensor([1.0, 0.0], dtype=torch.float64))[1].square().item()


def quantum_bits(count: int, generator=None, backend: str = "exact", wires: int = 8, seed=None) -> torch.Tensor:
    """``count`` measured bits of |+> states, (count,) uint8. "exact": Bernoulli(P(1)) draws with
    torch; "pennylane": a QNode with H on ``wires`` qubits, qml.sample() with shots (slow: for a
    few thousand bits, to show it is the same thing)."""
    check_choice(backend, ("exact", "pennylane"), "bit source")
    if backend == "exact":
        prob = torch.full((count,), hadamard_bit_probability(), dtype=torch.float32)   # 1/2 exactly
        return torch.bernoulli(prob, generator=generator).to(torch.uint8)
    import pennylane as qml
    dev = qml.device("default.qubit", wires=wires, seed=seed)

    @qml.qnode(dev, shots=-(-count // wires))
    def circuit():
        for w in range(wires):
            qml.Hadamard(wires=w)
        return qml.sample(wires=range(wires))

    return torch.as_tensor(circuit()).to(torch.uint8).reshape(-1)[:count]


def bits_to_uniform(bits: torch.Tensor, k: int) -> torch.Tensor:
    """Groups of k bits (..., k) -> u = sum_i b_i 2^{-i} + 2^{-k-1}, uniform on the 2^k midpoints
    of [0, 1] (never 0 or 1), float64."""
    u = torch.full(bits.shape[:-1], 0.5 ** (k + 1), dtype=torch.float64)
    for i in range(k):
        u += bits[..., i].double() * 0.5 ** (i + 1)
    return u


def quantum_uniform(count: int, generator=None, bits: int = 32, backend: str = "exact", seed=None) -> torch.Tensor:
    """(count,) uniforms u = (m + 1/2) / 2^k, m = the k = ``bits`` measured bits of k qubits in |+>
    read as a binary number (``bits_to_uniform``), float64. "exact": every bit is a fair coin
    (``hadamard_bit_probability`` = 1/2), so m is uniform on [0, 2^k) and is drawn at once by
    torch.randint, the same distribution as k separate bits at a fraction of the cost.
    "pennylane": the bits measured one by one (``quantum_bits``)."""
    check_choice(backend, ("exact", "pennylane"), "bit source")
    if not 1 <= bits <= 52:
        raise UserError(f"bits per number must be in 1..52 (float64), got {bits}")
    if backend == "exact":
        m = torch.randint(0, 2 ** bits, (count,), generator=generator)
        return (m.double() + 0.5) / 2 ** bits
    return bits_to_uniform(quantum_bits(count * bits, backend=backend, seed=seed).view(count, bits), bits)


def quantum_randn(shape, generator=None, device="cpu", bits: int = 32, backend: str = "exact",
                  seed=None) -> torch.Tensor:
    """N(0, 1) noise of ``shape`` by the inverse CDF, eps = Phi^{-1}(u) (torch.special.ndtri), of the
    uniforms of ``quantum_uniform``. With 32 bits |eps| <= 6.2 (the 2^-33 quantile). Float32."""
    shape = tuple(shape)
    u = quantum_uniform(math.prod(shape), generator, bits, backend, seed)
    return torch.special.ndtri(u).float().reshape(shape).to(device)


def eps_function(source: str):
    """The Diffusion noise function of an eps source: None (torch.randn) or quantum_randn."""
    check_choice(source, EPS_SOURCES, "eps source")
    return None if source == "torch" else quantum_randn
