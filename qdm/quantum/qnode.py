"""The circuit as a PennyLane QNode: the reference for the exact backend, and the road to
hardware (any PennyLane device name, diff_method, finite shots, channels on default.mixed).
PennyLane is imported on first use, so the exact backend never needs it.
"""
from __future__ import annotations

import functools

import torch

from qdm.errors import UserError
from qdm.quantum.circuit import check_ansatz, cnot_chain


def _pennylane():
    try:
        import pennylane as qml
    except ImportError as e:  # pragma: no cover - pennylane is a pinned dependency
        raise UserError("the pennylane backend needs PennyLane: pip install -r requirements.txt "
                        "-c requirements.txt, or use the exact backend") from e
    return qml


def check_shots_differentiable(shots, diff_method: str) -> None:
    """UserError for finite shots with backprop, which cannot differentiate sampled estimates."""
    if shots is not None and diff_method == "backprop":
        raise UserError("diff_method='backprop' cannot differentiate finite-shot estimates: use "
                        "diff_method='parameter-shift' with shots, or shots=None")


@functools.lru_cache(maxsize=32)
def make_qnode(n_qubits: int, n_layers: int, ansatz: str = "paper", pl_device: str = "default.qubit",
               diff_method: str = "backprop", shots: int | None = None, seed: int | None = None,
               channel: str | None = None, p: float = 0.0):
    """The circuit as a PennyLane QNode (interface torch): qnode(x, weights) -> tuple of n
    expectation values. x may be (n,) or (B, n): a batch runs as one broadcast execution.
    Cached per configuration, so copies of a gate share one device. channel ("depolarizing" or
    "bitflip", qdm.quantum.noisy) with probability p acts on every qubit after each layer's CNOT chain;
    it needs a mixed-state device, so default.qubit is then replaced by default.mixed."""
    check_ansatz(ansatz)
    check_shots_differentiable(shots, diff_method)
    if channel is not None and pl_device == "default.qubit":
        pl_device = "default.mixed"
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
