"""Shot noise and channel noise on the circuit (the "quantum-generated noise" the paper's abstract
promises but never specifies). Every option is off by default: ``qdm.quantum.gate`` calls
``noisy_outputs`` only when shots or a channel are asked for.

1. Shot noise (``noisy_outputs`` with shots): the circuit's outputs estimated from S measured
   bitstrings, sampled exactly. "paper" ansatz: the bits b_j ~ Bernoulli(sin^2(x_j/2)) of the RY
   product state are independent, RZ only adds phases and each CNOT chain maps bits to prefix
   parities, so a shot is b -> chain^L(b) and Z_i = (-1)^{bit i}. Statevector ansaetze: bitstrings
   drawn from |psi|^2; where the expectation comes from the MPS (qdm.quantum.mps), up to ``DIRECT_SHOTS``
   shots are drawn from that same MPS by sequential conditional sampling (one simulation). More
   than ``DIRECT_SHOTS`` shots: multinomial counts over the 2^n outcomes (of a statevector)
   by a tree of binomial splits, exact for any S at a cost independent of S.
   Gradients: forward = the shot estimate, backward = the exact gradient of its expectation
   ("noisy forward, exact backward", a straight-through estimator). The estimate is unbiased (its
   mean is the expectation), so the forward is right on average and the backward is the exact
   one, with no parameter-shift evaluations. (The sampled estimate itself, a mean of discrete
   outcomes, has no gradient; hardware would need the parameter-shift rule, itself noisy.)
2. Channel noise after every layer (after its CNOT chain, on every qubit), PennyLane's
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
3. Over the diffusion steps (``QuantumGate(noise_schedule=...)``, g(t) from qdm.timesteps): a
   channel's p becomes p g(t); a shot count S becomes S / g(t)^2 (``shots_at``), so the shot
   noise's standard deviation is proportional to g(t) (g = 0: exact).
"""
from __future__ import annotations

import math

import torch

from qdm.errors import UserError, check_choice
from qdm.quantum.circuit import (bit_table, chain_bits, chain_permutation, closed_form_outputs, final_state,
                                 layer_gates, parity_sets, product_state, with_inert_weights)
from qdm.quantum.mps import circuit_mps, exact_simulator, sample_bits, z_strings
from qdm.quantum.statevector import statevector_outputs
from qdm.timesteps import LEVEL_SHAPES

CHANNELS = ("depolarizing", "bitflip")
DIRECT_SHOTS = 4096      # up to this many shots: drawn one by one; beyond: binomial tree
MAX_SHOTS = 2 ** 50      # shot counts are capped here (shot noise below 1e-7)


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
    check_channel_p(channel, p)
    check_choice(schedule, LEVEL_SHAPES, "noise schedule")
    if schedule != "constant" and backend != "exact":
        raise UserError("a noise schedule gives every sample its own noise level: use the exact backend")


# ---------------------------------------------------------------------------------------------
# 1. Exact sampling of shots
# ---------------------------------------------------------------------------------------------
def check_channel_p(channel, p) -> None:
    """UserError for a nonzero channel probability without a channel (it would change nothing)."""
    if channel is None and (bool(p.ne(0).any()) if torch.is_tensor(p) else p != 0):
        raise UserError("a channel probability (noise_p, --noise-p) needs a channel: give channel "
                        f"(--channel) one of {', '.join(CHANNELS)}, or leave the probability at 0")


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
    signs = 1.0 - 2.0 * bit_table(n).double()
    return sampled_counts(probs, shots, generator) @ signs / shots.double()[:, None]


def paper_shot_bits(x: torch.Tensor, n_layers: int, shots: int, q=None, generator=None) -> torch.Tensor:
    """(B, shots, n) measured bits of the "paper" circuit: b_j ~ Bernoulli(sin^2(x_j/2)), then per
    layer the chain and a flip with probability q (B,) (the channel's X/Y part)."""
    B, n = x.shape
    p1 = torch.sin(x.detach().double() / 2).square()
    bits = (torch.rand(B, shots, n, generator=generator, dtype=torch.float64) < p1[:, None, :]).long()
    for _ in range(n_layers):
        bits = chain_bits(bits)
        if q is not None:
            bits ^= (torch.rand(B, shots, n, generator=generator, dtype=torch.float64)
                     < q.double()[:, None, None]).long()
    return bits


def paper_probabilities(x: torch.Tensor, n_layers: int, q=None) -> torch.Tensor:
    """(B, 2^n) exact distribution of the "paper" circuit's measured bits: the RY product
    distribution, then per layer the chain's permutation and each qubit's flip with probability q."""
    B, n = x.shape
    p1 = torch.sin(x.detach().double() / 2).square()
    probs = product_state(torch.stack([1 - p1, p1], -1))
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
# 2. Channel noise
# ---------------------------------------------------------------------------------------------
def flip_probability(channel: str, p: torch.Tensor) -> torch.Tensor:
    """q: 2p/3 for "depolarizing" (X or Y of the three Paulis), p for "bitflip"."""
    check_choice(channel, CHANNELS, "channel")
    return 2 * p / 3 if channel == "depolarizing" else p


def paper_channel_exponents(n_qubits: int, n_layers: int) -> torch.Tensor:
    """k_i = sum_{m=0}^{L-1} |parity_sets(n, m)[i]| (module docstring, 2)."""
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


def apply_paulis(psi: torch.Tensor, xbits: torch.Tensor, zbits: torch.Tensor) -> torch.Tensor:
    """Z^z X^x on each sample's state (B, 2^n): psi'[y] = (-1)^{z.y} psi[y xor x], computed for the
    samples with an error only. The global phase (i per Y) is dropped: it changes no measurement."""
    rows = (xbits | zbits).any(1).nonzero()[:, 0]
    if len(rows) == 0:
        return psi
    n, N = xbits.shape[1], psi.shape[1]
    table = bit_table(n).to(psi.device)
    xmask = (xbits[rows].long() * 2 ** torch.arange(n - 1, -1, -1, device=psi.device)).sum(1)
    flipped = psi[rows].gather(1, torch.arange(N, device=psi.device) ^ xmask[:, None])
    parity = (zbits[rows].float() @ table.T.float()).long() & 1      # z.y mod 2, exact in float32
    return psi.index_copy(0, rows, flipped * (1 - 2 * parity).to(psi.real.dtype))


# ---------------------------------------------------------------------------------------------
# The noisy circuit: one entry point (used by qdm.quantum.gate.circuit_outputs)
# ---------------------------------------------------------------------------------------------
def _per_sample(value, B: int, dtype) -> torch.Tensor:
    return torch.as_tensor(value, dtype=dtype).expand(B).clone()


def noisy_outputs(x: torch.Tensor, weights: torch.Tensor, ansatz: str, shots=None, channel=None,
                  p=0.0, generator=None, simulator: str = "auto") -> torch.Tensor:
    """<Z_i> with channel noise and/or estimated from shots (module docstring, 1-2); x (B, n).
    shots: None (exact), an int, or per-sample counts (B,) with inf = exact. p: float or (B,).
    simulator (qdm.quantum.mps.exact_simulator): where it is the MPS, the shots are drawn from the
    same MPS that gives the expectation values (one simulation)."""
    B, n = x.shape
    L = weights.shape[0]
    check_channel_p(channel, p)
    p = None if channel is None else _per_sample(p, B, torch.float64)
    probs = mps = None
    # the expectation value the shots estimate, with its gradient
    if ansatz == "paper":
        z = closed_form_outputs(x, L) if channel is None else paper_noisy_expectation(x, L, channel, p)
        z = with_inert_weights(z, weights)
    elif channel is not None:
        xs, zs = sample_paulis(channel, p, L, n, generator)
        psi = final_state(x, weights, ansatz, lambda psi, layer: apply_paulis(psi, xs[layer], zs[layer]))
        probs = psi.abs().square() if psi.is_complex() else psi.square()
        z = probs @ (1.0 - 2.0 * bit_table(n)).to(probs.dtype)
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
