"""Quantum-generated noise and noise scheduling (the two techniques the paper's abstract promises
but never specifies). Every option is off by default; ``qdm.quantum.QuantumGate`` and
``qdm.train`` use these functions only when one is switched on.

1. Noise level over the diffusion steps, ``noise_level(t)`` in [0, 1] ("constant", "linear",
   "cosine"): 0 at t = 0, 1 at t = T-1. A channel's p becomes p g(t); a shot count S becomes
   S / g(t)^2, so the shot noise's standard deviation is proportional to g(t) (g = 0: exact).
2. Shot noise (``noisy_outputs`` with shots): the circuit's outputs estimated from S measured
   bitstrings, sampled exactly. "paper" ansatz: the bits b_j ~ Bernoulli(sin^2(x_j/2)) of the RY
   product state are independent, RZ only adds phases and each CNOT chain maps bits to prefix
   parities, so a shot is b -> chain^L(b) and Z_i = (-1)^{bit i}. Statevector ansaetze: bitstrings
   drawn from |psi|^2; where the expectation comes from the MPS (qdm.mps), up to ``DIRECT_SHOTS``
   shots are drawn from that same MPS by sequential conditional sampling (one simulation). More
   than ``DIRECT_SHOTS`` shots: multinomial counts over the 2^n outcomes (of a statevector)
   by a tree of binomial splits, exact for any S at a cost independent of S.
   Gradients: forward = the shot estimate, backward = the exact gradient of its expectation
   ("noisy forward, exact backward", a straight-through estimator). The estimate is unbiased (its
   mean is the expectation), so the forward is right on average and the backward is the exact
   one, with no parameter-shift evaluations. (The sampled estimate itself, a mean of discrete
   outcomes, has no gradient; hardware would need the parameter-shift rule, itself noisy.)
3. Channel noise after every layer (after its CNOT chain, on every qubit), PennyLane's
   conventions: DepolarizingChannel(p) rho = (1-p) rho + p/3 (X rho X + Y rho Y + Z rho Z) scales
   <X>, <Y>, <Z> by 1 - 4p/3; BitFlip(p) scales <Y>, <Z> by 1 - 2p. In the Z basis both flip a bit
   with probability q = 2p/3 (X or Y) resp. q = p, i.e. multiply (-1)^bit by lambda = 1 - 2q.
   "paper" ansatz, closed form: in the Heisenberg picture Z_i is, just after layer l's chain, the
   Z-string on parity_sets(n, L-l)[i] (RZ commutes with it), so the channel after layer l scales it
   by lambda^|that set| and
       <Z_i> = lambda^{k_i} prod_{j in S_i} cos x_j,   k_i = sum_{m=0}^{L-1} |parity_sets(n, m)[i]|.
   Other ansaetze: Monte-Carlo trajectories, one per sample and forward pass: after each layer a
   Pauli drawn from the channel (X/Y/Z each with p/3, resp. X with p) is applied to the state.
   Their mean over many passes is the channel's expectation; the gradient through a trajectory
   is an unbiased estimate of its gradient (the Pauli probabilities do not depend on parameters).
   With shots as well, all S shots of a pass come from that pass's trajectory: the mean is right,
   the spread is larger than hardware's (where every shot has its own trajectory).
4. A quantum source for the diffusion noise epsilon (``quantum_randn``): fair bits from |+> =
   H|0> measured in Z, k = 32 bits per uniform u, then epsilon = Phi^{-1}(u) (inverse normal CDF). In
   simulation the outcome probabilities come from the circuit but the coin flips come from torch's
   pseudo-random generator (or PennyLane's, ``backend="pennylane"``): a simulator cannot show
   quantum randomness, only that the construction gives N(0, 1).
5. The sampling of t in training (``sample_t``): uniform (the paper) or weighted,
   p(t) proportional to 1 - g(t)/2 (twice as likely at t = 0 as at t = T-1), optionally with
   importance weights 1 / (T p(t)) on the loss so that its expectation stays the paper's.
"""
from __future__ import annotations

import functools
import math

import torch

from qdm.errors import UserError
from qdm.mps import circuit_mps, sample_bits, z_strings
from qdm.quantum import (_kron, _product_state, _qubit_groups, chain_permutation, closed_form_outputs,
                         exact_simulator, layer_gates, parity_sets, statevector_outputs)

LEVEL_SHAPES = ("constant", "linear", "cosine")
CHANNELS = ("depolarizing", "bitflip")
EPS_SOURCES = ("torch", "quantum")
T_SAMPLING = ("uniform", "linear", "cosine")
DIRECT_SHOTS = 4096      # up to this many shots: drawn one by one; beyond: binomial tree
MAX_SHOTS = 2 ** 50      # shot counts are capped here (shot noise below 1e-7)


def check_choice(value, choices, what: str) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}: use one of {', '.join(map(str, choices))}")


# ---------------------------------------------------------------------------------------------
# 1. Noise level over the diffusion steps
# ---------------------------------------------------------------------------------------------
def noise_level(t, T: int, shape: str = "constant") -> torch.Tensor:
    """g(t): "constant" 1; "linear" t/(T-1); "cosine" (1 - cos(pi t/(T-1)))/2. Float64, t's shape."""
    check_choice(shape, LEVEL_SHAPES, "noise schedule")
    t = torch.as_tensor(t, dtype=torch.float64)
    if shape == "constant":
        return torch.ones_like(t)
    u = t / max(T - 1, 1)
    return u if shape == "linear" else (1 - torch.cos(math.pi * u)) / 2


def shots_at(shots: int, level: torch.Tensor) -> torch.Tensor:
    """S / g^2 rounded up and capped at MAX_SHOTS; inf (exact expectation) where g = 0."""
    s = (shots / level.square()).ceil().clamp(1, MAX_SHOTS)
    return torch.where(level > 0, s, torch.full_like(s, math.inf))


def check_gate_noise(backend: str, shots, channel, p: float, schedule: str) -> None:
    """UserError for noise options that QuantumGate cannot honour."""
    if shots is not None and (not isinstance(shots, int) or shots < 1):
        raise UserError(f"shots must be a positive integer, got {shots!r}")
    if channel is not None:
        check_choice(channel, CHANNELS, "channel")
    if not 0.0 <= p <= 1.0:
        raise UserError(f"the channel's probability must be in [0, 1], got {p}")
    check_choice(schedule, LEVEL_SHAPES, "noise schedule")
    if schedule != "constant" and backend != "exact":
        raise UserError("a noise schedule gives every sample its own noise level: use the exact backend")


# ---------------------------------------------------------------------------------------------
# 2. Exact sampling of shots
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _bit_table(n: int) -> torch.Tensor:
    """(2^n, n): bit of qubit q in basis state y (qubit 0 most significant)."""
    y = torch.arange(2 ** n)
    return torch.stack([(y >> (n - 1 - q)) & 1 for q in range(n)], dim=1)


def multinomial_counts(probs: torch.Tensor, shots: torch.Tensor, generator=None) -> torch.Tensor:
    """counts_b ~ Multinomial(shots_b, probs_b) for probs (B, 2^n): split each node's count between
    its two halves by a binomial draw, from the root (all shots) down to the 2^n outcomes. Exact
    for any count (float64 up to 2^53); cost O(B 2^n) whatever the shots."""
    B = probs.shape[0]
    levels = [probs.double()]
    while levels[-1].shape[1] > 1:
        levels.append(levels[-1].view(B, -1, 2).sum(-1))
    counts = shots.double().view(B, 1)
    for q in reversed(levels[:-1]):
        pair = q.view(B, -1, 2)
        total = pair.sum(-1)
        left = torch.where(total > 0, pair[..., 0] / total.clamp(min=1e-300), torch.zeros_like(total))
        c0 = torch.binomial(counts, left.clamp(0, 1), generator=generator)
        counts = torch.stack([c0, counts - c0], -1).view(B, -1)
    return counts


def sampled_counts(probs: torch.Tensor, shots: torch.Tensor, generator=None) -> torch.Tensor:
    """Counts over the 2^n outcomes of shots_b (finite) draws from probs_b: (B, 2^n), float64."""
    S = int(shots.max().item())
    if S > DIRECT_SHOTS:
        return multinomial_counts(probs, shots, generator)
    idx = torch.multinomial(probs.double(), S, replacement=True, generator=generator)    # (B, S)
    keep = (torch.arange(S) < shots[:, None]).double()               # row b keeps its first S_b
    return torch.zeros(probs.shape, dtype=torch.float64).scatter_add_(1, idx, keep)


def shot_estimate(probs: torch.Tensor, shots: torch.Tensor, generator=None) -> torch.Tensor:
    """Mean of Z_i = (-1)^{bit i} over shots_b bitstrings drawn from probs (B, 2^n): (B, n)."""
    n = int(math.log2(probs.shape[1]))
    signs = 1.0 - 2.0 * _bit_table(n).double()
    return sampled_counts(probs, shots, generator) @ signs / shots.double()[:, None]


def _chain_bits(bits: torch.Tensor) -> torch.Tensor:
    """One CNOT chain on measured bits (..., n): bit i <- b_0 xor ... xor b_i (prefix parity)."""
    return bits.cumsum(-1) % 2


def paper_shot_bits(x: torch.Tensor, n_layers: int, shots: int, q=None, generator=None) -> torch.Tensor:
    """(B, shots, n) measured bits of the "paper" circuit: b_j ~ Bernoulli(sin^2(x_j/2)), then per
    layer the chain and a flip with probability q (B,) (the channel's X/Y part)."""
    B, n = x.shape
    p1 = torch.sin(x.detach().double() / 2).square()
    bits = (torch.rand(B, shots, n, generator=generator, dtype=torch.float64) < p1[:, None, :]).long()
    for _ in range(n_layers):
        bits = _chain_bits(bits)
        if q is not None:
            bits ^= (torch.rand(B, shots, n, generator=generator, dtype=torch.float64)
                     < q.double()[:, None, None]).long()
    return bits


def paper_probabilities(x: torch.Tensor, n_layers: int, q=None) -> torch.Tensor:
    """(B, 2^n) exact distribution of the "paper" circuit's measured bits: the RY product
    distribution, then per layer the chain's permutation and each qubit's flip with probability q."""
    B, n = x.shape
    p1 = torch.sin(x.detach().double() / 2).square()
    probs = _product_state(torch.stack([1 - p1, p1], -1))
    perm = chain_permutation(n)
    for _ in range(n_layers):
        probs = probs[:, perm]
        if q is not None:
            qq = q.double().view(B, 1, 1, 1)
            for j in range(n):
                v = probs.view(B, 2 ** j, 2, -1)
                probs = ((1 - qq) * v + qq * v.flip(2)).reshape(B, -1)
    return probs


# ---------------------------------------------------------------------------------------------
# 3. Channel noise
# ---------------------------------------------------------------------------------------------
def flip_probability(channel: str, p: torch.Tensor) -> torch.Tensor:
    """q: 2p/3 for "depolarizing" (X or Y of the three Paulis), p for "bitflip"."""
    check_choice(channel, CHANNELS, "channel")
    return 2 * p / 3 if channel == "depolarizing" else p


def paper_channel_exponents(n_qubits: int, n_layers: int) -> torch.Tensor:
    """k_i = sum_{m=0}^{L-1} |parity_sets(n, m)[i]| (module docstring, 3)."""
    sets = [parity_sets(n_qubits, m) for m in range(n_layers)]
    return torch.tensor([sum(len(s[i]) for s in sets) for i in range(n_qubits)])


def paper_noisy_expectation(x: torch.Tensor, n_layers: int, channel: str, p: torch.Tensor) -> torch.Tensor:
    """<Z_i> = (1 - 2q)^{k_i} prod_{j in S_i} cos x_j for the "paper" ansatz with the channel."""
    lam = (1 - 2 * flip_probability(channel, p)).to(x.dtype).view(-1, 1)
    k = paper_channel_exponents(x.shape[1], n_layers).to(x.dtype)
    return closed_form_outputs(x, n_layers) * lam ** k


def sample_paulis(channel: str, p: torch.Tensor, n_layers: int, n_qubits: int, generator=None):
    """One trajectory per sample: (X part, Z part) bit masks, each (L, B, n) bool. Depolarizing:
    an error with probability p, then X, Y (= X and Z up to a phase) or Z with 1/3 each."""
    check_choice(channel, CHANNELS, "channel")
    shape = (n_layers, len(p), n_qubits)
    err = torch.rand(shape, generator=generator, dtype=torch.float64) < p.double().view(1, -1, 1)
    if channel == "bitflip":
        return err, torch.zeros_like(err)
    kind = torch.randint(0, 3, shape, generator=generator)          # 0 X, 1 Y, 2 Z
    return err & (kind < 2), err & (kind > 0)


def _apply_paulis(psi: torch.Tensor, xbits: torch.Tensor, zbits: torch.Tensor) -> torch.Tensor:
    """Z^z X^x on each sample's state (B, 2^n): psi'[y] = (-1)^{z.y} psi[y xor x], computed for the
    samples with an error only. The global phase (i per Y) is dropped: it changes no measurement."""
    rows = (xbits | zbits).any(1).nonzero()[:, 0]
    if len(rows) == 0:
        return psi
    n, N = xbits.shape[1], psi.shape[1]
    table = _bit_table(n).to(psi.device)
    xmask = (xbits[rows].long() * 2 ** torch.arange(n - 1, -1, -1, device=psi.device)).sum(1)
    flipped = psi[rows].gather(1, torch.arange(N, device=psi.device) ^ xmask[:, None])
    parity = (zbits[rows].float() @ table.T.float()).long() & 1      # z.y mod 2, exact in float32
    return psi.index_copy(0, rows, flipped * (1 - 2 * parity).to(psi.real.dtype))


def final_state(x: torch.Tensor, weights: torch.Tensor, ansatz: str, paulis=None) -> torch.Tensor:
    """The circuit's final state (B, 2^n), every CNOT chain applied, by plain autograd (simpler
    and more memory-hungry than qdm.quantum's simulator). paulis = (X masks, Z masks), each
    (L, B, n): a trajectory, the Paulis applied after each layer's chain."""
    B, n = x.shape
    gates = layer_gates(weights, ansatz)                              # (L, n, 2, 2)
    ket0 = torch.stack([torch.cos(x / 2), torch.sin(x / 2)], -1)
    psi = _product_state((gates[0] @ ket0.to(gates.dtype)[..., None])[..., 0])
    perm = chain_permutation(n).to(x.device)
    for layer in range(gates.shape[0]):
        start = 0
        for g in (_qubit_groups(n, 4) if layer > 0 else []):          # layer 0 is in the product
            U, rest = _kron(gates[layer, start:start + g]), n - start - g
            if rest:                                                  # U on the group's axis
                psi = (U @ psi.reshape(B * 2 ** start, 2 ** g, 2 ** rest)).reshape(B, -1)
            else:                                                     # the last group: one mm
                psi = (psi.reshape(-1, 2 ** g) @ U.T).reshape(B, -1)
            start += g
        psi = psi[:, perm]
        if paulis is not None:
            psi = _apply_paulis(psi, paulis[0][layer], paulis[1][layer])
    return psi


# ---------------------------------------------------------------------------------------------
# The noisy circuit: one entry point (used by qdm.quantum.circuit_outputs)
# ---------------------------------------------------------------------------------------------
def _per_sample(value, B: int, dtype) -> torch.Tensor:
    return torch.as_tensor(value, dtype=dtype).expand(B).clone()


def noisy_outputs(x: torch.Tensor, weights: torch.Tensor, ansatz: str, shots=None, channel=None,
                  p=0.0, generator=None, simulator: str = "auto") -> torch.Tensor:
    """<Z_i> with channel noise and/or estimated from shots (module docstring, 2-3); x (B, n).
    shots: None (exact), an int, or per-sample counts (B,) with inf = exact. p: float or (B,).
    simulator (qdm.quantum.exact_simulator): where it is the MPS, the shots are drawn from the
    same MPS that gives the expectation values (one simulation)."""
    B, n = x.shape
    L = weights.shape[0]
    p = None if channel is None else _per_sample(p, B, torch.float64)
    probs = mps = None
    # the expectation value the shots estimate, with its gradient
    if ansatz == "paper":
        z = closed_form_outputs(x, L) if channel is None else paper_noisy_expectation(x, L, channel, p)
        z = z + 0 * weights.sum()            # the weights' exact zero gradient, as circuit_outputs
    elif channel is not None:
        psi = final_state(x, weights, ansatz, sample_paulis(channel, p, L, n, generator))
        probs = psi.abs().square() if psi.is_complex() else psi.square()
        z = probs @ (1.0 - 2.0 * _bit_table(n)).to(probs.dtype)
    elif exact_simulator(n, L, simulator) == "mps":
        mps = circuit_mps(x, layer_gates(weights, ansatz))
        z = z_strings(mps)
    else:
        z = statevector_outputs(x, weights, ansatz)
    if shots is None:
        return z
    shots = _per_sample(shots, B, torch.float64)
    finite = torch.isfinite(shots)
    if not finite.any():
        return z
    with torch.no_grad():
        S = shots.clone()
        S[~finite] = 1                       # rows with exact outputs: sampled, then replaced
        q = None if channel is None else flip_probability(channel, p)
        if (ansatz == "paper" or mps is not None) and S.max() <= DIRECT_SHOTS:
            bits = (paper_shot_bits(x, L, int(S.max()), q, generator) if mps is None else
                    sample_bits(mps, int(S.max()), generator))
            keep = (torch.arange(bits.shape[1]) < S[:, None]).double()[..., None]
            est = ((1.0 - 2.0 * bits) * keep).sum(1) / S[:, None]
        else:
            if probs is None:
                probs = (paper_probabilities(x, L, q) if ansatz == "paper" else
                         final_state(x.detach(), weights.detach(), ansatz).abs().square())
            est = shot_estimate(probs.detach(), S, generator)
        est = torch.where(finite[:, None], est.to(z.dtype), z.detach())
    return z + (est - z.detach())            # forward: the estimate; backward: d(expectation)


# ---------------------------------------------------------------------------------------------
# 4. A quantum source for the diffusion noise epsilon
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# 5. Sampling t in training
# ---------------------------------------------------------------------------------------------
def t_probabilities(T: int, kind: str = "uniform") -> torch.Tensor:
    """p(t) over 0..T-1: uniform, or proportional to 1 - g(t)/2 for g of the same-named shape."""
    check_choice(kind, T_SAMPLING, "t sampling")
    w = torch.ones(T, dtype=torch.float64) if kind == "uniform" else 1 - noise_level(torch.arange(T), T, kind) / 2
    return w / w.sum()


def sample_t(batch: int, T: int, kind: str = "uniform", generator=None, reweight: bool = False):
    """(t, loss weights or None). "uniform" draws exactly as the paper's loop does (torch.randint);
    otherwise t ~ p(t) and, with reweight, weights 1/(T p(t)) keep E[loss] the uniform-t loss."""
    if kind == "uniform":
        return torch.randint(0, T, (batch,), generator=generator), None
    p = t_probabilities(T, kind)
    t = torch.multinomial(p, batch, replacement=True, generator=generator)
    return t, ((1 / (T * p[t])).float() if reweight else None)
