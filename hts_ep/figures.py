"""One function per figure of the book: each takes the tidy frames of `stats` (or of `measure`, for
the mechanism chapters 05 relaxation, 07 timing and 08 gradients) and returns a matplotlib figure;
`publish` glues it for its page. One style, one colour per condition."""
import math

import numpy as np

from .stats import CONDITIONS
from .wording import DATASET_LABELS, LABELS

COLORS = {"scalar": "0.25", "normal": "tab:blue", "lognormal": "tab:orange", "gamma": "tab:green"}
SCHEMES = {"branch": ("-", "o", None), "end": ("--", "s", "none")}     # line, marker, face
ONE_SCHEME = SCHEMES["branch"]          # the style of a figure whose cells have no scheme
ORDER = ["scalar", *CONDITIONS[:3]]     # the scalar baseline first, then the paper's order
STATE_TITLES = {"fresh": "freshly initialised", "trained": "after training"}
LAYER_TITLES = {"layer1": "hidden layer (W1, b1)", "layer2": "output layer (W2, b2)"}
OFFSET = {"scalar": -0.18, "normal": -0.06, "lognormal": 0.06, "gamma": 0.18}    # marks side by side


def style():
    """One figure style for the book."""
    import matplotlib.pyplot as plt
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
                         "font.size": 9, "legend.frameon": False})


def publish(fig, name, legend_from=None, top=None, ncol=4):
    """Lay out `fig`, glue it under `name` for the page's {glue:figure}, and close it.

    `legend_from`: an axes whose handles make one legend for the whole figure, above `top`
    (the fraction of the height left to the panels)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue
    if legend_from is not None:
        handles, labels = legend_from.get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=ncol, bbox_to_anchor=(0.5, 1.0), fontsize=7.5)
    if not fig.get_constrained_layout():
        fig.tight_layout(rect=(0, 0, 1, top) if top else None)
    glue(name, fig, display=False)
    plt.close(fig)


def _grid(nrows, ncols, width, height, **kw):
    import matplotlib.pyplot as plt
    return plt.subplots(max(1, nrows), max(1, ncols), figsize=(width * max(1, ncols), height * max(1, nrows)),
                        squeeze=False, **kw)


def _panels(n, width, height, **kw):
    return _grid(1, n, width, height, **kw)


def _where(frame, where):
    for k, v in where.items():
        frame = frame[frame[k].isin(v) if isinstance(v, (list, tuple)) else frame[k] == v]
    return frame


def _order(conditions):
    """The scalar baseline first, then the heterogeneous distributions in the paper's order."""
    return [c for c in ORDER if c in set(conditions)]


DODGE = {"scalar": 0.0, "normal": -1.0, "lognormal": 0.0, "gamma": 1.0}    # x shifts, in units of `dodge`


def _bars(values, err, limits=None, log=False):
    """Error bars [below, above] of ± `err` around `values`, clipped to `limits` (low, high) and, on
    a log axis, stopping at a tenth of the value above zero."""
    values, err = np.asarray(values, float), np.asarray(err, float)
    below, above = err.copy(), err.copy()
    if limits is not None:
        below = np.minimum(below, np.maximum(values - limits[0], 0))
        above = np.minimum(above, np.maximum(limits[1] - values, 0))
    if log:
        below = np.minimum(below, 0.9 * values)
    return np.nan_to_num(np.vstack([below, above]))


def time_steps(draws, fractions, c):
    """Histograms of the hidden time steps of each distribution (`draws`: name -> samples), the
    scalar value and the clipping bounds of Config `c`, each panel with its clipped fractions
    (`fractions`: stats.clipping's table)."""
    fig, axes = _panels(len(draws), 3.4, 3.1, sharey=True)
    bins = np.linspace(0, c.eps_max * 1.06, 80)
    for ax, (fam, eps) in zip(axes[0], draws.items()):
        ax.hist(np.asarray(eps), bins=bins, density=True, color=COLORS[fam], alpha=0.8)
        ax.axvline(c.mu, color=COLORS["scalar"], ls="--", lw=1.2, label=f"scalar ε = μ = {c.mu:g}")
        for b in (c.eps_min, c.eps_max):
            ax.axvline(b, color="crimson", ls=":", lw=1.2)
        f = fractions.loc[fam]
        ax.text(0.98, 0.97, "\n".join(
            f"at ε_{b} = {getattr(c, 'eps_' + b):g}:\n  {f[f'sampled at eps_{b} (%)']:.2f}% "
            f"(expected {f[f'expected at eps_{b} (%)']:.2f}%)" for b in ("min", "max")),
            transform=ax.transAxes, ha="right", va="top", fontsize=7, bbox=dict(boxstyle="round", fc="white", ec="0.8"))
        ax.set_title(LABELS[fam])
        ax.set_xlabel("hidden time step ε")
    axes[0, 0].set_ylabel("density")
    axes[0, 0].legend(loc="center right", fontsize=7.5)
    return fig


def against_paper(comp, label):
    """Every cell of Table 1, ours minus the paper's (points) with its 95% Welch interval, one
    panel per data set with runs; `comp` from stats.comparison, `label` names the statistic."""
    comp = comp[comp.difference.notna()]
    shown = [d for d in DATASET_LABELS if d in set(comp.dataset)]
    fig, axes = _panels(len(shown), 4.6, 3.3)
    width = 0.8 / len(CONDITIONS)
    for ax, ds in zip(axes[0], shown):
        part = comp[comp.dataset == ds]
        steps = sorted(part.eps_out.unique())
        for k, cond in enumerate(CONDITIONS):
            g = part[part.condition == cond].set_index("eps_out").reindex(steps)
            x = np.arange(len(steps)) + (k - (len(CONDITIONS) - 1) / 2) * width
            low, high = (g.difference - g.ci_low).fillna(0), (g.ci_high - g.difference).fillna(0)
            ax.errorbar(x, g.difference, yerr=[low, high], fmt="o", ms=4, capsize=2, color=COLORS[cond],
                        label=LABELS[cond])
        ax.axhline(0, color="crimson", lw=1, ls="--", label="the paper")
        ax.set_xticks(range(len(steps)), [f"{e:g}" for e in steps])
        ax.set_xlabel("output time step ε_out")
        ax.set_title(DATASET_LABELS[ds])
    axes[0, 0].set_ylabel(f"ours − paper, {label} (points)")
    if shown:
        axes[0, 0].legend(fontsize=7, loc="lower left")
    return fig


def curves(cur, band="std"):
    """Test accuracy per epoch, one row of panels per data set, one panel per output step, one
    line per condition (mean over seeds, band ± one seed std)."""
    import matplotlib.pyplot as plt
    shown = [d for d in DATASET_LABELS if len(cur) and d in set(cur.dataset)]
    steps = sorted(cur.eps_out.unique()) if len(cur) else []
    fig, axes = plt.subplots(max(1, len(shown)), max(1, len(steps)), figsize=(2.3 * max(1, len(steps)),
                             2.5 * max(1, len(shown))), squeeze=False, sharex=True, sharey="row")
    for i, ds in enumerate(shown):
        for j, e in enumerate(steps):
            ax = axes[i, j]
            for cond in CONDITIONS:
                g = cur[(cur.dataset == ds) & (cur.eps_out == e) & (cur.distribution == cond)].groupby("epoch")
                m, s = g.test_acc.mean(), g.test_acc.std(ddof=1).fillna(0)
                ax.plot(m.index, m.values, "-", lw=1.2, color=COLORS[cond], label=LABELS[cond])
                ax.fill_between(m.index, m - s, m + s, color=COLORS[cond], alpha=0.15, lw=0)
            ax.set_title(f"{DATASET_LABELS[ds]}, ε_out = {e:g}", fontsize=8)
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            if j == 0:
                ax.set_ylabel("test accuracy (%)")
            if i == len(shown) - 1:
                ax.set_xlabel("epoch")
        # from the lowest mean a condition reaches after its first epochs: every mean line stays in view
        # (all epochs where a run is shorter than that, as the smoke profile's are)
        part = cur[cur.dataset == ds]
        late = part[part.epoch > 2] if (part.epoch > 2).any() else part
        means = late.groupby(["eps_out", "distribution", "epoch"]).test_acc.mean().dropna()
        if len(means):
            axes[i, 0].set_ylim(max(means.min() - 1, 0), min(means.max() + 1, 100))
    if shown:
        axes[0, 0].legend(fontsize=6.5, loc="lower right")
    return fig


def metrics(cells, columns):
    """Per data set, one panel per (column, label) of `columns` against the output step, one line
    per condition (`cells`: stats.stability by dataset, distribution, eps_out)."""
    import matplotlib.pyplot as plt
    shown = [d for d in DATASET_LABELS if len(cells) and d in set(cells.dataset)]
    fig, axes = plt.subplots(max(1, len(shown)), len(columns), figsize=(2.6 * len(columns), 2.6 * max(1, len(shown))),
                             squeeze=False)
    for i, ds in enumerate(shown):
        for j, (col, label) in enumerate(columns):
            ax = axes[i, j]
            part = cells[cells.dataset == ds]
            for cond in CONDITIONS:
                g = part[part.distribution == cond].sort_values("eps_out")
                ax.plot(g.eps_out, g[col], "o-", ms=3, color=COLORS[cond], label=LABELS[cond])
            if part[col].isna().all():
                ax.text(0.5, 0.5, "undefined\n(too few epochs)", transform=ax.transAxes, ha="center", va="center")
            elif col.startswith("residual"):
                ax.set_yscale("log")
            ax.set_title(f"{DATASET_LABELS[ds]}: {label}", fontsize=8)
            ax.set_xlabel("ε_out")
    if shown:
        axes[0, 0].legend(fontsize=6.5)
    return fig


def paired(table, label, reference=None):
    """HTS minus scalar per data set with its interval (`table`: stats.paired_gap), the paper's
    value as a cross where `reference` (data set -> value) gives one."""
    import matplotlib.pyplot as plt
    t = table[table.gap.notna()]
    fig, ax = plt.subplots(figsize=(4.2, 0.7 + 0.5 * max(1, len(t))))
    y = np.arange(len(t))
    ax.errorbar(t.gap, y, xerr=[(t.gap - t.ci_low).fillna(0), (t.ci_high - t.gap).fillna(0)], fmt="o", capsize=3,
                color="0.2", label="this build, 95% interval over seeds")
    if reference is not None:
        ax.plot([reference.get(d, math.nan) for d in t.index], y, "x", color="crimson", ms=7, label="paper")
    ax.axvline(0, color="0.5", lw=1)
    ax.set_yticks(y, [DATASET_LABELS[d] for d in t.index])
    ax.set_ylim(-0.6, len(t) - 0.4)
    ax.set_xlabel(label)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def breakdown(cells, alive, rows, cols, row_label, col_label, title):
    """Heat maps of the divergence or collapse rate, one per distribution: `cells` (stats.stability
    rows with distribution, `rows`[0] and `cols`[0] names), text the mean final accuracy of the runs
    with finite weights (`alive`: (distribution, row, col) -> %)."""
    row_name, row_values = rows
    col_name, col_values = cols
    dists = _order(cells.distribution)
    fig, axes = _panels(len(dists), 4.2, 3.3, layout="constrained")
    im = None
    for ax, dist in zip(axes[0], dists):
        grid = np.full((len(row_values), len(col_values)), np.nan)
        acc = np.full_like(grid, np.nan)
        for _, r in cells[cells.distribution == dist].iterrows():
            i, j = row_values.index(r[row_name]), col_values.index(r[col_name])
            grid[i, j], acc[i, j] = r.divergence_rate, alive.get((dist, r[row_name], r[col_name]), np.nan)
        im = ax.imshow(grid, origin="lower", cmap="Reds", vmin=0, vmax=1, aspect="auto")
        for i in range(len(row_values)):
            for j in range(len(col_values)):
                text = ("not run" if np.isnan(grid[i, j]) else "all\ndiverged" if np.isnan(acc[i, j])
                        else f"{acc[i, j]:.1f}%")
                ax.text(j, i, text, ha="center", va="center", fontsize=7.5,
                        color="white" if grid[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(col_values)), [f"{v:g}" for v in col_values])
        ax.set_yticks(range(len(row_values)), [f"{v:g}" for v in row_values])
        ax.set_xlabel(col_label)
        ax.set_ylabel(row_label)
        ax.set_title(f"{LABELS[dist]}: {title}", fontsize=8.5)
        ax.grid(False)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label="divergence / collapse rate")
    return fig


def against_spread(cells, column, ylabel, schemes="present", log=False, panels=None, err=None, ncols=None,
                   sharey=False, legend=True, dodge=0.0, limits=None):
    """`column` of `cells` against the spread of the hidden time steps: the three distributions, the
    scalar baseline at spread 0, each scheme of `schemes` (cells' nudge_from; None: `cells` has no
    scheme column; default "present": the schemes `cells` holds) in its line style, error bars
    from column `err` (default: the seed std where `column` is final_acc), a cross on the axis where
    every run of a point diverged (no value).

    One panel per (title, where) of `panels` (`where`: column -> value(s) selecting its rows),
    `ncols` to a row (default: all in one row); default panels: one per data set (`cells`:
    stats.stability by dataset, nudge_from, distribution, sigma_eps). `legend`: a legend in the
    first panel (False: none, for `publish(..., legend_from=fig.axes[0])` above the panels).
    `dodge`: how far apart in x neighbouring distributions' points (and a quarter of it, a
    distribution's two schemes) are drawn, so that equal values do not hide each other (crosses
    included); `limits`: (low, high), the range the error bars are clipped to (an accuracy cannot
    leave [0, 100]). On a log axis a bar stops above zero."""
    if panels is None:
        panels = [(DATASET_LABELS[d], {"dataset": d}) for d in DATASET_LABELS if len(cells) and d in set(cells.dataset)]
    if err is None and column == "final_acc":
        err = "seed_std"
    ncols = min(ncols or len(panels), len(panels)) or 1
    fig, axes = _grid(math.ceil(len(panels) / ncols), ncols, 4.6, 3.3, sharex=True, sharey=sharey)
    spreads = sorted(cells[cells.distribution != "scalar"].sigma_eps.unique()) if len(cells) else []
    if isinstance(schemes, str):        # "present"
        schemes = tuple(s for s in SCHEMES if len(cells) and s in set(cells.nudge_from)) or None
    shown = schemes or (None,)
    for ax, (title, where) in zip(axes.flat, panels):
        part = _where(cells, where)
        for i, scheme in enumerate(shown):
            ls, mk, face = SCHEMES.get(scheme, ONE_SCHEME)
            sub = part if scheme is None else part[part.nudge_from == scheme]
            suffix = f" ({scheme})" if schemes and len(schemes) > 1 else ""
            for cond in _order(sub.distribution):
                g = sub[sub.distribution == cond].sort_values("sigma_eps")
                shift = dodge * (DODGE[cond] + 0.25 * (i - (len(shown) - 1) / 2))
                x = (np.zeros(len(g)) if cond == "scalar" else g.sigma_eps.to_numpy(float)) + shift
                ax.errorbar(x, g[column], yerr=None if err is None else _bars(g[column], g[err].fillna(0), limits, log),
                            ms=4, capsize=3, fmt=mk + ("" if cond == "scalar" else ls), color=COLORS[cond], mfc=face,
                            label=LABELS[cond] + suffix)
                dead = g[g[column].isna()]
                dx = (np.zeros(len(dead)) if cond == "scalar" else dead.sigma_eps.to_numpy(float)) + shift
                ax.plot(dx, [0.03] * len(dead), "x", color=COLORS[cond], ms=7, mew=1.5,
                        transform=ax.get_xaxis_transform())
        ax.set_title(title, fontsize=9)
        ax.set_xticks([0.0, *spreads], ["scalar", *(f"{v:g}" for v in spreads)], fontsize=7.5)
        if log:
            ax.set_yscale("log")
    for ax in axes[-1]:
        ax.set_xlabel("spread of the hidden time steps σ_ε")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    if legend and panels:
        axes[0, 0].legend(fontsize=6.5)
    return fig


# -- the mechanism chapters (05 relaxation, 07 timing, 08 gradients): `measure`'s tables --------

def relaxation_traces(traces, steps):
    """Largest change of a hidden neuron per Euler step (log scale), one panel per state (fresh,
    trained): per distribution the median over seeds (line) and their range (band); free phase
    solid, nudged phase dashed in its shaded window (`measure.relaxation`'s traces and steps)."""
    fig, axes = _grid(1, 2, 5.0, 3.4, sharey=True)
    for ax, state in zip(axes[0], STATE_TITLES):
        part = traces[traces.state == state]
        for d in _order(part.distribution):
            for phase, ls in (("free", "-"), ("nudged", "--")):
                g = part[(part.distribution == d) & (part.phase == phase)].groupby("step").residual
                mid = g.median()
                ax.plot(mid.index, mid.values, ls, color=COLORS[d], lw=1.2, label=LABELS[d] if phase == "free" else "_")
                ax.fill_between(mid.index, g.min(), g.max(), color=COLORS[d], alpha=0.15, lw=0)
        # steps["branch"]: the free step the nudged phase starts from (t_free - t_nudge when it
        # branches off the free run, t_free when it starts from the free end)
        start, stop = steps["branch"], steps["branch"] + steps["t_nudge"]
        ax.axvspan(start + 0.5, stop + 0.5, color="0.9", lw=0, zorder=0)
        for x, text in ((start / 2, "free phase"), ((start + stop) / 2, "nudged")):
            ax.text(x, 0.97, text, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("Euler step t")
        ax.set_title(STATE_TITLES[state])
    axes[0, 0].set_ylabel("max |h[t] − h[t−1]|")
    axes[0, 0].legend(loc="lower left", fontsize=7.5)
    return fig


def residual_epochs(curves, runs, spread, clip=1.0):
    """The free-phase residual per epoch, one line per run (scalar baseline and the three
    distributions at `spread`), one row of panels per data set, one column per scheme. Values above
    `clip` are drawn as triangles near the panel's top edge and runs that diverged as crosses
    there, at the epoch they diverged, side by side per distribution, the count of diverged runs
    in the title: a residual above `clip` has left any equilibrium, and its size says nothing more.
    The y axis is logarithmic only where the values shown span more than two decades
    (`measure.scheme_runs`' curves and runs)."""
    from matplotlib.ticker import MaxNLocator
    shown = [d for d in DATASET_LABELS if len(curves) and d in set(curves.dataset)]
    fig, axes = _grid(len(shown), 2, 4.4, 2.9, sharex=True)
    picked = curves[(curves.distribution == "scalar") | (curves.sigma_eps == spread)] if len(curves) else curves
    chosen = runs[(runs.distribution == "scalar") | (runs.sigma_eps == spread)] if len(runs) else runs
    last = int(curves.epoch.max()) if len(curves) else 1
    for i, ds in enumerate(shown):
        for j, scheme in enumerate(("branch", "end")):
            ax = axes[i, j]
            part = picked[(picked.dataset == ds) & (picked.nudge_from == scheme)]
            kept = part.residual_free[part.residual_free <= clip]
            log = len(kept) and kept.min() > 0 and kept.max() / kept.min() > 100
            for cond in _order(part.distribution):
                for k, (_, run) in enumerate(part[part.distribution == cond].groupby("seed")):
                    r = run.sort_values("epoch")
                    ax.plot(r.epoch, r.residual_free.where(r.residual_free <= clip), "-o", ms=2.5, lw=1,
                            color=COLORS[cond], alpha=0.8, label=LABELS[cond] if k == 0 else "_")
                    over = r[r.residual_free > clip]
                    if len(over):
                        ax.plot(over.epoch + OFFSET[cond], [0.89] * len(over), "^", color=COLORS[cond], ms=6,
                                transform=ax.get_xaxis_transform())
            mine = chosen[(chosen.dataset == ds) & (chosen.nudge_from == scheme)]
            gone = mine[mine.diverged]
            for cond, g in gone.groupby("distribution"):
                ax.plot(g.diverged_epoch + OFFSET[cond], [0.96] * len(g), "x", color=COLORS[cond], ms=7, mew=1.5,
                        transform=ax.get_xaxis_transform())
            if log:         # a strip above the data for the marks
                ax.set_yscale("log")
                ax.set_ylim(kept.min() / 2, kept.max() * (kept.max() / kept.min()) ** 0.25)
            elif len(kept):
                ax.set_ylim(0, 1.3 * kept.max() if kept.max() > 0 else 1)
            where = "the branch" if scheme == "branch" else "the end"
            ax.set_title(f"{DATASET_LABELS[ds]}, nudge from {where}: {len(gone)} of {len(mine)} runs diverged",
                         fontsize=8.5)
            ax.set_xlim(0.5, last + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
            if i == len(shown) - 1:
                ax.set_xlabel("epoch")
        axes[i, 0].set_ylabel("free-phase residual")
    axes[0, 0].plot([], [], ls="", marker="^", color="0.4", label=f"residual above {clip:g}")   # legend entries
    axes[0, 0].plot([], [], ls="", marker="x", mew=1.5, color="0.4", label="diverged")
    return fig


def cosine_against_spread(cells, beta, t_free):
    """Cosine between the rule's update and the negative gradient (binary cross-entropy) against
    the spread of the hidden time steps, one panel per layer and state, both schemes, error bars
    the standard deviation over batches (`measure.batch_cells`, at `beta` and `t_free`). The y axis
    is logarithmic in 1 − cosine, labelled in cosine (`_cosine_axis`), each panel its own range:
    cosines of 0.98 and 0.998 lie a decade apart."""
    at = cells[(cells.loss == "bce") & (cells.beta == beta) & (cells.t_free == t_free)]
    panels = [(f"{LAYER_TITLES[layer]}, {STATE_TITLES[state]}", {"param": layer, "state": state})
              for layer in LAYER_TITLES for state in STATE_TITLES]
    fig = against_spread(at.rename(columns={"scheme": "nudge_from"}).assign(gap=1 - at.cosine), "gap", COSINE_LABEL,
                         ("branch", "end"), log=True, panels=panels, err="cosine_std", ncols=2, legend=False,
                         dodge=0.003, limits=(0, 2))
    for ax in fig.axes:
        _cosine_axis(ax)
    return fig


COSINE_LABEL = "cos(ΔW, −∇L), log scale of 1 − cos"


def _cosine_axis(ax):
    """A log axis of 1 − cosine turned into a cosine axis: upside down (1 at the top), ticks at 0,
    0.9, 0.99, ... labelled as cosines; where fewer than two of those fall in the panel's range,
    four evenly spaced ticks instead, with as many decimals as they need."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator
    low, high = sorted(ax.get_ylim())
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    if low <= 0:
        return
    ticks = [10.0 ** k for k in range(math.floor(math.log10(low)), 1) if low <= 10.0 ** k <= high]
    if len(ticks) >= 2:         # 1 - 10^-k: k decimals
        def label(v, _):
            return f"{1 - v:.{max(0, round(-math.log10(v)))}f}"
    else:
        ticks = [v for v in MaxNLocator(4).tick_values(low, high) if low <= v <= high and v > 0]
        step = min(np.diff(ticks)) if len(ticks) > 1 else (ticks or [high])[0]
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))

        def label(v, _):
            return f"{1 - v:.{decimals}f}"
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(label))


def drift_against_spread(cells):
    """The share of the end scheme's update that is free drift against the spread of the hidden time
    steps, one panel per layer and state, error bars the standard deviation over seeds
    (`measure.drift_cells`)."""
    panels = [(f"{layer}, {STATE_TITLES[state]}", {"layer": layer, "state": state})
              for layer in ("W1", "W2") for state in STATE_TITLES]
    return against_spread(cells, "share", "drift share of ΔW (%)", None, panels=panels, err="share_std", ncols=2,
                          legend=False)


def _spaced(values, decades=0.15):
    """The tick values of a log axis, dropping any that lies within `decades` of the one before."""
    out = []
    for v in values:
        if not out or math.log10(v / out[-1]) >= decades:
            out.append(v)
    return out


def cosine_sweeps(cells, swept, beta, t_free):
    """The hidden layer's cosine with the negative gradient against the free-phase length (left, at
    the configured `beta`) and the nudging strength (right, at the configured `t_free`), one row per
    state: the scalar baseline and the three distributions at spread `swept`, both schemes, error
    bars the standard deviation over batches (`measure.batch_cells`). The y axis is logarithmic in
    1 − cosine, labelled in cosine (`_cosine_axis`), each panel its own range; a distribution's
    points are shifted a little along the log x axis, so that equal values do not hide each other."""
    fig, axes = _grid(2, 2, 4.6, 3.1)
    layer = cells[(cells.param == "layer1") & (cells.loss == "bce")
                  & ((cells.distribution == "scalar") | (cells.sigma_eps == swept))]
    for row, state in enumerate(STATE_TITLES):
        for col, (axis, fixed, value) in enumerate((("t_free", "beta", beta), ("beta", "t_free", t_free))):
            ax = axes[row, col]
            part = layer[(layer.state == state) & (layer[fixed] == value)]
            span = math.log10(part[axis].max() / part[axis].min()) if len(part) else 1.0
            for i, (scheme, (ls, mk, face)) in enumerate(SCHEMES.items()):
                for cond in _order(part.distribution):
                    g = part[(part.scheme == scheme) & (part.distribution == cond)].sort_values(axis)
                    shift = 0.012 * span * (OFFSET[cond] / 0.12 + 0.25 * (i - 0.5))        # decades
                    ax.errorbar(g[axis] * 10 ** shift, 1 - g.cosine, fmt=mk + ls,
                                yerr=_bars(1 - g.cosine, g.cosine_std, (0, 2), log=True), ms=4, capsize=3,
                                color=COLORS[cond], mfc=face, label=f"{LABELS[cond]} ({scheme})")
            ax.set_xscale("log")
            ax.set_yscale("log")
            values = _spaced(sorted(part[axis].unique()))
            ax.set_xticks(values, [f"{v:g}" for v in values], fontsize=7.5)
            ax.minorticks_off()
            _cosine_axis(ax)
            at = f"β = {beta:g}" if col == 0 else f"T_free = {t_free}"
            ax.set_title(f"hidden layer, {STATE_TITLES[state]}, {at}", fontsize=9)
        axes[row, 0].set_ylabel(COSINE_LABEL)
    axes[1, 0].set_xlabel("free-phase steps T_free")
    axes[1, 1].set_xlabel("nudging strength β")
    return fig


def calibration_screen(table, epochs, window):
    """The calibration screen: accuracy after its last epoch against the late std, one panel per
    beta, colour eta1, marker eta2 (no labels to overlap). The 50-epoch targets are left out: after
    a few epochs they are no yardstick."""
    betas = sorted(table.index.get_level_values("beta").unique())
    eta1s = sorted(table.index.get_level_values("eta1").unique())
    eta2s = sorted(table.index.get_level_values("eta2").unique())
    fig, axes = _panels(len(betas), 3.0, 3.0, sharey=True)
    colors = dict(zip(eta1s, ("tab:purple", "tab:cyan", "tab:olive", "tab:brown")))
    for ax, beta in zip(axes[0], betas):
        part = table.xs(beta, level="beta")
        for (e1, e2), row in part.iterrows():
            ax.plot(row.late_std, row.final_acc, "osD^"[eta2s.index(e2)], color=colors[e1], ms=6,
                    label=f"η1 = {e1:g}, η2 = {e2:g}")
        ax.set_title(f"β = {beta:g}")
        ax.set_xlabel(f"late std, epochs {epochs - window + 1} to {epochs} (points)")
    axes[0, 0].set_ylabel(f"test accuracy after epoch {epochs} (%)")
    axes[0, 0].legend(fontsize=6.5)
    return fig


def calibration_finalists(cur, table, chosen, target, late_target, rates=("eta1", "eta2", "beta")):
    """The finalists: test accuracy per epoch (mean over seeds; thick: `chosen`), and final accuracy
    (± seed std) against late std."""
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    names = dict(zip(rates, ("η1", "η2", "β")))
    colors = {}
    for cand, g in cur.groupby(list(rates)):
        m = g.groupby("epoch").test_acc.mean()
        text = ", ".join(f"{names[k]} = {v:g}" for k, v in zip(rates, cand))
        line, = ax.plot(m.index, m.values, lw=2 if cand == chosen else 1,
                        label=text + (" (chosen)" if cand == chosen else ""))
        colors[cand] = line.get_color()
    ax.axhline(target, color="crimson", lw=1.2, ls="--", label="paper, scalar baseline")
    ax.set_ylim(max(cur.test_acc.quantile(0.05) - 1, 0), 100)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MNIST test accuracy (%), mean over seeds")
    ax.legend(fontsize=7)
    for cand, r in table.iterrows():       # the colours of the lines on the left, no labels to overlap
        ax2.errorbar(r.late_std, r.final_acc, yerr=0 if r.seed_std != r.seed_std else r.seed_std, fmt="o", capsize=3,
                     color=colors.get(cand, "0.3"), mfc=None if cand == chosen else "none")
    ax2.axvline(late_target, color="crimson", lw=1, ls=":")
    ax2.axhline(target, color="crimson", lw=1, ls="--")
    ax2.set_xlabel("late std (points)")
    ax2.set_ylabel("final accuracy (%), ± seed std")
    return fig


def accuracy_per_epoch(cur, by, target=None, ylabel="test accuracy (%)"):
    """One line per group `by` of `cur` (stats.curves), test accuracy per epoch, the paper's
    value dashed where `target` is given."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for key, g in cur.groupby(list(by)):
        key = key if isinstance(key, tuple) else (key,)
        m = g.groupby("epoch").test_acc.mean()
        ax.plot(m.index, m.values, "o-", ms=2, lw=1, label=", ".join(f"{k} = {v:g}" for k, v in zip(by, key)))
    if target is not None:
        ax.axhline(target, color="crimson", lw=1.2, ls="--", label="paper, scalar baseline")
    ax.set_ylim(max(cur.test_acc.quantile(0.05) - 1, 0), 100)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7.5)
    return fig


def variants(table, score="score", label="score (points)"):
    """One dot per variant of an ablation table (ablation.screen or judge) at its score: open and grey
    where a run of the variant failed, a red ring around the set-up before the ablation."""
    import matplotlib.pyplot as plt

    from .ablation import FORMER
    t = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.28 * len(t)))
    y = np.arange(len(t))
    ok = ~t.failed.astype(bool).to_numpy()
    ax.plot(t[score][ok], y[ok], "o", color="tab:blue", label="no run never started, diverged or collapsed")
    ax.plot(t[score][~ok], y[~ok], "o", mfc="none", color="0.5", label="a run never started, diverged or collapsed")
    former = (t.variant == FORMER).to_numpy()
    ax.plot(t[score][former], y[former], "o", ms=12, mfc="none", color="crimson",
            label="the defaults before the ablation")
    ax.set_yticks(y, t.name, fontsize=7)
    ax.set_xlabel(label)
    # below the axes: inside, it hid a variant's dot
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.6 / (0.6 + 0.28 * len(t)) - 0.12), ncol=2,
              frameon=False)
    return fig


def stage2(records, variants, names):
    """The ablation's stage 2: per data set, each variant's final and best-epoch accuracy (mean ± seed
    std) for the scalar and log-normal runs, beside the paper's values (dashed)."""
    from .ablation import paper_cells, variant
    from .stats import finals
    f = finals(records)
    f["variant"] = [variant(r) for _, r in f.iterrows()]
    shown = [d for d in DATASET_LABELS if d in set(f.dataset)]
    fig, axes = _panels(len(shown), 4.8, 3.4)
    for ax, ds in zip(axes[0], shown):
        part = f[f.dataset == ds]
        for k, v in enumerate(variants):
            for j, dist in enumerate(("scalar", "lognormal")):
                g = part[(part.variant == v) & (part.distribution == dist)]
                for stat, mk, dx in (("final_acc", "o", -0.12), ("best_acc", "^", 0.12)):
                    x = k + dx + (j - 0.5) * 0.1
                    ax.errorbar([x], [g[stat].mean()], yerr=[g[stat].std(ddof=1) if len(g) > 1 else 0], fmt=mk,
                                color=COLORS[dist], mfc=None if stat == "best_acc" else "none", capsize=2, ms=5,
                                label=f"{LABELS[dist]}, {'best' if stat == 'best_acc' else 'final'}" if k == 0 else "_")
        paper = paper_cells(ds, float(part.eps_out.iloc[0]))
        for dist in ("scalar", "lognormal"):
            ax.axhline(paper[dist], color=COLORS[dist], ls="--", lw=1)
        # one line per two factors, every variant's slot kept (those without runs yet too)
        parts = [names[v].split(", ") for v in variants]
        two_lines = [", ".join(p[:2]) + ",\n" + ", ".join(p[2:]) for p in parts]
        ax.set_xticks(range(len(variants)), two_lines, fontsize=7)
        ax.set_xlim(-0.5, len(variants) - 0.5)
        ax.set_title(DATASET_LABELS[ds])
    axes[0, 0].set_ylabel("test accuracy (%), mean ± seed std")
    axes[0, 0].legend(fontsize=6.5, loc="lower left")
    return fig


def save(fig, path):
    """Write `fig` as a PNG for a page that shows it by file (another page's figure), and close it."""
    import matplotlib.pyplot as plt
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def start_accuracy(runs, threshold):
    """Training accuracy after the first epoch of every run (stats.finals rows), one panel per data
    set, one colour per condition, with the threshold below which a run never started."""
    shown = [d for d in DATASET_LABELS if len(runs) and d in set(runs.dataset)]
    fig, axes = _panels(len(shown), 4.4, 2.8)
    bins = np.linspace(0, 100, 51)
    for ax, ds in zip(axes[0], shown):
        part = runs[runs.dataset == ds]
        ax.hist([part[part.distribution == c].start_acc.dropna() for c in _order(part.distribution)], bins=bins,
                stacked=True, color=[COLORS[c] for c in _order(part.distribution)],
                label=[LABELS[c] for c in _order(part.distribution)])
        ax.axvline(threshold, color="crimson", ls="--", lw=1, label=f"{threshold:g}%: never started below")
        ax.set_title(DATASET_LABELS[ds])
        ax.set_xlabel("training accuracy after epoch 1 (%)")
    axes[0, 0].set_ylabel("runs")
    axes[0, 0].legend(fontsize=6.5, loc="upper left")
    return fig


def change(table):
    """`ablation.paired_change`: after minus before, paired by run, one panel per quantity, one row per
    data set, the mean difference with its 95% interval over the pairs; zero dashed."""
    from .ablation import CHANGE
    datasets = [d for d in DATASET_LABELS if d in set(table.dataset)]
    fig, axes = _panels(len(CHANGE), 3.0, 0.9 + 0.45 * max(1, len(datasets)), sharey=True)
    for ax, (q, what) in zip(axes[0], CHANGE.items()):
        t = table[table.quantity == q].set_index("dataset").reindex(datasets)
        y = np.arange(len(t))
        ax.errorbar(t["diff"], y, xerr=[(t["diff"] - t.ci_low).fillna(0), (t.ci_high - t["diff"]).fillna(0)],
                    fmt="o", capsize=3, color="0.2")
        ax.axvline(0, color="0.5", lw=1, ls="--")
        ax.set_xlabel(f"{what}, after − before (points)", fontsize=8)
        ax.set_yticks(y, [DATASET_LABELS[d] for d in t.index])
        ax.set_ylim(-0.6, len(t) - 0.4)
    return fig
