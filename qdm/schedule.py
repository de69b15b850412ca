"""Noise schedules of the forward process (paper Eq. 1-3).

Index convention: the paper's steps t = 1..T are stored at indices 0..T-1, so
``alpha_bars[i]`` is the paper's alpha-bar at t = i + 1.
"""
import math
from dataclasses import dataclass

import torch


def cosine_alpha_bar(t: torch.Tensor, T: int, s: float = 0.008) -> torch.Tensor:
    """Eq. 2, normalised so that alpha-bar(0) = 1 (Nichol & Dhariwal 2021)."""
    f = lambda u: torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    return f(t) / f(torch.zeros_like(t))


def cosine_betas(T: int = 1000, s: float = 0.008, beta_min: float = 1e-4,
                 beta_max: float = 0.999) -> torch.Tensor:
    """Eq. 3, beta_t = 1 - alpha-bar_t / alpha-bar_{t-1}, clipped to [beta_min, beta_max]
    as in the official code (the clip at 0.999 keeps the last step finite)."""
    t = torch.arange(T + 1, dtype=torch.float64)
    ab = cosine_alpha_bar(t, T, s)
    return (1 - ab[1:] / ab[:-1]).clamp(beta_min, beta_max)


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """The linear schedule of Ho et al. (2020), scaled to T steps as they define it for T = 1000."""
    scale = 1000 / T
    return torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64)


def sigmoid_alpha_bar(t: torch.Tensor, T: int, start: float = -3.0, end: float = 3.0,
                      tau: float = 1.0) -> torch.Tensor:
    """The sigmoid schedule (Chen 2023, "On the importance of noise scheduling", Algorithm 1):
    alpha-bar(t) = (v_end - sigmoid(((t/T)(end - start) + start)/tau)) / (v_end - v_start),
    v = sigmoid(end/tau), sigmoid(start/tau): 1 at t = 0, 0 at t = T."""
    v_start, v_end = torch.sigmoid(torch.tensor(start / tau)), torch.sigmoid(torch.tensor(end / tau))
    out = torch.sigmoid((t / T * (end - start) + start) / tau)
    return (v_end.to(out) - out) / (v_end - v_start).to(out)


def sigmoid_betas(T: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                  beta_min: float = 1e-4, beta_max: float = 0.999) -> torch.Tensor:
    """beta_t = 1 - alpha-bar_t / alpha-bar_{t-1} of the sigmoid schedule, clipped as the cosine's."""
    t = torch.arange(T + 1, dtype=torch.float64)
    ab = sigmoid_alpha_bar(t, T, start, end, tau).clamp(min=1e-9)
    return (1 - ab[1:] / ab[:-1]).clamp(beta_min, beta_max)


@dataclass
class NoiseSchedule:
    """betas, alphas = 1 - betas, alpha-bars (their running product, Eq. 1) and the
    posterior q(x_{t-1} | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, posterior_variance)."""
    betas: torch.Tensor

    def __post_init__(self):
        b = self.betas.to(torch.float64)
        self.T = len(b)
        self.alphas = 1 - b
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=b.dtype), self.alpha_bars[:-1]])
        self.posterior_variance = b * (1 - self.alpha_bars_prev) / (1 - self.alpha_bars)
        self.posterior_coef_x0 = b * self.alpha_bars_prev.sqrt() / (1 - self.alpha_bars)
        self.posterior_coef_xt = (1 - self.alpha_bars_prev) * self.alphas.sqrt() / (1 - self.alpha_bars)


SCHEDULES = {"cosine": cosine_betas, "linear": linear_betas, "sigmoid": sigmoid_betas}


def make_schedule(name: str = "cosine", T: int = 1000) -> NoiseSchedule:
    if name not in SCHEDULES:
        from qdm.errors import UserError
        raise UserError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    return NoiseSchedule(SCHEDULES[name](T))
