"""The book's words: names of conditions and data sets, and the sentences that turn numbers into
verdicts. Every word choice of the pages is here, so that a changed number changes a sentence
only through a tested function."""
import re

import pandas as pd

from .stats import LAST

LABELS = {"normal": "Normal", "lognormal": "Log-normal", "gamma": "Gamma", "scalar": "Scalar"}
DATASET_LABELS = {"mnist": "MNIST", "kmnist": "KMNIST", "fashion-mnist": "Fashion-MNIST"}
STAT_LABELS = {"final": "final epoch", "best": "best epoch", "last5": f"mean of the last {LAST} epochs"}


def interval(gap, low, high, digits=2, unit=" points", missing="no runs"):
    """'+0.07 points [-0.12, +0.25]', or without the interval where there is none (one seed);
    `missing` where there is no value at all."""
    if gap != gap:
        return missing
    text = f"{gap:+.{digits}f}{unit}"
    return text if low != low else f"{text} [{low:+.{digits}f}, {high:+.{digits}f}]"


def direction(low, high, above="higher", below="lower", level="95%", short=False):
    """The direction a `level` interval [low, high] supports: `above`, `below`, or that it
    cannot tell (the interval holds zero, or there is none; `short`: "cannot tell" alone)."""
    if low != low or high != high:
        return "cannot tell" if short else "cannot tell apart (no interval: fewer than two seeds)"
    if low > 0:
        return above
    if high < 0:
        return below
    return "cannot tell" if short else f"cannot tell apart (the {level} interval holds zero)"


def accuracy_verdict(s):
    """A data set's Table 1 against the paper's, from one entry of stats.summary."""
    side = "below" if s["diff"] < 0 else "above"
    return (f"{abs(s['diff']):.2f} points {side} the paper; {s['within']} of {s['interval']} cells "
            "within the paper's 95% interval")


LATE_UNDEFINED = "undefined at this profile (a run needs two epochs in its late window)"


def claims(s):
    """The introduction's verdict texts for one data set (an entry of stats.summary)."""
    return {"gain_text": interval(s["gain"], s["gain_low"], s["gain_high"]),
            "gain_verdict": direction(s["gain_low"], s["gain_high"], "HTS higher", "HTS lower"),
            "endpoint_text": interval(s["endpoint"], s["endpoint_low"], s["endpoint_high"], missing=LATE_UNDEFINED),
            "endpoint_verdict": direction(s["endpoint_low"], s["endpoint_high"], "HTS less stable",
                                          "HTS more stable") if s["endpoint"] == s["endpoint"] else "—",
            "accuracy_verdict": accuracy_verdict(s), "never_started_text": never_started(s)}


def answer(numbers):
    """The introduction's answer, one clause per data set with runs (stats.summary): HTS minus scalar
    accuracy and the stability endpoint, each with its interval and the direction it supports, and
    the runs that never started."""
    if not numbers:
        return "This build has no runs of Table 1, so it gives no answer."
    acc, late, started = [], [], []
    for ds, s in numbers.items():
        c, name = claims(s), DATASET_LABELS[ds]
        acc.append(f"{name} {c['gain_text']}, {c['gain_verdict']}")
        late.append(f"{name} {c['endpoint_text']}" + ("" if c["endpoint_text"] == LATE_UNDEFINED
                                                      else f", {c['endpoint_verdict']}"))
        started.append(f"{name}: {c['never_started_text']}")
    return (f"Accuracy, HTS minus scalar: {'; '.join(acc)}. Stability (the endpoint declared below), HTS minus "
            f"scalar: {'; '.join(late)}. Runs that never started, {'; '.join(started)}.")


def never_started(s, alpha=0.05):
    """Runs that never started, scalar against HTS, with Fisher's exact test (stats.summary entry)."""
    a, n, b, m, p = (s["never_started_scalar"], s["runs_scalar"], s["never_started_hts"], s["runs_hts"],
                     s["never_started_p"])
    counts = f"{a} of {n} scalar runs and {b} of {m} heterogeneous runs never started"
    if a + b == 0:
        return f"every one of the {n + m} runs started"
    if p < alpha:
        side = "scalar" if a / n > b / m else "heterogeneous"
        return f"{counts}: more often {side} (Fisher's exact test, p = {p:.2g})"
    return f"{counts}: cannot tell the rates apart (Fisher's exact test, p = {p:.2g})"


def rates_verdict(row, alpha=0.05):
    """Which side broke more often (a row of stats.matched_step), only where Fisher's test says so."""
    if row.scalar_broke + row.hts_broke == 0:
        return "none broke"
    if row.p < alpha:
        return ("scalar" if row.scalar_broke / row.scalar_runs > row.hts_broke / row.hts_runs
                else "log-normal") + f" broke more often (p = {row.p:.2g})"
    return f"cannot tell apart (p = {row.p:.2g})"


def spread_match(table, closest):
    """Which statistic's seed spread matches the paper's, per data set (`stats.spreads` and
    `stats.closest_spread`): one sentence."""
    if not closest:
        return "No data set has runs here, so no statistic can be compared with the paper's spreads."
    parts = []
    for ds, stat in closest.items():
        row = table[(table.dataset == ds) & (table.stat == stat)].iloc[0]
        parts.append(f"on {DATASET_LABELS[ds]} the {STAT_LABELS[stat]} ({row.ours:.2f} points against the "
                     f"paper's {row.paper:.2f}, {row.ratio:.1f} times)")
    same = len(set(closest.values())) == 1
    head = (f"The {STAT_LABELS[next(iter(closest.values()))]} comes nearest the paper's seed spreads"
            if same else "The statistic nearest the paper's seed spreads is")
    return head + ": " + "; ".join(parts) + "."


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




def rates(candidate, names=("η1", "η2", "β")):
    """A calibration candidate (eta1, eta2, beta) in words."""
    return ", ".join(f"{n} = {v:g}" for n, v in zip(names, candidate))


def calibration_verdict(row, chosen, quiet, epochs, late_target, near_best, fell_behind, margin):
    """The calibration's outcome in one paragraph (a row of stats.calibration_table for `chosen`)."""
    spread = "" if row.seed_std != row.seed_std else f" ± {row.seed_std:.2f}"
    text = (f"The chosen candidate, {rates(chosen)}, reaches {row.final_acc:.2f}{spread}% over {int(row.runs)} runs "
            f"of {epochs} epochs, with a late std of {row.late_std:.2f} points: "
            + (f"within the {late_target:g}-point target" if quiet else
               f"no finalist meets the {late_target:g}-point target, so the rule took the quietest within "
               f"{near_best:g} points of the best final accuracy"))
    if fell_behind:
        text += (f". Excluded for falling behind on Fashion-MNIST (diverged, or more than {margin:g} points below "
                 f"the best candidate there): {'; '.join(rates(c) for c in sorted(fell_behind))}")
    return text + "."
