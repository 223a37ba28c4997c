"""Tables as text for the pages: numbers formatted, and every cell without a number saying why
(a gap, a diverged cell, a spread over one run), never NaN."""
import math

import pandas as pd

from . import measure, wording
from .stats import CONDITIONS, finals, stability
from .stats import table1 as table1_numbers
from .wording import LABELS


def fmt(mean, std):
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or std != std:             # a single run has no spread: say so, never "± nan"
        return f"{mean:.2f} (1 run, no spread)"
    return f"{mean:.2f} ± {std:.2f}"


ONE_SURVIVOR = "—¹"     # a seed std over a single surviving run: the page's footnote says so
CELL_FORMATS = {"runs": "{:.0f}", "final_acc": "{:.2f}", "seed_std": "{:.2f}", "late_std": "{:.2f}",
                "divergence_rate": "{:.2f}", "residual_free": "{:.1e}", "residual_nudge": "{:.1e}"}
def readable(table, survivors, formats=None):
    """`table` (one row per cell) as text for a page, each column through its entry of `formats`
    (else CELL_FORMATS, else 4 significant digits). `survivors`: per row, the runs whose weights
    stayed finite. A missing value reads "diverged" where none did, ONE_SURVIVOR for the seed std
    where one did (a spread needs two runs), and "—" elsewhere (undefined, e.g. a late std over
    a one-epoch window): never NaN."""
    formats = {**CELL_FORMATS, **(formats or {})}
    survivors = list(survivors)
    if len(survivors) != len(table):
        raise ValueError(f"{len(survivors)} survivor counts for {len(table)} rows")
    out = table.astype(object).copy()
    for j, col in enumerate(table.columns):
        fmt_ = formats.get(col, "{:.4g}")
        for i, (v, alive) in enumerate(zip(table[col], survivors)):
            if not pd.isna(v):
                out.iat[i, j] = fmt_.format(v)
            elif alive == 0:
                out.iat[i, j] = "diverged"
            else:
                out.iat[i, j] = ONE_SURVIVOR if col == "seed_std" and alive == 1 else "—"
    return out


def stability_table(records, by=("dataset", "distribution", "eps_out", "mu"), formats=None):
    """`stability(records, by)` indexed by `by`, as text through `readable`."""
    by = list(by)
    m = stability(records, by)
    if not len(m):
        return m.set_index(by)
    f = finals(records)
    alive = f.assign(alive=~f.diverged).groupby(by).alive.sum().rename("survivors").reset_index()
    m = m.merge(alive, on=by, how="left")
    return readable(m.drop(columns="survivors").set_index(by), m.survivors.fillna(0), formats)




def table1(records, datasets=("mnist", "kmnist", "fashion-mnist"), eps_outs=(0.15, 0.2, 0.25, 0.3, 0.35),
           gaps=None, gap_label="no data", missing="not run", stat="final"):
    """stats.table1 as text: "mean ± std" per cell; a cell without runs reads "gap: `gap_label`"
    for a data set in `gaps` (dataset -> reason), else "gap: `missing`"; diverged runs counted."""
    means, stds, counts, runs = table1_numbers(records, datasets, eps_outs, stat)
    display = pd.DataFrame(index=means.index, columns=CONDITIONS, dtype=object)
    for idx in means.index:
        for cond in CONDITIONS:
            n, ok = int(runs.loc[idx, cond]), int(counts.loc[idx, cond])
            if ok:
                text = fmt(means.loc[idx, cond], stds.loc[idx, cond])
                display.loc[idx, cond] = text + (f" ({n - ok} of {n} diverged)" if ok < n else "")
            elif n:
                display.loc[idx, cond] = f"diverged ({n} of {n})"
            else:
                display.loc[idx, cond] = "gap: " + (gap_label if idx[0] in (gaps or {}) else missing)
    return display.rename(columns=LABELS)


def devices(records):
    """The device each column of Table 1 was trained on: one row per data set, one column per
    condition, e.g. "cpu" or "cpu 15, cuda (NVIDIA H200) 10" where a column mixes them."""
    from .sources import device_of
    from .wording import DATASET_LABELS
    counts = {}
    for r in records:
        c = r["config"]
        cell = counts.setdefault((c["dataset"], c["distribution"]), {})
        cell[device_of(r)] = cell.get(device_of(r), 0) + 1
    rows = {}
    for (ds, cond), cell in counts.items():
        text = next(iter(cell)) if len(cell) == 1 else ", ".join(f"{d} {n}" for d, n in sorted(cell.items()))
        rows.setdefault(DATASET_LABELS[ds], {})[LABELS[cond]] = text
    order = [DATASET_LABELS[d] for d in DATASET_LABELS if DATASET_LABELS[d] in rows]
    return pd.DataFrame(rows).T.reindex(index=order, columns=[LABELS[c] for c in CONDITIONS]).astype(object).fillna("—")


def pretty(frame):
    """Table 1's (data set, eps_out) index as the pages print it."""
    from .wording import DATASET_LABELS
    frame = frame.copy()
    frame.index = frame.index.set_names(["data set", "ε_out"])
    return frame.rename(index=DATASET_LABELS, level=0).rename(index=lambda e: f"{e:.2f}", level=1)


def beside_paper(records, stat="best", **labels):
    """Table 1 at `stat` with the paper's cell beside each of ours (text)."""
    from .stats import paper_table1
    ours = table1(records, stat=stat, **labels)
    paper = paper_table1()
    published = pd.DataFrame({LABELS[c]: [fmt(m, s) for m, s in zip(paper[f"{c}_mean"], paper[f"{c}_std"])]
                              for c in CONDITIONS}, index=ours.index)
    side = pd.concat({LABELS[c]: pd.DataFrame({"this build": ours[LABELS[c]], "paper": published[LABELS[c]]})
                      for c in CONDITIONS}, axis=1)
    return pretty(side)


def differences(comp):
    """stats.comparison as one cell per condition: "ours − paper [95% interval]" in points, the
    difference alone for a single run, "gap" or "diverged" where there is none."""
    from .wording import interval

    def cell(row):
        if row.difference != row.difference:
            return "diverged" if row.runs else "gap"
        return interval(row.difference, row.ci_low, row.ci_high, unit="")
    t = comp.assign(cell=comp.apply(cell, axis=1)).pivot_table(
        index=["dataset", "eps_out"], columns="condition", values="cell", aggfunc="first", sort=False)
    return pretty(t[CONDITIONS].rename(columns=LABELS))


def agreement_by_stat(records):
    """Per data set and statistic: mean of ours and the paper's over the cells, the mean
    difference, cells whose interval holds the paper's value, and the mean seed spreads."""
    from .stats import STATS, agreement, comparison, spreads
    from .wording import DATASET_LABELS, STAT_LABELS
    sp = spreads(records).set_index(["dataset", "stat"])

    def spread(ds, stat, who):      # a single seed per cell has no spread: a dash, as in the other tables
        return f"{sp.loc[(ds, stat), who]:.2f}" if (ds, stat) in sp.index else "—"
    rows = []
    for stat in STATS:
        comp = comparison(records, stat=stat)
        for ds, a in agreement(comp).iterrows():
            if not a.run:
                continue
            cells = comp[(comp.dataset == ds) & comp.difference.notna()]
            rows.append({"data set": DATASET_LABELS[ds], "statistic": STAT_LABELS[stat],
                         "ours (%)": f"{cells['mean'].mean():.2f}", "paper (%)": f"{cells.paper_mean.mean():.2f}",
                         "ours − paper": f"{a.mean_diff:+.2f}",
                         "cells within the paper's interval": f"{int(a.within)} of {int(a.interval)}",
                         "seed std, ours": spread(ds, stat, "ours"), "seed std, paper": spread(ds, stat, "paper")})
    return pd.DataFrame(rows).set_index(["data set", "statistic"]) if rows else pd.DataFrame()


def gains(records, level=0.95):
    """HTS minus scalar per data set for every statistic, with its interval and its direction,
    beside the paper's."""
    from .stats import STATS, hts_gain, paper_gain
    from .wording import DATASET_LABELS, STAT_LABELS, direction, interval
    paper = paper_gain()
    rows = []
    for stat in STATS:
        for ds, g in hts_gain(records, level, stat).iterrows():
            if g.seeds:
                rows.append({"data set": DATASET_LABELS[ds], "statistic": STAT_LABELS[stat],
                             "HTS − scalar, 95% interval": interval(g.gap, g.ci_low, g.ci_high),
                             "seeds": int(g.seeds),
                             "verdict": direction(g.ci_low, g.ci_high, "HTS higher", "HTS lower"),
                             "paper": f"{paper[ds]:+.2f} points"})
    return pd.DataFrame(rows).set_index(["data set", "statistic"]) if rows else pd.DataFrame()


def outcomes(records):
    """stats.outcomes per data set and condition, as the pages print it."""
    from .stats import outcomes as counts
    from .wording import DATASET_LABELS
    t = counts(records)
    if not len(t):
        return t
    t = t.assign(dataset=t.dataset.map(DATASET_LABELS), distribution=t.distribution.map(LABELS))
    return t.rename(columns={"dataset": "data set", "never_started": "never started"}).set_index(
        ["data set", "distribution"])


def export(records, folder, name):
    """Write Table 1 at every statistic (one row per cell and statistic, beside the paper's) and
    the runs' per-epoch records to `folder`/`name`-table1.csv and `name`-runs.csv, for the page's
    download links; returns both file names."""
    from pathlib import Path

    from .stats import STATS, comparison, curves
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.concat([comparison(records, stat=s).assign(stat=s) for s in STATS], ignore_index=True)
    files = (f"{name}-table1.csv", f"{name}-runs.csv")
    table.to_csv(folder / files[0], index=False, float_format="%.4f")
    curves(records).to_csv(folder / files[1], index=False, float_format="%.6g")
    return files


def summary(numbers, stat="best"):
    """The introduction's table (claim, paper, this build, verdict) from stats.summary's dict; a claim
    that runs which never started could carry is repeated over the runs that started."""
    from .wording import DATASET_LABELS, STAT_LABELS, claims
    rows = []
    for ds, s in numbers.items():
        c, name = claims(s), DATASET_LABELS[ds]
        rows.append({"claim": f"{name}: accuracy, ours minus the paper's ({STAT_LABELS[stat]}, mean over "
                              f"{s['cells']} cells)", "paper": f"{s['paper']:.2f}%",
                     "this build": f"{s['ours']:.2f}%, {c['accuracy_text']}",
                     "verdict": f"{s['within']} of {s['interval']} cells within the paper's 95% interval"})
        rows.append({"claim": f"{name}: HTS − scalar ({STAT_LABELS[stat]}, paired by seed)",
                     "paper": f"{s['paper_gain']:+.2f} points", "this build": c["gain_text"],
                     "verdict": c["gain_verdict"]})
        if s["never_started"]:
            rows.append({"claim": f"{name}: the same, runs that started only", "paper": "",
                         "this build": c["gain_started_text"], "verdict": c["gain_started_verdict"]})
        rows.append({"claim": f"{name}: late spread, HTS − scalar (the stability endpoint)", "paper": "not reported",
                     "this build": c["endpoint_text"], "verdict": c["endpoint_verdict"]})
        if s["never_started"]:
            rows.append({"claim": f"{name}: the same, runs that started only", "paper": "",
                         "this build": c["endpoint_started_text"], "verdict": c["endpoint_started_verdict"]})
        rows.append({"claim": f"{name}: runs that never started, diverged or collapsed", "paper": "not reported",
                     "this build": c["never_started_text"] + f"; {s['broke']} of {s['runs']} diverged or collapsed",
                     "verdict": "—"})
        if c["devices_text"]:
            rows.append({"claim": f"{name}: where the runs were trained", "paper": "not reported",
                         "this build": c["devices_text"], "verdict": "a column's device is confounded with it"})
    return pd.DataFrame(rows).style.hide(axis="index")


def matched_step(table):
    """stats.matched_step as the stability page prints it, with the direction its test supports."""
    from .wording import rates_verdict
    if not len(table):
        return table
    t = pd.DataFrame({
        "largest step L": table.eps_max.map("{:g}".format), "ε_out": table.eps_out.map(str),
        "scalar: broke": [f"{a} of {n}" for a, n in zip(table.scalar_broke, table.scalar_runs)],
        "log-normal: broke": [f"{a} of {n}" for a, n in zip(table.hts_broke, table.hts_runs)],
        "scalar: accuracy (%)": table.scalar_acc.map(lambda v: "all diverged" if v != v else f"{v:.1f}"),
        "log-normal: accuracy (%)": table.hts_acc.map(lambda v: "all diverged" if v != v else f"{v:.1f}"),
        "verdict": [rates_verdict(r) for r in table.itertuples()]})
    return t.set_index(["largest step L", "ε_out"])


def spread_gaps(table):
    """stats.spread_gaps with each interval's direction."""
    from .wording import DATASET_LABELS, direction, interval
    if not len(table):
        return table
    t = pd.DataFrame({"data set": table.dataset.map(DATASET_LABELS), "σ_ε": table.sigma_eps.map("{:g}".format),
                      "HTS − scalar, final accuracy": [interval(g, lo, hi) for g, lo, hi in
                                                       zip(table.gap, table.ci_low, table.ci_high)],
                      "seeds": table.seeds,
                      "verdict": [direction(lo, hi, "HTS higher", "HTS lower")
                                  for lo, hi in zip(table.ci_low, table.ci_high)]})
    return t.set_index(["data set", "σ_ε"])


def endpoint(table, records):
    """stats.stability_endpoint per data set with its direction; a data set whose runs have no late
    window (one epoch) says so instead of showing nothing."""
    from .wording import DATASET_LABELS, LATE_UNDEFINED, direction, interval
    rows = {}
    for ds in [d for d in DATASET_LABELS if d in {r["config"]["dataset"] for r in records}]:
        if ds in table.index:
            g = table.loc[ds]
            rows[DATASET_LABELS[ds]] = {"late spread, HTS − scalar": interval(g.gap, g.ci_low, g.ci_high),
                                        "seeds": int(g.seeds), "verdict": direction(
                                            g.ci_low, g.ci_high, "HTS less stable", "HTS more stable")}
        else:
            rows[DATASET_LABELS[ds]] = {"late spread, HTS − scalar": LATE_UNDEFINED, "seeds": 0, "verdict": "—"}
    return pd.DataFrame(rows).T


def calibration(table):
    """stats.calibration_table as text: dashes where runs cannot give a value, never NaN."""
    shown = table.drop(columns=["quiet"], errors="ignore")
    survivors = (shown.runs - shown.get("diverged", 0)).tolist()
    return readable(shown, survivors, {"diverged": "{:.0f}", "off_target": "{:.2f}"})


def fashion_check(records, behind):
    """The calibration's Fashion-MNIST check per candidate: final accuracy, how far behind the best,
    fell behind (`behind`: stats.fashion_failures), collapsed, diverged, epochs."""
    from .stats import RATES, finals
    if not records:
        return pd.DataFrame()
    f = finals(records).set_index(RATES)
    f["behind_best"] = f.final_acc.max() - f.final_acc
    f["fell_behind"] = [idx in behind for idx in f.index]
    f["epochs"] = [len(r["epochs"]) for r in records]
    return f[["final_acc", "behind_best", "fell_behind", "collapsed", "diverged", "epochs"]].round(2)


def legacy_pairs(legacy, finalists):
    """Runs repeated with the same rates and seed under the old (end) and the new (branch) nudge:
    both final accuracies."""
    from .stats import RATES, finals
    old, new = finals(legacy), finals(finalists)
    pair = old.merge(new, on=["dataset", "distribution", "eps_out", "mu", *RATES, "seed"], suffixes=("_end", "_branch"))
    return pair.set_index([*RATES, "seed"])[["final_acc_end", "final_acc_branch"]].round(2)


NOTES = {ONE_SURVIVOR: f"{ONE_SURVIVOR[-1]} A single run with finite weights (one seed by design, or the others "
                       "diverged): a seed std needs two.",
         "—": "— Undefined: a late std over a one-epoch window, or no run with finite weights."}


def footnotes(*frames):
    """Markdown footnotes for the marks that `frames` (from `readable`) use, or None."""
    used = [text for mark, text in NOTES.items() if any((f.astype(str) == mark).any().any() for f in frames)]
    return "\n\n".join(used) or None


def variants(table, columns):
    """An ablation table (ablation.screen or judge) as text: one row per variant, in its order."""
    shown = table.set_index("name")[list(columns)]
    return shown.rename_axis("variant").round(2)


def stage2(table, variants):
    """ablation.judge as the fidelity page prints it, one row per variant of `variants` (those without
    runs yet too): its runs, failed runs and score (points), and per data set the gaps to the paper,
    the seed spread and the HTS error (columns: data set, quantity); dashes where there is no value
    yet (no score before a variant's runs are complete). The defaults before the ablation are marked."""
    from .ablation import FORMER, name
    from .wording import DATASET_LABELS
    t = table.set_index("variant").reindex(variants)
    t["runs"], t["failed"] = t.runs.fillna(0).astype(int), t.failed.fillna(0).astype(int)
    t.index = [name(v) + (" (the defaults before)" if v == FORMER else "") for v in variants]
    t = t.rename_axis("variant")
    columns = {("", "runs"): t.runs, ("", "failed"): t.failed}
    for ds in DATASET_LABELS:
        for q in ("gap best", "gap final", "spread", "HTS error"):
            if f"{ds} {q}" in t:
                columns[(DATASET_LABELS[ds], q + " (points)")] = t[f"{ds} {q}"]
    columns[("", "score (points)")] = t.score
    columns[("", "trained on: runs")] = t.devices
    out = pd.DataFrame(columns)
    return out.round(2).astype(object).where(out.notna(), "—")


def before_after(frame):
    """ablation.before_after as the fidelity page prints it: per data set and statistic, mean accuracy and
    seed std before and after the ablation's choice, and the runs that never started of those compared."""
    from .wording import DATASET_LABELS, STAT_LABELS
    if not len(frame) or set(frame["set-up"]) != {"before", "after"}:
        return "No runs of Table 1 on both sides yet."
    frame = frame[frame.dataset.isin(set(frame[frame["set-up"] == "before"].dataset)
                                     & set(frame[frame["set-up"] == "after"].dataset))]
    t = frame.pivot_table(index=["dataset", "stat"], columns="set-up", sort=False,
                          values=["accuracy", "seed_std", "never_started", "runs"])
    out = pd.DataFrame({
        "accuracy before (%)": t["accuracy"]["before"], "accuracy after (%)": t["accuracy"]["after"],
        "seed std before": t["seed_std"]["before"], "seed std after": t["seed_std"]["after"],
        "never started before": [f"{int(a)} of {int(n)}" for a, n in zip(t["never_started"]["before"],
                                                                         t["runs"]["before"])],
        "never started after": [f"{int(a)} of {int(n)}" for a, n in zip(t["never_started"]["after"],
                                                                        t["runs"]["after"])]},
        index=t.index).round(2)
    out.index = out.index.set_levels([[DATASET_LABELS.get(d, d) for d in out.index.levels[0]],
                                      [STAT_LABELS.get(x, x) for x in out.index.levels[1]]])
    return out.rename_axis(["data set", "statistic"])


def effects(table):
    """ablation.effects as the fidelity page prints it."""
    t = table.copy()
    t["level"] = t.level.map(lambda v: f"{v:g}" if isinstance(v, float) else v)
    return t.set_index(["factor", "level"]).round(2)


QUANTITIES = {"final_acc": ("final accuracy", "higher", "lower"),
              "best_acc": ("best-epoch accuracy", "higher", "lower"),
              "late_std": ("late std (swings)", "larger swings", "smaller swings"),
              "hts_minus_scalar": ("HTS − scalar", "HTS gains", "HTS loses")}


def factor_effects(table, levels=None):
    """ablation.factor_effects as the fidelity page prints it: per factor, each paired difference
    (the author's level minus the level before the ablation) with its interval and the direction it supports,
    the runs that never started at each level, and (from ablation.effects, `levels`) HTS minus
    scalar at each level, so that a change in the gap can be read against the gap itself."""
    from .ablation import AUTHOR, FACTORS, FORMER
    from .wording import direction, interval, plural
    rows = []
    for factor, g in table.groupby("factor", sort=False):
        t = g.set_index("quantity")
        old, new = (dict(zip(FACTORS, v))[factor] for v in (FORMER, AUTHOR))
        row = {"factor": f"{factor}: {'none' if old is None else old} → {new}"}
        for q, (label, up, down) in QUANTITIES.items():
            r = t.loc[q] if q in t.index else None
            if r is None or not r.pairs:
                row[label] = "—"
            else:
                way = direction(r.ci_low, r.ci_high, up, down, short=True)
                pairs = plural(int(r.pairs), "pair")
                row[label] = f"{interval(r['diff'], r.ci_low, r.ci_high, unit='')}, {way} ({pairs})"
        ns = t.loc["never_started"]
        row["never started, the former level"] = f"{int(ns.former)} of {int(ns.pairs)}"
        row["never started, the author's"] = f"{int(ns.author)} of {int(ns.pairs)}"
        if levels is not None:
            lv = levels[levels.factor == factor].set_index("level").hts_minus_scalar
            row["HTS − scalar at each level"] = ", ".join(
                f"{'none' if k is None else k}: {lv.get('none' if k is None else k, float('nan')):+.2f}"
                for k in (old, new))
        rows.append(row)
    return pd.DataFrame(rows).set_index("factor")


# -- the mechanism chapters (05 relaxation, 07 timing, 08 gradients): `measure`'s results ---------

def timing_table(result):
    """The timing ablation per data set, nudging scheme and spread: the scalar baseline's final
    accuracy, how many heterogeneous runs at that spread broke, then HTS minus scalar and (nudging
    from the end) end minus branch for the heterogeneous runs. A comparison in which no run broke
    gives its accuracy difference paired by seed, with its interval and direction; one in which any
    broke, its break counts and Fisher's exact test instead (`wording.comparison_text`)."""
    from .wording import DATASET_LABELS, SCHEME_LABELS, comparison_text
    gap, runs, cells = result["hts_gap"], result["runs"], result["cells"]
    if not len(gap):
        return pd.DataFrame()
    schemes = measure.scheme_gap(runs).set_index(["dataset", "sigma_eps"])
    out = []
    for r in gap.itertuples():
        ds, scheme, s = r.dataset, r.nudge_from, r.sigma_eps
        hts = {"dataset": ds, "distribution": list(measure.HTS), "sigma_eps": s}
        k, n = measure.broke(runs, {**hts, "nudge_from": scheme})
        ks, ns = measure.broke(runs, {"dataset": ds, "distribution": "scalar", "nudge_from": scheme})
        sc = cells[(cells.dataset == ds) & (cells.nudge_from == scheme) & (cells.distribution == "scalar")]
        scalar = (fmt(sc.final_acc.mean(), sc.seed_std.mean()) if len(sc) else "not run") + (
            f" ({ks} of {ns} broke)" if ks else "")
        row = {"data set": DATASET_LABELS[ds], "nudge": SCHEME_LABELS[scheme], "σ_ε": f"{s:g}",
               "scalar: final accuracy (%)": scalar, "heterogeneous runs that broke": f"{k} of {n}",
               "HTS − scalar (points)": comparison_text({"gap": r.gap, "low": r.ci_low, "high": r.ci_high},
                                                        (k, n, ks, ns), "HTS higher", "HTS lower",
                                                        ("heterogeneous", "scalar"), often=HTS_OFTEN),
               "end − branch, heterogeneous (points)": "—"}
        if scheme == "end":
            kb, nb = measure.broke(runs, {**hts, "nudge_from": "branch"})
            g = schemes.loc[(ds, s)] if (ds, s) in schemes.index else None
            row["end − branch, heterogeneous (points)"] = comparison_text(
                g, (k, n, kb, nb), "higher from the end", "lower from the end", ("from the end", "branching"))
        out.append(row)
    order = {label: i for i, label in enumerate(DATASET_LABELS.values())}
    nudges = {label: i for i, label in enumerate(SCHEME_LABELS.values())}
    t = pd.DataFrame(out)
    t = t.assign(_o=t["data set"].map(order), _n=t.nudge.map(nudges), _s=t["σ_ε"].astype(float)).sort_values(
        ["_o", "_n", "_s"], kind="stable").drop(columns=["_o", "_n", "_s"])
    return t.set_index(["data set", "nudge", "σ_ε"])


def spans_table(result, spread):
    """`measure.residual_spans` of the timing runs at `spread` as text, per data set and scheme."""
    from .wording import DATASET_LABELS, SCHEME_LABELS
    t = measure.residual_spans(result["runs"], result["curves"], spread)
    if not len(t):
        return t

    def res(v):
        return "no run left" if v != v else f"{v:.1e}"
    columns = {"data set": t.dataset.map(DATASET_LABELS), "nudge": t.nudge_from.map(SCHEME_LABELS),
               "kept runs": [f"{k} of {n}" for k, n in zip(t.kept, t.runs)], "residual, epoch 1": t["first"].map(res)}
    if t.epochs.max() > 1:
        columns[f"residual, epoch {int(t.epochs.max())}"] = t["last"].map(res)
    return pd.DataFrame(columns).set_index(["data set", "nudge"])


HTS_OFTEN = ("heterogeneous runs broke more often", "scalar runs broke more often")


def relaxation_table(result):
    """`measure.relaxation`'s end numbers per state and distribution, mean over seeds."""
    from .wording import STATE_LABELS
    ends = result["ends"]
    names = {"free": "free, last step", "nudged": "nudged, last step", "continued": "continued, last step",
             "to_fixed_point": "free end to fixed point (max |Δh|)",
             "relative_to_fixed_point": "free end to fixed point (relative)", "nudge_moved": "nudge moved h (max)"}
    t = ends.groupby(["state", "distribution"], sort=False)[list(names)].mean().rename(columns=names)
    t = t.rename(index=STATE_LABELS, level=0).rename(index=wording.LABELS, level=1)
    return t.rename_axis(["weights", "time steps"])


def same_table(result):
    """The same-weights test per distribution, mean over seeds."""
    names = {"state_max": "max |h0 − h0(scalar)|", "fixed_point_max": "max |h − h(scalar)|, continued",
             "state": "h0: relative difference", "signal": "hβ − h0: relative difference"}
    s = result["same"]
    t = s[s.distribution != "scalar"].groupby("distribution", sort=False)[list(names)].mean().rename(columns=names)
    return t.rename(index=wording.LABELS).rename_axis("time steps")


def alignment_table(result, swept, beta, t_free):
    """Cosines at the configured beta and free-phase length (mean ± std over batches) per network at
    spread `swept` and the scalar one, both states, schemes and layers, beside its test accuracy."""
    from .wording import LAYER_LABELS, SCHEME_LABELS, STATE_LABELS
    rows, acc = result["rows"], result["accuracy"]
    cells = measure.batch_cells(measure.select(rows, {"loss": "bce", "beta": beta, "t_free": t_free}))
    cells = cells[(cells.distribution == "scalar") | (cells.sigma_eps == swept)]
    t = cells.assign(text=[f"{c:.3f} ± {s:.3f}" for c, s in zip(cells.cosine, cells.cosine_std)]).pivot_table(
        index="distribution", columns=["state", "scheme", "param"], values="text", aggfunc="first")
    t = t.reindex([d for d in measure.CONDITIONS if d in t.index])
    a = acc[(acc.distribution == "scalar") | (acc.sigma_eps == swept)].groupby("distribution").accuracy.mean()
    t[("", "", "test accuracy (%)")] = [f"{a[d]:.1f}" for d in t.index]
    t.columns = pd.MultiIndex.from_tuples([(STATE_LABELS.get(s, s), SCHEME_LABELS.get(n, n), LAYER_LABELS.get(p, p))
                                           for s, n, p in t.columns], names=["weights", "nudge", "layer"])
    return t.rename(index=wording.LABELS).rename_axis("time steps")


def losses_table(result, swept, beta, t_free, scheme=None):
    """Cosine and norm ratio per loss and layer, trained networks, under nudging scheme `scheme` (the
    one they were trained with; default: the package's)."""
    from .config import Config
    from .wording import LAYER_LABELS, LOSS_LABELS
    scheme = scheme or Config().nudge_from
    rows = measure.select(result["rows"], {"state": "trained", "scheme": scheme, "beta": beta, "t_free": t_free})
    rows = rows[(rows.distribution == "scalar") | (rows.sigma_eps == swept)]
    t = rows.groupby(["distribution", "loss", "param"])[["cosine", "ratio"]].mean().unstack(["loss", "param"])
    t = t.reorder_levels([1, 2, 0], axis=1)
    t = t[sorted(t.columns, key=lambda c: (list(LOSS_LABELS).index(c[0]), c[1], c[2]))]
    t.columns = pd.MultiIndex.from_tuples([(LOSS_LABELS[loss], LAYER_LABELS[p], "norm ratio" if q == "ratio" else q)
                                           for loss, p, q in t.columns], names=["loss", "layer", ""])
    t = t.reindex([d for d in measure.CONDITIONS if d in t.index])
    return t.rename(index=wording.LABELS).rename_axis("time steps")


COLUMNS = {"runs": "runs", "diverged": "diverged", "divergence_rate": "broke (share)",
           "final_acc": "final accuracy (%)", "best_acc": "best-epoch accuracy (%)", "seed_std": "seed std (points)",
           "late_std": "late std (points)", "residual_free": "free residual", "residual_nudge": "nudged residual",
           "off_target": "from the target (points)", "behind_best": "behind the best (points)",
           "fell_behind": "fell behind", "collapsed": "collapsed", "epochs": "epochs", "lift": "best − final (points)",
           "best_epoch": "best epoch", "unit": "λ_max, unit inputs", "standardised": "λ_max, standardised",
           "eta1_gain": "η1 gain", "final_acc_end": "final accuracy, nudge from the end (%)",
           "final_acc_branch": "final accuracy, branching (%)"}
INDEX = {"dataset": "data set", "distribution": "distribution", "nudge_from": "nudge", "eps_min": "ε_min",
         "eps_max": "largest step", "eps_out": "ε_out", "sigma_eps": "σ_ε", "eta1": "η1", "eta2": "η2", "beta": "β",
         "mu": "μ", "seed": "seed"}


def labelled(frame, digits=None):
    """`frame` with a reader's labels: columns and index levels named in words (COLUMNS, INDEX), data
    sets and conditions by their names; with `digits`, numbers rounded and a missing value a dash
    (undefined, e.g. a late std over one epoch), never NaN."""
    from .wording import DATASET_LABELS
    t = frame.rename(columns=COLUMNS)
    if digits is not None:
        t = t.round(digits).astype(object).where(t.notna(), "—")
    names = list(t.index.names)
    for level, name in enumerate(names):
        if name in ("dataset", "distribution"):
            mapping = DATASET_LABELS if name == "dataset" else LABELS
            t = t.rename(index=mapping, level=level if t.index.nlevels > 1 else None)
    t.index = t.index.set_names([INDEX.get(n, n) for n in names])
    return t
