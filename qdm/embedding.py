"""Timestep embedding (paper Eq. 5-6)."""
import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int = 128) -> torch.Tensor:
    """Eq. 5: gamma(t) = [sin(t w_k), cos(t w_k)] for k = 0..d/2-1.

    The paper writes w_k = 10000^(-2k/d); its code (and DDPM's) spaces the d/2 frequencies
    so that they run exactly from 1 down to 1/10000: w_k = 10000^(-k/(d/2-1)). We follow
    the code. Returns (len(t), dim): all sines first, then all cosines."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    omega = torch.exp(-math.log(10000.0) * k / (half - 1))
    angles = t.float()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class TimeEmbedding(nn.Module):
    """Eq. 6: Embed(t) = Linear(gamma(t)), a 128-dimensional vector per timestep."""

    def __init__(self, dim: int = 128, out_dim: int = 128):
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear(sinusoidal_embedding(t, self.dim))
