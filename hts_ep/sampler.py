"""Per-neuron hidden time steps: moment-matched draws, clipped to [low, high].

The distributions and their moment matching follow model.md (section
"Heterogeneous time steps"): every family is parameterised by the mean `mu`
and standard deviation `sigma_eps` of the *unclipped* draw; clipping then
piles the tails onto the bounds, which `clipped_fractions` predicts exactly
from the CDF (the paper's Figure 1 shows that spike at `eps_max`).
"""
import math

import torch

DISTRIBUTIONS = ("scalar", "normal", "lognormal", "gamma")
# A spread at or below mean * 2**-60 (chosen) moves no draw of any family, 40 standard deviations
# out, by half a float64 unit in the last place of the mean: every draw is the mean, exactly as
# at spread 0. Below it the families' own parameters under- or overflow (gamma's shape
# (mean/std)^2 is inf from std ~ 1e-154 mean, which drew every step at eps_max).
NEGLIGIBLE_SPREAD = 2.0 ** -60


def negligible(mean, std):
    """True where the spread `std` cannot move a draw off `mean` (see NEGLIGIBLE_SPREAD)."""
    return std <= mean * NEGLIGIBLE_SPREAD


def check_parameters(distribution, n, mean, std, low, high, names=("mean", "std", "low", "high")):
    """Raise ValueError naming the bad value and what is allowed.

    `names` lets callers report their own names for (mean, std, low, high),
    e.g. the model's mu, sigma_eps, eps_min, eps_max.
    """
    M, S, L, U = names
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1")
    for name, value in ((M, mean), (S, std), (L, low), (U, high)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name}={value!r} must be a finite number")
    if std < 0:
        raise ValueError(f"{S}={std} must be >= 0")
    if low <= 0:
        raise ValueError(f"{L}={low} must be > 0: a time step <= 0 does not integrate the dynamics")
    if low >= high:
        raise ValueError(f"{L}={low} must be < {U}={high}")
    if not low <= mean <= high:
        raise ValueError(f"{M}={mean} must lie in [{L}, {U}] = [{low}, {high}]")
    # Bhatia-Davis: no distribution on [low, high] with this mean has a larger
    # std, so asking for more cannot describe time steps that live there.
    std_max = math.sqrt((high - mean) * (mean - low))
    if std > std_max + 1e-12:
        raise ValueError(
            f"{S}={std} is larger than the mean allows: a time step in [{low}, {high}] with "
            f"mean {mean} has std at most sqrt(({U}-{M})*({M}-{L})) = {std_max:.4g}")


def lognormal_params(mean, std):
    """(m, s) of the underlying normal so that exp(N(m, s^2)) has this mean and std."""
    s2 = math.log1p(std ** 2 / mean ** 2)
    return math.log(mean) - s2 / 2, math.sqrt(s2)


def gamma_params(mean, std):
    """(shape k, scale theta) with k*theta = mean and k*theta^2 = std^2."""
    return mean ** 2 / std ** 2, std ** 2 / mean


def draw(distribution, n, mean, std, generator=None):
    """The unclipped, moment-matched draw (float64), as model.md specifies it."""
    if distribution == "scalar" or negligible(mean, std):
        return torch.full((n,), float(mean), dtype=torch.float64)
    if distribution == "normal":
        return mean + std * torch.randn(n, generator=generator, dtype=torch.float64)
    if distribution == "lognormal":
        m, s = lognormal_params(mean, std)
        return torch.exp(m + s * torch.randn(n, generator=generator, dtype=torch.float64))
    k, theta = gamma_params(mean, std)
    return theta * torch._standard_gamma(torch.full((n,), k, dtype=torch.float64), generator=generator)


def sample_time_steps(distribution, n, mean, std, low, high, generator=None):
    """Draw `n` hidden time steps (float32, shape [n]), clipped to [low, high].

    Deterministic for a given `torch.Generator`. `std == 0` (or negligible, see
    NEGLIGIBLE_SPREAD) gives every neuron `mean`, whatever the family: the limit of each
    distribution.
    """
    check_parameters(distribution, n, mean, std, low, high)
    return draw(distribution, n, mean, std, generator).clamp(low, high).to(torch.float32)


def cdf(distribution, x, mean, std):
    """P(eps <= x) of the unclipped draw."""
    if distribution == "scalar" or negligible(mean, std):
        return float(x >= mean)
    if distribution == "normal":
        return 0.5 * (1 + math.erf((x - mean) / (std * math.sqrt(2))))
    if x <= 0:
        return 0.0
    if distribution == "lognormal":
        m, s = lognormal_params(mean, std)
        return 0.5 * (1 + math.erf((math.log(x) - m) / (s * math.sqrt(2))))
    k, theta = gamma_params(mean, std)
    return float(torch.special.gammainc(torch.tensor(k, dtype=torch.float64),
                                        torch.tensor(x / theta, dtype=torch.float64)))


def clipped_fractions(distribution, mean, std, low, high):
    """Expected fraction of neurons clipped at (low, high), from the CDF (no sampling)."""
    check_parameters(distribution, 1, mean, std, low, high)
    if distribution == "scalar" or negligible(mean, std):
        return 0.0, 0.0
    return cdf(distribution, low, mean, std), 1.0 - cdf(distribution, high, mean, std)
