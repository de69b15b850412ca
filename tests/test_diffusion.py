import functools

import pytest
import torch

from qdm.diffusion import Diffusion
from qdm.schedule import make_schedule

D = Diffusion(make_schedule("cosine", 1000))


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_sample_statistics(t):
    """Eq. 1: x_t | x_0 ~ N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I), checked over 20000 draws."""
    g = torch.Generator().manual_seed(t)
    x0 = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4).expand(20000, 1, 4, 4)
    tt = torch.full((20000,), t)
    xt = D.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
    ab = D.schedule.alpha_bars[t].item()
    assert torch.allclose(xt.mean(0), ab ** 0.5 * x0[0], atol=0.03)
    assert torch.allclose(xt.var(0), torch.full_like(x0[0], 1 - ab), rtol=0.05, atol=2e-4)


def test_loss_is_epsilon_mse():
    model = lambda x, t: x * 0.5
    x0, t, noise = torch.randn(4, 1, 28, 28), torch.tensor([1, 2, 3, 999]), torch.randn(4, 1, 28, 28)
    expected = ((D.q_sample(x0, t, noise) * 0.5 - noise) ** 2).mean()
    assert torch.allclose(D.loss(model, x0, t=t, noise=noise), expected)


def oracle_for(c: float):
    """The exact noise predictor when every training image equals the constant c."""
    ab = D.schedule.alpha_bars.float()
    return lambda x, t: (x - ab[t].sqrt()[:, None, None, None] * c) / (1 - ab[t]).sqrt()[:, None, None, None]


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 50), ("ddim", 7)])
def test_samplers_recover_a_point_mass(sampler, steps):
    """With a perfect denoiser for the data distribution delta(x - c), both samplers must
    return c from any starting noise."""
    out = D.sample(oracle_for(0.3), (3, 1, 28, 28), sampler, steps, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-4)


def test_ddim_is_deterministic_and_ddpm_is_not():
    model = lambda x, t: 0.1 * x
    a = D.sample_ddim(model, (2, 1, 28, 28), 20, generator=torch.Generator().manual_seed(1))
    b = D.sample_ddim(model, (2, 1, 28, 28), 20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    x1 = D.sample_ddim(model, (2, 1, 28, 28), 20, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, x1)   # eta = 1 adds fresh noise on the way
    assert a.abs().max() <= 1        # x0-hat is clamped to the data range


def test_noise_is_drawn_where_the_generator_lives(monkeypatch):
    """A seeded CPU generator with the chain on another device (a GPU; 'meta' stands in here, since
    it accepts any generator): every draw, torch's or a noise source's, happens on the generator's
    device and is moved, so a seed gives the same noise everywhere (torch refuses a CPU generator
    for CUDA tensors)."""
    asked = []

    def spy(draw):
        def drawn(*args, device=None, **kwargs):
            asked.append(torch.device(device or "cpu"))
            return draw(*args, device=device, **kwargs)
        return drawn

    monkeypatch.setattr(torch, "randn", spy(torch.randn))
    monkeypatch.setattr(torch, "randint", spy(torch.randint))
    cpu = torch.Generator().manual_seed(4)
    assert D.randn((2, 3), cpu, "meta").device.type == "meta"
    assert D.loss(lambda x, t: x, torch.zeros(2, 1, 4, 4, device="meta"), generator=cpu).device.type == "meta"
    assert Diffusion(D.schedule, noise=spy(torch.randn)).randn((2, 3), cpu, "meta").device.type == "meta"
    assert asked and all(d == torch.device("cpu") for d in asked)     # randn, randint, randn; the source
    asked.clear()
    assert D.randn((2, 3), None, "meta").device.type == "meta" and asked == [torch.device("meta")]
    same = D.randn((2, 3), torch.Generator().manual_seed(4), "cpu")
    assert torch.equal(same, torch.randn((2, 3), generator=torch.Generator().manual_seed(4)))


# --- one step at a time against diffusers' DDPMScheduler and DDIMScheduler -------------------------

def clamped_model(x, t):
    """A fixed model whose x0-hat is clamped at high t and in range at low t."""
    return 0.9 * x + 0.05 * t[:, None, None, None].float().cos()


def in_range_model(x, t):
    """The exact denoiser of N(0.2, 0.2^2) pixels: x0-hat stays inside [-1, 1], the clamp is idle."""
    a = D.schedule.alpha_bars[t].float()[:, None, None, None]
    return (1 - a).sqrt() * (x - a.sqrt() * 0.2) / (a * 0.04 + 1 - a)


FLOAT32 = ((False, 2e-3), (True, 1e-6))
"""diffusers keeps betas and alpha-bars in float32 (qdm: float64): compared with its alpha-bars as
they are, then with ours swapped in, to these tolerances (float32's relative error in
1 - alpha-bar_0 = 1e-4 is 3e-4, and where alpha-bar is 2e-9, at t = 999, a float32 cumulative
product's rounding, which differs between CPUs, moves a DDIM step with eta = 1 by up to 1e-3: seen
on an AVX2-only CPU, 5e-4 on another; with ours one step agrees to a few float32 ulps)."""


def ddpm_scheduler(swapped=False):
    """diffusers' DDPM with qdm's betas, beta-tilde, x0-hat clamped to [-1, 1]; swapped: our float64
    alpha-bars in place of its float32 cumulative product."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(trained_betas=D.schedule.betas.numpy(), variance_type="fixed_small",
                                        clip_sample=True, prediction_type="epsilon")
    if swapped:
        scheduler.alphas_cumprod = D.schedule.alpha_bars.clone()
    return scheduler


@functools.lru_cache
def ddim_scheduler(step: int, swapped=False):
    """diffusers' DDIM with qdm's betas, x0-hat clamped, alpha-bar = 1 after t = 0 (swapped as
    ddpm_scheduler); it steps from t to t - T // num_inference_steps, so num_inference_steps is an n
    with T // n = step, t - t_prev (from t = 0 to -1 it returns x0-hat)."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(trained_betas=D.schedule.betas.numpy(), clip_sample=True,
                                        set_alpha_to_one=True, prediction_type="epsilon")
    if swapped:
        scheduler.alphas_cumprod = D.schedule.alpha_bars.clone()
    scheduler.set_timesteps(next(n for n in range(1, D.T + 1) if D.T // n == step))
    return scheduler


@pytest.mark.parametrize("model", [clamped_model, in_range_model])
@pytest.mark.parametrize("t", [999, 998, 500, 10, 1, 0])
def test_ddpm_step_matches_diffusers(t, model):
    """Diffusion.ddpm_step is DDPMScheduler.step (fixed_small, clip_sample=True) given the same x_t,
    model output and N(0, I) draw; at t = 0 both return x0-hat. Float32 alpha-bars: see FLOAT32."""
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(t))
    tt = torch.full((2,), t)
    eps = model(x, tt)
    ours = D.ddpm_step(x, t, eps, torch.randn(x.shape, generator=torch.Generator().manual_seed(7)))
    for swapped, atol in FLOAT32:
        theirs = ddpm_scheduler(swapped).step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        assert torch.allclose(ours, theirs, atol=atol, rtol=0), (ours - theirs).abs().max()
    if t == 0:
        assert torch.equal(ours, D.predict_x0(x, tt, eps))


def test_sample_ddpm_matches_diffusers():
    """All 1000 steps of sample_ddpm against DDPMScheduler's loop from the same generator (x_T, then a
    draw per step but the last); float32 alpha-bars (FLOAT32) end 6e-5 apart, ours 1e-5."""
    ours = D.sample_ddpm(clamped_model, (2, 1, 8, 8), generator=torch.Generator().manual_seed(8))
    for swapped, atol in FLOAT32:
        scheduler, g = ddpm_scheduler(swapped), torch.Generator().manual_seed(8)
        x = torch.randn((2, 1, 8, 8), generator=g)
        for t in range(D.T - 1, -1, -1):
            x = scheduler.step(clamped_model(x, torch.full((2,), t)), t, x, generator=g).prev_sample
        assert torch.allclose(ours, x, atol=max(atol, 1e-5), rtol=0), (ours - x).abs().max()


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("model", [clamped_model, in_range_model])
@pytest.mark.parametrize("t,t_prev", [(999, 989), (999, 888), (554, 443), (300, 250), (20, 0), (10, 0), (1, 0)])
def test_ddim_step_matches_diffusers(t, t_prev, model, eta):
    """Diffusion.ddim_step is DDIMScheduler.step (clip_sample=True) with use_clipped_model_output=True:
    qdm recomputes the noise from the clamped x0-hat, as improved-diffusion; diffusers' default (False)
    keeps the model's noise and differs wherever the clamp acts. Same variance_noise; float32
    alpha-bars: see FLOAT32."""
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(t))
    eps = model(x, torch.full((2,), t))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    ours = D.ddim_step(x, t, t_prev, eps, eta, z)
    for swapped, atol in FLOAT32:
        step = lambda clipped: ddim_scheduler(t - t_prev, swapped).step(
            eps, t, x, eta=eta, use_clipped_model_output=clipped, variance_noise=z if eta > 0 else None).prev_sample
        theirs = step(True)
        assert torch.allclose(ours, theirs, atol=atol, rtol=0), (ours - theirs).abs().max()
    clamped = (D.predict_x0(x, torch.full((2,), t), eps).abs() == 1).any()
    assert torch.allclose(ours, step(False), atol=1e-6, rtol=0) != bool(clamped)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("steps", [10, 100])
def test_sample_ddim_matches_diffusers(steps, eta):
    """sample_ddim against DDIMScheduler steps along qdm's grid, linspace(T-1, 0, steps) rounded, from
    the same generator (eta = 1 draws per step). diffusers' own grids differ: "leading" (its DDIM
    default) is 990, 980, ..., 0 for 100 steps (starts 9 steps below T-1), "linspace" is qdm's but
    steps to t - T // steps, not to the next timestep; they agree with qdm's at 1000 steps only.
    At t = 0 both return x0-hat (set_alpha_to_one=True). Float32 alpha-bars: see FLOAT32; ours end
    within 1e-5."""
    ours = D.sample_ddim(clamped_model, (2, 1, 8, 8), steps, eta, generator=torch.Generator().manual_seed(10))
    for swapped, atol in FLOAT32:
        g = torch.Generator().manual_seed(10)
        x, times = torch.randn((2, 1, 8, 8), generator=g), D.sampling_times(steps)
        for t, t_prev in zip(times, times[1:] + [-1]):
            eps = clamped_model(x, torch.full((2,), t))
            x = ddim_scheduler(t - t_prev, swapped).step(eps, t, x, eta=eta, use_clipped_model_output=True,
                                                         generator=g if eta > 0 else None).prev_sample
        assert torch.allclose(ours, x, atol=max(atol, 1e-5), rtol=0), (ours - x).abs().max()
