"""The quantum gate (paper Section IV-D, Eq. 7-8): the circuit of qdm.quantum.circuit as a layer.

The gate (Eq. 8), applied to the U-Net's bottleneck map h of shape (B, 128, 7, 7)::

    v = mean over the 7x7 pixels of h              (B, 128)   global average pool
    x = Linear(128 -> n)(v)                        (B, n)     n = 16 qubits
    z = circuit(x)                                 (B, n)     Eq. 7: z_i = <Z_i>
    z~ = Linear(n -> 128)(z), reshaped (B,128,1,1)
    return h * z~                                  Eq. 8, no sigmoid (as in the official code)

Backends of ``circuit_outputs`` (the circuit alone, on (B, n) inputs):
    "exact"      plain torch, batched over the minibatch, autograd gradients, the default: the
                 closed form for "paper"; for the others a matrix product state of bond 2^(L-1)
                 (qdm.quantum.mps) or a statevector (qdm.quantum.statevector), whichever is faster
                 for the circuit's size (``exact_simulator``), both exact up to float rounding.
    "pennylane"  a real PennyLane QNode (interface torch) on any device name, with a diff_method
                 and finite shots (qdm.quantum.qnode): the reference, and the road to hardware.
Shots and channels: qdm.quantum.noisy.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from qdm.errors import UserError
from qdm.quantum.circuit import check_ansatz, closed_form_outputs, weight_shape, with_inert_weights
from qdm.quantum.mps import check_simulator, exact_simulator, mps_outputs
from qdm.quantum.noisy import check_channel_p, check_gate_noise, noisy_outputs, shots_at
from qdm.quantum.qnode import check_shots_differentiable, pennylane_outputs
from qdm.quantum.statevector import statevector_outputs
from qdm.timesteps import noise_level

BACKENDS = ("exact", "pennylane")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"unknown quantum backend {backend!r}: use one of {', '.join(BACKENDS)}")


def circuit_outputs(x: torch.Tensor, weights: torch.Tensor, ansatz: str = "paper",
                    backend: str = "exact", *, pl_device: str = "default.qubit",
                    diff_method: str = "backprop", shots: int | None = None,
                    seed: int | None = None, channel: str | None = None, p=0.0,
                    simulator: str = "auto") -> torch.Tensor:
    """Eq. 7, z_i = <Z_i>, for a batch of circuit inputs x (B, n) and weights (L, n, k).
    shots and channel noise (qdm.quantum.noisy): with the exact backend shots are sampled exactly
    (an int, or per-sample counts (B,) with inf = exact) and p may be per sample (B,).
    simulator: the exact backend's engine for "ry" and "rz_ry", "mps", "statevector" or "auto"
    (qdm.quantum.mps.exact_simulator); the "paper" ansatz always takes its closed form."""
    check_ansatz(ansatz)
    check_backend(backend)
    check_simulator(simulator)
    if x.dim() != 2 or weights.shape != weight_shape(ansatz, x.shape[1], weights.shape[0]):
        raise ValueError(f"expected x (B, n) and weights {weight_shape(ansatz, x.shape[-1], 1)[1:]} "
                         f"per layer, got {tuple(x.shape)} and {tuple(weights.shape)}")
    check_channel_p(channel, p)
    if backend == "pennylane":
        return pennylane_outputs(x, weights, ansatz, pl_device, diff_method, shots, seed, channel, p)
    if shots is not None or channel is not None:
        return noisy_outputs(x, weights, ansatz, shots, channel, p, simulator=simulator)
    if ansatz == "paper":
        return with_inert_weights(closed_form_outputs(x, weights.shape[0]), weights)
    if exact_simulator(x.shape[1], weights.shape[0], simulator) == "mps":
        return mps_outputs(x, weights, ansatz)
    return statevector_outputs(x, weights, ansatz)


class QuantumGate(nn.Module):
    """Eq. 8: h -> h * Linear(circuit(Linear(avgpool(h)))), the paper's "quantum attention".

    channels: width of the bottleneck map (128). n_qubits, n_layers: the circuit (16, 3).
    ansatz: "paper" | "rz_ry" | "ry" (qdm.quantum.circuit). backend: "exact" | "pennylane".
    detach_input: reproduce the official code, which detaches the circuit's input so that the
        Linear in front of the circuit never trains (off by default).
    pl_device, diff_method: the PennyLane device name and differentiation method.
    simulator: the exact backend's engine for "ry" and "rz_ry": "auto" (the faster one at this
        size), "mps" or "statevector" (qdm.quantum.mps.exact_simulator).
    shots: finite shots (None = exact expectation values): PennyLane's, or with the exact backend
        bitstrings sampled exactly, forward = estimate, backward = exact gradient (qdm.quantum.noisy).
    channel, noise_p: "depolarizing" | "bitflip" with probability noise_p after every layer
        (qdm.quantum.noisy: closed form for "paper", Monte-Carlo trajectories otherwise; default.mixed
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
        check_gate_noise(backend, shots, channel, noise_p, noise_schedule)
        if backend == "pennylane":
            check_shots_differentiable(shots, diff_method)
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
            g = noise_level(t.cpu(), self.T, self.noise_schedule)
            shots, p = (None if shots is None else shots_at(shots, g)), p * g
        z = circuit_outputs(x, self.weights, self.ansatz, self.backend, pl_device=self.pl_device,
                            diff_method=self.diff_method, shots=shots, channel=self.channel,
                            p=p, simulator=self.simulator)            # Eq. 7, (B, n)
        return h * self.from_qubits(z).view(B, C, 1, 1)               # Eq. 8
