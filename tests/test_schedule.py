import math

import pytest
import torch

from qdm.errors import UserError
from qdm.schedule import NoiseSchedule, cosine_betas, linear_betas, make_schedule


def test_cosine_betas_match_closed_form():
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    betas = cosine_betas(T, s)
    for t in [1, 2, 10, 500, 900, 990]:
        expected = min(max(1 - f(t) / f(t - 1), 1e-4), 0.999)
        assert betas[t - 1].item() == pytest.approx(expected, rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)   # the clip bites at the end
    assert betas.min().item() >= 1e-4


def test_alpha_bars_decrease_from_one_to_zero():
    for name in ["cosine", "linear"]:
        s = make_schedule(name, 1000)
        ab = s.alpha_bars
        assert (ab[1:] < ab[:-1]).all()
        assert 0.99 < ab[0] < 1 and ab[-1] < 1e-3
        assert torch.allclose(ab, torch.cumprod(1 - s.betas, 0))


def test_unclipped_cosine_alpha_bar_is_eq2():
    T, s = 1000, 0.008
    ab = make_schedule("cosine", T).alpha_bars
    t = torch.arange(1, T + 1, dtype=torch.float64)
    eq2 = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    # identical until the 1e-4 floor / 0.999 ceiling of the betas change the product
    assert torch.allclose(ab[:900], eq2[:900], rtol=1e-3)


def test_linear_endpoints():
    b = linear_betas(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)


def test_posterior_is_bayes_rule():
    """q(x_{t-1} | x_t, x_0) from the product of the two Gaussians q(x_{t-1}|x_0) q(x_t|x_{t-1})."""
    s = NoiseSchedule(cosine_betas(1000))
    t = torch.arange(1, 1000)
    ab_prev, a, b = s.alpha_bars[t - 1], s.alphas[t], s.betas[t]
    var = 1 / (1 / (1 - ab_prev) + a / b)
    assert torch.allclose(s.posterior_variance[t], var)
    assert torch.allclose(s.posterior_coef_x0[t], var * ab_prev.sqrt() / (1 - ab_prev))
    assert torch.allclose(s.posterior_coef_xt[t], var * a.sqrt() / b)


def test_unknown_schedule():
    with pytest.raises(UserError, match="unknown schedule"):
        make_schedule("quadratic")
