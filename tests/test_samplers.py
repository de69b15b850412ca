"""The few-step samplers: ancestral sampling on a respaced chain and DPM-Solver++(2M) (ODE and
SDE), checked on data whose exact denoiser is known and against diffusers' schedulers."""
import pytest
import torch

from qdm.diffusion import SAMPLERS, Diffusion
from qdm.errors import UserError
from test_diffusion import D, ddpm_scheduler, oracle_for

SHAPE = (3, 1, 28, 28)


def gaussian_eps(mu: float, s: float):
    """The exact noise predictor for data x_0 ~ N(mu, s^2) per pixel: x_t ~ N(sqrt(a) mu, a s^2 + 1 - a),
    so E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a), a = alpha-bar_t."""
    ab = D.schedule.alpha_bars

    def eps(x, t):
        a = ab[t].to(x.dtype)[:, None, None, None]
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s * s + 1 - a)
    return eps


def gaussian_ode_solution(x_T, mu: float, s: float):
    """Where the probability-flow ODE takes x_T from t = T-1 for N(mu, s^2) data, and the denoiser's
    x0-hat there at t = 0: x_t = sqrt(a) mu + sqrt(a s^2 + 1 - a) z keeps z fixed."""
    ab = D.schedule.alpha_bars.double()
    a_T, a_0 = ab[-1], ab[0]
    z = (x_T.double() - a_T.sqrt() * mu) / (a_T * s * s + 1 - a_T).sqrt()
    x_0 = a_0.sqrt() * mu + (a_0 * s * s + 1 - a_0).sqrt() * z
    return mu + a_0.sqrt() * s * s * (x_0 - a_0.sqrt() * mu) / (a_0 * s * s + 1 - a_0)


class StartingAt:
    """A noise source (as qdm.noise's) whose first draw is x_T, the others torch.randn; it counts them."""
    def __init__(self, x_T):
        self.x_T, self.calls = x_T, 0

    def __call__(self, shape, generator=None, device="cpu"):
        self.calls += 1
        return self.x_T.clone() if self.calls == 1 else torch.randn(shape, generator=generator, device=device)


def test_sample_rejects_unknown_samplers_and_steps_below_one():
    with pytest.raises(UserError, match="unknown sampler 'euler': choose one of ddpm, ddim, ddpm_respaced"):
        D.sample(oracle_for(0.3), SHAPE, "euler", 10)
    for sampler in SAMPLERS:
        with pytest.raises(UserError, match="at least 1"):
            D.sample(oracle_for(0.3), SHAPE, sampler, 0)
    with pytest.raises(UserError, match="unknown spacing"):
        D.sampling_times(10, "cubic")


def test_sampling_times():
    """Both grids run from T-1 to 0, decreasing, ``steps`` long unless rounding repeats a timestep."""
    assert D.sampling_times(1) == [999] and D.sampling_times(2) == [999, 0]
    assert D.sampling_times(5) == [999, 749, 500, 250, 0]          # linspace, rounded half to even
    assert D.sampling_times(5, "quadratic") == [999, 562, 250, 62, 0]
    assert D.sampling_times(5000) == list(range(999, -1, -1))
    for steps in (3, 20, 50, 100, 1000):
        q = D.sampling_times(steps, "quadratic")
        assert q[0] == 999 and q[-1] == 0 and all(a > b for a, b in zip(q, q[1:]))
    assert len(D.sampling_times(50, "quadratic")) == 49 and len(D.sampling_times(100, "quadratic")) == 98


@pytest.mark.parametrize("steps", [5, 10, 50])
@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "ddpm"])
def test_every_sampler_recovers_a_point_mass(sampler, steps):
    """With the exact denoiser of delta(x - c), x0-hat = c at every step, so every sampler returns c
    from any starting noise."""
    out = D.sample(oracle_for(0.3), SHAPE, sampler, steps, generator=torch.Generator().manual_seed(steps))
    assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-4)


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddpm_respaced", 500), ("dpmpp_2m_sde", 50),
                                           ("dpmpp_2m", 50), ("ddim", 200)])
def test_gaussian_data_mean_and_std(sampler, steps):
    """N(0.2, 0.2^2) data and its exact denoiser: 16000 sampled pixels have the data's mean (to 0.01)
    and std (to 3%; 2.6 standard errors are 1.5%). The data lie well inside [-1, 1], so the clamp is
    idle. (Fewer steps bias the std: DDIM-50 -6%, ancestral-100 -8%, DPM-Solver++(2M) at 20 steps
    +2%, its SDE +4%; at 10 steps +8% and +15%.)"""
    out = D.sample(gaussian_eps(0.2, 0.2), (4000, 1, 2, 2), sampler, steps, generator=torch.Generator().manual_seed(2))
    assert abs(out.mean().item() - 0.2) < 0.01
    assert abs(out.std().item() / 0.2 - 1) < 0.03


@pytest.mark.parametrize("spacing,steps", [("quadratic", (25, 50, 100)), ("uniform", (50, 100, 200))])
def test_dpmpp_2m_is_second_order(spacing, steps):
    """The error of DPM-Solver++(2M) against the exact ODE solution (N(0, 0.3^2) data, x_T on a grid
    of z in [-3, 3]) falls about 4x when the steps double; DDIM's (first order) about 2x. The finest
    grid of the discrete model, all T timesteps, is within 2e-4 of the exact solution: the floor of
    every sampler on integer t (lambda rises by 0.35 from t = 1 to 0, however many steps)."""
    x_T = torch.linspace(-3, 3, 61).reshape(61, 1, 1, 1)
    d = Diffusion(D.schedule, noise=lambda shape, generator=None, device="cpu": x_T.clone())
    eps, exact = gaussian_eps(0.0, 0.3), gaussian_ode_solution(x_T, 0.0, 0.3)
    err = lambda out: (out.double() - exact).abs().max().item()
    dpm = [err(d.sample_dpmpp_2m(eps, x_T.shape, n, spacing=spacing)) for n in steps]
    ddim = [err(d.sample_ddim(eps, x_T.shape, n, spacing=spacing)) for n in steps]
    for e, e_half in zip(dpm, dpm[1:]):
        assert 3 < e / e_half < 6, dpm
    for e, e_half in zip(ddim, ddim[1:]):
        assert 1.7 < e / e_half < 2.3, ddim
    assert err(d.sample_dpmpp_2m(eps, x_T.shape, 1000, spacing="uniform")) < 2e-4


def test_respaced_chain_with_all_steps_is_sample_ddpm():
    model = lambda x, t: 0.3 * x + 0.01 * t[:, None, None, None].float().sin()
    a = D.sample_ddpm(model, (2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    b = D.sample_ddpm_respaced(model, (2, 1, 8, 8), 1000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_respaced_schedule():
    """beta_k = 1 - alpha-bar_{t_k} / alpha-bar_{t_(k-1)}: the chain's alpha-bars are ours at the times."""
    times = D.sampling_times(10)
    chain = D.respaced_schedule(times)
    assert chain.T == 10
    assert torch.allclose(chain.alpha_bars, D.schedule.alpha_bars[sorted(times)], rtol=1e-8, atol=0)
    assert torch.allclose(D.respaced_schedule(list(range(1000))).betas, D.schedule.betas, rtol=1e-9, atol=0)


def test_first_order_dpmpp_is_ddim_and_its_sde_is_the_respaced_chain():
    """DPM-Solver++'s first step is first order: the ODE's step is DDIM's with eta = 0 (with the
    noise recomputed from the clamped x0-hat) and the SDE's is the respaced chain's ancestral step,
    the same draws from the same generator. Two steps: that step, then x0-hat at t = 0."""
    g, shape = lambda: torch.Generator().manual_seed(5), (2, 1, 8, 8)
    ode = D.sample_dpmpp_2m(linear_model, shape, 2, generator=g())
    assert torch.allclose(ode, D.sample_ddim(linear_model, shape, 2, generator=g()), atol=1e-6)
    sde = D.sample_dpmpp_2m(linear_model, shape, 2, sde=True, generator=g())
    assert torch.allclose(sde, D.sample_ddpm_respaced(linear_model, shape, 2, generator=g()),
                          atol=1e-6)


@pytest.mark.parametrize("sampler,stochastic", [("ddim", False), ("dpmpp_2m", False), ("ddpm_respaced", True),
                                               ("dpmpp_2m_sde", True)])
def test_ode_samplers_are_deterministic_and_sde_ones_draw_fresh_noise(sampler, stochastic):
    """From the same x_T, the ODE samplers draw nothing more and give the same samples whatever the
    generator; the stochastic ones draw from the noise source once per step but the last, and a
    different generator gives different samples."""
    x_T, model = torch.randn(2, 1, 8, 8), lambda x, t: 0.1 * x
    noise = [StartingAt(x_T), StartingAt(x_T)]
    a, b = (Diffusion(D.schedule, n).sample(model, (2, 1, 8, 8), sampler, 10, generator=torch.Generator().manual_seed(k))
            for k, n in enumerate(noise))
    assert [n.calls for n in noise] == ([10, 10] if stochastic else [1, 1])
    assert torch.equal(a, b) != stochastic
    again = Diffusion(D.schedule).sample(model, (2, 1, 8, 8), sampler, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, Diffusion(D.schedule).sample(model, (2, 1, 8, 8), sampler, 10,
                                                           generator=torch.Generator().manual_seed(1)))


# --- against diffusers' schedulers ---------------------------------------------------------------

def linear_model(x, t):
    """A fixed model whose x0-hat is clamped at high t and in range at low t."""
    return 0.9 * x + 0.05 * t[:, None, None, None].float().cos()


def diffusers_loop(scheduler, model, x, generator=None):
    """diffusers' sampling loop over scheduler.timesteps, from x."""
    for t in scheduler.timesteps:
        tt = torch.full((x.shape[0],), int(t), dtype=torch.long)
        x = scheduler.step(model(x, tt), t, x, generator=generator).prev_sample
    return x


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")   # diffusers' set_timesteps
@pytest.mark.parametrize("steps", [5, 10, 20, 50])
@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("model", [linear_model, gaussian_eps(0.2, 0.2)], ids=["linear", "gaussian"])
def test_dpmpp_2m_matches_diffusers(steps, sde, model):
    """DPMSolverMultistepScheduler(algorithm_type="dpmsolver++" or "sde-dpmsolver++", solver_order=2,
    midpoint) given qdm's betas and timesteps gives the same samples to float tolerance. Matched:
    - the clamp of x0-hat to [-1, 1]: thresholding=True, sample_max_value=1.0 (its dynamic threshold
      s = quantile clamped to [1, 1] is 1; diffusers' default is no clamp);
    - the grid: set_timesteps(timesteps=qdm's); diffusers' default, timestep_spacing="linspace",
      evaluates at linspace(0, T-1, steps+1)[1:] rounded, so its last x0-hat is at t = (T-1)/steps,
      not at t = 0; its lambda-uniform (use_lu_lambdas) and Karras grids are other choices again;
    - the final step: diffusers' final_sigmas_type="zero" steps to sigma = 0, which is x0-hat at the
      last timestep, what qdm returns;
    - lower_order_final=True (default): with solver_order=2 it only makes that final step to sigma = 0
      first order, which it is anyway; the step into t = 0 is second order in both (the official
      code, which has no step to sigma = 0, makes its last step first order when < 10 steps);
    - the SDE's noise: diffusers draws one N(0, I) per step from the generator, as qdm (plus one at
      the final step, multiplied by sigma = 0).
    Left different: diffusers keeps betas and alpha-bars in float32 (qdm: float64): differences up to
    4e-6 (ODE) and 2e-5 (SDE)."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        trained_betas=D.schedule.betas.numpy(), algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++",
        solver_order=2, prediction_type="epsilon", thresholding=True, sample_max_value=1.0)
    scheduler.set_timesteps(timesteps=D.sampling_times(steps, "quadratic"))
    ours = D.sample_dpmpp_2m(model, (2, 1, 8, 8), steps, sde, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    theirs = diffusers_loop(scheduler, model, torch.randn((2, 1, 8, 8), generator=g), g)
    assert torch.allclose(ours, theirs, atol=5e-5, rtol=0), (ours - theirs).abs().max()


@pytest.mark.parametrize("steps,spacing", [(10, "uniform"), (50, "quadratic"), (1000, "uniform")])
def test_respaced_ancestral_sampling_matches_diffusers_ddpm_with_custom_timesteps(steps, spacing):
    """DDPMScheduler(variance_type="fixed_small", clip_sample=True) with set_timesteps(timesteps=...)
    is the respaced chain: beta = 1 - alpha-bar_t / alpha-bar_prev from the next timestep, beta-tilde
    variance, x0-hat clamped, and at the last timestep (t = 0, alpha-bar_prev = 1) it returns x0-hat.
    Its noise is drawn from the generator after each step's mean, but none at t = 0, as qdm's.
    Left different: its float32 alpha-bars (qdm: float64), up to 6e-5 apart after 1000 steps; with
    qdm's alpha-bars swapped in, 1e-6."""
    ours = D.sample_ddpm_respaced(linear_model, (2, 1, 8, 8), steps, generator=torch.Generator().manual_seed(6),
                                  spacing=spacing)
    for swapped, atol in ((False, 1e-4), (True, 3e-6)):
        scheduler = ddpm_scheduler(swapped)
        scheduler.set_timesteps(timesteps=D.sampling_times(steps, spacing))
        g = torch.Generator().manual_seed(6)
        theirs = diffusers_loop(scheduler, linear_model, torch.randn((2, 1, 8, 8), generator=g), g)
        assert torch.allclose(ours, theirs, atol=atol, rtol=0), (ours - theirs).abs().max()
