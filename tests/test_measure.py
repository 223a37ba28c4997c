"""The mechanism chapters' measurements (hts_ep.measure): each on small networks against an
independent computation with the package's own public API, cached by its inputs; their
reductions on hand-made tables; every word function of theirs (hts_ep.wording), their tables
(hts_ep.tables) and their figures' redesigned axes (hts_ep.figures)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from hts_ep import Ensemble, data, experiments, figures, measure, stats, tables, wording
from hts_ep import gradients as G

from conftest import small

SUBSET = 256


def nets(conditions, seeds=(0, 1), **changes):
    return [small(distribution=d, sigma_eps=s, seed=seed, train_subset=SUBSET, **changes)
            for seed in seeds for d, s in conditions]


def probe_batch(configs, n, train=False):
    """The first n MNIST images as `configs` see them (their input scaling)."""
    split = data.scaled(data.load("mnist", train=train), configs[0])
    return measure.batch_of(split, 0, n, len(configs))


def refuse(*args, **kw):
    raise AssertionError("computed again: the cache was not used")


# -- 05: relaxation ----------------------------------------------------------------------------

RELAX = nets([(d, 0.1) for d in measure.CONDITIONS])


@pytest.fixture(scope="module")
def relaxed(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    return measure.relaxation(RELAX, 32, 1, 3, root=root, device="cpu") + (root,)


@pytest.mark.data
def test_relaxation_traces_the_phases_the_rule_reads(relaxed):
    result, env, _ = relaxed
    c = RELAX[0]
    start = c.t_free - c.t_nudge if c.nudge_from == "branch" else c.t_free      # where the nudged phase starts
    assert result["steps"] == {"t_free": c.t_free, "t_nudge": c.t_nudge, "t_long": 3 * c.t_free, "branch": start}
    tr = measure.traces(result)
    for (state, d, seed, phase), g in tr.groupby(["state", "distribution", "seed", "phase"]):
        first, last = (1, c.t_free) if phase == "free" else (start + 1, start + c.t_nudge)
        assert g.step.tolist() == list(range(first, last + 1)), (state, d, seed, phase)
        assert (g.residual >= 0).all()
    window = wording.nudge_window(result["steps"])
    assert (f"starts from the free phase's end state at step {c.t_free} and runs to step {c.t_free + c.t_nudge}"
            if c.nudge_from == "end" else f"branches off the free run at step {start}") in window
    assert wording.nudge_window({**result["steps"], "branch": c.t_free - c.t_nudge}).endswith(
        f"at step {c.t_free - c.t_nudge} and ends beside it at step {c.t_free}.")
    ends = fresh_ends_are_the_packages(result, RELAX, 32)
    last = tr[(tr.state == "fresh") & (tr.phase == "free") & (tr.step == c.t_free)]
    assert np.allclose(last.residual, ends.free, rtol=1e-3)          # stored to 4 significant digits
    assert env["device"] == "cpu" and env["finished"]


def fresh_ends_are_the_packages(result, configs, n):
    """The fresh networks' end residuals (and how far the nudge moved h) are those of the package's own
    phases on the same n images; returns those rows."""
    ens = Ensemble(configs, device="cpu")
    x, y = probe_batch(configs, n)
    with torch.no_grad():
        (h0, _, free), (hb, _, nudged) = ens.phases(ens.drive(x), y)
    ends = result["ends"][result["ends"].state == "fresh"]
    assert np.allclose(ends.free, free.numpy(), rtol=1e-4, atol=1e-9)
    assert np.allclose(ends.nudged, nudged.numpy(), rtol=1e-4, atol=1e-9)
    assert np.allclose(ends.nudge_moved, (hb - h0).abs().amax(dim=(1, 2)).numpy(), rtol=1e-4)
    return ends


@pytest.mark.data
def test_relaxation_under_the_branching_nudge(tmp_path):
    """The fixture's networks use the default scheme; the branching nudge end to end, small, whatever the
    default is."""
    configs = nets([("scalar", 0.1), ("normal", 0.1)], seeds=(0,), nudge_from="branch")
    result, _ = measure.relaxation(configs, 16, 1, 2, root=tmp_path, device="cpu")
    c = configs[0]
    assert result["steps"]["branch"] == c.t_free - c.t_nudge
    tr = measure.traces(result)
    nudged = tr[tr.phase == "nudged"]
    assert nudged.step.min() == c.t_free - c.t_nudge + 1 and nudged.step.max() == c.t_free
    assert wording.nudge_window(result["steps"]) == (
        f"The nudged phase branches off the free run at step {c.t_free - c.t_nudge} and ends beside it at step "
        f"{c.t_free}.")
    fresh_ends_are_the_packages(result, configs, 16)


@pytest.mark.data
def test_relaxation_same_weights_and_training(relaxed):
    result, _, _ = relaxed
    same = result["same"]
    scalar = same[same.distribution == "scalar"]
    assert (scalar[["state_max", "fixed_point_max", "state", "signal"]] == 0).all().all()
    assert (same[same.distribution != "scalar"].signal > 0).all()
    ends = result["ends"].set_index(["state", "distribution", "seed"])
    assert not np.allclose(ends.loc["fresh"].nudge_moved, ends.loc["trained"].nudge_moved)    # it trained
    assert result["n_train"] == SUBSET
    # against the package's phases of a separately trained ensemble given its scalar weights
    from hts_ep.train import train_epoch
    ens = Ensemble(RELAX, device="cpu")
    train_epoch(ens, measure.splits(RELAX[0])[0])
    m, ref = RELAX.index(RELAX[4 + 2]), 4                       # seed 1: log-normal, scalar
    with torch.no_grad():
        for p in (ens.W1, ens.b1, ens.W2, ens.b2):
            p[m] = p[ref]
        x, y = probe_batch(RELAX, 32)
        (h0, _, _), (hb, _, _) = ens.phases(ens.drive(x), y)
    signal = ((hb[m] - h0[m]) - (hb[ref] - h0[ref])).norm() / (hb[ref] - h0[ref]).norm()
    row = same[(same.distribution == "lognormal") & (same.seed == 1)].iloc[0]
    assert row.signal == pytest.approx(signal.item(), rel=1e-3)
    assert row.state == pytest.approx(((h0[m] - h0[ref]).norm() / h0[ref].norm()).item(), rel=1e-3, abs=1e-7)


@pytest.mark.data
def test_relaxation_is_cached_by_its_inputs(relaxed, monkeypatch):
    result, _, root = relaxed
    monkeypatch.setattr(measure, "_relaxation", refuse)
    again, _ = measure.relaxation(RELAX, 32, 1, 3, root=root, device="cpu")
    pd.testing.assert_frame_equal(again["ends"], result["ends"])
    with pytest.raises(AssertionError, match="computed again"):
        measure.relaxation(RELAX, 16, 1, 3, root=root, device="cpu")
    with pytest.raises(AssertionError, match="computed again"):
        measure.relaxation([c.replace(beta=0.1) for c in RELAX], 32, 1, 3, root=root, device="cpu")
    monkeypatch.setitem(measure.VERSIONS, "relaxation", measure.VERSIONS["relaxation"] + 1)
    with pytest.raises(AssertionError, match="computed again"):
        measure.relaxation(RELAX, 32, 1, 3, root=root, device="cpu")


def test_share_weights_gives_each_network_its_seeds_scalar_weights():
    configs = nets([("normal", 0.1), ("scalar", 0.1), ("gamma", 0.1)], seeds=(0, 1), n_hidden=8)
    ens = Ensemble(configs, device="cpu")
    before = ens.eps_hidden.clone()
    measure.share_weights(ens, [c.distribution == "scalar" for c in configs], [c.seed for c in configs])
    for m, c in enumerate(configs):
        ref = Ensemble([c.replace(distribution="scalar")], device="cpu")
        for name in ("W1", "b1", "W2", "b2"):
            assert torch.equal(getattr(ens, name)[m], getattr(ref, name)[0]), (m, name)
    assert torch.equal(ens.eps_hidden, before)
    with pytest.raises(ValueError, match="scalar network for every seed"):
        measure.share_weights(ens, [False] * len(configs), [c.seed for c in configs])


def test_page_configs():
    configs = measure.page_configs("archive", None, {"beta": 0.1}, [("scalar", None), ("gamma", 0.05)])
    quick = experiments.load_profile("quick")
    assert [(c.seed, c.distribution) for c in configs] == [(s, d) for s in quick["seeds"] for d in ("scalar", "gamma")]
    assert all(c.train_subset == quick["train_subset"] and c.beta == 0.1 and c.dataset == "mnist" for c in configs)
    assert configs[1].sigma_eps == 0.05 and configs[0].sigma_eps == small().sigma_eps
    assert [c.seed for c in measure.page_configs("smoke", [7], {}, [("scalar", None)])] == [7]


# -- 07: timing --------------------------------------------------------------------------------

TIMING = """
name: timing
description: both schemes, small networks
grid:
  nudge_from: [branch, end]
  distribution,sigma_eps: [[scalar, 0.1], [normal, 0.05], [normal, 0.2]]
fixed: {n_hidden: 64, t_free: 20, t_nudge: 4, eps_out: 0.25}
"""


@pytest.fixture
def tiny_specs(tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "profiles.yaml").write_text("tiny: {seeds: [0, 1], epochs: 2, train_subset: 256, test_subset: 300}\n")
    (specs / "timing.yaml").write_text(TIMING)
    monkeypatch.setattr(experiments, "SPEC_DIR", specs)
    return tmp_path / "results"


@pytest.mark.data
def test_timing_reduces_the_records_and_is_cached(tiny_specs, monkeypatch):
    result, _ = measure.scheme_runs("timing", "tiny", root=tiny_specs)
    runs = result["runs"]
    assert len(runs) == 12 and set(runs.nudge_from) == {"branch", "end"} and result["profile"] == "tiny"
    assert len(result["curves"]) == 24 and set(result["curves"].epoch) == {1, 2}
    gap = result["hts_gap"].set_index(["nudge_from", "sigma_eps"])
    for scheme in ("branch", "end"):         # HTS minus scalar per scheme, paired by seed
        for s in (0.05, 0.2):
            part = runs[runs.nudge_from == scheme]
            diff = (part[part.sigma_eps == s].set_index("seed").final_acc
                    - part[part.distribution == "scalar"].set_index("seed").final_acc).dropna()
            assert gap.loc[(scheme, s)].gap == pytest.approx(diff.mean()), (scheme, s)
    assert "profile tiny" in result["source"] and "12 runs" in result["source"]
    monkeypatch.setattr(measure, "_scheme_runs", refuse)
    again, _ = measure.scheme_runs("timing", "tiny", root=tiny_specs)
    pd.testing.assert_frame_equal(again["runs"], runs)
    with pytest.raises(AssertionError, match="computed again"):
        measure.scheme_runs("timing", "tiny", seeds=[0], root=tiny_specs)
    numbers = measure.timing_numbers(result, 0.2)
    assert numbers["n_runs"] == 12 and numbers["broke_fashionmnist"] == "Fashion-MNIST: not run"
    assert numbers["scheme_mnist"].startswith("MNIST: ") and numbers["scheme_fashionmnist"] == "Fashion-MNIST: not run"
    table = tables.timing_table(result)
    assert len(table) == 4 and not table.isna().any().any()
    assert list(table.index.names) == ["data set", "nudge", "σ_ε"]
    assert [i[1:] for i in table.index] == [("branching", "0.05"), ("branching", "0.2"), ("from the free end", "0.05"),
                                            ("from the free end", "0.2")]
    assert set(table["heterogeneous runs that broke"].str.split(" of ").str[1]) == {"2"}    # one distribution, 2 seeds
    dead = {**result, "runs": runs.assign(diverged=False, collapsed=False),
            "hts_gap": result["hts_gap"].assign(gap=math.nan, ci_low=math.nan, ci_high=math.nan)}
    row = tables.timing_table(dead).iloc[0]
    assert row["HTS − scalar (points)"] == "no pair of runs"


def test_scheme_runs_without_a_data_set_is_not_stored(tiny_specs, monkeypatch):
    calls = []

    def partial(*args):
        calls.append(1)
        return {"runs": pd.DataFrame(), "missing": {"mnist": "its files are missing."}}
    monkeypatch.setattr(measure, "_scheme_runs", partial)
    for _ in range(2):
        result, env = measure.scheme_runs("timing", "tiny", root=tiny_specs)
        assert result["missing"] and env == {}
    assert len(calls) == 2 and not list(tiny_specs.glob("pages/timing/*.json"))


# -- 07: drift share ---------------------------------------------------------------------------

@pytest.mark.data
def test_drift_share(tmp_path, monkeypatch):
    # a free phase of 100 steps settles the scalar network (eps 0.2 everywhere), not the slow neurons of
    # a wide normal spread (clipped at eps_min = 0.01)
    configs = nets([("scalar", 0.1), ("normal", 0.05), ("normal", 0.2)], t_free=100)
    result, _ = measure.drift(configs, 32, 1, root=tmp_path, device="cpu")
    shares = result["shares"]
    assert len(shares) == 2 * 2 * len(configs) and result["n_train"] == SUBSET
    fresh = shares[(shares.state == "fresh") & (shares.layer == "W1")]
    x, y = probe_batch(configs, 32, train=True)
    expected = stats.drift_share(Ensemble(configs, device="cpu"), x, y)["W1"]
    assert np.allclose(fresh.share, expected, rtol=1e-5)
    assert fresh[fresh.distribution == "scalar"].share.max() < 1e-2
    assert fresh[fresh.sigma_eps == 0.2].share.min() > 0.05
    trained = shares[(shares.state == "trained") & (shares.layer == "W1")]
    assert not np.allclose(trained.share, fresh.share)
    numbers = measure.drift_numbers(result, [0.05, 0.2])
    assert numbers["drift_scalar_fresh"] < 1
    text = numbers["drift_gap_fresh"]
    assert text.startswith("at σ_ε = 0.05, ") and "; at σ_ε = 0.2, +" in text
    monkeypatch.setattr(measure, "_drift", refuse)
    measure.drift(configs, 32, 1, root=tmp_path, device="cpu")


# -- 08: gradients -----------------------------------------------------------------------------

@pytest.mark.data
def test_alignment_rows_are_the_gradient_comparison(tmp_path, monkeypatch):
    configs = nets([("scalar", 0.1), ("gamma", 0.05), ("gamma", 0.2)], seeds=(0,))
    result, _ = measure.alignment(configs, 8, 2, 1, [10, 20], [0.05, 0.2], 100, 0.2, root=tmp_path, device="cpu")
    rows = result["rows"]
    beta = configs[0].beta
    assert set(rows[rows.loss != "bce"].beta) == {beta} and set(rows[rows.loss == "bce"].beta) == {0.05, beta}
    swept = rows[rows.t_free == 10]
    assert set(swept.distribution + swept.sigma_eps.astype(str)) == {"scalar0.0", "gamma0.2"}
    assert set(rows[rows.sigma_eps == 0.05].beta) == {beta}             # not swept: the configured beta only
    assert set(swept.loss) == {"bce"} and set(rows.param) == set(measure.LAYERS)
    assert rows.cosine.between(-1, 1).all() and (rows.ratio > 0).all()
    # the fresh rows are gradients.compare on each freshly initialised network
    train, _ = measure.splits(configs[0], n_test=1)
    x, y = train.x[8:16].double(), F.one_hot(train.y[8:16], 10).double()
    net = G.Net.from_ensemble(Ensemble(configs, device="cpu"), 1)
    ref = pd.DataFrame(G.compare(net, x, y, [beta], losses=("bce",)))
    ref = ref[ref.param == "layer1"].set_index("scheme").cosine
    ours = measure.select(rows, {"state": "fresh", "distribution": "gamma", "sigma_eps": 0.05, "batch": 1,
                                 "t_free": 20, "loss": "bce", "beta": beta, "param": "layer1"}).set_index("scheme")
    assert np.allclose(ours.cosine[ref.index], ref, atol=1e-5)
    assert len(result["accuracy"]) == 3 and result["n_test"] == 100
    numbers = measure.alignment_numbers(result, 0.2, beta, 20)
    assert numbers["t_lo"] == 10 and numbers["batches"] == 2
    assert all(isinstance(v, (int, float, str)) for v in numbers.values())
    assert not any(isinstance(v, float) and math.isnan(v) for k, v in numbers.items()
                   if "normal" not in k)          # the page's other two distributions are not here
    for scheme in ("branch", "end"):    # the losses' numbers and the rank read the scheme asked for
        n = measure.alignment_numbers(result, 0.2, beta, 20, scheme)
        assert n["bce_layer1_cosine_scalar"] == pytest.approx(numbers[f"cos_trained_{scheme}_layer1_scalar"])
        assert tables.losses_table(result, 0.2, beta, 20, scheme).loc["Scalar"].iloc[0] == \
            pytest.approx(n["bce_layer1_cosine_scalar"])
    table = tables.alignment_table(result, 0.2, beta, 20)
    assert list(table.index) == ["Scalar", "Gamma"]
    monkeypatch.setattr(measure, "_alignment", refuse)
    measure.alignment(configs, 8, 2, 1, [10, 20], [0.05, 0.2], 100, 0.2, root=tmp_path, device="cpu")


# -- reductions --------------------------------------------------------------------------------

def frame(values, unit="seed"):
    """Rows (distribution, unit, value) from {distribution: [value per unit]}."""
    return pd.DataFrame([{"distribution": d, unit: k, "value": v} for d, vs in values.items()
                         for k, v in enumerate(vs)])


def test_paired_pairs_by_unit_and_leaves_out_incomplete_units():
    f = frame({"scalar": [1.0, 2.0, 3.0, 4.0], "normal": [2.0, 2.5, math.nan, 6.0], "gamma": [4.0, 3.5, 5.0, 8.0]})
    f = f[~((f.distribution == "scalar") & (f.seed == 3))]          # seed 3 lacks its scalar run
    g = measure.paired(f, "value", "seed", {"distribution": ["normal", "gamma"]}, {"distribution": "scalar"})
    per = [3.0 - 1.0, 3.0 - 2.0, 5.0 - 3.0]                        # the mean over the finite HTS values
    assert g["n"] == 3 and g["gap"] == pytest.approx(np.mean(per))
    assert (g["low"], g["high"]) == pytest.approx(stats.t_interval(per)[1:])
    assert measure.over(f, "value", "seed", {"distribution": "scalar"})["gap"] == pytest.approx(2.0)
    one = measure.paired(f[f.seed == 0], "value", "seed", {"distribution": "gamma"}, {"distribution": "scalar"})
    assert one["gap"] == 3.0 and math.isnan(one["low"])


def test_scheme_gap_is_end_minus_branch_per_seed():
    rows = []
    for seed, (b, e) in enumerate([(90.0, 88.0), (91.0, 87.0), (89.0, 89.5)]):
        for scheme, acc in (("branch", b), ("end", e)):
            rows += [{"dataset": "mnist", "nudge_from": scheme, "distribution": d, "sigma_eps": 0.1, "seed": seed,
                      "final_acc": acc + (0.5 if d == "gamma" else 0)} for d in ("normal", "gamma")]
            rows.append({"dataset": "mnist", "nudge_from": scheme, "distribution": "scalar", "sigma_eps": 0.1,
                         "seed": seed, "final_acc": 95.0})
    gaps = measure.scheme_gap(pd.DataFrame(rows)).set_index("sigma_eps")
    assert gaps.loc[0.1].gap == pytest.approx(np.mean([-2.0, -4.0, 0.5])) and gaps.loc[0.1].n == 3
    assert gaps.loc[0.0].gap == 0 and list(gaps.dataset) == ["mnist", "mnist"]


def test_residual_spans_keep_healthy_runs_only():
    runs = pd.DataFrame({"dataset": "mnist", "nudge_from": "end", "distribution": ["normal", "gamma", "scalar"],
                         "sigma_eps": 0.1, "seed": 0, "diverged": [False, True, False],
                         "collapsed": [False, False, False]})
    curves = pd.DataFrame({"dataset": "mnist", "nudge_from": "end", "distribution": ["normal", "normal", "gamma"],
                           "sigma_eps": 0.1, "seed": 0, "epoch": [1, 2, 1], "residual_free": [1e-3, 2e-3, 5.0]})
    s = measure.residual_spans(runs, curves, 0.1).iloc[0]
    assert (s.kept, s.runs, s["first"], s["last"], s.epochs) == (1, 2, 1e-3, 2e-3, 2)
    both = pd.concat([runs.assign(dataset="fashion-mnist"), runs, runs.assign(nudge_from="branch")])
    order = measure.residual_spans(both, curves, 0.1)[["dataset", "nudge_from"]].values.tolist()
    assert order == [["mnist", "branch"], ["mnist", "end"], ["fashion-mnist", "end"]]


def test_batch_cells():
    rows = pd.DataFrame({"state": "fresh", "loss": "bce", "scheme": "branch", "beta": 0.2, "t_free": 125,
                         "param": "layer1", "distribution": "scalar", "sigma_eps": 0.0, "batch": [0, 1],
                         "cosine": [0.9, 0.7], "ratio": [1.0, 1.0]})
    c = measure.batch_cells(rows).iloc[0]
    assert c.cosine == pytest.approx(0.8) and c.cosine_std == pytest.approx(math.sqrt(0.02)) and c.ratio_std == 0


def relaxation_result():
    """Hand-made ends: the scalar network at the float32 rounding floor (its largest |h| 4), the
    heterogeneous ones above it; the normal network's nudged residual equal to its free one."""
    rows = []
    for st in measure.STATES:
        for d in measure.CONDITIONS:
            for s in range(3):
                scalar = d == "scalar"
                free = 1e-7 if scalar else 1e-4 * (s + 1)
                apart = 4e-7 * (s + 1) if scalar else 0.1 * (s + 1)
                nudged = free * (1.0, 1.05, 0.97)[s] if d == "normal" else 1e-3 * (s + 2)
                rows.append({"state": st, "distribution": d, "sigma_eps": 0.1, "seed": s, "free": free,
                             "nudged": nudged, "continued": 1e-8, "to_fixed_point": apart,
                             "relative_to_fixed_point": apart / 4, "nudge_moved": 0.01})
    same = pd.DataFrame([{"distribution": d, "sigma_eps": 0.1, "seed": s, "state_max": 0.1, "fixed_point_max": 1e-5,
                          "state": 0.01 * (d != "scalar"), "signal": (0.2 + 0.01 * s) * (d != "scalar")}
                         for d in measure.CONDITIONS for s in range(3)])
    return {"ends": pd.DataFrame(rows), "same": same, "n_train": 100,
            "steps": {"t_free": 125, "t_nudge": 12, "t_long": 500, "branch": 113}}


def test_relaxation_numbers_form_no_ratio_at_the_rounding_floor():
    result = relaxation_result()
    assert list(measure.floors(result["ends"]).round(12).unique()) == [round(4 * measure.ROUNDING, 12)]
    n = measure.relaxation_numbers(result)
    assert not {"settle_text", "settle_verdict", "fixed_text", "settle_factor"} & set(n)   # no pooled ratios
    # the scalar network sits at the floor: its values are said to be there, and nothing is divided by them
    assert n["fixed_scalar"] == "7.3e-07 (at the float32 rounding floor)"          # 4e-7 × 6^(1/3)
    assert n["settle_scalar"].startswith("free phase 1.0e-07 (at the float32 rounding floor: no ratio is formed")
    assert "÷" not in n["settle_scalar"] and "times" not in n["settle_scalar"]
    # per network, with its interval over seeds: equal residuals cannot be told apart, larger ones can
    assert n["settle_normal"].endswith("nudged ÷ free 1.0 times [0.91, 1.1], cannot tell apart (the 95% interval "
                                       "holds a factor of 1)")
    assert n["settle_gamma"].endswith(", the nudged phase ends further from rest")
    assert n["fixed_normal"].startswith("0.18 [")
    assert n["fixed_verdict"] == ("The scalar network's free phase ends at the fixed point to within float32 "
                                  "rounding; the normal, log-normal and gamma networks' free phases end short of the "
                                  "fixed point (the 95% interval of each distance lies above the rounding floor).")
    assert n["same_verdict"].startswith("Relative to their size, the learning signals differ more")
    assert n["seeds"] == 3 and n["trained_scalar_free"] == pytest.approx(1e-7) and n["rounding_steps"] == 8


def test_levels_and_floor_verdict():
    ends = relaxation_result()["ends"]
    ends = ends[ends.state == "trained"]
    lv = measure.levels(ends, "to_fixed_point")
    assert lv["scalar"]["floor"] and not lv["scalar"]["above"]
    assert lv["gamma"]["above"] and not lv["gamma"]["floor"]
    assert 10 ** lv["gamma"]["gap"] == pytest.approx(0.1 * 6 ** (1 / 3))       # the geometric mean over seeds
    mixed = ends.assign(to_fixed_point=np.where(ends.seed == 0, 1e-7, ends.to_fixed_point))
    assert not measure.levels(mixed, "to_fixed_point")["gamma"]["floor"]        # one seed at the floor, not all
    assert wording.floor_verdict([], ["normal"], ["gamma", "scalar"]) == (
        "The normal network's free phase ends short of the fixed point (the 95% interval of the distance lies above "
        "the rounding floor); for the gamma and scalar networks the distance cannot be told from the rounding floor.")
    assert wording.floor_verdict([], []) == "No network was measured."


def test_level_and_two_digit_texts():
    assert [wording.two_digits(v) for v in (0.003, 0.00096, 1.0, 37.2, 9.5e-8, 0.29)] == \
        ["0.0030", "0.00096", "1.0", "37", "9.5e-08", "0.29"]
    lg = {"gap": math.log10(0.29), "low": math.log10(0.2), "high": math.log10(0.41)}
    assert wording.level_text(lg) == "0.29 [0.20, 0.41]"
    assert wording.level_text(lg, floor=True) == "0.29 (at the float32 rounding floor)"
    assert wording.level_text({**lg, "low": math.nan, "high": math.nan}) == "0.29"
    assert wording.level_text({"gap": math.nan, "low": math.nan, "high": math.nan}) == "no value"


# -- words -------------------------------------------------------------------------------------

def g(gap, low=math.nan, high=math.nan, n=3):
    return {"gap": gap, "low": low, "high": high, "n": n}


def test_direction():
    def verdict(g, above, below, unit="seeds", ratio=False):
        return wording.direction(g["low"], g["high"], above, below, unit=unit, ratio=ratio)
    assert verdict(g(1, 0.5, 1.5), "up", "down") == "up"
    assert verdict(g(-1, -1.5, -0.5), "up", "down") == "down"
    assert verdict(g(0.1, -0.5, 0.7), "up", "down") == "cannot tell apart (the 95% interval holds zero)"
    assert "holds a factor of 1" in verdict(g(0.1, -0.5, 0.7), "up", "down", ratio=True)
    assert verdict(g(1), "up", "down", "batches") == "cannot tell apart (no interval: fewer than two batches)"


def test_short_direction():
    assert wording.direction(0.1, 0.3, "up", "down", short=True, why=True) == "up"
    assert wording.direction(-0.3, -0.1, "up", "down", short=True, why=True) == "down"
    assert wording.direction(-0.3, 0.1, "up", "down", short=True, why=True) == "cannot tell (interval holds 0)"
    assert wording.direction(math.nan, math.nan, "up", "down", short=True, why=True) == "cannot tell (one seed)"
    assert wording.direction(-0.3, 0.1, "up", "down", short=True) == "cannot tell"          # without why
    assert wording.direction(math.nan, math.nan, short=True) == "cannot tell"


def test_factor_text():
    assert wording.factor_text(g(math.log10(12), math.log10(3.14), math.log10(46))) == "12 times [3.1, 46]"
    assert wording.factor_text(g(math.log10(41234), 3.68, 5.5)) == "41,000 times [4,800, 320,000]"
    assert wording.factor_text(g(-1)) == "0.10 times"
    assert wording.factor_text(g(0.0, -0.01, 0.01)) == "1.0 times [0.98, 1.0]"
    assert wording.factor_text(g(math.nan)) == "no value"


def test_difference_text_shows_enough_digits():
    assert wording.difference_text(g(-0.019, -0.02, -0.018), "up", "down") == "-0.019 [-0.020, -0.018], down"
    assert wording.difference_text(g(0.00012, 0.00008, 0.00016), "up", "down") == "+0.00012 [+0.00008, +0.00016], up"
    assert wording.difference_text(g(1.5, -0.5, 3.5), "up", "down", digits=1, suffix=" points") == \
        "+1.5 points [-0.5, +3.5], cannot tell apart (the 95% interval holds zero)"
    assert wording.difference_text(g(0.5), "up", "down", "batches").endswith("fewer than two batches)")
    assert wording.difference_text(g(math.nan), "up", "down") == "no value"
    assert wording.change_text(g(0.2, 0.1, 0.3), "longer free phase").endswith("the longer free phase raises it")


def test_difference_text_calls_a_tiny_sure_change_practically_zero():
    tiny = g(-0.0064, -0.0076, -0.0052)
    assert wording.change_text(tiny, "longer free phase") == (
        "-0.0064 [-0.0076, -0.0052], the longer free phase lowers it")
    assert wording.change_text(tiny, "longer free phase", 0.01) == (
        "-0.0064 [-0.0076, -0.0052], practically zero (the whole 95% interval lies within ±0.01)")
    assert wording.difference_text(g(-0.015, -0.016, -0.013), "closer", "further", negligible=0.01).endswith(
        ", further")
    assert wording.difference_text(g(-0.008, -0.012, -0.004), "closer", "further", negligible=0.01).endswith(
        ", further")                                            # the interval reaches past the threshold
    assert wording.difference_text(g(0.001), "up", "down", "batches", negligible=0.01).endswith(
        "fewer than two batches)")                               # no interval: nothing to call zero


def test_plural():
    assert wording.plural(1, "epoch") == "1 epoch" and wording.plural(3, "seed") == "3 seeds"
    assert wording.plural(0, "run") == "0 runs" and wording.plural(8000, "image") == "8,000 images"
    assert wording.plural(2, "batch", "batches") == "2 batches"
    assert "for 2 epochs," in wording.scale_note("quick", 3, 8000, 2) and "over 1 seed." in wording.scale_note(
        "quick", 1, 8000, 1)


def test_signal_verdict_names_each_side():
    text = wording.signal_verdict({"normal": g(0.2, 0.1, 0.3), "lognormal": g(-0.2, -0.3, -0.1),
                                   "gamma": g(0.0, -0.1, 0.1)})
    assert text == ("Relative to their size, the learning signals differ more than the free-phase end states do "
                    "for normal (+0.20 [+0.10, +0.30]) steps; they differ less than the end states do for log-normal "
                    "(-0.20 [-0.30, -0.10]) steps; they cannot be told apart from the end states' difference for "
                    "gamma (+0.00 [-0.10, +0.10]) steps (the 95% interval over seeds holds zero, or there is none).")
    both = wording.signal_verdict({"normal": g(0.2, 0.1, 0.3), "gamma": g(0.2)})
    assert "for normal (+0.20 [+0.10, +0.30]) steps; they cannot be told apart" in both
    assert "gamma (+0.20) steps" in both
    assert wording.join(["a", "b", "c"]) == "a, b and c"


def test_scheme_and_broke_texts():
    row = {"gap": -2.0, "low": -3.0, "high": -1.0, "n": 3}
    assert wording.scheme_text(row, "MNIST") == "MNIST: -2.00 points [-3.00, -1.00] over 3 seeds, lower from the end"
    assert wording.scheme_text({**row, "low": -3.0, "high": 1.0}, "MNIST").endswith(", cannot tell apart (the 95% "
                                                                                 "interval holds zero)")
    assert wording.scheme_text(None, "KMNIST") == "KMNIST: no pair of runs to compare"
    # where runs broke, their counts and Fisher's test, never an accuracy interval
    broke = wording.scheme_text({**row, "low": -117.5, "high": 49.6}, "MNIST", (6, 9, 0, 9))
    assert broke == ("MNIST: 6 of 9 heterogeneous runs broke from the end, 0 of 9 when branching (Fisher's exact "
                     f"test, p = {stats.fisher(6, 9, 0, 9):.2g}: more often from the end)")
    assert wording.scheme_text(row, "MNIST", (0, 9, 0, 9)).startswith("MNIST: -2.00 points [-3.00, -1.00]")
    runs = pd.DataFrame({"diverged": [True, False, False], "collapsed": [False, True, False]})
    assert wording.broke_text(runs) == "2 of 3" and wording.broke_text(runs.iloc[:0]) == "not run"


def test_broke_verdict_tests_the_rates():
    def runs(branch, end, n=12):
        return pd.DataFrame([{"distribution": "normal", "nudge_from": s, "diverged": i < k, "collapsed": False}
                             for s, k in (("branch", branch), ("end", end)) for i in range(n)]
                            + [{"distribution": "scalar", "nudge_from": "end", "diverged": True, "collapsed": False}])
    assert wording.broke_verdict(runs(0, 9), "MNIST") == (
        "MNIST: 0 of 12 heterogeneous runs broke when branching, 9 of 12 from the end (Fisher's exact test, "
        f"p = {stats.fisher(9, 12, 0, 12):.2g}: more often from the end)")
    assert wording.broke_verdict(runs(1, 2), "MNIST").endswith(": cannot tell the rates apart)")
    assert wording.broke_verdict(runs(0, 0), "MNIST").endswith("from the end (none broke)")
    assert wording.broke_verdict(runs(0, 0).iloc[:0], "KMNIST") == "KMNIST: not run"


def test_comparison_text_gives_counts_where_runs_broke():
    g3 = {"gap": -4.55, "low": -7.45, "high": -1.65}
    sides = ("heterogeneous", "scalar")
    assert wording.comparison_text(g3, (0, 9, 0, 3), "HTS higher", "HTS lower", sides) == (
        "-4.55 [-7.45, -1.65], HTS lower")
    assert wording.comparison_text({**g3, "low": -9.0, "high": 1.0}, (0, 9, 0, 3), "up", "down", sides).endswith(
        "cannot tell apart (the 95% interval holds zero)")                  # the default wording, as every page
    text = wording.comparison_text(g3, (1, 9, 0, 3), "HTS higher", "HTS lower", sides)
    assert text == ("broke: 1 of 9 heterogeneous, 0 of 3 scalar (Fisher's exact test, p = 1: cannot tell the rates "
                    "apart)")
    often = wording.comparison_text(g3, (9, 9, 0, 3), "up", "down", sides, often=tables.HTS_OFTEN)
    assert often.endswith(": heterogeneous runs broke more often)") and "-4.55" not in often
    assert wording.comparison_text(None, (0, 9, 0, 3), "up", "down", sides) == "no pair of runs"


def test_timing_table_counts_heterogeneous_runs_per_spread():
    rows = []
    for scheme in ("branch", "end"):
        for seed in range(3):
            rows.append({"dataset": "mnist", "nudge_from": scheme, "distribution": "scalar", "sigma_eps": 0.1,
                         "seed": seed, "final_acc": 90.0, "diverged": False, "collapsed": False})
            for d in stats.HTS:
                for s in (0.05, 0.2):
                    dies = scheme == "end" and s == 0.2 and (seed, d) != (0, "gamma")
                    rows.append({"dataset": "mnist", "nudge_from": scheme, "distribution": d, "sigma_eps": s,
                                 "seed": seed, "final_acc": math.nan if dies else 89.0 + seed, "diverged": dies,
                                 "collapsed": False})
    runs = pd.DataFrame(rows)
    gap = pd.DataFrame([{"dataset": "mnist", "nudge_from": sc, "sigma_eps": s, "gap": 0.5, "ci_low": -1.0,
                         "ci_high": 2.0, "seeds": 3} for sc in ("branch", "end") for s in (0.05, 0.2)])
    cells = pd.DataFrame([{"dataset": "mnist", "nudge_from": sc, "distribution": "scalar", "sigma_eps": 0.1,
                           "final_acc": 90.0, "seed_std": 0.0} for sc in ("branch", "end")])
    t = tables.timing_table({"hts_gap": gap, "runs": runs, "cells": cells})
    assert t["heterogeneous runs that broke"].tolist() == ["0 of 9", "0 of 9", "0 of 9", "8 of 9"]   # not of 12
    end = t.loc[("MNIST", "from the free end", "0.2")]
    assert end["HTS − scalar (points)"].startswith("broke: 8 of 9 heterogeneous, 0 of 3 scalar (Fisher's exact test")
    assert end["end − branch, heterogeneous (points)"].startswith("broke: 8 of 9 from the end, 0 of 9 branching")
    assert t.loc[("MNIST", "branching", "0.05"), "HTS − scalar (points)"] == (
        "+0.50 [-1.00, +2.00], cannot tell apart (the 95% interval holds zero)")
    assert t.loc[("MNIST", "branching", "0.05"), "end − branch, heterogeneous (points)"] == "—"


def test_rank_text():
    up = pd.Series([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert wording.rank_text(up, up * 10).startswith("ρ = +1.00 over 7 networks (p = ")
    assert wording.rank_text(up, up * 10).endswith("better alignment goes with higher accuracy)")
    assert wording.rank_text(up, -up).endswith("better alignment goes with lower accuracy)")
    assert "cannot tell" in wording.rank_text(up, pd.Series([3, 1, 4, 1.5, 5, 9, 2.6]))
    assert wording.rank_text(up[:2], up[:2]).startswith("undefined")


def test_scale_note():
    assert "check that the page runs" in wording.scale_note("smoke", 2, 512, 1)
    quick = wording.scale_note("quick", 3, 8000, 1)
    assert "8,000 images for 1 epoch," in quick and "intervals over 3 seeds" in quick and "cannot say" in quick
    assert "over 3 batches" in wording.scale_note("quick", 3, 8000, 2, "batches")
    assert wording.scale_note("paper", 5, 60000, 50) == ""


# -- figures -----------------------------------------------------------------------------------

def test_residual_figure_clips_diverging_runs_and_chooses_its_scale():
    import matplotlib
    matplotlib.use("Agg")
    key = {"dataset": "mnist", "sigma_eps": 0.1, "seed": 0}
    curves = pd.DataFrame([{**key, "nudge_from": s, "distribution": d, "epoch": e, "residual_free": r}
                           for s in ("branch", "end") for d, rs in (("scalar", [1e-6, 2e-6, 3e-6]),
                                                                     ("normal", [1e-3, 1e30, math.nan]))
                           for e, r in enumerate(rs, 1)])
    runs = pd.DataFrame([{**key, "nudge_from": s, "distribution": d, "diverged": d == "normal",
                          "diverged_epoch": 3 if d == "normal" else math.nan} for s in ("branch", "end")
                         for d in ("scalar", "normal")])
    fig = figures.residual_epochs(curves, runs, 0.1, clip=1.0)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylim()[1] < 10          # 1e30 is a mark, not the axis
    drawn = np.concatenate([line.get_ydata() for line in ax.lines if line.get_transform() == ax.transData])
    assert np.nanmax(drawn) <= 1.0 and np.isnan(drawn).any()            # no line runs off the top
    assert ax.get_title().endswith(": 1 of 2 runs diverged")
    assert [t for t in ax.get_legend_handles_labels()[1] if "Scalar" not in t][-2:] == ["residual above 1", "diverged"]
    flat = curves.assign(residual_free=curves.residual_free.where(curves.residual_free > 1, 0.5))
    assert figures.residual_epochs(flat, runs, 0.1).axes[0].get_yscale() == "linear"


def test_against_spread_panels_and_ticks():
    import matplotlib
    matplotlib.use("Agg")
    for scheme in ("branch", "end"):        # by default the scheme the cells hold is drawn, either one
        cells = pd.DataFrame([{"panel": p, "nudge_from": scheme, "distribution": d, "sigma_eps": s, "v": 1.0}
                              for p in "ab" for d, s in (("scalar", 0.0), ("normal", 0.1), ("normal", 0.2))])
        fig = figures.against_spread(cells, "v", "value", panels=[("A", {"panel": "a"}), ("B", {"panel": "b"}),
                                                                  ("C", {"panel": "a"})], ncols=2)
        assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["A", "B", "C"]
        assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["scalar", "0.1", "0.2"]
        assert all(ax.lines for ax in fig.axes if ax.get_visible()), scheme
    assert figures._spaced([0.01, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0]) == [0.01, 0.05, 0.1, 0.2, 0.5, 1.0]



def test_against_spread_by_data_set_marks_dead_points_and_legend_on_request():
    import matplotlib
    matplotlib.use("Agg")
    cells = pd.DataFrame([{"dataset": ds, "nudge_from": sc, "distribution": d, "sigma_eps": s, "seed_std": 0.5,
                           "final_acc": math.nan if (ds, d, s) == ("mnist", "gamma", 0.2) else 90.0}
                          for ds in ("fashion-mnist", "mnist") for sc in ("branch", "end")
                          for d, s in (("scalar", 0.0), ("normal", 0.1), ("gamma", 0.1), ("gamma", 0.2))])
    fig = figures.against_spread(cells, "final_acc", "accuracy", schemes=("branch", "end"))
    assert [ax.get_title() for ax in fig.axes] == ["MNIST", "Fashion-MNIST"]     # the data sets' order
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels[:3] == ["Scalar (branch)", "Normal (branch)", "Gamma (branch)"] and fig.axes[0].get_legend()
    crosses = [line for line in fig.axes[0].lines if line.get_marker() == "x" and len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in crosses] == [[0.2], [0.2]]          # one per scheme, at 0.2
    assert not [line for line in fig.axes[1].lines if line.get_marker() == "x" and len(line.get_xdata())]
    quiet = figures.against_spread(cells, "final_acc", "accuracy", schemes=("branch", "end"), legend=False)
    assert quiet.axes[0].get_legend() is None and quiet.axes[0].get_legend_handles_labels()[1] == labels


def test_timing_notes_and_grid():
    result = {"overrides": {"beta": 0.1}, "missing": {"fashion-mnist": "its files are missing."}}
    notes = wording.timing_notes(result)
    assert "`beta = 0.1`" in notes[0] and notes[1].startswith("```{note}\n**Fashion-MNIST** is a gap")
    assert wording.timing_notes({"overrides": {}, "missing": {}}) == [""]
    spreads, eps_out = measure.scheme_grid("timing")
    assert spreads == sorted(spreads) and len(spreads) == 3 and eps_out > 0


def test_spans_table_and_drift_cells():
    runs = pd.DataFrame({"dataset": "mnist", "nudge_from": "end", "distribution": ["normal", "gamma"],
                         "sigma_eps": 0.1, "seed": 0, "diverged": [False, True], "collapsed": False})
    curves = pd.DataFrame({"dataset": "mnist", "nudge_from": "end", "distribution": "normal", "sigma_eps": 0.1,
                           "seed": 0, "epoch": [1], "residual_free": [2e-3]})
    t = tables.spans_table({"runs": runs, "curves": curves}, 0.1)
    assert t.loc[("MNIST", "from the free end")].tolist() == ["1 of 2", "2.0e-03"]     # one epoch: one column
    assert list(t.index.names) == ["data set", "nudge"]
    shares = pd.DataFrame({"state": "fresh", "layer": "W1", "distribution": "normal", "sigma_eps": 0.1,
                           "seed": [0, 1], "share": [0.1, 0.3]})
    c = measure.drift_cells({"shares": shares}).iloc[0]
    assert c.share == pytest.approx(20) and c.share_std == pytest.approx(100 * math.sqrt(0.02))


def test_accuracy_against_spread_keeps_each_distribution_in_view():
    import matplotlib
    matplotlib.use("Agg")
    # two distributions with equal accuracies and both dead at 0.2: without dodge they would hide each other
    cells = pd.DataFrame([{"dataset": "mnist", "nudge_from": sc, "distribution": d, "sigma_eps": s,
                           "final_acc": math.nan if s == 0.2 and sc == "end" else 5.0 if sc == "end" else 97.0,
                           "seed_std": 30.0} for sc in ("branch", "end") for d in ("scalar", "normal", "gamma")
                          for s in ((0.0,) if d == "scalar" else (0.1, 0.2))])
    fig = figures.against_spread(cells, "final_acc", "accuracy", schemes=("branch", "end"), dodge=0.01,
                                 limits=(0, 100))
    ax = fig.axes[0]
    crosses = [line for line in ax.lines if line.get_marker() == "x" and len(line.get_xdata())]
    xs = sorted(float(line.get_xdata()[0]) for line in crosses)
    assert len(xs) == 2 and xs[1] - xs[0] == pytest.approx(0.02)           # normal and gamma apart, both seen
    marks = [line for line in ax.lines if line.get_marker() in ("o", "s") and len(line.get_xdata())]
    points = [round(float(x), 6) for line in marks for x in line.get_xdata()]
    assert len(points) == 10 and len(set(points)) == 10                   # no two points on one x
    ends = np.concatenate([seg[:, 1] for c in ax.collections for seg in c.get_segments() if len(seg)])
    assert ends.min() >= 0 and ends.max() <= 100                           # bars clipped to [0, 100]
    plain = figures.against_spread(cells, "final_acc", "accuracy", schemes=("branch", "end"))
    ends = np.concatenate([seg[:, 1] for c in plain.axes[0].collections
                           for seg in c.get_segments() if len(seg)])
    assert ends.min() < 0                                                  # the default leaves them (page 04)


def alignment_result():
    rows = []
    for state in measure.STATES:
        for scheme in ("branch", "end"):
            for d, s in (("scalar", 0.0), ("normal", 0.1), ("gamma", 0.1), ("gamma", 0.2)):
                for layer in measure.LAYERS:
                    for k in range(2):
                        base = (0.985 if layer == "layer2" else 0.9999) if state == "fresh" else 0.999
                        drop = 0.3 if (scheme, layer) == ("end", "layer1") and d != "scalar" else 0.01
                        cos = base - drop * s - 0.0001 * k
                        rows += [{"state": state, "distribution": d, "sigma_eps": s, "batch": k, "t_free": t,
                                  "loss": loss, "scheme": scheme, "beta": b, "param": layer, "cosine": cos - 0.001 * i,
                                  "ratio": 0.7} for i, (t, b) in enumerate(((125, 0.2), (25, 0.2), (125, 0.01)))
                                 for loss in (("bce", "mse", "ce") if (t, b) == (125, 0.2) else ("bce",))]
    acc = pd.DataFrame([{"distribution": d, "sigma_eps": s, "seed": 0, "accuracy": 80.0}
                        for d, s in (("scalar", 0.0), ("normal", 0.1), ("gamma", 0.1), ("gamma", 0.2))])
    return {"rows": pd.DataFrame(rows), "accuracy": acc, "n_train": 100, "n_test": 100}


def test_cosine_figures_read_one_minus_cosine_per_panel():
    import matplotlib
    matplotlib.use("Agg")
    cells = measure.batch_cells(alignment_result()["rows"])
    fig = figures.cosine_against_spread(cells, 0.2, 125)
    lows = []
    for ax in fig.axes:
        assert ax.get_yscale() == "log" and ax.yaxis_inverted()
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels and all(0 <= float(v) <= 1 for v in labels), labels          # labelled in cosine
        lows.append(tuple(round(v, 8) for v in ax.get_ylim()))
    assert lows[0] != lows[1] and lows[2] != lows[3]        # each panel its own range, not the row's
    hidden, output = fig.axes[0], fig.axes[2]
    assert min(float(t.get_text()) for t in output.get_yticklabels()) >= 0.97     # its own range, not squeezed
    assert len(hidden.get_yticklabels()) >= 2
    sweeps = figures.cosine_sweeps(cells, 0.1, 0.2, 125)
    ax = sweeps.axes[0]
    assert ax.get_yscale() == "log" and ax.yaxis_inverted() and ax.get_ylim() != sweeps.axes[1].get_ylim()
    xs = {round(float(x), 6) for line in ax.lines if line.get_marker() in ("o", "s") for x in line.get_xdata()}
    assert len(xs) == 3 * 2 * 2                             # 3 networks × 2 schemes × 2 lengths, none on another


def test_mechanism_tables_show_readers_labels():
    raw = {"state", "distribution", "scheme", "param", "fresh", "branch", "end", "layer1", "layer2", "bce",
           "mse", "ce", "ratio", "sigma_eps", "t_free", "cos_std", "cosine_std", "nudge_from", "fashion-mnist",
           "scalar", "normal", "gamma", "lognormal"}

    def words(t):
        out = set(t.index.names) | set(t.columns.names or [])
        for labels in (t.index, t.columns):
            for v in labels:
                out |= set(v) if isinstance(v, tuple) else {v}
        return {str(w) for w in out if w is not None}
    result = alignment_result()
    shown = [tables.alignment_table(result, 0.1, 0.2, 125), tables.losses_table(result, 0.1, 0.2, 125),
             tables.relaxation_table(relaxation_result()), tables.same_table(relaxation_result())]
    for t in shown:
        assert not words(t) & raw, words(t) & raw
    assert list(shown[1].columns[0]) == ["binary cross-entropy", "hidden layer", "cosine"]
    assert list(shown[2].index.names) == ["weights", "time steps"] and shown[3].index.name == "time steps"
    assert ("trained", "from the free end", "hidden layer") in shown[0].columns


def test_learning_curves_keep_late_means_in_view_and_accept_short_runs():
    import matplotlib
    matplotlib.use("Agg")
    def frame(epochs, late):
        return pd.DataFrame([{"dataset": "mnist", "eps_out": 0.25, "distribution": d, "seed": s, "epoch": e,
                              "test_acc": (20.0 if e == 1 else late[d]) if d != "gamma" or s else math.nan}
                             for d in ("scalar", "normal", "gamma") for s in (0, 1) for e in range(1, epochs + 1)])
    low, high = figures.curves(frame(5, {"scalar": 97.0, "normal": 90.0, "gamma": 95.0})).axes[0].get_ylim()
    assert (low, high) == (89.0, 98.0)              # from the late means, not epoch 1's 20%
    low, high = figures.curves(frame(2, {"scalar": 60.0, "normal": 50.0, "gamma": 55.0})).axes[0].get_ylim()
    assert (low, high) == (19.0, 61.0)              # two epochs (the smoke profile): all of them
    assert np.isfinite(figures.curves(frame(1, {}).assign(test_acc=math.nan)).axes[0].get_ylim()).all()


def test_stuck_text_gives_where_runs_that_never_started_ended():
    runs = pd.DataFrame({"eps_out": [0.25, 0.35, 0.35, 0.25, 0.35], "final_acc": [70.0, 86.5, 80.0, 89.0, 75.3],
                         "never_started": [True, True, True, False, False], "diverged": [False] * 5})
    assert wording.stuck_text(runs) == ("they ended at 70.0 to 86.5% final test accuracy, the runs that started "
                                        "at 75.3 to 89.0%; 2 of the 3 ran at ε_out = 0.35, more than at any other step")
    assert wording.stuck_text(runs.assign(never_started=False)) == "every run started"
    tie = runs.assign(eps_out=[0.25, 0.35, 0.25, 0.25, 0.35], never_started=[True, True, True, True, False])
    assert wording.stuck_text(tie).endswith("3 of the 4 ran at ε_out = 0.25, more than at any other step")
    tie = tie.assign(never_started=[True, True, False, False, False])
    assert wording.stuck_text(tie).endswith("1 of the 2 ran at each of ε_out = 0.25 and 0.35, more than at any "
                                            "other step")


def test_spread_with_without_counts_the_runs_that_never_started():
    with_them = pd.Series({"fashion-mnist": 0.78, "mnist": 0.05})
    without = pd.Series({"fashion-mnist": 0.13, "mnist": 0.05})
    assert wording.spread_with_without(with_them, without, 10, 200) == (
        "10 of the 200 runs here never started; the mean seed spread of a data set's cells at the best epoch is "
        "on Fashion-MNIST 0.78 points with them and 0.13 without.")
    assert wording.spread_with_without(without, without, 0, 200) == (
        "None of the 200 runs here failed to start, so none widens a seed spread.")
    assert wording.spread_with_without(without, without, 2, 200) == (
        "2 of the 200 runs here never started; they leave every mean seed spread as it is.")


def test_setup_text_names_the_set_up_a_page_trains_at():
    from hts_ep import Config
    assert wording.setup_text(Config(h_bound=1.2, inputs="standardised", nudge_from="end")) == \
        "the nudge from the free end, the hidden activation clamped to [−1.2, 1.2], standardised inputs"
    assert wording.setup_text(Config(h_bound=None, inputs="unit", nudge_from="branch")) == \
        "the nudge branching off the free run, an unbounded hidden activation, pixels in [0, 1]"
