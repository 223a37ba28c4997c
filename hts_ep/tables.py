"""Tables as text for the pages: numbers formatted, and every cell without a number saying why
(a gap, a diverged cell, a spread over one run), never NaN."""
import math

import pandas as pd

from .stats import CONDITIONS, finals, stability, table1 as table1_numbers
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
