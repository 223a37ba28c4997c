"""The mechanism chapters' measurements: what the relaxation (05), timing (07) and gradient (08)
pages measure, as flat tables, each computed once per distinct inputs (hts_ep.memo).

A measurement function returns (result, environment) through `memo.cached`, keyed by everything
its result depends on: the networks' configurations (`Config.to_dict`, which holds the data set,
the training subset and the seed), the measurement's own parameters and a per-measurement
version in VERSIONS, bumped whenever the code of that measurement changes what it returns. A
rebuild after any other change (a docstring, a figure, a sentence) reads the stored file and
trains nothing. Below the measurements: pure reductions of their tables (paired differences
with t intervals) and the pages' numbers. Their sentences are in `wording`, their tables as text
in `tables`, their figures in `figures`.
"""
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import data, experiments, memo, sources, stats, wording
from .config import Config

# Bump a measurement's entry when its code changes what it returns: its cached files are then
# computed again, and only its.
VERSIONS = {"relaxation": 2, "scheme_runs": 1, "drift": 1, "alignment": 2}
HTS = stats.HTS
CONDITIONS = ["scalar", *HTS]       # the scalar baseline first, as the pages list them
STATES = ("fresh", "trained")
LAYERS = ("layer1", "layer2")       # hidden layer (W1, b1), output layer (W2, b2)
# A change of cosine whose whole 95% interval lies within this of zero is practically none (08), however
# sure its sign: a hundredth of the cosine's range above zero.
NEGLIGIBLE = 0.01


# -- the networks a page trains itself ---------------------------------------------------------

def page_configs(profile, seeds=None, overrides=None, conditions=(("scalar", None),), **fixed):
    """The networks a page trains itself, at the scale of `profile` (`experiments.compute_profile`:
    the quick profile's for "archive"): MNIST, the profile's training subset, every Config field
    of `overrides` and `fixed`, one network per seed (default: the profile's) and (distribution,
    sigma_eps) of `conditions` (sigma_eps None: the configured one), seed-major. A seed's
    networks share their initial weights (one random stream draws them before the time steps)."""
    prof = experiments.load_profile(experiments.compute_profile(profile))
    base = Config(**{**experiments.check_overrides(overrides), "dataset": "mnist",
                     "train_subset": prof["train_subset"], **fixed})
    return [base.replace(distribution=d, sigma_eps=base.sigma_eps if s is None else s, seed=seed)
            for seed in (seeds or prof["seeds"]) for d, s in conditions]


def device_name(device=None):
    return str(torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def inputs_of(name, configs, device, **parameters):
    """What measurement `name` depends on: its networks' configurations, its parameters, its version
    and the device type (the kernels differ)."""
    return {"configs": [c.to_dict() for c in configs], **parameters, "device": device_name(device),
            "version": VERSIONS[name]}


def labels(c):
    """A network's condition: distribution, spread (0 for the scalar baseline, which has none), seed."""
    return {"distribution": c.distribution, "sigma_eps": 0.0 if c.distribution == "scalar" else c.sigma_eps,
            "seed": c.seed}


def splits(c, data_root=None, device="cpu", n_test=0):
    """(training subset, first `n_test` test images; 0: all) as the networks of Config `c` see them."""
    train = data.subset(data.load(c.dataset, data_root, train=True, device=device), c.train_subset)
    test = data.subset(data.load(c.dataset, data_root, train=False, device=device), n_test)
    return data.scaled(train, c), data.scaled(test, c)


def batch_of(split, start, n, models):
    """Images start..start+n of `split` for every model: x [M, n, n_in], one-hot y [M, n, n_out]."""
    x, y = split.x[start:start + n], split.y[start:start + n]
    return x.expand(models, -1, -1), F.one_hot(y, 10).float().expand(models, -1, -1)


def train(ens, split, epochs):
    from .train import train_epoch
    for _ in range(epochs):
        train_epoch(ens, split)


def sig(values, digits=5):
    """`values` rounded to `digits` significant digits (the stored traces: a log plot needs no more)."""
    return [float(f"{v:.{digits}g}") if math.isfinite(v) else v for v in map(float, values)]


# -- 05: relaxation ----------------------------------------------------------------------------

def relaxation(configs, n_probe, train_epochs, long_factor, data_root=None, device=None, root=None):
    """Residual traces and end states of both phases on `n_probe` test images, for the networks of
    `configs` freshly initialised and after `train_epochs` epochs, and the same-weights test.

    Result: "free" and "nudged" (the residual max_i |h_i[t] - h_i[t-1]| after every step of each
    phase, one row per state and network, one column per step: `traces` makes one long table of
    them), "ends" (per state and network: the residual at the end of the
    free phase, of the nudged phase and of the free phase continued to long_factor * t_free
    steps, the distance max|h[t_free] - h[long]| absolute and relative to max|h[long]|, and
    how far the nudge moved h), "same" (per network, all given the trained scalar network of
    its seed's weights: distance of its free end state and of its continued state from the
    scalar network's, and the relative difference of its state h0 and of its learning signal
    hb - h0 from the scalar network's), "steps" and "n_train"."""
    inputs = inputs_of("relaxation", configs, device, n_probe=n_probe, train_epochs=train_epochs,
                       long_factor=long_factor)
    return memo.cached("relaxation", inputs,
                       lambda: _relaxation(configs, n_probe, train_epochs, long_factor, data_root, device), root)


def _relaxation(configs, n_probe, train_epochs, long_factor, data_root, device):
    from .network import Ensemble
    ens = Ensemble(configs, device=device)
    train_split, test = splits(configs[0], data_root, ens.device)
    x, y = batch_of(test, 0, n_probe, len(ens))
    t_long = long_factor * ens.t_free
    fresh = probe(ens, x, y, t_long)
    train(ens, train_split, train_epochs)
    trained = probe(ens, x, y, t_long)
    share_weights(ens, [c.distribution == "scalar" for c in configs], [c.seed for c in configs])
    shared = probe(ens, x, y, t_long)
    ends = [{"state": state, **labels(c), **end_numbers(p, m)}
            for state, p in (("fresh", fresh), ("trained", trained)) for m, c in enumerate(configs)]
    wide = {phase: pd.concat([trace_frame(p, configs, state, phase) for state, p in (("fresh", fresh),
                                                                                      ("trained", trained))],
                             ignore_index=True) for phase in ("free", "nudged")}
    return {**wide, "ends": pd.DataFrame(ends),
            "same": same_weights(shared, configs),
            "steps": {"t_free": ens.t_free, "t_nudge": ens.t_nudge, "t_long": t_long,
                      "branch": fresh["branch"]},
            "n_train": len(train_split.y)}


@torch.no_grad()
def probe(ens, x, y, t_long):
    """Both phases of the ensemble's scheme on (x, y) with every step's residual traced, and the
    free phase continued to `t_long` steps (the reference fixed point)."""
    drive = ens.drive(x)
    h, o = ens.zero_state(x.shape[1])
    T, N = ens.t_free, ens.t_nudge
    k = T - N if ens.nudge_from == "branch" else T         # where the nudged phase starts
    free, nudged = [], []
    hk, ok, _ = ens.relax(drive, h, o, k, trace=free)
    h0, o0, _ = ens.relax(drive, hk, ok, T - k, trace=free) if T > k else (hk, ok, None)
    hb, _, _ = ens.relax(drive, hk, ok, N, y=y, trace=nudged)
    hl, _, res_long = ens.relax(drive, h0, o0, t_long - T)

    def stack(t):
        return torch.stack(t).cpu().numpy()
    return {"free": stack(free), "nudged": stack(nudged), "long": res_long.cpu().numpy(), "branch": k,
            "h0": h0, "hb": hb, "hl": hl}


def trace_frame(p, configs, state, phase):
    """One phase's residuals (`probe`'s result) as a wide table: one row per network, column tK the
    residual after step K of the phase (4 significant digits: the figure's log axis needs no more)."""
    t = p[phase]                                                      # [steps, M]
    rows = [{"state": state, **labels(c), **{f"t{k + 1}": v for k, v in enumerate(sig(t[:, m], 4))}}
            for m, c in enumerate(configs)]
    return pd.DataFrame(rows)


def traces(result):
    """`relaxation`'s residuals as one long table: state, distribution, sigma_eps, seed, phase, step
    (the free phase's steps count from 1, the nudged phase's from the free step it starts from: t_free -
    t_nudge when it branches off the free run, t_free from the free end), residual."""
    out = []
    for phase, start in (("free", 0), ("nudged", result["steps"]["branch"])):
        wide = result[phase]
        steps = [c for c in wide.columns if c.startswith("t") and c[1:].isdigit()]
        long = wide.melt(id_vars=["state", "distribution", "sigma_eps", "seed"], value_vars=steps,
                         var_name="step", value_name="residual")
        out.append(long.assign(phase=phase, step=long.step.str[1:].astype(int) + start))
    return pd.concat(out, ignore_index=True)


def end_numbers(p, m):
    """One network's end of both phases (`probe`'s result, model m)."""
    h0, hb, hl = p["h0"][m], p["hb"][m], p["hl"][m]
    apart = (h0 - hl).abs().max().item()
    return {"free": float(p["free"][-1, m]), "nudged": float(p["nudged"][-1, m]), "continued": float(p["long"][m]),
            "to_fixed_point": apart, "relative_to_fixed_point": apart / max(hl.abs().max().item(), 1e-12),
            "nudge_moved": (hb - h0).abs().max().item()}


@torch.no_grad()
def share_weights(ens, is_scalar, seeds):
    """Give every network the weights of the scalar network of its seed (its time steps stay its own)."""
    ref = {s: m for m, (sc, s) in enumerate(zip(is_scalar, seeds)) if sc}
    if set(ref) != set(seeds):
        raise ValueError("the same-weights test needs a scalar network for every seed")
    index = torch.tensor([ref[s] for s in seeds], device=ens.device)
    for p in (ens.W1, ens.b1, ens.W2, ens.b2):
        p.copy_(p[index])


def same_weights(p, configs):
    """Per network, its end states against those of the scalar network of its seed (same weights)."""
    ref = {c.seed: m for m, c in enumerate(configs) if c.distribution == "scalar"}
    rows = []
    for m, c in enumerate(configs):
        r = ref[c.seed]
        h0, h0r = p["h0"][m], p["h0"][r]
        sig_m, sig_r = p["hb"][m] - h0, p["hb"][r] - h0r
        rows.append({**labels(c), "state_max": (h0 - h0r).abs().max().item(),
                     "fixed_point_max": (p["hl"][m] - p["hl"][r]).abs().max().item(),
                     "state": ((h0 - h0r).norm() / h0r.norm()).item(),
                     "signal": ((sig_m - sig_r).norm() / sig_r.norm()).item()})
    return pd.DataFrame(rows)


# -- 07: timing --------------------------------------------------------------------------------

def scheme_runs(spec, profile, data_root=None, device=None, datasets=None, seeds=None, overrides=None, root=None):
    """The runs of experiment `spec` (the `timing` experiment: both nudging schemes, the scalar
    baseline and the three distributions at several spreads), reduced: "cells" (stats.stability by
    data set, scheme, distribution and spread), "hts_gap" (stats.spread_gaps per scheme: HTS minus
    scalar final accuracy, paired by seed, with its interval), "runs" (one row per run: final
    accuracy, divergence, collapse), "curves" (per run and epoch: test accuracy, free-phase
    residual), "source" (where the records come from), "profile", "archived", "missing" (data set
    -> why it has no runs) and "overrides". Keyed by the records' configurations (trained where
    missing, as every page's records are); a result that lacks a data set (it cannot run here) is
    not stored."""
    overrides = experiments.check_overrides(overrides)
    shown, _ = experiments.resolve(spec, profile, root, datasets, seeds, overrides)
    configs = experiments.grid_configs(experiments.load_spec(spec), shown, datasets, seeds, overrides)
    inputs = {"spec": spec, "profile": shown, "configs": [c.to_dict() for c in configs],
              "version": VERSIONS["scheme_runs"]}
    hit = memo.load(spec, inputs, root)
    if hit is not None:
        return hit
    result = _scheme_runs(spec, profile, data_root, device, datasets, seeds, overrides, root)
    if result["missing"]:       # runs missing: not stored, so that a build with the data shows them all
        return result, {}
    return memo.cached(spec, inputs, lambda: result, root)


def _scheme_runs(spec, profile, data_root, device, datasets, seeds, overrides, root):
    res = sources.obtain(spec, profile, data_root, device, datasets, seeds, overrides, results_root=root)
    recs, by = res.records, ["dataset", "nudge_from", "distribution", "sigma_eps"]
    gaps = [stats.spread_gaps([r for r in recs if stats.axes(r["config"])["nudge_from"] == s]).assign(nudge_from=s)
            for s in ("branch", "end")]
    runs = stats.finals(recs)
    curves = stats.curves(recs)
    return {"cells": stats.stability(recs, by=tuple(by)), "hts_gap": pd.concat(gaps, ignore_index=True),
            "runs": runs[[*by, "seed", "final_acc", "diverged", "diverged_epoch", "collapsed"]] if len(runs) else runs,
            "curves": curves[[*by, "seed", "epoch", "test_acc", "residual_free"]] if len(curves) else curves,
            "source": res.source(), "profile": res.profile, "archived": res.archived, "missing": res.gaps,
            "overrides": res.overrides}


def scheme_grid(spec):
    """(spreads of the heterogeneous runs, output step) of experiment `spec`'s grid (`timing`)."""
    spec = experiments.load_spec(spec)
    spreads = sorted({s for d, s in spec.grid["distribution,sigma_eps"] if d != "scalar"})
    return spreads, spec.grid.get("eps_out", [spec.fixed.get("eps_out", Config().eps_out)])[0]


def drift(configs, n_probe, train_epochs, data_root=None, device=None, root=None):
    """How much of the "end" scheme's update is free drift (stats.drift_share), per network and
    layer, on the first `n_probe` training images, freshly initialised and after `train_epochs`
    epochs of training (each network's own scheme; the timing page trains them branching).
    Result: "shares" (state, distribution, sigma_eps, seed, layer, share) and "n_train"."""
    inputs = inputs_of("drift", configs, device, n_probe=n_probe, train_epochs=train_epochs)
    return memo.cached("drift", inputs, lambda: _drift(configs, n_probe, train_epochs, data_root, device), root)


def _drift(configs, n_probe, train_epochs, data_root, device):
    from .network import Ensemble
    ens = Ensemble(configs, device=device)
    train_split, _ = splits(configs[0], data_root, ens.device, n_test=1)
    x, y = batch_of(train_split, 0, n_probe, len(ens))
    rows = []
    for state in STATES:
        if state == "trained":
            train(ens, train_split, train_epochs)
        share = stats.drift_share(ens, x, y)
        rows += [{"state": state, **labels(c), "layer": layer, "share": share[layer][m]}
                 for m, c in enumerate(configs) for layer in ("W1", "W2")]
    return {"shares": pd.DataFrame(rows), "n_train": len(train_split.y)}


# -- 08: gradients -----------------------------------------------------------------------------

def alignment(configs, batch, n_batches, train_epochs, t_frees, betas, n_test, swept, data_root=None,
              device=None, root=None):
    """The rule's update against the BPTT gradient (gradients.compare), per network, on `n_batches`
    training batches of `batch` images, freshly initialised and after `train_epochs` epochs of
    training (each network's own nudging scheme): both schemes, each layer, the binary cross-entropy, the
    squared error and
    the softmax cross-entropy, each network at the configured beta and free-phase length; the scalar
    network and those at spread `swept` also at every beta of `betas` (binary cross-entropy) and every
    free-phase length of `t_frees` (at the smallest and the configured beta). Result: "rows" (state,
    distribution, sigma_eps, batch, t_free, loss, scheme, beta, param, cosine, ratio),
    "accuracy" (per network, on the first `n_test` test images, after training), "n_train",
    "n_test"."""
    inputs = inputs_of("alignment", configs, device, batch=batch, n_batches=n_batches, train_epochs=train_epochs,
                       t_frees=sorted(t_frees), betas=sorted(betas), n_test=n_test, swept=swept)
    return memo.cached("alignment", inputs, lambda: _alignment(configs, batch, n_batches, train_epochs, t_frees, betas,
                                                                n_test, swept, data_root, device), root)


def _alignment(configs, batch, n_batches, train_epochs, t_frees, betas, n_test, swept, data_root, device):
    from . import gradients as G
    from .network import Ensemble
    from .train import evaluate
    ens = Ensemble(configs, device=device)
    train_split, test = splits(configs[0], data_root, ens.device, n_test)
    probes = [(train_split.x[k * batch:(k + 1) * batch].cpu().double(),
               F.one_hot(train_split.y[k * batch:(k + 1) * batch], 10).cpu().double()) for k in range(n_batches)]
    beta = configs[0].beta
    betas = sorted(set(betas) | {beta})
    rows = []
    for state in STATES:
        if state == "trained":
            train(ens, train_split, train_epochs)
        for m, c in enumerate(configs):
            net, swept_here = G.Net.from_ensemble(ens, m), c.distribution == "scalar" or c.sigma_eps == swept
            runs = [(net.t_free, betas if swept_here else [beta])]
            runs += [(T, [min(betas), beta]) for T in t_frees if swept_here and T != net.t_free]
            for T, bs in runs:
                for k, (x, y) in enumerate(probes):
                    for r in G.compare(net.replace(t_free=T), x, y, bs,
                                       losses=("bce", "mse", "ce") if T == net.t_free else ("bce",)):
                        if r["param"] in LAYERS and (r["loss"] == "bce" or r["beta"] == beta):
                            rows.append({"state": state, **labels(c), "batch": k, "t_free": T, **{
                                key: r[key] for key in ("loss", "scheme", "beta", "param")},
                                "cosine": float(f"{r['cosine']:.5g}"), "ratio": float(f"{r['ratio']:.5g}")})
    accuracy = pd.DataFrame([{**labels(c), "accuracy": 100 * a} for c, a in zip(configs, evaluate(ens, test))])
    return {"rows": pd.DataFrame(rows).drop(columns="seed"), "accuracy": accuracy, "n_train": len(train_split.y),
            "n_test": len(test.y)}


# -- reductions ---------------------------------------------------------------------------------

def select(frame, where):
    """The rows of `frame` whose columns have the values of `where` (a value, or a list of values)."""
    mask = pd.Series(True, index=frame.index)
    for k, v in where.items():
        mask &= frame[k].isin(v) if isinstance(v, (list, tuple, set)) else frame[k] == v
    return frame[mask]


def paired(frame, column, unit, left, right, level=0.95):
    """The mean of `column` over the rows `left` selects minus that over the rows `right` selects,
    paired by `unit` (seed or batch): per unit, the mean over its left rows minus the mean over its
    right rows (units without both, or without a finite value, left out); then the mean over units
    with its `level` Student t interval. {"gap", "low", "high", "n"}; low and high nan below 2 units."""
    a = select(frame, left).groupby(unit)[column].mean()
    b = select(frame, right).groupby(unit)[column].mean()
    both = (a - b).dropna()
    gap, low, high = stats.t_interval([float(v) for v in both], level)
    return {"gap": gap, "low": low, "high": high, "n": len(both)}


def over(frame, column, unit, where, level=0.95):
    """The mean of `column` over the rows `where` selects, averaged per `unit` first, with its
    `level` t interval over units: {"gap", "low", "high", "n"} (the name `gap` as `paired`'s)."""
    per = select(frame, where).groupby(unit)[column].mean().dropna()
    gap, low, high = stats.t_interval([float(v) for v in per], level)
    return {"gap": gap, "low": low, "high": high, "n": len(per)}


def log10(frame, column):
    """`frame` with log10 of `column` (ratios of residuals are read on a log scale)."""
    return frame.assign(**{f"log_{column}": np.log10(frame[column].astype(float))})


# The float32 rounding floor of a hidden state: ROUNDING_STEPS rounding steps (machine epsilon) of
# its largest |h|. A residual or a distance of h below it cannot be told from rounding.
ROUNDING_STEPS = 8
ROUNDING = ROUNDING_STEPS * float(np.finfo(np.float32).eps)


def floors(ends):
    """Per row of `relaxation`'s ends: its state's rounding floor, ROUNDING times the largest |h| of
    its continued state (to_fixed_point / relative_to_fixed_point; 1 where both are 0)."""
    rel = ends.relative_to_fixed_point.astype(float)
    return ROUNDING * (ends.to_fixed_point / rel.where(rel > 0)).fillna(1.0)


def levels(ends, column):
    """Per distribution, `column` of `relaxation`'s ends (positive) over seeds: `over` of its log10
    (a geometric mean with its interval) with "floor" (every seed's value at or below its rounding
    floor, `floors`) and "above" (the interval's lower end above the largest of those floors)."""
    e = ends.assign(floor=floors(ends), log=np.log10(ends[column].astype(float).clip(lower=1e-30)))
    out = {}
    for d in CONDITIONS:
        part = e[e.distribution == d]
        g = over(part, "log", "seed", {})
        out[d] = {**g, "floor": bool(len(part) and (part[column] <= part.floor).all()),
                  "above": bool(g["low"] == g["low"] and 10 ** g["low"] > part.floor.max())}
    return out


def broke(runs, where):
    """(runs that broke, runs): the runs among `runs` that `where` selects (`select`) that diverged
    or collapsed (`stats.healthy_rows`), and how many it selects."""
    part = select(runs, where) if len(runs) else runs
    return int((~stats.healthy_rows(part)).sum()) if len(part) else 0, len(part)


def drift_cells(result):
    """The drift share (%) per state, layer, distribution and spread: mean and standard deviation over seeds."""
    g = result["shares"].assign(share=100 * result["shares"].share).groupby(
        ["state", "layer", "distribution", "sigma_eps"]).share
    return pd.concat({"share": g.mean(), "share_std": g.std().fillna(0.0)}, axis=1).reset_index()


def batch_cells(rows, by=("state", "loss", "scheme", "beta", "t_free", "param", "distribution", "sigma_eps")):
    """alignment's rows per condition: mean cosine and norm ratio over batches, with their standard
    deviations over batches (0 for a single batch)."""
    g = rows.groupby(list(by))
    out = g.agg(cosine=("cosine", "mean"), cosine_std=("cosine", "std"), ratio=("ratio", "mean"),
                ratio_std=("ratio", "std")).reset_index()
    return out.fillna({"cosine_std": 0.0, "ratio_std": 0.0})


def scheme_gap(runs, level=0.95):
    """Nudging from the end minus branching, in final accuracy (points), per data set and spread:
    HTS (the mean over the three distributions at that spread) and, at spread 0, the scalar
    baseline, paired by seed, over the runs that kept finite weights (`paired`)."""
    rows = []
    for ds in [d for d in wording.DATASET_LABELS if d in set(runs.dataset)]:
        part = runs[runs.dataset == ds]
        spreads = sorted(part[part.distribution != "scalar"].sigma_eps.unique())
        for s in [0.0, *spreads]:
            where = {"distribution": "scalar"} if s == 0 else {"distribution": list(HTS), "sigma_eps": s}
            g = paired(part, "final_acc", "seed", {**where, "nudge_from": "end"}, {**where, "nudge_from": "branch"},
                       level)
            rows.append({"dataset": ds, "sigma_eps": s, **g})
    return pd.DataFrame(rows, columns=["dataset", "sigma_eps", "gap", "low", "high", "n"])


def residual_spans(runs, curves, spread):
    """Per data set and scheme, the heterogeneous runs at `spread` that neither diverged nor
    collapsed (kept of all), and their mean free-phase residual at the first and last epoch."""
    rows = []
    last = int(curves.epoch.max()) if len(curves) else 0
    hts = runs[(runs.distribution != "scalar") & (runs.sigma_eps == spread)]
    for (ds, scheme), g in sorted(hts.groupby(["dataset", "nudge_from"]),
                                  key=lambda item: (list(wording.DATASET_LABELS).index(item[0][0]), item[0][1])):
        ok = g[stats.healthy_rows(g)]
        c = curves.merge(ok[["dataset", "nudge_from", "distribution", "sigma_eps", "seed"]])
        rows.append({"dataset": ds, "nudge_from": scheme, "kept": len(ok), "runs": len(g),
                     "first": c[c.epoch == 1].residual_free.mean(), "last": c[c.epoch == last].residual_free.mean(),
                     "epochs": last})
    return pd.DataFrame(rows, columns=["dataset", "nudge_from", "kept", "runs", "first", "last", "epochs"])


# -- the pages' numbers -----------------------------------------------------------------------

def relaxation_numbers(result):
    """The relaxation page's glued values: the per-state means of the end residuals, and per trained
    network (geometric mean over seeds, 95% interval) how far its free end state lies from the fixed
    point and how its nudged phase's last residual compares with its free phase's, never as a ratio
    to a value at the rounding floor (`floors`); then the same-weights test."""
    ends, same = result["ends"], result["same"]
    out = {**result["steps"], "n_train": result["n_train"], "seeds": int(ends.seed.nunique()),
           "rounding": ROUNDING, "rounding_steps": ROUNDING_STEPS,
           "nudge_window": wording.nudge_window(result["steps"])}
    for state in STATES:
        for d in CONDITIONS:
            part = select(ends, {"state": state, "distribution": d})
            for col in ("free", "nudged", "relative_to_fixed_point"):
                out[f"{state}_{d}_{col}"] = float(part[col].mean())
    trained = select(ends, {"state": "trained"})
    free, nudged, apart = (levels(trained, col) for col in ("free", "nudged", "to_fixed_point"))
    for d in CONDITIONS:
        out[f"fixed_{d}"] = wording.level_text(apart[d], apart[d]["floor"])
        part = log10(log10(trained[trained.distribution == d], "nudged"), "free")
        ratio = None if free[d]["floor"] else over(part.assign(r=part.log_nudged - part.log_free), "r", "seed", {})
        out[f"settle_{d}"] = wording.settle_text(free[d], nudged[d], ratio)
    measured = [d for d in CONDITIONS if apart[d]["n"]]
    at_floor = [d for d in measured if apart[d]["floor"]]
    above = [d for d in measured if not apart[d]["floor"] and apart[d]["above"]]
    out["fixed_verdict"] = wording.floor_verdict(at_floor, above, [d for d in measured if d not in at_floor + above])
    long_same = same.melt(id_vars=["distribution", "seed"], value_vars=["state", "signal"], var_name="quantity")
    gaps = {d: paired(long_same, "value", "seed", {"distribution": d, "quantity": "signal"},
                      {"distribution": d, "quantity": "state"}) for d in HTS}
    for d in HTS:
        part = same[same.distribution == d]
        out[f"same_{d}_state"], out[f"same_{d}_signal"] = float(part.state.mean()), float(part.signal.mean())
        out[f"same_{d}_state_max"] = float(part.state_max.mean())
        out[f"same_{d}_fixed_point_max"] = float(part.fixed_point_max.mean())
    out["same_verdict"] = wording.signal_verdict(gaps)
    return out


def timing_numbers(result, spread):
    """The timing page's glued values: the ablation's counts, and for each data set of the spec the
    verdict texts of the scheme comparison at `spread` (every key exists, whatever was run)."""
    runs, cells = result["runs"], result["cells"]
    out = {"n_runs": len(runs), "source": result["source"], "mid": spread}
    gaps = scheme_gap(runs) if len(runs) else pd.DataFrame(columns=["dataset", "sigma_eps", "gap", "low", "high"])
    for ds in ("mnist", "fashion-mnist"):
        key = ds.replace("-", "")
        g = gaps[(gaps.dataset == ds) & (gaps.sigma_eps == spread)]
        row = g.iloc[0] if len(g) else None
        ran = len(runs) and ds in set(runs.dataset)
        hts = {"dataset": ds, "distribution": list(HTS), "sigma_eps": spread}
        counts = (*broke(runs, {**hts, "nudge_from": "end"}), *broke(runs, {**hts, "nudge_from": "branch"}))
        out[f"scheme_{key}"] = (wording.scheme_text(row, wording.DATASET_LABELS[ds], counts) if ran
                                else f"{wording.DATASET_LABELS[ds]}: not run")
        part = runs[runs.dataset == ds] if len(runs) else runs
        out[f"broke_{key}"] = wording.broke_verdict(part, wording.DATASET_LABELS[ds])
    out["scalar_acc"] = float(cells[cells.distribution == "scalar"].final_acc.mean()) if len(cells) else 0.0
    return out


def drift_numbers(result, spreads):
    """The drift share's glued values: the scalar network's share of its hidden layer's update, and
    HTS minus scalar at each spread, paired by seed, both states."""
    shares = result["shares"][result["shares"].layer == "W1"]
    out = {"n_train": result["n_train"], "seeds": int(shares.seed.nunique())}
    for state in STATES:
        part = shares[shares.state == state]
        out[f"drift_scalar_{state}"] = 100 * float(part[part.distribution == "scalar"].share.mean())
        texts = []
        for s in spreads:
            g = paired(part.assign(share=100 * part.share), "share", "seed",
                       {"distribution": list(HTS), "sigma_eps": s}, {"distribution": "scalar"})
            text = wording.difference_text(g, "HTS more", "HTS less", digits=1, suffix=" points")
            texts.append(f"at σ_ε = {s:g}, {text}")
        out[f"drift_gap_{state}"] = "; ".join(texts)
    return out


def alignment_numbers(result, swept, beta, t_free, scheme=None):
    """The gradient page's glued values: the headline cosines (trained, binary cross-entropy, the
    configured beta and free-phase length) and, with their intervals over batches, HTS minus scalar,
    the effect of the free-phase length and of beta, and, under `scheme` (the one the networks were
    trained with; default: the package's), cosine against accuracy and the other losses."""
    scheme = scheme or Config().nudge_from
    rows, acc = result["rows"], result["accuracy"]
    base = {"loss": "bce", "beta": beta, "t_free": t_free}
    out = {"n_train": result["n_train"], "n_test": result["n_test"], "batches": int(rows.batch.nunique()),
           "swept": swept, "negligible": NEGLIGIBLE}
    for state in STATES:
        for s in ("branch", "end"):     # both schemes' numbers, whichever the networks trained with
            for layer in LAYERS:
                where = {**base, "state": state, "scheme": s, "param": layer}
                for d in CONDITIONS:
                    sel = {"distribution": d} if d == "scalar" else {"distribution": d, "sigma_eps": swept}
                    out[f"cos_{state}_{s}_{layer}_{d}"] = float(select(rows, {**where, **sel}).cosine.mean())
                g = paired(rows, "cosine", "batch", {**where, "distribution": list(HTS)},
                           {**where, "distribution": "scalar"})
                out[f"gap_{state}_{s}_{layer}"] = wording.difference_text(
                    g, "HTS closer to the gradient", "HTS further from it", "batches", negligible=NEGLIGIBLE)
    for s in ("branch", "end"):
        sweep = {**base, "state": "trained", "scheme": s, "param": "layer1",
                 "distribution": list(HTS), "sigma_eps": swept}
        lo, hi = min(rows.t_free), max(rows.t_free)
        g = paired(rows, "cosine", "batch", {**sweep, "t_free": hi}, {**sweep, "t_free": lo})
        out[f"tfree_{s}"] = wording.change_text(g, "longer free phase", NEGLIGIBLE)
        small = min(rows.beta)
        g = paired(rows, "cosine", "batch", {**sweep, "beta": small}, {**sweep, "beta": beta})
        out[f"beta_{s}"] = wording.change_text(g, "smaller nudge", NEGLIGIBLE)
        for group, at in (("scalar", {**sweep, "distribution": "scalar", "sigma_eps": 0.0}), ("hts", sweep)):
            for name, where in (("tlo", {"t_free": lo}), ("thi", {"t_free": hi}), ("betasmall", {"beta": small})):
                out[f"{name}_{s}_{group}"] = float(select(rows, {**at, **where}).cosine.mean())
        widest = select(rows, {**base, "state": "trained", "scheme": s, "param": "layer1",
                               "distribution": list(HTS), "sigma_eps": max(rows.sigma_eps)})
        out[f"widest_{s}"] = float(widest.groupby("distribution").cosine.mean().min())
    out.update(t_lo=int(min(rows.t_free)), t_hi=int(max(rows.t_free)), beta_small=float(min(rows.beta)),
               widest=float(max(rows.sigma_eps)))
    cos = select(rows, {**base, "state": "trained", "scheme": scheme, "param": "layer1"}).groupby(
        ["distribution", "sigma_eps"]).cosine.mean().rename("cosine").reset_index().merge(acc)
    out["rank_text"] = wording.rank_text(cos.cosine, cos.accuracy)
    for loss in ("bce", "mse", "ce"):
        where = {"state": "trained", "scheme": scheme, "beta": beta, "t_free": t_free, "loss": loss}
        for layer in LAYERS:
            for group, dists in (("scalar", "scalar"), ("hts", list(HTS))):
                sel = select(rows, {**where, "param": layer, "distribution": dists})
                sel = sel[(sel.distribution == "scalar") | (sel.sigma_eps == swept)]
                out[f"{loss}_{layer}_cosine_{group}"] = float(sel.cosine.mean())
                out[f"{loss}_{layer}_ratio_{group}"] = float(sel.ratio.mean())
    out["acc_scalar"] = float(acc[acc.distribution == "scalar"].accuracy.mean())
    out["acc_hts_lo"], out["acc_hts_hi"] = (float(f(acc[acc.distribution != "scalar"].accuracy)) for f in (min, max))
    return out
