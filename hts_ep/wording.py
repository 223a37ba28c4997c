"""The book's words: names of conditions and data sets, and the sentences that turn numbers into
verdicts. Every word choice of the pages is here, so that a changed number changes a sentence
only through a tested function."""
import re

from .stats import LAST, fisher, healthy_rows

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


def direction(low, high, above="higher", below="lower", level="95%", short=False, unit="seeds", ratio=False,
              why=None):
    """The direction a `level` interval [low, high] supports: `above` where it lies wholly above
    zero, `below` where wholly below, else that it cannot tell (the interval holds zero, or there is
    none: fewer than two `unit`). `ratio`: the interval is of a mean log ratio, whose zero is a
    factor of 1. `short`: "cannot tell" alone, for a table cell; with `why` also, briefly, why
    ("cannot tell (one seed)", "cannot tell (interval holds 0)")."""
    if low != low or high != high:
        if short:
            return f"cannot tell (one {unit.removesuffix('s')})" if why else "cannot tell"
        return f"cannot tell apart (no interval: fewer than two {unit})"
    if low > 0:
        return above
    if high < 0:
        return below
    if short:
        return f"cannot tell (interval holds {1 if ratio else 0})" if why else "cannot tell"
    return f"cannot tell apart (the {level} interval holds {'a factor of 1' if ratio else 'zero'})"


def accuracy_verdict(s):
    """A data set's Table 1 against the paper's, from one entry of stats.summary."""
    side = "below" if s["diff"] < 0 else "above"
    return (f"{abs(s['diff']):.2f} points {side} the paper; {s['within']} of {s['interval']} cells "
            "within the paper's 95% interval")


LATE_UNDEFINED = "undefined at this profile (a run needs two epochs in its late window)"


def claims(s):
    """The introduction's verdict texts for one data set (an entry of stats.summary)."""
    def late(prefix):
        if s[prefix] != s[prefix]:
            return LATE_UNDEFINED, "—"
        return (interval(s[prefix], s[f"{prefix}_low"], s[f"{prefix}_high"]),
                direction(s[f"{prefix}_low"], s[f"{prefix}_high"], "HTS less stable", "HTS more stable"))
    endpoint_text, endpoint_verdict = late("endpoint")
    started_text, started_verdict = late("endpoint_started")
    return {"gain_text": interval(s["gain"], s["gain_low"], s["gain_high"]),
            "gain_verdict": direction(s["gain_low"], s["gain_high"], "HTS higher", "HTS lower"),
            "gain_started_text": interval(s["gain_started"], s["gain_started_low"], s["gain_started_high"]),
            "gain_started_verdict": direction(s["gain_started_low"], s["gain_started_high"], "HTS higher",
                                              "HTS lower"),
            "endpoint_text": endpoint_text, "endpoint_verdict": endpoint_verdict,
            "endpoint_started_text": started_text, "endpoint_started_verdict": started_verdict,
            "accuracy_text": interval(s["diff"], s["diff_low"], s["diff_high"]),
            "accuracy_verdict": accuracy_verdict(s), "never_started_text": never_started(s),
            "devices_text": devices(s)}


def answer(numbers):
    """The introduction's bottom line, per data set with runs (stats.summary): accuracy against the
    paper, HTS against scalar (over all runs, and over the runs that started where some did not),
    the stability endpoint, each with its interval and only the direction that interval supports."""
    if not numbers:
        return "This build has no runs of Table 1, so it gives no answer."
    acc, gain, late = [], [], []
    for ds, s in numbers.items():
        c, name = claims(s), DATASET_LABELS[ds]
        acc.append(f"{name} {c['accuracy_text']}")
        text = f"{name} {c['gain_text']}, {c['gain_verdict']}"
        if s["never_started"] and c["gain_started_verdict"] != c["gain_verdict"]:
            n = s["never_started"]
            text += (f"; without the {n} run{'s' if n != 1 else ''} that never started "
                     f"{c['gain_started_text']}, {c['gain_started_verdict']}")
        gain.append(text)
        late.append(f"{name} {c['endpoint_text']}" + ("" if c["endpoint_text"] == LATE_UNDEFINED
                                                      else f", {c['endpoint_verdict']}"))
    text = (f"Accuracy, ours minus the paper's (mean over Table 1's cells): {'; '.join(acc)}. "
            f"HTS minus scalar: {'; '.join(gain)}. Stability (the endpoint declared below), HTS minus scalar: "
            f"{'; '.join(late)}.")
    return text.replace(" (the 95% interval holds zero)", "")      # said once, before the answer


def eps_min_text(runs):
    """The lower-bound experiment in one sentence (stats.finals rows of spec eps_min): at each bound,
    how many runs broke under each nudge scheme, with Fisher's exact test of the two rates."""
    from .stats import fisher
    if not len(runs):
        return "This build has no runs of the experiment."
    f = runs.assign(broke=runs.diverged | runs.collapsed)
    parts = []
    for e, g in f.groupby("eps_min"):
        end, branch = g[g.nudge_from == "end"], g[g.nudge_from == "branch"]
        a, b = int(end.broke.sum()), int(branch.broke.sum())
        p = fisher(a, len(end), b, len(branch))
        side = ("from the end" if a / max(len(end), 1) > b / max(len(branch), 1) else "branching")
        verdict = f"more often {side}" if p < 0.05 else "cannot tell the rates apart"
        parts.append(f"at ε_min = {e:g}, {a} of {len(end)} runs broke with the nudge from the free end and {b} of "
                     f"{len(branch)} when branching ({verdict}; Fisher's exact test, p = {p:.2g})")
    return sentence(parts)


def protocol(name, profile):
    """A profile's scale in words (a mapping of experiments/profiles.yaml), saying whether it is the
    paper's protocol."""
    n_train = profile["train_subset"]
    train = f"{n_train:,} training images" if n_train else "the full training sets"
    n, e = len(profile["seeds"]), profile["epochs"]
    scale = f"{e} epoch{'s' if e != 1 else ''} on {train}, {n} seed{'s' if n != 1 else ''} per cell"
    if name == "paper":
        return f"the paper's protocol ({scale})"
    return f"profile {name}: {scale}, not the paper's protocol"


def sentence(parts):
    """Clauses joined by semicolons into one sentence, its first letter capital."""
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


def spread_trend(table):
    """The spread experiment in one sentence (stats.spread_gaps): per data set, the spreads at which
    HTS minus scalar has a direction its interval supports, or that none has."""
    if not len(table):
        return "This build has no runs of the experiment."
    parts = []
    for ds, g in table.groupby("dataset", sort=False):
        found = [f"{direction(r.ci_low, r.ci_high, 'higher', 'lower')} at σ_ε = {r.sigma_eps:g}"
                 for r in g.itertuples() if direction(r.ci_low, r.ci_high) in ("higher", "lower")]
        parts.append(f"on {DATASET_LABELS[ds]} " + ("HTS is " + ", ".join(found) if found
                                                    else "no spread gives a direction its interval supports"))
    return sentence(parts)


def curves_text(runs):
    """What the learning curves show, per data set (stats.finals rows): the late swings and how far
    the best epoch lies above the final one, each a mean over runs."""
    parts = []
    for ds, g in runs.groupby("dataset", sort=False):
        lift = (g.best_acc - g.final_acc).mean()
        parts.append(f"on {DATASET_LABELS[ds]} the test accuracy swings by {g.late_std.mean():.2f} points over the "
                     f"late epochs (the mean late std), and the best epoch lies {lift:.2f} points above the final one")
    return sentence(parts) if parts else "No runs in this build."


def spread_with_without(with_them, without, stuck, total):
    """A sentence on the runs that never started (`stuck` of `total`) and what they do to the mean seed
    spread of each data set's cells (data set -> points, from stats.spreads, with and without them)."""
    if not stuck:
        return f"None of the {total} runs here failed to start, so none widens a seed spread."
    parts = [f"on {DATASET_LABELS[ds]} {v:.2f} points with them and {without.get(ds, float('nan')):.2f} without"
             for ds, v in with_them.items() if abs(v - without.get(ds, v)) > 1e-12]
    if not parts:
        return f"{stuck} of the {total} runs here never started; they leave every mean seed spread as it is."
    return (f"{stuck} of the {total} runs here never started; the mean seed spread of a data set's cells at "
            f"the best epoch is {'; '.join(parts)}.")


def stuck_text(runs):
    """Where the runs that never started ended (rows of stats.finals), against the runs that started, and
    the output step with the most of them: they do not all end far behind, so a range, not 'never'."""
    stuck, started = runs[runs.never_started], runs[~runs.never_started & ~runs.diverged]
    if not len(stuck):
        return "every run started"
    by_step = stuck.groupby("eps_out").size()
    top = by_step[by_step == by_step.max()].index   # a tie names every step that shares the most

    def span(f):
        return f"{f.final_acc.min():.1f} to {f.final_acc.max():.1f}%"
    where = (f"{by_step.max()} of the {len(stuck)} ran at ε_out = {top[0]:g}, more than at any other step"
             if len(top) == 1 else
             f"{by_step.max()} of the {len(stuck)} ran at each of ε_out = {join([f'{s:g}' for s in top])}, "
             "more than at any other step")
    return f"they ended at {span(stuck)} final test accuracy, the runs that started at {span(started)}; {where}"


def bound_effect(row):
    """What the hidden bound did to runs that never started in the ablation's first stage (the
    h_bound row of ablation.factor_effects with quantity never_started)."""
    return (f"in the fidelity ablation's first stage on Fashion-MNIST, {int(row.former)} of {int(row.pairs)} "
            f"unbounded runs never started and {int(row.author)} of their {int(row.pairs)} twins with the hidden "
            "activation bounded at 1.2")


def never_started(s):
    """Runs that never started, scalar against HTS, with the seeds and devices they share (an entry
    of stats.summary). No test: runs of one seed share its initial weights and data order, and a
    seed's runs at five output steps are not independent draws."""
    a, n, b, m = s["never_started_scalar"], s["runs_scalar"], s["never_started_hts"], s["runs_hts"]
    if a + b == 0:
        return f"every one of the {n + m} runs started"
    seeds = ", ".join(f"{k} in seed {seed}" for seed, k in sorted(s["never_started_seeds"].items(),
                                                                  key=lambda kv: -kv[1]))
    where = ", ".join(f"{k} on {dev}" for dev, k in s["never_started_devices"].items())
    return (f"{a} of {n} scalar runs and {b} of {m} heterogeneous runs never started ({seeds}; {where}); "
            "runs of one seed are not independent, so no test is given")


def devices(s):
    """Which device each condition of a data set ran on, where they differ (an entry of stats.summary)."""
    if len({tuple(d) for d in s["devices"].values()}) <= 1:
        return ""
    return "; ".join(f"{LABELS[c].lower()} on {' and '.join(d)}" for c, d in s["devices"].items())


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

    def spread(ds, stat):
        row = table[(table.dataset == ds) & (table.stat == stat)].iloc[0]
        return f"{DATASET_LABELS[ds]} {row.ours:.2f} against {row.paper:.2f} points"
    if len(set(closest.values())) == 1:
        stat = next(iter(closest.values()))
        return (f"The {STAT_LABELS[stat]} comes nearest the paper's seed spreads (ours against the paper's, "
                f"mean over a data set's cells): " + "; ".join(spread(ds, stat) for ds in closest) + ".")
    return ("The statistic nearest the paper's seed spreads differs by data set: "
            + "; ".join(f"the {STAT_LABELS[st]} on {spread(ds, st)}" for ds, st in closest.items()) + ".")


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


# -- the mechanism chapters' words (05 relaxation, 07 timing, 08 gradients) -------------------

def factor_text(g):
    """A mean log10 ratio with its interval (`measure.over` / `measure.paired`) as a factor:
    "12 times [3.1, 46]" (the geometric mean ratio and its 95% interval, two significant digits),
    without the interval where there is none."""
    def f(v):
        v = 10 ** v
        return f"{float(f'{v:.2g}'):,.0f}" if v >= 100 else two_digits(v)
    if g["gap"] != g["gap"]:
        return "no value"
    text = f"{f(g['gap'])} times"
    return text if g["low"] != g["low"] else f"{text} [{f(g['low'])}, {f(g['high'])}]"


def signal_verdict(gaps):
    """Where the nudged phase adds to the networks' differences: `gaps` maps a distribution to
    `measure.paired`'s learning-signal minus end-state relative difference (same weights, per
    seed). One sentence naming the distributions whose interval lies above zero, below it, and
    those it cannot tell, each with its mean and 95% interval."""
    groups = {"more": [], "less": [], "tell": []}
    for d, g in gaps.items():
        word = direction(g["low"], g["high"], "more", "less")
        groups[word if word in ("more", "less") else "tell"].append(
            f"{LABELS[d].lower()} ({interval(g['gap'], g['low'], g['high'], 2, '')})")
    parts = []
    if groups["more"]:
        parts.append(f"differ more than the free-phase end states do for {join(groups['more'])} steps")
    if groups["less"]:
        parts.append(f"differ less than the end states do for {join(groups['less'])} steps")
    if groups["tell"]:
        parts.append(f"cannot be told apart from the end states' difference for {join(groups['tell'])} steps "
                     "(the 95% interval over seeds holds zero, or there is none)")
    return "Relative to their size, the learning signals " + "; they ".join(parts) + "."


def join(names):
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def plural(n, word, many=None):
    """`n` and `word`, the word in the plural unless n is 1: "1 epoch", "3 seeds", "8,000 images";
    `many`: an irregular plural."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


SCHEME_LABELS = {"branch": "branching", "end": "from the free end"}     # the mechanism pages' tables (07, 08)
STATE_LABELS = {"fresh": "freshly initialised", "trained": "trained"}
LAYER_LABELS = {"layer1": "hidden layer", "layer2": "output layer"}
LOSS_LABELS = {"bce": "binary cross-entropy", "mse": "squared error", "ce": "softmax cross-entropy"}


def two_digits(v):
    """`v` to two significant digits, trailing zeros kept: "0.0030", "1.0", "37", "9.5e-08"."""
    return f"{v:#.2g}".rstrip(".").replace(".e", "e")


def level_text(g, floor=False):
    """A positive quantity over seeds (`measure.over` of its log10) as its geometric mean and 95%
    interval, two significant digits: "0.29 [0.21, 0.39]"; `floor`: the value lies at the float32
    rounding floor, where no size can be told, and says so instead of an interval."""
    if g["gap"] != g["gap"]:
        return "no value"
    text = two_digits(10 ** g["gap"])
    if floor:
        return f"{text} (at the float32 rounding floor)"
    return text if g["low"] != g["low"] else f"{text} [{two_digits(10 ** g['low'])}, {two_digits(10 ** g['high'])}]"


def settle_text(free, nudged, ratio):
    """One network's last residuals of the free and the nudged phase (`level_text`'s dicts with a
    "floor" flag) and, where the free phase's lies above the rounding floor, their ratio over seeds
    (`measure.over` of log10(nudged / free), else None) with the direction its interval supports.
    No ratio is formed with a denominator at the floor."""
    if ratio is None:
        return (f"free phase {two_digits(10 ** free['gap'])} (at the float32 rounding floor: no ratio is formed "
                "with it), "
                f"nudged phase {level_text(nudged, nudged['floor'])}")
    text = f"free phase {level_text(free, free['floor'])}, nudged phase {level_text(nudged, nudged['floor'])}"
    return (f"{text}; nudged ÷ free {factor_text(ratio)}, "
            + direction(ratio["low"], ratio["high"], "the nudged phase ends further from rest",
                        "the nudged phase ends closer to rest", ratio=True))


def floor_verdict(at_floor, above, unsure=()):
    """Which networks' free phases end at their fixed point to within rounding (`at_floor`: every
    seed's distance at the floor), which short of it (`above`: the 95% interval of the distance
    wholly above the floor) and which cannot be told (`unsure`): lists of distributions, one
    sentence."""
    def whose(ds):
        names = join([LABELS[d].lower() for d in ds])
        return f"the {names} network's" if len(ds) == 1 else f"the {names} networks'"
    parts = []
    if at_floor:
        parts.append(f"{whose(at_floor)} free phase{'s' if len(at_floor) > 1 else ''} "
                     f"end{'' if len(at_floor) > 1 else 's'} at the fixed point to within float32 rounding")
    if above:
        parts.append(f"{whose(above)} free phase{'s' if len(above) > 1 else ''} "
                     f"end{'' if len(above) > 1 else 's'} short of the fixed point (the 95% interval of "
                     f"{'each' if len(above) > 1 else 'the'} distance lies above the rounding floor)")
    if unsure:
        parts.append(f"for {whose(unsure).removesuffix(chr(39) + 's').removesuffix(chr(39))} the distance cannot "
                     "be told from the rounding floor")
    if not parts:
        return "No network was measured."
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def timing_notes(result):
    """The timing page's notes: its overrides, and why a data set has no runs."""
    return [overrides_note(result["overrides"]),
            *(gap_note(DATASET_LABELS[ds], why) for ds, why in result["missing"].items())]


def fisher_text(a, n, b, m, sides, alpha=0.05, noun="", often=None):
    """Break counts a of n and b of m (the two sides named by `sides`, the first count followed by
    `noun`) with Fisher's exact test of equal rates: "6 of 9 from the end, 0 of 9 when branching
    (Fisher's exact test, p = 0.009: more often from the end)", the side that broke more often
    named (by `often`, else "more often" and its side) only where p < `alpha`; "(none broke)"
    where none did."""
    text = f"{a} of {n} {noun}{sides[0]}, {b} of {m} {sides[1]}"
    if a + b == 0:
        return text + " (none broke)"
    p = fisher(a, n, b, m)
    if p < alpha:
        i = 0 if a / n > b / m else 1
        return text + f" (Fisher's exact test, p = {p:.2g}: {often[i] if often else 'more often ' + sides[i]})"
    return text + f" (Fisher's exact test, p = {p:.2g}: cannot tell the rates apart)"


def comparison_text(g, broke, above, below, sides, digits=2, often=None):
    """A comparison of two groups of runs in a table cell: where none broke, their paired accuracy
    difference (`g`: gap, low, high) with its 95% interval and the direction it supports; where any
    did, the break counts and Fisher's exact test instead (`broke`: (a, n, b, m) for the two sides
    named by `sides`; `often`: as `fisher_text`'s), since an interval over a few seeds of which
    some broke says nothing."""
    a, n, b, m = broke
    if a + b:
        return "broke: " + fisher_text(a, n, b, m, sides, often=often)
    if g is None or g["gap"] != g["gap"]:
        return "no pair of runs"
    return interval(g["gap"], g["low"], g["high"], digits, "") + ", " + direction(g["low"], g["high"], above, below)


def scheme_text(row, label, broke=None):
    """End minus branch for one data set at the page's spread (a row of `measure.scheme_gap`, or
    None): the accuracy difference with its interval where no run broke; where any did (`broke`:
    heterogeneous runs that broke from the end and their number, then when branching), the break
    counts and Fisher's exact test instead."""
    if broke is not None and broke[0] + broke[2]:
        return f"{label}: " + fisher_text(*broke, ("from the end", "when branching"), noun="heterogeneous runs broke ")
    if row is None or row["n"] == 0:
        return f"{label}: no pair of runs to compare"
    return (f"{label}: {interval(row['gap'], row['low'], row['high'])} over {plural(int(row['n']), 'seed')}, "
            + direction(row["low"], row["high"], "higher from the end", "lower from the end"))


def broke_text(runs):
    """How many of `runs` (`measure.scheme_runs`' runs) diverged or collapsed: "3 of 60"."""
    if not len(runs):
        return "not run"
    return f"{int((~healthy_rows(runs)).sum())} of {len(runs)}"


def broke_verdict(runs, label, alpha=0.05):
    """How many heterogeneous runs of one data set broke (diverged or collapsed) under each scheme,
    and which scheme broke more often where Fisher's exact test rejects equal rates at `alpha`."""
    hts = runs[runs.distribution != "scalar"] if len(runs) else runs
    if not len(hts):
        return f"{label}: not run"
    n = {s: hts[hts.nudge_from == s] for s in ("branch", "end")}
    k = {s: int((~healthy_rows(g)).sum()) for s, g in n.items()}
    return f"{label}: " + fisher_text(k["branch"], len(n["branch"]), k["end"], len(n["end"]),
                                      ("when branching", "from the end"), alpha, "heterogeneous runs broke ")


def change_text(g, what, negligible=None):
    """A paired change of the cosine (`measure.paired` over batches) with its interval and direction;
    practically zero where the whole interval lies within ±`negligible`."""
    return difference_text(g, f"the {what} raises it", f"the {what} lowers it", "batches", negligible=negligible)


def difference_text(g, above, below, unit="seeds", digits=3, ratio=False, suffix="", negligible=None):
    """A paired difference (`measure.paired` / `measure.over`) as "-0.019 [-0.020, -0.018], `below`":
    its mean and 95% interval, with more decimals (up to 6) where `digits` would show the mean with
    fewer than two significant digits or the interval as one number, then the direction it
    supports (`direction`); "practically zero" instead where `negligible` is given and the whole
    interval lies within ±`negligible`, however sure its sign."""
    if g["gap"] != g["gap"]:
        return "no value"
    bounds = [v for v in (g["low"], g["high"]) if v == v]
    while digits < 6 and (0 < abs(g["gap"]) * 10 ** digits < 10 or (
            len(bounds) == 2 and bounds[0] != bounds[1] and round(bounds[0], digits) == round(bounds[1], digits))):
        digits += 1
    text = interval(g["gap"], g["low"], g["high"], digits, suffix) + ", "
    if negligible is not None and len(bounds) == 2 and -negligible < bounds[0] and bounds[1] < negligible:
        return text + f"practically zero (the whole 95% interval lies within ±{negligible:g})"
    return text + direction(g["low"], g["high"], above, below, unit=unit, ratio=ratio)


def rank_text(cosine, accuracy, alpha=0.05):
    """Spearman's rank correlation of the hidden layer's cosine with the accuracy over the networks,
    and whether it can be told from none at level `alpha`."""
    from scipy.stats import spearmanr
    if len(cosine) < 3 or cosine.nunique() < 2 or accuracy.nunique() < 2:
        return "undefined (fewer than three networks with distinct values)"
    r = spearmanr(cosine, accuracy)
    rho, p = float(r.statistic), float(r.pvalue)
    verdict = ("better alignment goes with higher accuracy" if rho > 0 else "better alignment goes with lower "
               "accuracy") if p < alpha else "cannot tell from no correlation"
    return f"ρ = {rho:+.2f} over {len(cosine)} networks (p = {p:.2g}: {verdict})"


# How each nudging scheme (Config.nudge_from) reads after "the nudge ..." / "nudging ..."
SCHEME_WORDS = {"end": "from the free end", "branch": "branching off the free run"}


def setup_text(config):
    """The set-up the fidelity ablation chose between, as `config` has it, in words."""
    bound = ("an unbounded hidden activation" if config.h_bound is None
             else f"the hidden activation clamped to [−{config.h_bound:g}, {config.h_bound:g}]")
    inputs = "standardised inputs" if config.inputs == "standardised" else "pixels in [0, 1]"
    return f"the nudge {SCHEME_WORDS[config.nudge_from]}, {bound}, {inputs}"


def change_verdict(change):
    """`ablation.paired_change` in one sentence per data set: each quantity's mean change with its 95%
    interval over the pairs of runs and the direction that interval supports."""
    from .ablation import CHANGE
    parts = []
    for ds, g in change.groupby("dataset", sort=False):
        g = g.set_index("quantity")
        said = []
        for q, what in CHANGE.items():
            r = g.loc[q]
            above, below = ("noisier", "quieter") if q == "late_std" else ("higher", "lower")
            way = direction(r.ci_low, r.ci_high, above, below, unit="pairs", short=True)
            said.append(f"{what} {interval(r['diff'], r.ci_low, r.ci_high)} ({way})")
        parts.append(f"{DATASET_LABELS.get(ds, ds)}, {plural(int(g.pairs.max()), 'pair')} of runs: "
                     + "; ".join(said))
    if not parts:
        return "No run of Table 1 is on both sides yet."
    return ("After minus before, paired by run, with 95% intervals: " + ". ".join(parts) + ".")


def nudge_window(steps):
    """Where the nudged phase runs, from `measure.relaxation`'s steps (its "branch": the free step the
    nudged phase starts from), as one sentence."""
    start, stop = steps["branch"], steps["branch"] + steps["t_nudge"]
    if start == steps["t_free"]:
        return (f"The nudged phase starts from the free phase's end state at step {start} and runs to step {stop} "
                "(the scheme of the first author's code, the default since the fidelity ablation).")
    return f"The nudged phase branches off the free run at step {start} and ends beside it at step {stop}."


def scale_note(scale, seeds, n_train, epochs, unit="seeds"):
    """What a page at profile `scale` can and cannot show: its networks, trained on `n_train`
    images for `epochs` epochs, compared over `seeds` units (seeds or batches)."""
    if scale == "smoke":
        return (f"At the smoke profile these networks saw {n_train:,} images for {plural(epochs, 'epoch')}: "
                "the numbers check that the page runs, not the model.")
    if scale == "paper":
        return ""
    return (f"At the {scale} profile the trained networks have seen {n_train:,} images for {plural(epochs, 'epoch')}, "
            "far from the paper's 50 epochs on 60,000: this page shows what the dynamics do to networks early in "
            f"training, with intervals over {plural(seeds, unit.removesuffix('s'))}. "
            "It cannot say what the fully trained networks of Table 1 do.")
