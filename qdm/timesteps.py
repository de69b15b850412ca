"""Where the diffusion steps t come from, and a noise level over them (options the paper's abstract
promises, "noise scheduling", without specifying them; every one is off by default).

1. The noise level over the diffusion steps, ``noise_level(t)`` g(t) in [0, 1] ("constant", "linear",
   "cosine"): 0 at t = 0, 1 at t = T-1. The quantum gate scales its channel's p by g(t) and its
   shot count S to S / g(t)^2 (qdm.quantum.noisy).
2. The sampling of t in training (``sample_t``): uniform (the paper, Eq. 4's t ~ U{0..T-1}) or
   weighted, p(t) proportional to 1 - g(t)/2 (twice as likely at t = 0 as at t = T-1), optionally
   with importance weights 1 / (T p(t)) on the loss so that its expectation stays the paper's.
"""
from __future__ import annotations

import math

import torch

from qdm.errors import check_choice

LEVEL_SHAPES = ("constant", "linear", "cosine")
T_SAMPLING = ("uniform", "linear", "cosine")


def noise_level(t, T: int, shape: str = "constant") -> torch.Tensor:
    """g(t): "constant" 1; "linear" t/(T-1); "cosine" (1 - cos(pi t/(T-1)))/2. Float64, t's shape."""
    check_choice(shape, LEVEL_SHAPES, "noise schedule")
    t = torch.as_tensor(t, dtype=torch.float64)
    if shape == "constant":
        return torch.ones_like(t)
    u = t / max(T - 1, 1)
    return u if shape == "linear" else (1 - torch.cos(math.pi * u)) / 2


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
