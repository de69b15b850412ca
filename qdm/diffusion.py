"""DDPM: the forward process, the training loss and two samplers (paper Eq. 1, 4, 9, 13).

Timesteps are indices 0..T-1 (the paper's t = 1..T), as in qdm.schedule.
"""
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from qdm.schedule import NoiseSchedule


def _at(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """values[t] as float32 on t's device, shaped (B,1,1,1) to broadcast over images."""
    return values.to(t.device)[t].float()[:, None, None, None]


class Diffusion:
    """noise: the source of epsilon, noise(shape, generator, device) -> tensor (e.g.
    qdm.noise.quantum_randn); None (the default) is torch.randn."""

    def __init__(self, schedule: NoiseSchedule, noise=None):
        self.schedule = schedule
        self.T = schedule.T
        self.noise = noise

    def randn(self, shape, generator=None, device="cpu"):
        """epsilon ~ N(0, I) from the noise source."""
        if self.noise is None:
            return torch.randn(shape, generator=generator, device=device)
        return self.noise(shape, generator=generator, device=device)

    def q_sample(self, x0, t, noise):
        """Eq. 1 / 13: x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps.
        (The paper's Eq. 9 writes alpha_t; the cumulative alpha-bar_t is meant.)"""
        ab = _at(self.schedule.alpha_bars, t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def loss(self, model, x0, generator=None, t=None, noise=None, weights=None):
        """Eq. 4 / 13: || eps_theta(x_t, t) - eps ||^2 with t ~ U{0..T-1}, eps ~ N(0, I);
        weights (B,): per-sample factors on the loss (importance weights of a non-uniform t)."""
        if t is None:
            t = torch.randint(0, self.T, (x0.shape[0],), generator=generator, device=x0.device)
        if noise is None:
            noise = self.randn(x0.shape, generator, x0.device)
        if weights is None:
            return F.mse_loss(model(self.q_sample(x0, t, noise), t), noise)
        per_sample = (model(self.q_sample(x0, t, noise), t) - noise).square().flatten(1).mean(1)
        return (weights.to(per_sample) * per_sample).mean()

    def predict_x0(self, x_t, t, eps):
        """Invert Eq. 1 for x_0 given the predicted noise, clamped to the data range [-1, 1]."""
        ab = _at(self.schedule.alpha_bars, t)
        return ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)

    @torch.no_grad()
    def sample_ddpm(self, model, shape, generator=None, device="cpu", progress=False):
        """Ancestral sampling (Ho et al. 2020): x_{t-1} ~ q(x_{t-1} | x_t, x0-hat), with
        x0-hat clamped to [-1, 1] and the posterior variance beta-tilde, as the official code."""
        s = self.schedule
        x = self.randn(shape, generator, device)
        for i in tqdm(reversed(range(self.T)), total=self.T, desc="DDPM", disable=not progress):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            x0 = self.predict_x0(x, t, model(x, t))
            if i == 0:
                return x0
            mean = _at(s.posterior_coef_x0, t) * x0 + _at(s.posterior_coef_xt, t) * x
            z = self.randn(shape, generator, device)
            x = mean + _at(s.posterior_variance, t).sqrt() * z
        return x

    @torch.no_grad()
    def sample_ddim(self, model, shape, steps=100, eta=0.0, generator=None, device="cpu", progress=False):
        """DDIM (Song et al. 2021) on ``steps`` evenly spaced timesteps; eta = 0 is
        deterministic given the starting noise, eta = 1 is DDPM-like."""
        ab = self.schedule.alpha_bars
        times = torch.linspace(self.T - 1, 0, steps).round().long().unique_consecutive().tolist()
        x = self.randn(shape, generator, device)
        for k, i in enumerate(tqdm(times, desc=f"DDIM-{steps}", disable=not progress)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            eps = model(x, t)
            x0 = self.predict_x0(x, t, eps)
            if k == len(times) - 1:
                return x0
            a, a_prev = ab[i].item(), ab[times[k + 1]].item()
            eps = (x - a ** 0.5 * x0) / (1 - a) ** 0.5  # the noise consistent with the clamped x0
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
            x = a_prev ** 0.5 * x0 + (1 - a_prev - sigma ** 2) ** 0.5 * eps
            if sigma > 0:
                x = x + sigma * self.randn(shape, generator, device)
        return x

    def sample(self, model, shape, sampler="ddpm", steps=None, generator=None, device="cpu", progress=False):
        """Dispatch on the sampler's name: 'ddpm' (all T steps) or 'ddim' (``steps`` steps)."""
        if sampler == "ddpm":
            return self.sample_ddpm(model, shape, generator, device, progress)
        if sampler == "ddim":
            return self.sample_ddim(model, shape, steps or 100, 0.0, generator, device, progress)
        from qdm.errors import UserError
        raise UserError(f"unknown sampler {sampler!r}: choose ddpm or ddim")
