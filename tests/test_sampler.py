import math

import pytest
import torch

from hts_ep import clipped_fractions, sample_time_steps
from hts_ep.sampler import draw

N = 1_000_000
MU, SIGMA, LOW, HIGH = 0.2, 0.1, 0.01, 0.5


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dist", ["normal", "lognormal", "gamma"])
def test_unclipped_moments_match(dist):
    # Before clipping the draw has exactly the requested mean and std. With
    # n = 1e6 the standard error of the mean is std/1000 = 1e-4: allow 5e-4;
    # the sample std is within 1% (its standard error is well under 0.3%).
    x = draw(dist, N, MU, SIGMA, gen())
    assert abs(x.mean().item() - MU) < 5e-4
    assert abs(x.std().item() - SIGMA) / SIGMA < 0.01


@pytest.mark.parametrize("dist", ["normal", "lognormal", "gamma"])
def test_clipping_and_clipped_fractions(dist):
    eps = sample_time_steps(dist, N, MU, SIGMA, LOW, HIGH, generator=gen(1))
    assert eps.dtype == torch.float32 and eps.shape == (N,)
    assert eps.min().item() >= LOW - 1e-7 and eps.max().item() <= HIGH + 1e-7
    lo, hi = clipped_fractions(dist, MU, SIGMA, LOW, HIGH)
    # Binomial standard error at n = 1e6 is at most 5e-4: allow 5 of them.
    assert abs((eps <= LOW + 1e-7).float().mean().item() - lo) < 2.5e-3
    assert abs((eps >= HIGH - 1e-7).float().mean().item() - hi) < 2.5e-3


def test_heavy_tails_pile_up_at_eps_max():
    # model.md: about 1.5% (log-normal) and 1.0% (gamma) of the mass ends at eps_max.
    assert 0.01 < clipped_fractions("lognormal", MU, SIGMA, LOW, HIGH)[1] < 0.02
    assert 0.007 < clipped_fractions("gamma", MU, SIGMA, LOW, HIGH)[1] < 0.013
    assert clipped_fractions("normal", MU, SIGMA, LOW, HIGH)[0] > 0.02  # N(0.2, 0.1) below 0.01


def test_scalar_is_constant():
    eps = sample_time_steps("scalar", 100, 0.3, 0.1, LOW, HIGH)
    assert torch.all(eps == torch.tensor(0.3, dtype=torch.float32))
    assert clipped_fractions("scalar", 0.3, 0.1, LOW, HIGH) == (0.0, 0.0)


@pytest.mark.parametrize("dist", ["normal", "lognormal", "gamma"])
def test_deterministic_for_a_generator(dist):
    a = sample_time_steps(dist, 1000, MU, SIGMA, LOW, HIGH, generator=gen(7))
    b = sample_time_steps(dist, 1000, MU, SIGMA, LOW, HIGH, generator=gen(7))
    c = sample_time_steps(dist, 1000, MU, SIGMA, LOW, HIGH, generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs, message", [
    (dict(distribution="uniform"), "allowed: scalar, normal, lognormal, gamma"),
    (dict(n=0), "n=0"),
    (dict(n=2.5), "n=2.5"),
    (dict(std=-0.1), "std=-0.1"),
    (dict(mean=math.nan), "mean=nan"),
    (dict(high=math.inf), "high=inf"),
    (dict(low=0.5, high=0.5), "low=0.5 must be < high=0.5"),
    (dict(low=0.0), "low=0.0 must be > 0"),
    (dict(low=-0.1), "low=-0.1 must be > 0"),
    (dict(mean=0.6), "mean=0.6 must lie in [low, high]"),
    (dict(std=0.3), "std=0.3 is larger than the mean allows"),
])
def test_bad_input_names_the_value(kwargs, message):
    args = dict(distribution="normal", n=10, mean=MU, std=SIGMA, low=LOW, high=HIGH)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sample_time_steps(**args)
