"""Classical controls for the paper's quantum gate: other gates at the U-Net's bottleneck (Eq. 8).

Each gate maps the bottleneck map h (B, 128, 7, 7) to a map of the same shape and plugs into
the same hook as qdm.quantum.QuantumGate (``UNet(gate=...)``), with the same path around f::

    v = mean over the 7x7 pixels of h          (B, 128)
    x = down(v)      down = Linear(128 -> 16)
    y = f(x)                                   (B, 16)
    return h * up(y) up = Linear(16 -> 128)    Eq. 8 (no sigmoid, as the official code)

    "cosine"  f(x)_i = prod_{j in S_i} cos(x_j), S_i from 3 running-XOR passes (``xor_sets``):
              exactly the function the paper's circuit computes (qdm.quantum, "closed form"),
              written as plain torch, with no circuit and no angles
    "mlp"     f = Linear(16 -> 2) -> tanh -> Linear(2 -> 16)
    "se"      squeeze-and-excitation (Hu et al. 2018): h * sigmoid(up(relu(down(v)))), 16 hidden

Trainable parameters of the gate (channels 128, width 16; ``gate_parameters``):
    quantum, "paper" or "ry"  2064 + 48 + 2176 = 4288   ("paper": the 48 RZ angles are inert,
                                                          they cannot change the outputs)
    quantum, "rz_ry"          2064 + 96 + 2176 = 4336
    cosine, se                2064 +      2176 = 4240
    mlp                       2064 + 82 + 2176 = 4322
The MLP's hidden width 2 puts its 82 inner parameters between the paper circuit's 48 (inert)
angles and the rz_ry circuit's 96 trainable ones (width 1 would match 4288 to one parameter,
but makes every output a function of one number).
"""
import torch
from torch import nn

from qdm.unet import UNet, count_parameters

WIDTH = 16        # the width of the path (the paper's 16 qubits)
XOR_PASSES = 3    # the paper's 3 layers
MLP_HIDDEN = 2


def xor_sets(width: int, passes: int) -> torch.Tensor:
    """(width, width) boolean matrix A: A[i, j] says whether input j enters output i after
    ``passes`` running-XOR passes over bits (pass: bit_i <- bit_0 XOR ... XOR bit_i, i.e. over
    GF(2) A <- P A with P the lower-triangular ones, a cumulative sum mod 2). So A = P^L mod 2:
    A[i, j] = binomial(i - j + L - 1, L - 1) mod 2 for j <= i, 0 above the diagonal."""
    a = torch.eye(width, dtype=torch.long)
    for _ in range(passes):
        a = a.cumsum(dim=0) % 2
    return a.bool()


def cosine_product(x: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """y_i = prod_{j : sets[i, j]} cos(x_j): x (B, n), sets (n, n) boolean -> (B, n)."""
    c = torch.cos(x)[..., None, :]                      # (B, 1, n)
    return torch.where(sets, c, torch.ones_like(c)).prod(dim=-1)


class CosineProductGate(nn.Module):
    """Eq. 8 with f(x)_i = prod_{j in S_i} cos(x_j): h -> h * up(f(down(avgpool(h))))."""

    def __init__(self, channels: int = 128, width: int = WIDTH, passes: int = XOR_PASSES):
        super().__init__()
        self.down = nn.Linear(channels, width)
        self.up = nn.Linear(width, channels)
        self.register_buffer("sets", xor_sets(width, passes), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = cosine_product(self.down(h.mean(dim=(2, 3))), self.sets)
        return h * self.up(y)[:, :, None, None]


class MLPGate(nn.Module):
    """Eq. 8 with f = a small MLP: h -> h * up(mlp(down(avgpool(h)))), mlp = width -> hidden -> width."""

    def __init__(self, channels: int = 128, width: int = WIDTH, hidden: int = MLP_HIDDEN):
        super().__init__()
        self.down = nn.Linear(channels, width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, width))
        self.up = nn.Linear(width, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.up(self.mlp(self.down(h.mean(dim=(2, 3)))))[:, :, None, None]


class SEGate(nn.Module):
    """Squeeze-and-excitation: h -> h * sigmoid(up(relu(down(avgpool(h))))), Eq. 8's path with
    f = relu and a sigmoid on the channel weights."""

    def __init__(self, channels: int = 128, hidden: int = WIDTH):
        super().__init__()
        self.down = nn.Linear(channels, hidden)
        self.up = nn.Linear(hidden, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * torch.sigmoid(self.up(torch.relu(self.down(h.mean(dim=(2, 3))))))[:, :, None, None]


# TrainConfig.model name -> gate class (built with its defaults)
CONTROL_GATES = {"cosine": CosineProductGate, "mlp": MLPGate, "se": SEGate}


def _gate(model: nn.Module) -> nn.Module:
    return model.gate if isinstance(model, UNet) else model


def gate_parameters(model: nn.Module) -> int:
    """Trainable parameters of the gate (of a UNet, or of a gate module); 0 for the classical model."""
    return count_parameters(_gate(model))


def inert_parameters(model: nn.Module) -> int:
    """How many of those cannot change the outputs: the paper circuit's RZ angles (their gradient
    is exactly zero, see qdm.quantum), 0 for every other gate."""
    gate = _gate(model)
    return gate.weights.numel() if getattr(gate, "ansatz", None) == "paper" else 0
