"""The paper's lightweight U-Net (Section IV-C) with a gate hook at the bottleneck (Eq. 8).

    x (C,28,28) -> enc1 3x3 -> 32x28x28 ---------------------------------- skip ----+
                -> enc2 3x3/2 -> 64x14x14                                         |
                -> enc3 3x3/2 -> 128x7x7  + Embed(t)            (Eq. 5-6)         |
                -> residual block          = bottleneck map                      |
                -> gate(bottleneck)        x_bottleneck * z~     (Eq. 8)          |
                -> dec1 convT 2x2/2 -> 64x14x14 -> dec2 convT 2x2/2 -> 32x28x28 --concat
                -> out 3x3 -> epsilon-hat (C,28,28)

Kernel sizes, ReLUs and the single skip follow the official code. Two options, off by default
(the paper's network), belong to the ``qdm`` recipe (qdm.train.PRESETS): ``time_every_scale`` adds
a projection of the time embedding to every encoder and decoder map, not only the bottleneck's,
and ``skip_mid`` adds the second skip of a U-Net (enc2's 14x14 map concatenated before dec2). The
bottleneck, its width and the gate hook stay as they are, so every gate fits both. The gate is any module
mapping the (B,128,7,7) bottleneck map to a map of the same shape: ``Identity`` for the
classical model, the quantum layer (qdm.quantum) for the quantum one. A gate whose attribute
``takes_t`` is True is called as gate(h, t), with each sample's timestep (for a noise schedule).
"""
import torch
import torch.nn.functional as F
from torch import nn

from qdm.embedding import TimeEmbedding


class ResBlock(nn.Module):
    """relu(x + conv(relu(conv(x)))) at constant width."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class UNet(nn.Module):
    """epsilon_theta(x_t, t) for 28x28 images with ``in_channels`` channels (1 MNIST, 3 PathMNIST)."""

    def __init__(self, in_channels: int = 1, gate: nn.Module | None = None, width: int = 32,
                 time_every_scale: bool = False, skip_mid: bool = False):
        super().__init__()
        w = width
        self.in_channels = in_channels
        self.skip_mid = skip_mid
        self.enc1 = nn.Conv2d(in_channels, w, 3, padding=1)
        self.enc2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.enc3 = nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1)
        self.time_embed = TimeEmbedding(128, 4 * w)
        self.res_block = ResBlock(4 * w)
        self.gate = gate if gate is not None else nn.Identity()
        self.dec1 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = nn.ConvTranspose2d((4 if skip_mid else 2) * w, w, 2, stride=2)
        self.out = nn.Conv2d(2 * w, in_channels, 3, padding=1)
        # Embed(t) for the other maps: enc1, enc2, dec1, dec2 (time_every_scale only)
        self.time_scales = nn.ModuleList(TimeEmbedding(128, c) for c in (w, 2 * w, 2 * w, w)) if time_every_scale else None

    def _time(self, k: int, t: torch.Tensor) -> torch.Tensor | float:
        return 0.0 if self.time_scales is None else self.time_scales[k](t)[:, :, None, None]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.in_channels, 28, 28):
            raise ValueError(f"UNet expects images of shape (B, {self.in_channels}, 28, 28), got {tuple(x.shape)}")
        e1 = F.relu(self.enc1(x)) + self._time(0, t)
        e2 = F.relu(self.enc2(e1)) + self._time(1, t)
        e3 = F.relu(self.enc3(e2)) + self.time_embed(t)[:, :, None, None]
        h = self.res_block(e3)
        h = self.gate(h, t) if getattr(self.gate, "takes_t", False) else self.gate(h)
        d1 = F.relu(self.dec1(h)) + self._time(2, t)
        d2 = F.relu(self.dec2(torch.cat([d1, e2], dim=1) if self.skip_mid else d1)) + self._time(3, t)
        return self.out(torch.cat([d2, e1], dim=1))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
