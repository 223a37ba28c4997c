"""The figures of the mechanism chapters (05 relaxation, 07 timing, 08 gradients), one function per
figure, each taking the tables of `hts_ep.measure` and returning a matplotlib figure for
`figures.publish`. Same style and colours as `hts_ep.figures` (to be merged into it)."""
import math

from .figures import COLORS, SCHEMES
from .stats import CONDITIONS
from .wording import DATASET_LABELS, LABELS

ORDER = ["scalar", *CONDITIONS[:3]]     # the scalar baseline first, then the paper's order
STATE_TITLES = {"fresh": "freshly initialised", "trained": "after training"}
LAYER_TITLES = {"layer1": "hidden layer (W1, b1)", "layer2": "output layer (W2, b2)"}


def _grid(nrows, ncols, width, height, **kw):
    import matplotlib.pyplot as plt
    return plt.subplots(max(1, nrows), max(1, ncols), figsize=(width * max(1, ncols), height * max(1, nrows)),
                        squeeze=False, **kw)


def _where(frame, where):
    for k, v in where.items():
        frame = frame[frame[k].isin(v) if isinstance(v, (list, tuple)) else frame[k] == v]
    return frame


def relaxation_traces(traces, steps):
    """Largest change of a hidden neuron per Euler step (log scale), one panel per state (fresh,
    trained): per distribution the median over seeds (line) and their range (band); free phase
    solid, nudged phase dashed in its shaded window (`measure.relaxation`'s traces and steps)."""
    fig, axes = _grid(1, 2, 5.0, 3.4, sharey=True)
    for ax, state in zip(axes[0], STATE_TITLES):
        part = traces[traces.state == state]
        for d in [c for c in ORDER if c in set(part.distribution)]:
            for phase, ls in (("free", "-"), ("nudged", "--")):
                g = part[(part.distribution == d) & (part.phase == phase)].groupby("step").residual
                mid = g.median()
                ax.plot(mid.index, mid.values, ls, color=COLORS[d], lw=1.2, label=LABELS[d] if phase == "free" else "_")
                ax.fill_between(mid.index, g.min(), g.max(), color=COLORS[d], alpha=0.15, lw=0)
        ax.axvspan(steps["branch"] + 0.5, steps["t_free"] + 0.5, color="0.9", lw=0, zorder=0)
        for x, text in ((steps["branch"] / 2, "free phase"), ((steps["branch"] + steps["t_free"]) / 2, "nudged")):
            ax.text(x, 0.97, text, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("Euler step t")
        ax.set_title(STATE_TITLES[state])
    axes[0, 0].set_ylabel("max |h[t] − h[t−1]|")
    axes[0, 0].legend(loc="lower left", fontsize=7.5)
    return fig


def spread_panels(cells, column, ylabel, panels, err=None, schemes=("branch", "end"), ncols=2, sharey=False):
    """`column` of `cells` against the spread of the hidden time steps, one panel per (title, where)
    of `panels` (`where`: column -> value(s) selecting its rows): the three distributions, the
    scalar baseline at 0, each scheme of `schemes` (cells' nudge_from) in its line style (None: no
    scheme column), error bars from column `err` where given. The general form of
    figures.against_spread, whose panels are data sets."""
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = _grid(nrows, min(ncols, len(panels)), 4.6, 3.1, sharex=True, sharey=sharey)
    spreads = sorted(cells[cells.distribution != "scalar"].sigma_eps.unique()) if len(cells) else []
    for ax, (title, where) in zip(axes.flat, panels):
        part = _where(cells, where)
        for scheme in schemes or (None,):
            ls, mk, face = SCHEMES[scheme] if scheme else SCHEMES["branch"]
            sub = part if scheme is None else part[part.nudge_from == scheme]
            suffix = f" ({scheme})" if schemes and len(schemes) > 1 else ""
            for cond in [c for c in ORDER if c in set(sub.distribution)]:
                g = sub[sub.distribution == cond].sort_values("sigma_eps")
                x = [0.0] * len(g) if cond == "scalar" else g.sigma_eps
                ax.errorbar(x, g[column], yerr=None if err is None else g[err], ms=4, capsize=3, color=COLORS[cond],
                            fmt=mk + ("" if cond == "scalar" else ls), mfc=face, label=LABELS[cond] + suffix)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([0.0, *spreads], ["scalar", *(f"{v:g}" for v in spreads)], fontsize=7.5)
    for ax in axes[-1]:
        ax.set_xlabel("spread of the hidden time steps σ_ε")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    return fig


OFFSET = {"scalar": -0.18, "normal": -0.06, "lognormal": 0.06, "gamma": 0.18}    # marks side by side


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
            for cond in [c for c in ORDER if c in set(part.distribution)]:
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


def timing_accuracy(cells):
    """figures.against_spread of the final accuracy, both schemes, its legend above the panels
    (`publish` with legend_from=fig.axes[0]) instead of over the data."""
    from .figures import against_spread
    fig = against_spread(cells, "final_acc", "final test accuracy (%)", schemes=("branch", "end"))
    if fig.axes[0].get_legend() is not None:
        fig.axes[0].get_legend().remove()
    return fig


def cosine_against_spread(cells, beta, t_free):
    """Cosine between the rule's update and the negative gradient (binary cross-entropy) against
    the spread of the hidden time steps, one panel per layer and state, both schemes, error bars
    the standard deviation over batches (`measure.batch_cells`, at `beta` and `t_free`)."""
    at = cells[(cells.loss == "bce") & (cells.beta == beta) & (cells.t_free == t_free)]
    panels = [(f"{LAYER_TITLES[layer]}, {STATE_TITLES[state]}", {"param": layer, "state": state})
              for layer in LAYER_TITLES for state in STATE_TITLES]
    return spread_panels(at.rename(columns={"scheme": "nudge_from"}), "cosine", "cos(ΔW, −∇L)", panels,
                         err="cosine_std", sharey="row")


def _spaced(values, decades=0.15):
    """The tick values of a log axis, dropping any that lies within `decades` of the one before."""
    out = []
    for v in values:
        if not out or math.log10(v / out[-1]) >= decades:
            out.append(v)
    return out


def drift_against_spread(cells):
    """The share of the end scheme's update that is free drift against the spread of the hidden time
    steps, one panel per layer and state, error bars the standard deviation over seeds
    (`measure.drift_cells`)."""
    panels = [(f"{layer}, {STATE_TITLES[state]}", {"layer": layer, "state": state})
              for layer in ("W1", "W2") for state in STATE_TITLES]
    return spread_panels(cells, "share", "drift share of ΔW (%)", panels, err="share_std", schemes=None)


def cosine_sweeps(cells, swept, beta, t_free):
    """The hidden layer's cosine with the negative gradient against the free-phase length (left, at
    the configured `beta`) and the nudging strength (right, at the configured `t_free`), one row per
    state: the scalar baseline and the three distributions at spread `swept`, both schemes, error
    bars the standard deviation over batches (`measure.batch_cells`)."""
    fig, axes = _grid(2, 2, 4.6, 3.1, sharey="row")
    layer = cells[(cells.param == "layer1") & (cells.loss == "bce")
                  & ((cells.distribution == "scalar") | (cells.sigma_eps == swept))]
    for row, state in enumerate(STATE_TITLES):
        for col, (axis, fixed, value) in enumerate((("t_free", "beta", beta), ("beta", "t_free", t_free))):
            ax = axes[row, col]
            part = layer[(layer.state == state) & (layer[fixed] == value)]
            for scheme, (ls, mk, face) in SCHEMES.items():
                for cond in [c for c in ORDER if c in set(part.distribution)]:
                    g = part[(part.scheme == scheme) & (part.distribution == cond)].sort_values(axis)
                    ax.errorbar(g[axis], g.cosine, yerr=g.cosine_std, fmt=mk + ls, ms=4, capsize=3, color=COLORS[cond],
                                mfc=face, label=f"{LABELS[cond]} ({scheme})")
            ax.set_xscale("log")
            values = _spaced(sorted(part[axis].unique()))
            ax.set_xticks(values, [f"{v:g}" for v in values], fontsize=7.5)
            ax.minorticks_off()
            at = f"β = {beta:g}" if col == 0 else f"T_free = {t_free}"
            ax.set_title(f"hidden layer, {STATE_TITLES[state]}, {at}", fontsize=9)
        axes[row, 0].set_ylabel("cos(ΔW, −∇L)")
    axes[1, 0].set_xlabel("free-phase steps T_free")
    axes[1, 1].set_xlabel("nudging strength β")
    return fig
