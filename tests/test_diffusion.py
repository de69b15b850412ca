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
