"""The book's words: names of conditions and data sets, and the sentences that turn numbers into
verdicts. Every word choice of the pages is here, so that a changed number changes a sentence
only through a tested function."""
import re

import pandas as pd

from .stats import LAST

LABELS = {"normal": "Normal", "lognormal": "Log-normal", "gamma": "Gamma", "scalar": "Scalar"}
DATASET_LABELS = {"mnist": "MNIST", "kmnist": "KMNIST", "fashion-mnist": "Fashion-MNIST"}
STAT_LABELS = {"final": "final epoch", "best": "best epoch", "last5": f"mean of the last {LAST} epochs"}
def agreement_text(row):
    """A sentence fragment on one data set's cells (a row of `agreement`)."""
    if row is None or row.run == 0:
        return "no runs"
    side = "below" if row.mean_diff < 0 else "above"
    return (f"{row.mean_abs_diff:.2f} points from the paper's cells on average ({abs(row.mean_diff):.2f} "
            f"{side} them net); {int(row.within)} of {int(row.interval)} cells with an interval cannot be told apart")


def gain_verdict(row, paper):
    """A sentence fragment on one data set's gain (a row of `hts_gain`) against the paper's."""
    if row is None or row.seeds == 0 or row.gap != row.gap:
        return "no runs"
    if row.seeds < 2:
        return f"{row.gap:+.2f} points from a single seed, which gives no interval"
    sign = ("above zero" if row.ci_low > 0 else "below zero" if row.ci_high < 0 else "an interval that holds zero")
    inside = "inside" if row.ci_low <= paper <= row.ci_high else "outside"
    return (f"{row.gap:+.2f} points, 95% interval [{row.ci_low:+.2f}, {row.ci_high:+.2f}] over "
            f"{int(row.seeds)} seeds ({sign}; the paper's {paper:+.2f} lies {inside} it)")


def overrides_note(overrides, varied=()):
    """Markdown stating a page's overrides (empty text when there are none); `varied`: fields
    the page sets per model itself, which the overrides do not change there."""
    if not overrides:
        return ""
    fields = ", ".join(f"`{k} = {v!r}`" for k, v in overrides.items())
    kept = [k for k in overrides if k in varied]
    return (f"```{{note}}\nThis page was built with overrides: {fields}. Every model on it has these "
            "values instead of the experiment's (its runs are cached under their own keys)"
            + (f", except {', '.join(f'`{k}`' for k in kept)}, which this page varies itself" if kept else "")
            + ".\n```")


def gap_note(label, reason):
    """Markdown note saying why data set `label` has no runs in this build: `reason` ending in
    one full stop, not two, its command-line options and environment variables as code, so
    that the book's typography does not turn "--" into a dash."""
    reason = re.sub(r"(?<![\w`])(--[a-z][\w-]*|[A-Z][A-Z0-9]*_[A-Z0-9_]+)", r"`\1`", reason.rstrip(". "))
    return f"```{{note}}\n**{label}** is a gap in this build, not a zero: {reason}.\n```"


def hts_gap(part, sigma, scalar, digits, name=True):
    """Mean final accuracy of the heterogeneous runs in `part` (finals rows: distribution,
    sigma_eps, final_acc) at spread `sigma`, minus the scalar accuracy `scalar`, as text with
    `digits` decimals: averaged over the distributions that kept a run that did not diverge
    (final_acc NaN), and with `name` naming them where not all did, so that a mean over
    survivors never passes for one over every distribution."""
    cell = part[(part.distribution != "scalar") & (part.sigma_eps == sigma)]
    alive = cell[cell.final_acc.notna()]
    if not len(cell):
        return "not run"
    if not len(alive):
        return "all diverged"
    if pd.isna(scalar):
        return "scalar diverged"
    gap = f"{alive.final_acc.mean() - scalar:+.{digits}f}"
    if name and len(alive) < len(cell):
        gap += f" ({', '.join(LABELS[d].lower() for d in alive.distribution)} only)"
    return gap


def gap_trend(hts, scalar, chosen, small):
    """How the heterogeneous models' gap to the scalar baseline moves as the spread shrinks from
    `chosen` to `small`: `hts` maps spread -> final accuracy (%), `scalar` the baseline's. Text
    for a sentence: "narrows", "widens" or "stays the same", after "changes sign and" where
    it does, then both gaps in points."""
    values = [hts[s] if s in hts else float("nan") for s in (chosen, small)] + [scalar]
    if any(pd.isna(v) for v in values):
        return "cannot be followed here (a spread or the baseline has no finite run)"
    a, b = round(values[0] - scalar, 1), round(values[1] - scalar, 1)     # compared as printed
    size = "narrows" if abs(b) < abs(a) else "widens" if abs(b) > abs(a) else ""
    if a * b < 0:
        word = "changes sign" + (f" and {size}" if size else "")
    else:
        word = size or "stays the same"
    return f"{word}: HTS minus scalar is {a:+.1f} points at σ_ε = {chosen:g} and {b:+.1f} at {small:g}"


def signal_against_state(state, signal):
    """Which way the nudged phase moves the networks' differences: `state` and `signal` map a
    distribution to its relative difference from the scalar network (free-phase end state,
    learning signal). One sentence naming where the signal differs more than the state (the
    nudged phase adds to the difference) and where it differs less or as much."""
    more = [LABELS[d].lower() for d in state if signal[d] > state[d]]
    less = [LABELS[d].lower() for d in state if signal[d] <= state[d]]
    def names(ds):
        return "all three distributions" if len(ds) == 3 else " and ".join(ds) + " steps"
    parts = []
    if more:
        parts.append(f"more than the free-phase end states do for {names(more)}")
    if less:
        parts.append(f"{'and ' if more else ''}no more than those for {names(less)}")
    return ("Relative to their size (norm), the learning signals differ from the scalar network's "
            + ", ".join(parts) + ".")


