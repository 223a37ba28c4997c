"""Compatibility for callers of the former analysis module, which is now split by job into
stats (numbers), sources (where records come from), wording (sentences) and tables (text)."""
from . import stats, tables
from .sources import *  # noqa: F401,F403
from .stats import *  # noqa: F401,F403
from .tables import *  # noqa: F401,F403
from .wording import *  # noqa: F401,F403


def table1(records, datasets=("mnist", "kmnist", "fashion-mnist"), eps_outs=(0.15, 0.2, 0.25, 0.3, 0.35),
           gaps=None, gap_label="no data", missing="not run", stat="final"):
    """(text, means, stds, counts) as before the split: tables.table1 and stats.table1."""
    means, stds, counts, _ = stats.table1(records, datasets, eps_outs, stat)
    return tables.table1(records, datasets, eps_outs, gaps, gap_label, missing, stat), means, stds, counts
