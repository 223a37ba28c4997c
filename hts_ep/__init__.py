"""hts-ep: heterogeneous time steps in equilibrium propagation (Kubo, Modi, Patel 2026)."""
__version__ = "0.3.0"   # the one place; pyproject.toml reads it, CHANGELOG.md says what changed

from . import fused  # noqa: E402
from .config import DATASETS, PROVENANCE, Config  # noqa: E402
from .network import Ensemble  # noqa: E402
from .sampler import DISTRIBUTIONS, clipped_fractions, sample_time_steps  # noqa: E402

__all__ = ["Config", "DATASETS", "DISTRIBUTIONS", "PROVENANCE", "Ensemble", "fused",
           "clipped_fractions", "sample_time_steps"]
