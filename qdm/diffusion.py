"""DDPM: the forward process, the training loss and the samplers (paper Eq. 1, 4, 6-7, 9, 13).

Timesteps are indices 0..T-1 (the paper's t = 1..T), as in qdm.schedule. Every sampler clamps
x0-hat to [-1, 1] and returns the x0-hat of its last timestep, 0.
"""
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from qdm.schedule import NoiseSchedule

SAMPLERS = ("ddpm", "ddim", "ddpm_respaced", "dpmpp_2m", "dpmpp_2m_sde")   # what Diffusion.sample accepts
SPACINGS = ("uniform", "quadratic")                                        # Diffusion.sampling_times' grids


def _at(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """values[t] as float32 on t's device, shaped (B,1,1,1) to broadcast over images."""
    return values.to(t.device)[t].float()[:, None, None, None]


class Diffusion:
    """noise: the source of epsilon, noise(shape, generator, device) -> tensor (e.g.
    qdm.quantum.epsilon.quantum_randn); None (the default) is torch.randn."""

    def __init__(self, schedule: NoiseSchedule, noise=None):
        self.schedule = schedule
        self.T = schedule.T
        self.noise = noise

    def randn(self, shape, generator=None, device="cpu"):
        """epsilon ~ N(0, I) from the noise source, drawn where the generator lives (a seeded
        torch.Generator() is on the CPU) and moved to ``device``: a seed gives the same noise on
        every device."""
        draw = torch.randn if self.noise is None else self.noise
        return draw(shape, generator=generator, device=device if generator is None else generator.device).to(device)

    def q_sample(self, x0, t, noise):
        """Eq. 1 / 13: x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps.
        (The paper's Eq. 9 writes alpha_t; the cumulative alpha-bar_t is meant.)"""
        ab = _at(self.schedule.alpha_bars, t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def loss(self, model, x0, generator=None, t=None, noise=None, weights=None):
        """Eq. 4 / 13: || eps_theta(x_t, t) - eps ||^2 with t ~ U{0..T-1}, eps ~ N(0, I);
        weights (B,): per-sample factors on the loss (importance weights of a non-uniform t)."""
        if t is None:
            t = torch.randint(0, self.T, (x0.shape[0],), generator=generator,
                              device=x0.device if generator is None else generator.device).to(x0.device)
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

    def sampling_times(self, steps: int, spacing="uniform") -> list[int]:
        """``steps`` timesteps from T-1 down to 0, rounded, repeats dropped (so fewer when steps > T,
        or near t = 0 in the quadratic grid: 49 of 50, 98 of 100). spacing: "uniform" in t (sample_ddim's
        grid, improved-diffusion's space_timesteps); "quadratic", t = (T-1)(1 - k/(steps-1))^2 (Song et
        al. 2021, App. D.2; DPM-Solver's time_quadratic), denser near t = 0."""
        if spacing not in SPACINGS:
            from qdm.errors import UserError
            raise UserError(f"unknown spacing {spacing!r}: choose one of {', '.join(SPACINGS)}")
        if spacing == "quadratic":
            return (torch.linspace((self.T - 1) ** 0.5, 0, steps) ** 2).round().long().unique_consecutive().tolist()
        return torch.linspace(self.T - 1, 0, steps).round().long().unique_consecutive().tolist()

    def posterior_step(self, x, x0, k: int, z, schedule=None):
        """Eq. 6-7: x_{t-1} = mu-tilde_t(x_t, x0) + sqrt(beta-tilde_t) z, z ~ N(0, I), at index k of
        ``schedule`` (default: this one; sample_ddpm_respaced passes its respaced chain)."""
        s, k = schedule or self.schedule, torch.full((x.shape[0],), k, device=x.device, dtype=torch.long)
        mean = _at(s.posterior_coef_x0, k) * x0 + _at(s.posterior_coef_xt, k) * x
        return mean + _at(s.posterior_variance, k).sqrt() * z

    def ddpm_step(self, x, t: int, eps, z):
        """One step of sample_ddpm: x_{t-1} ~ q(x_{t-1} | x_t, x0-hat) given the model's eps at t."""
        x0 = self.predict_x0(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long), eps)
        return self.posterior_step(x, x0, t, z)

    def ddim_step(self, x, t: int, t_prev: int, eps, eta=0.0, z=None):
        """One step of sample_ddim, x_t -> x_{t_prev} (Song et al. 2021, Eq. 12): the noise is
        recomputed from the clamped x0-hat, as in improved-diffusion; z ~ N(0, I) is used when eta > 0."""
        ab = self.schedule.alpha_bars
        x0 = self.predict_x0(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long), eps)
        a, a_prev = ab[t].item(), ab[t_prev].item()
        eps = (x - a ** 0.5 * x0) / (1 - a) ** 0.5  # the noise consistent with the clamped x0
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
        x = a_prev ** 0.5 * x0 + (1 - a_prev - sigma ** 2) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * z
        return x

    @torch.no_grad()
    def sample_ddpm(self, model, shape, generator=None, device="cpu", progress=False):
        """Ancestral sampling (Ho et al. 2020): x_{t-1} ~ q(x_{t-1} | x_t, x0-hat), with
        x0-hat clamped to [-1, 1] and the posterior variance beta-tilde, as the official code."""
        x = self.randn(shape, generator, device)
        for i in tqdm(reversed(range(self.T)), total=self.T, desc="DDPM", disable=not progress):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            eps = model(x, t)
            if i == 0:
                return self.predict_x0(x, t, eps)
            x = self.ddpm_step(x, i, eps, self.randn(shape, generator, device))
        return x

    @torch.no_grad()
    def sample_ddim(self, model, shape, steps=100, eta=0.0, generator=None, device="cpu", progress=False,
                    spacing="uniform"):
        """DDIM (Song et al. 2021) on sampling_times(steps, spacing); eta = 0 is deterministic given
        the starting noise, eta = 1 is DDPM-like."""
        times = self.sampling_times(steps, spacing)
        x = self.randn(shape, generator, device)
        for k, i in enumerate(tqdm(times, desc=f"DDIM-{steps}", disable=not progress)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            eps = model(x, t)
            if k == len(times) - 1:
                return self.predict_x0(x, t, eps)
            z = self.randn(shape, generator, device) if eta > 0 else None
            x = self.ddim_step(x, i, times[k + 1], eps, eta, z)
        return x

    def respaced_schedule(self, times: list[int]) -> NoiseSchedule:
        """The chain on a subsequence of timesteps (Nichol & Dhariwal 2021, Sec. 4; improved-diffusion's
        space_timesteps): beta_k = 1 - alpha-bar_{t_k} / alpha-bar_{t_(k-1)} with alpha-bar = 1 before
        the first, so its alpha-bars are ours at ``times`` and its posterior is that of the subsequence."""
        ab = self.schedule.alpha_bars[sorted(times)]
        return NoiseSchedule(1 - ab / torch.cat([ab.new_ones(1), ab[:-1]]))

    @torch.no_grad()
    def sample_ddpm_respaced(self, model, shape, steps=100, generator=None, device="cpu", progress=False,
                             spacing="uniform"):
        """Ancestral sampling (as sample_ddpm) on the respaced chain of sampling_times(steps, spacing):
        the posterior q(x_{t_(k-1)} | x_{t_k}, x0-hat) with the respaced beta-tilde; all T steps is
        sample_ddpm (bit for bit)."""
        times = self.sampling_times(steps, spacing)
        chain = self.respaced_schedule(times)
        x = self.randn(shape, generator, device)
        for k, i in enumerate(tqdm(times, desc=f"DDPM-respaced-{steps}", disable=not progress)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            x0 = self.predict_x0(x, t, model(x, t))
            if k == len(times) - 1:
                return x0
            x = self.posterior_step(x, x0, len(times) - 1 - k, self.randn(shape, generator, device), chain)
        return x

    @torch.no_grad()
    def sample_dpmpp_2m(self, model, shape, steps=20, sde=False, generator=None, device="cpu", progress=False,
                        spacing="quadratic"):
        """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; diffusers' "dpmsolver++", solver_order=2,
        midpoint): the probability-flow ODE in lambda = log(alpha / sigma), alpha = sqrt(alpha-bar),
        sigma = sqrt(1 - alpha-bar), on the data prediction D = x0-hat clamped to [-1, 1] like the
        other samplers (in diffusers: thresholding=True, sample_max_value=1):
            x_t' = (sigma' / sigma) x_t + alpha' (1 - e^-h) D,   h = lambda' - lambda,
            D = x0_t + (x0_t - x0_prev) h / (2 h_prev), or x0_t on the first step (sample_ddim's, eta = 0).
        ``steps`` model evaluations on sampling_times(steps, spacing), the last at t = 0, whose x0-hat
        is returned (diffusers' final step to sigma = 0; the step into t = 0 stays second order, as
        there). Quadratic by default: the cosine schedule's lambda rises fastest near t = 0, where a
        uniform grid's last step is too long for the extrapolation (N(0, 0.3^2) data, 20 steps: std
        +14% uniform, +1% quadratic); a grid uniform in lambda would spend steps on the clipped last
        beta (lambda(T-1) is 3.5 below lambda(T-2)).
        sde=True: DPM-Solver++(2M) SDE (diffusers' "sde-dpmsolver++", k-diffusion's dpmpp_2m_sde),
            x_t' = (sigma' / sigma) e^-h x_t + alpha' (1 - e^-2h) D + sigma' sqrt(1 - e^-2h) z,
        with fresh z ~ N(0, I) from the noise source each step (first order, sample_ddpm_respaced's)."""
        ab = self.schedule.alpha_bars
        times = self.sampling_times(steps, spacing)
        x = self.randn(shape, generator, device)
        x0_prev = h_prev = None
        for k, i in enumerate(tqdm(times, desc=f"DPM++2M{' SDE' if sde else ''}-{steps}", disable=not progress)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            x0 = self.predict_x0(x, t, model(x, t))
            if k == len(times) - 1:
                return x0
            a, a_next = ab[i].item(), ab[times[k + 1]].item()
            h = 0.5 * math.log(a_next / (1 - a_next)) - 0.5 * math.log(a / (1 - a))
            d = x0 if x0_prev is None else x0 + (x0 - x0_prev) * (h / (2 * h_prev))
            ratio = ((1 - a_next) / (1 - a)) ** 0.5  # sigma' / sigma
            if sde:
                x = ratio * math.exp(-h) * x - a_next ** 0.5 * math.expm1(-2 * h) * d \
                    + (-(1 - a_next) * math.expm1(-2 * h)) ** 0.5 * self.randn(shape, generator, device)
            else:
                x = ratio * x - a_next ** 0.5 * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        return x

    def sample(self, model, shape, sampler="ddpm", steps=None, generator=None, device="cpu", progress=False):
        """Dispatch on the sampler's name, one of SAMPLERS: 'ddpm' runs all T steps (``steps`` is
        ignored); the others take ``steps`` model evaluations (default 100); 'ddim' has eta = 0."""
        from qdm.errors import UserError
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if steps is not None and steps < 1:
            raise UserError(f"sampler steps must be at least 1, not {steps}")
        steps = steps or 100
        if sampler == "ddpm":
            return self.sample_ddpm(model, shape, generator, device, progress)
        if sampler == "ddim":
            return self.sample_ddim(model, shape, steps, 0.0, generator, device, progress)
        if sampler == "ddpm_respaced":
            return self.sample_ddpm_respaced(model, shape, steps, generator, device, progress)
        return self.sample_dpmpp_2m(model, shape, steps, sampler == "dpmpp_2m_sde", generator, device, progress)
