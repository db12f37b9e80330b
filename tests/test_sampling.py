import math

import numpy as np
import pytest
import torch
from scipy import stats

import odezoo
from odezoo.sampling import Cauchy, Choice, Normal, Uniform, draw, make_distribution

RK2 = odezoo.get_family("rk2_u")
RK4UV = odezoo.get_family("rk4_uv")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def truncated_cdf(base, low, high):
    lo, hi = base.cdf(low), base.cdf(high)
    return lambda x: np.clip((base.cdf(x) - lo) / (hi - lo), 0.0, 1.0)


@pytest.mark.parametrize("dist,base", [
    (Normal(0.3), stats.norm(0.5, 0.3)),
    (Cauchy(0.2), stats.cauchy(0.5, 0.2)),
    (Uniform(0.7), stats.uniform(0.5 - 0.7, 1.4)),
])
def test_truncated_draws_follow_the_truncated_target(dist, base):
    # rk2_u's support is [0.05, 1]: a wide distribution around 0.5 is truncated on both sides.
    u = draw(RK2, dist, {"u": 0.5}, 4000, gen(1))["u"].numpy()
    assert u.min() >= 0.05 and u.max() <= 1.0
    result = stats.kstest(u, truncated_cdf(base, 0.05, 1.0))
    assert result.pvalue > 0.01, result


def test_truncation_redraws_instead_of_clamping_or_resetting():
    u = draw(RK2, Normal(0.5), {"u": 0.9}, 5000, gen(2))["u"].numpy()
    assert np.sum(u == 1.0) == 0 and np.sum(u == 0.05) == 0   # no point mass on the bounds
    assert np.sum(u == 0.9) == 0                               # none on the center


def test_two_parameter_draws_respect_every_constraint():
    pts = draw(RK4UV, Normal({"u": 0.2, "v": 0.2}), {"u": 1 / 3, "v": 2 / 3}, 3000, gen(3))
    u, v = pts["u"].numpy(), pts["v"].numpy()
    assert RK4UV.support_mask({"u": u, "v": v}).all()
    assert np.min(np.abs(1 - 2 * u)) >= 0.05 and np.min(np.abs(u - v)) >= 0.05
    assert np.min(np.abs(6 * u * v - 4 * u - 4 * v + 3)) >= 0.05
    for i in range(0, 3000, 97):  # and every drawn point gives a valid order-4 tableau
        assert RK4UV.tableau(u=float(u[i]), v=float(v[i])).order() == 4


def test_same_seed_same_draws_and_different_seed_different():
    a = draw(RK2, Cauchy(0.05), {"u": 0.5}, 50, gen(5))["u"]
    b = draw(RK2, Cauchy(0.05), {"u": 0.5}, 50, gen(5))["u"]
    c = draw(RK2, Cauchy(0.05), {"u": 0.5}, 50, gen(6))["u"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_choice_distribution_frequencies():
    dist = Choice([{"u": 0.5}, {"u": 1.0}], probs=[0.25, 0.75])
    u = draw(RK2, dist, {"u": 0.5}, 4000, gen(7))["u"].numpy()
    k = int(np.sum(u == 1.0))
    assert set(np.unique(u)) == {0.5, 1.0}
    assert abs(k - 3000) < 4 * math.sqrt(4000 * 0.25 * 0.75)


def test_custom_distribution_object():
    class Fixed:
        def sample_raw(self, center, n, generator):
            return {p: torch.full((n,), 0.7, dtype=torch.float64) for p in center}

    assert make_distribution(Fixed()).sample_raw({"u": 0.5}, 2, gen())["u"].tolist() == [0.7, 0.7]
    assert draw(RK2, Fixed(), {"u": 0.5}, 3, gen())["u"].tolist() == [0.7] * 3


def test_family_default_distribution_is_used():
    dist = make_distribution(None, None, RK2)
    assert isinstance(dist, Cauchy) and dist.scale == RK2.distribution.scale
    assert isinstance(make_distribution(None, 0.1, RK4UV), Normal)


def test_impossible_support_is_a_clear_error():
    class OutOfRange:
        def sample_raw(self, center, n, generator):
            return {p: torch.full((n,), 5.0, dtype=torch.float64) for p in center}

    with pytest.raises(ValueError, match="could not draw .* inside the sampling support"):
        draw(RK2, OutOfRange(), {"u": 0.5}, 4, gen())


@pytest.mark.parametrize("args,match", [
    (("gaussian", 0.1), "unknown distribution"),
    (("normal", None), "needs a scale"),
    (("normal", -1.0), "scale must be positive"),
    (("cauchy", float("nan")), "scale must be positive"),
    ((42, None), "cannot use 42"),
])
def test_bad_distributions(args, match):
    with pytest.raises(ValueError, match=match):
        make_distribution(*args)
