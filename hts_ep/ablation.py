"""The fidelity ablation's rule: which of the first author's stabilisers this project adopts.

Four factors, each at the value the package had before the ablation and the author's (docs/model.md, issue 24):

    h_bound     None (unbounded leaky ReLU)  or 1.2 (phi clamped to [-1.2, 1.2])
    inputs      unit ([0, 1] pixels)         or standardised (data.INPUT_STATS)
    nudge_from  branch (this project's)      or end (the author's code, in effect)
    eta1        1.0 (calibrated on MNIST)    or 0.35 (eta1 lambda_max of MNIST on Fashion-MNIST);
                given for unit inputs, scaled by data.InputStats.eta1_gain when standardised

Stage 1 (spec ablation_screen, profile screen) screens the 16 variants on Fashion-MNIST;
stage 2 (spec ablation_paper, profile paper) runs the two best and the former defaults at the paper's
protocol on MNIST and Fashion-MNIST. This module is the rule both stages are judged by,
written and tested before either ran (tests/test_ablation.py); every number in it is chosen.
"""
import math

import pandas as pd

from .stats import HTS, finals, paper_table1
from .wording import plural

FACTORS = ("h_bound", "inputs", "nudge_from", "eta1")
FORMER = (None, "unit", "branch", 1.0)      # the defaults before the ablation (Table 1's first archive, 2026-12)
AUTHOR = (1.2, "standardised", "end", 0.35)  # each factor's other level: the first author's choice
# Stage 2 may adopt a variant over the former defaults only if its score is higher by at least this much
# (points; chosen: about the seed-to-seed noise of one term of the score)
MARGIN = 0.5


def variant(row):
    """The factor values of a `finals` row (or a Config dict) as a hashable tuple."""
    values = tuple(row[f] for f in FACTORS)
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in values)


def name(v):
    """A variant in words, e.g. 'bound 1.2, standardised, end, η1 = 0.35'."""
    h, inputs, nudge, eta1 = v
    return f"{'unbounded' if h is None else f'bound {h:g}'}, {inputs}, {nudge}, η1 = {float(eta1)}"


def failed(f):
    """Per run (rows of stats.finals): never started, diverged or collapsed: one way in which
    a set-up is not usable (none is allowed)."""
    return f.never_started | f.diverged | f.collapsed


def _frame(records):
    if not records:
        raise ValueError("no records: the ablation's runs are not in this store")
    f = finals(records)
    f["variant"] = [variant(r) for _, r in f[list(FACTORS)].iterrows()]
    return f


def _seed_spread(g):
    """The seed std of the final accuracy, averaged over distributions (0 for one seed)."""
    return g.groupby("distribution").final_acc.std(ddof=1).fillna(0).mean()


def screen(records):
    """Stage 1: one row per variant with its runs, failed runs, mean best-epoch and final
    accuracy, seed spread of the final accuracy, and score = (best + final) / 2 - spread
    (points), sorted best first (failure-free variants before the others)."""
    f = _frame(records)
    rows = []
    for v, g in f.groupby("variant", sort=False):
        best, final, spread = g.best_acc.mean(), g.final_acc.mean(), _seed_spread(g)
        rows.append({"variant": v, "name": name(v), "runs": len(g), "failed": int(failed(g).sum()),
                     "best": best, "final": final, "spread": spread,
                     "score": (best + final) / 2 - spread})
    t = pd.DataFrame(rows)
    return t.sort_values(["failed", "score"], ascending=[True, False], kind="stable").reset_index(drop=True)


def finalists(table, n=2):
    """Stage 1's choice: the `n` highest-scoring variants other than the former defaults among
    those with the fewest failed runs (none, where any variant has none), then the former defaults."""
    others = table[table.variant != FORMER]
    fewest = others.failed.min()
    picked = others[others.failed == fewest].head(n).variant.tolist()
    return [*picked, FORMER]


def paper_cells(dataset, eps_out):
    """The paper's Table 1 row: {distribution: mean} at (dataset, eps_out)."""
    row = paper_table1().loc[(dataset, eps_out)]
    return {d: float(row[f"{d}_mean"]) for d in (*HTS, "scalar")}


def judge(records, runs_each=None):
    """Stage 2: one row per variant with its runs, failed runs and, per data set, the gap of
    the best-epoch and of the final accuracy to the paper (ours - paper, mean over the
    distributions), the seed spread of the final accuracy, and how far HTS minus scalar (best
    epoch) lies from the paper's. score = -(sum over data sets of |gap best| + |gap final| +
    spread + |HTS error|): 0 would be the paper exactly. Sorted best first, failure-free
    variants before the others. With `runs_each` (the runs a variant has when its stage is complete), a
    variant with fewer has no score (NaN): a missing data set or seed would otherwise add nothing."""
    f = _frame(records)
    rows = []
    for v, g in f.groupby("variant", sort=False):
        row = {"variant": v, "name": name(v), "runs": len(g), "failed": int(failed(g).sum()),
               "devices": "; ".join(f"{d}: {n}" for d, n in g.device.value_counts().sort_index().items())}
        penalty = 0.0
        for ds, d in g.groupby("dataset", sort=False):
            eps_out = float(d.eps_out.iloc[0])
            paper = paper_cells(ds, eps_out)
            means = d.groupby("distribution")[["best_acc", "final_acc"]].mean()
            dists = list(means.index)
            gap_best = sum(means.best_acc[x] - paper[x] for x in dists) / len(dists)
            gap_final = sum(means.final_acc[x] - paper[x] for x in dists) / len(dists)
            hts = [x for x in dists if x in HTS]
            hts_error = float("nan")
            if hts and "scalar" in dists:
                ours = means.best_acc[hts].mean() - means.best_acc["scalar"]
                theirs = sum(paper[x] for x in hts) / len(hts) - paper["scalar"]
                hts_error = abs(ours - theirs)
            spread = _seed_spread(d)
            row.update({f"{ds} gap best": gap_best, f"{ds} gap final": gap_final,
                        f"{ds} spread": spread, f"{ds} HTS error": hts_error})
            penalty += abs(gap_best) + abs(gap_final) + spread + (0 if hts_error != hts_error else hts_error)
        row["score"] = -penalty if runs_each is None or len(g) >= runs_each else float("nan")
        rows.append(row)
    t = pd.DataFrame(rows)
    return t.sort_values(["failed", "score"], ascending=[True, False], kind="stable").reset_index(drop=True)


def decide(table, margin=MARGIN):
    """Stage 2's choice from `judge`'s table: (variant, adopted, reason). The failure-free
    variant with the highest score wins; it replaces the former defaults if that set-up had
    failed runs, or if it scores at least `margin` points higher. Where no variant is free of
    failed runs, or the former defaults win, they stay (adopted False)."""
    clean = table[table.failed == 0]
    former = table[table.variant == FORMER]
    if not len(clean):
        return FORMER, False, "every variant had runs that failed"
    best = clean.iloc[0]
    if best.variant == FORMER:
        return FORMER, False, "the defaults before the ablation scored highest"
    if not len(former):
        return best.variant, True, "the defaults before the ablation were not run"
    t = former.iloc[0]
    if t.failed > 0:
        return best.variant, True, (f"the defaults before the ablation had {plural(int(t.failed), 'failed run')} "
                                    f"of {int(t.runs)}")
    if best.score >= t.score + margin:
        return best.variant, True, f"it scored {best.score - t.score:.2f} points above the defaults before the ablation"
    return FORMER, False, (f"the best variant scored only {best.score - t.score:.2f} points above the defaults "
                          f"before the ablation (at least {margin} needed)")


def effects(records):
    """What each factor does, averaged over the other factors: per factor and level, the runs,
    how many never started, the mean final and best-epoch accuracy, the mean late std (the
    epoch-to-epoch swings), and HTS minus scalar final accuracy, paired within each variant and
    seed (mean over those pairs)."""
    f = _frame(records)
    pairs = []
    for (v, _), g in f.groupby(["variant", "seed"], sort=False):
        het, sca = g[g.distribution != "scalar"].final_acc.mean(), g[g.distribution == "scalar"].final_acc.mean()
        pairs.append({"variant": v, "gap": het - sca})
    pairs = pd.DataFrame(pairs)
    rows = []
    def level_of(v, i):
        return "none" if v[i] is None else v[i]
    for i, factor in enumerate(FACTORS):
        levels = f.variant.map(lambda v, i=i: level_of(v, i))
        pair_levels = pairs.variant.map(lambda v, i=i: level_of(v, i))
        for level in sorted(levels.unique(), key=lambda x: (x != "none", str(x))):
            g = f[levels == level]
            gaps = pairs[pair_levels == level].gap
            rows.append({"factor": factor, "level": level, "runs": len(g),
                         "never_started": int(g.never_started.sum()), "failed": int(failed(g).sum()),
                         "final": g.final_acc.mean(), "best": g.best_acc.mean(), "late_std": g.late_std.mean(),
                         "hts_minus_scalar": gaps.mean()})
    return pd.DataFrame(rows)


def curvature(datasets=("mnist", "fashion-mnist"), data_root=None):
    """Per data set with training images here: the largest eigenvalue of E[x x^T] over its training
    images, with unit and with standardised inputs (the curvature the W1 update sees), and the
    eta1 gain the package uses (data.INPUT_STATS); data sets that are missing are left out."""
    import torch

    from . import data
    rows = []
    for ds in datasets:
        if data.unavailable(ds, data_root):
            continue
        x = data.load(ds, data_root, train=True).x.double()
        stats = data.INPUT_STATS[ds]

        def top(z):
            return torch.linalg.eigvalsh(z.T @ z / len(z))[-1].item()
        rows.append({"dataset": ds, "unit": top(x), "standardised": top((x - stats.mean) / stats.std),
                     "eta1_gain": stats.eta1_gain})
    return pd.DataFrame(rows)


def paper_variants(spec="ablation_paper"):
    """The variants stage 2's spec runs (its "h_bound,inputs,nudge_from,eta1" axis)."""
    from .experiments import load_spec
    return [tuple(v) for v in load_spec(spec).grid[",".join(FACTORS)]]


def _yaml(v):
    """A factor's value as the specs write it: floats as floats, so that a spec reads as the records' configs do."""
    return "null" if v is None else repr(float(v)) if isinstance(v, float) else v


def stage2_yaml(finalists):
    """Stage 2's spec for `finalists` (stage 1's choice, the former defaults last): the text of
    experiments/ablation_paper.yaml."""
    rows = ", ".join("[" + ", ".join(_yaml(x) for x in v) + "]" for v in finalists)
    return f"""name: ablation_paper
description: >
  Stage 2 of the fidelity ablation (hts_ep/ablation.py holds its rule): the
  two variants stage 1 ranked highest and the defaults before the ablation, at the paper's
  protocol (run under the profile "paper"), on MNIST and Fashion-MNIST,
  scalar and log-normal hidden steps at eps_out 0.25. Written by
  ablation.stage2_yaml from stage 1's records (ablation.finalists).
grid:
  dataset: [mnist, fashion-mnist]
  distribution: [scalar, lognormal]
  eps_out: [0.25]
  {",".join(FACTORS)}: [{rows}]
fixed: {{}}
"""


def _axes(spec):
    """`spec`'s grid as the specs write it, one axis a line."""
    from .experiments import load_spec
    return "\n".join(f"  {k}: [{', '.join(_yaml(x) for x in v)}]" for k, v in load_spec(spec).grid.items())


def rerun_yaml(chosen, spec="table1"):
    """The spec of Table 1 again at stage 2's choice (experiments/table1_rerun.yaml): `spec`'s grid with the
    chosen variant's fields fixed, so that its records are points of a spec like every archived one."""
    axes = _axes(spec)
    # where the variant differs from the set-up before the ablation or from today's defaults: either way
    # the spec's runs are the variant's, whether or not the defaults have moved to it
    fixed = ", ".join(f"{k}: {_yaml(x)}" for k, x in zip(FACTORS, chosen)
                      if k in changed(chosen) or k in overrides(chosen))
    return f"""name: {spec}_rerun
description: >
  Table 1 again at the set-up the fidelity ablation chose ({name(chosen)}; the
  rule is hts_ep/ablation.py): the grid of {spec} with the fields below fixed where the
  chosen set-up differs from the defaults before the ablation. Written by
  ablation.rerun_yaml from stage 2's decision. The package's defaults become this
  set-up when its paper-profile archive is whole; {spec} at the defaults then reads
  the same records.
grid:
{axes}
fixed: {{{fixed}}}
"""


def before_yaml(chosen, spec="table1"):
    """The spec of Table 1 as first archived (experiments/table1_before.yaml): `spec`'s grid with the
    fields fixed where the set-up before the ablation differs from the chosen one, so that the archive
    made before keeps a spec of its own (and its keys) once the chosen set-up is the default."""
    axes = _axes(spec)
    fixed = ", ".join(f"{k}: {_yaml(old)}" for k, old, x in zip(FACTORS, FORMER, chosen)
                      if x != old or k in overrides(FORMER))
    return f"""name: {spec}_before
description: >
  Table 1 as first archived (2026-12), at the set-up the package had before the fidelity
  ablation: the grid of {spec} with the fields below fixed where that set-up differs from
  the one the ablation chose ({name(chosen)}). Its paper-profile records are
  the archive chapter 09 sets the re-run beside. Written by ablation.before_yaml.
grid:
{axes}
fixed: {{{fixed}}}
"""


def previous():
    """Config fields whose default the ablation changed, at their former value ({} if none did):
    the overrides that read the archive made before it (results/paper/ keeps those records)."""
    from .config import Config
    return {k: v for k, v in zip(FACTORS, FORMER) if getattr(Config(), k) != v}


def before_after(before, after):
    """Table 1 before and after the ablation's choice, per data set and statistic: mean accuracy over
    the cells, mean seed spread, and runs that never started, failed or ran."""
    from .stats import STATS, outcomes, spreads, table1
    rows = []
    for label, records in (("before", before), ("after", after)):
        if not records:
            continue
        sp = spreads(records).set_index(["dataset", "stat"])
        out = outcomes(records, by=("dataset",)).set_index("dataset")
        for stat in STATS:
            means = table1(records, stat=stat)[0]
            for ds in out.index:
                rows.append({"set-up": label, "dataset": ds, "stat": stat,
                             "accuracy": float(means.loc[ds].stack().mean()),
                             "seed_std": float(sp.loc[(ds, stat), "ours"]),
                             "never_started": int(out.loc[ds, "never_started"]), "runs": int(out.loc[ds, "runs"])})
    return pd.DataFrame(rows)


CHANGE = {"best_acc": "best-epoch accuracy", "final_acc": "final accuracy", "late_std": "late std"}
CHANGE_COLUMNS = ["dataset", "quantity", "pairs", "diff", "ci_low", "ci_high"]


def paired_change(before, after, level=0.95):
    """After minus before, paired by run (data set, distribution, eps_out and seed on both sides), per
    data set and quantity of CHANGE: the mean difference in points with its `level` t interval over the
    pairs (a pair with a run that diverged has no accuracy and is left out), and the pairs."""
    from .stats import finals, t_interval
    keys = ["dataset", "distribution", "eps_out", "seed"]
    if not before or not after:
        return pd.DataFrame([], columns=CHANGE_COLUMNS)
    both = finals(after).set_index(keys).join(finals(before).set_index(keys), how="inner",
                                              suffixes=("_after", "_before"))
    rows = []
    for ds, g in both.groupby(level="dataset", sort=False):    # no pair at all: no rows, the empty frame
        for q in CHANGE:
            d = (g[f"{q}_after"] - g[f"{q}_before"]).dropna().tolist()
            rows.append({"dataset": ds, "quantity": q, "pairs": len(d),
                         **dict(zip(("diff", "ci_low", "ci_high"), t_interval(d, level)))})
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS)


def factor_effects(records, level=0.95):
    """What switching each factor from its former default to the author's choice does, paired: every
    run at the author's level against the run with the same other factors, distribution and seed at
    the former one. Per factor and quantity (final, best, late_std, and HTS minus scalar final
    accuracy per variant and seed), the mean difference with its `level` t interval, and the runs
    that never started at each level."""
    from .stats import t_interval
    f = _frame(records)
    rows = []
    for i, factor in enumerate(FACTORS):
        old = FORMER[i]

        def rest(v, i=i):
            return v[:i] + v[i + 1:]
        f["rest"], f["is_old"] = f.variant.map(rest), f.variant.map(lambda v, i=i, old=old: v[i] == old)
        keys = ["rest", "distribution", "seed"]
        new, base = f[~f.is_old].set_index(keys), f[f.is_old].set_index(keys)
        both = new.index.intersection(base.index)
        for q in ("final_acc", "best_acc", "late_std"):
            d = (new.loc[both, q] - base.loc[both, q]).dropna().tolist()
            rows.append({"factor": factor, "quantity": q, "pairs": len(d),
                         **dict(zip(("diff", "ci_low", "ci_high"), t_interval(d, level)))})
        gap = f.assign(h=f.distribution != "scalar").pivot_table(index=["rest", "is_old", "seed"], columns="h",
                                                                   values="final_acc", aggfunc="mean")
        if True in gap and False in gap:
            g = (gap[True] - gap[False]).unstack("is_old").dropna()
            d = (g[False] - g[True]).tolist() if True in g and False in g else []
            rows.append({"factor": factor, "quantity": "hts_minus_scalar", "pairs": len(d),
                         **dict(zip(("diff", "ci_low", "ci_high"), t_interval(d, level)))})
        a, b = int(new.loc[both].never_started.sum()), int(base.loc[both].never_started.sum())
        rows.append({"factor": factor, "quantity": "never_started", "diff": float(a - b) if len(both) else float("nan"),
                     "ci_low": float("nan"), "ci_high": float("nan"), "pairs": len(both), "former": b, "author": a})
    return pd.DataFrame(rows)


def paper_size(spec="ablation_paper", datasets=None):
    """How many runs a spec holds at the paper's protocol (stage 2's by default), for some data sets."""
    from .experiments import grid_configs, load_spec
    return len(grid_configs(load_spec(spec), "paper", datasets=datasets))


def stage2_text(table, done, total, runs_each, margin=MARGIN):
    """Stage 2's outcome in one sentence: `decide`'s choice once all `total` runs are archived, else
    how far it has got (a partial stage 2 is not judged: a variant's score sums over both data sets),
    and, where the former defaults' runs are complete and some failed, what that already settles."""
    if done >= total:
        return decision_text(*decide(table, margin))
    text = f"Stage 2 is under way: {done} of {total} runs are archived, and the rule decides when all are."
    former = table[table.variant == FORMER]
    if len(former) and former.runs.iloc[0] >= runs_each and former.failed.iloc[0] > 0:
        text += (f" The defaults before the ablation already had {plural(int(former.failed.iloc[0]), 'failed run')} of "
                 f"{int(former.runs.iloc[0])}: by the rule they stay only if every other variant has a failed run too.")
    return text


def same_runs(before, after):
    """The records of `before` whose run (data set, distribution, eps_out, seed) `after` also holds:
    a partial re-run is compared with the same runs of the archive it replaces, not all of them."""
    def run(r):
        c = r["config"]
        return c["dataset"], c["distribution"], float(c["eps_out"]), c["seed"]
    keep = {run(r) for r in after}
    return [r for r in before if run(r) in keep]


def decision_text(chosen, adopted, reason):
    """`decide`'s outcome in one sentence for the fidelity page."""
    if adopted and not overrides(chosen):
        return (f"The rule adopted {name(chosen)}: {reason}. It became the package's default set-up once "
                "Table 1 had been trained again at it.")
    if adopted:
        return (f"The rule adopts {name(chosen)}: {reason}. It becomes the package's default set-up once "
                "Table 1 has been trained again at it.")
    return f"The defaults stay ({name(FORMER)}): {reason}."


def changed(v):
    """The Config fields where variant `v` differs from the defaults before the ablation (FORMER):
    what sets `v` up whatever the package's defaults are now (the re-run's spec is written with it)."""
    return {k: x for k, x, old in zip(FACTORS, v, FORMER) if x != old}


def overrides(v):
    """The Config fields that set up variant `v`, where they differ from the package's defaults."""
    from .config import Config
    return {k: x for k, x in zip(FACTORS, v) if getattr(Config(), k) != x}


def set_options(v):
    """The CLI options that set up variant `v` (`--set` for each field that differs from the defaults)."""
    def text(x):        # floats written as floats, as the records' configs show them
        return "none" if x is None else repr(float(x)) if isinstance(x, float) else str(x)
    return " ".join(f"--set {k}={text(x)}" for k, x in overrides(v).items())


def rerun_text(chosen, adopted, done, total, switched, decided=True, short=False):
    """Where Table 1's paper-scale archive stands against the ablation's choice, in one sentence (two
    where the choice is not yet the default). Prose only: `rerun_commands` gives the commands, shown as
    code, where typography cannot turn `--set` into a dash."""
    if not decided:
        return "Table 1's archive stays at the package's defaults until stage 2 has decided."
    if not adopted:
        return "The defaults did not change, so Table 1's archive stands as it was trained."
    if switched:
        how = "was trained again at them" if done >= total else "is being trained again at them"
        text = f"The package's defaults are now {name(chosen)}, and Table 1 {how} ({done} of {total} runs archived)."
        return text if short else text + " The table below sets it beside the archive made before."
    if short:       # the intro's: progress only
        return (f"{done} of {total} runs of Table 1 are archived at it so far; until all are, this book shows the "
                "archive made before.")
    return (f"{done} of {total} runs of Table 1 (MNIST and Fashion-MNIST, the paper's protocol) are archived at "
            f"{name(chosen)} so far; the package's defaults switch to it when all {total} are, and until then "
            "every other page shows the archive made before the ablation. The commands below train what is "
            "missing and run any other spec at the chosen set-up.")


def rerun_commands(chosen, adopted, switched):
    """The shell commands that run the chosen set-up while it is not yet the default ("" otherwise):
    the re-run's own spec, and the options that put any other spec on it."""
    if not adopted or switched:
        return ""
    options = set_options(chosen)
    return ("# train what Table 1's re-run still misses (resumable; --dry-run says what is left)\n"
            "hts-ep sweep table1_rerun --profile paper\n"
            "# any other spec at the chosen set-up (Python: overrides=ablation.overrides(chosen))\n"
            f"hts-ep sweep SPEC {options}\n"
            f"hts-ep table SPEC {options}\n")
