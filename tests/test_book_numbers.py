"""The numbers and words of the book's first screen and of its stability page (stats, wording,
tables), on records made up so that each number is known."""
import math

import pytest

from hts_ep import Config, stats, tables, wording


def run(curve, seed=0, dataset="mnist", distribution="scalar", eps_out=0.25, start=None, **kw):
    config = Config(dataset=dataset, distribution=distribution, eps_out=eps_out, seed=seed, epochs=len(curve),
                    **kw).to_dict()
    epochs = [{"epoch": i + 1, "seconds": 1.0, "test_acc": a / 100,
               "train_acc": ((start if start is not None else a) if i == 0 else a) / 100,
               "residual_free": 0.0, "residual_nudge": 0.0} for i, a in enumerate(curve)]
    return {"config": config, "epochs": epochs, "diverged_epoch": None, "complete": True,
            "environment": {"device": "cpu"}}


def pairs(scalar_curves, hts_curves, **kw):
    """Per seed: a scalar run and a log-normal run."""
    return [run(c, seed=s, distribution=d, **kw) for d, curves in (("scalar", scalar_curves),
                                                                    ("lognormal", hts_curves))
            for s, c in enumerate(curves)]


def test_paired_gap_is_per_seed_then_t_interval():
    # HTS - scalar per seed: +1, +2, +3 -> mean 2, t(0.975, 2) = 4.303, sd 1
    recs = pairs([[90.0], [90.0], [90.0]], [[91.0], [92.0], [93.0]])
    g = stats.paired_gap(recs, "final_acc").loc["mnist"]
    assert g.gap == pytest.approx(2.0) and g.seeds == 3
    assert g.ci_high - g.gap == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)


def test_stability_endpoint_is_the_paired_late_spread():
    # 20 epochs -> late window 10; scalar swings by 2 points (std 1), HTS flat: gap -1 on every seed
    swing = [90.0, 92.0] * 10
    recs = pairs([swing] * 3, [[91.0] * 20] * 3)
    e = stats.stability_endpoint(recs).loc["mnist"]
    assert e.gap == pytest.approx(-1.0) and e.ci_low == pytest.approx(-1.0) and e.ci_high == pytest.approx(-1.0)
    assert wording.direction(e.ci_low, e.ci_high, "HTS less stable", "HTS more stable") == "HTS more stable"


def test_direction_needs_an_interval_that_excludes_zero():
    assert wording.direction(0.1, 0.5) == "higher"
    assert wording.direction(-0.5, -0.1) == "lower"
    assert wording.direction(-0.1, 0.5).startswith("cannot tell apart")
    assert wording.direction(float("nan"), float("nan")).startswith("cannot tell apart (no interval")
    assert wording.interval(0.07, -0.12, 0.25) == "+0.07 points [-0.12, +0.25]"
    assert wording.interval(0.07, float("nan"), float("nan")) == "+0.07 points"


def test_outcomes_and_the_never_started_verdict():
    recs = ([run([12.0, 70.0], seed=s, dataset="fashion-mnist", start=20.0) for s in range(4)]
            + [run([80.0, 85.0], seed=s, dataset="fashion-mnist", distribution="gamma", start=60.0)
               for s in range(8)])
    o = stats.outcomes(recs).set_index("distribution")
    assert (o.loc["scalar", "never_started"], o.loc["gamma", "never_started"]) == (4, 0)
    s = stats.summary(recs)["fashion-mnist"]
    assert (s["never_started_scalar"], s["runs_scalar"], s["never_started_hts"], s["runs_hts"]) == (4, 4, 0, 8)
    assert s["never_started_seeds"] == {0: 1, 1: 1, 2: 1, 3: 1} and s["never_started_devices"] == {"cpu": 4}
    text = wording.never_started(s)
    assert text.startswith("4 of 4 scalar runs and 0 of 8 heterogeneous runs never started") and "no test" in text
    assert stats.fisher(4, 4, 0, 8) == pytest.approx(1 / 495)     # Fisher: C(12, 4) = 495 tables, one as extreme


def test_the_claims_are_repeated_over_the_runs_that_started():
    # seed 0's scalar run never started and ends 6 points low: with it HTS is "higher", without it not
    recs = pairs([[84.0, 84.0], [90.0, 90.0], [90.0, 90.0]], [[90.0, 90.0], [90.1, 90.1], [89.9, 89.9]])
    recs[0] = run([20.0, 84.0], seed=0, start=20.0)
    s = stats.summary(recs)["mnist"]
    assert s["never_started"] == 1 and len(stats.started(recs)) == 5
    assert s["gain_started"] == pytest.approx(0.0, abs=1e-9) and s["gain"] == pytest.approx(2.0)
    rows = tables.summary({"mnist": s}).data.claim.tolist()
    assert "MNIST: the same, runs that started only" in rows
    # the answer names the runs that started where they change the verdict, and only there
    flips = dict(s, gain=2.0, gain_low=0.5, gain_high=3.5)
    assert "without the 1 run that never started +0.00 points" in wording.answer({"mnist": flips})
    assert "without the" not in wording.answer({"mnist": dict(s, never_started=0)})


def test_spreads_and_the_closest_statistic():
    # final epochs spread 2 points over seeds, best epochs equal: the best epoch matches a tiny paper spread
    recs = [run([98.4, 96.0 + 2 * s], seed=s, dataset="mnist", distribution=d, eps_out=e)
            for d in ("scalar", "normal", "lognormal", "gamma") for e in (0.15, 0.2, 0.25, 0.3, 0.35)
            for s in range(3)]
    t = stats.spreads(recs)
    best = t[(t.dataset == "mnist") & (t.stat == "best")].iloc[0]
    assert best.ours == pytest.approx(0.0, abs=1e-9) or best.ours < 1
    assert stats.closest_spread(t)["mnist"] != "final"
    text = wording.spread_match(t, stats.closest_spread(t))
    assert text.startswith("The ") and "MNIST " in text and " against " in text


def test_summary_table_states_a_direction_only_with_its_interval():
    recs = pairs([[90.0, 90.0]] * 3, [[92.0, 92.0], [92.2, 92.2], [92.4, 92.4]])
    t = tables.summary(stats.summary(recs)).data.set_index("claim")
    gain = t.loc["MNIST: HTS − scalar (best epoch, paired by seed)"]
    assert gain["this build"].startswith("+2.20 points [") and gain["verdict"] == "HTS higher"
    wide = tables.summary(stats.summary(pairs([[90.0, 90.0]] * 3, [[91.0, 91.0], [92.0, 92.0],
                                                                    [93.0, 93.0]]))).data.set_index("claim")
    assert wide.loc["MNIST: HTS − scalar (best epoch, paired by seed)", "verdict"].startswith("cannot tell apart")
    late = t.loc["MNIST: late spread, HTS − scalar (the stability endpoint)"]
    assert late["this build"] == wording.LATE_UNDEFINED                  # two epochs: a late window of one
    assert "nan" not in t.to_string().lower()


def test_matched_step_names_a_side_only_where_fisher_says_so():
    recs = ([run([10.0], seed=s, mu=1.9, sigma_eps=0.0, eps_max=1.9, eps_out=1.0) for s in range(6)]
            + [run([90.0], seed=s, distribution="lognormal", mu=0.95, sigma_eps=0.475, eps_max=1.9, eps_out=1.0)
               for s in range(6)])
    t = stats.matched_step(recs)
    row = t[t.eps_out == "all"].iloc[0]
    assert (row.scalar_broke, row.hts_broke) == (6, 0) and row.p < 0.01
    assert tables.matched_step(t).verdict.iloc[0].startswith("scalar broke more often")
    few = stats.matched_step(recs[:2] + recs[6:8])
    assert tables.matched_step(few).verdict.iloc[0].startswith("cannot tell apart")


def test_devices_name_each_column_and_its_mix():
    recs = pairs([[90.0]] * 2, [[91.0]] * 2)
    recs[-1]["environment"] = {"device": "cuda", "device_name": "H200"}
    d = tables.devices(recs)
    assert d.loc["MNIST", "Scalar"] == "cpu"
    assert d.loc["MNIST", "Log-normal"] == "cpu 1, cuda (H200) 1"


def test_answer_names_each_data_set_with_runs_and_its_verdicts():
    recs = pairs([[90.0, 90.0]] * 3, [[92.0, 92.0], [92.2, 92.2], [92.4, 92.4]])
    text = wording.answer(stats.summary(recs))
    assert text.startswith("Accuracy, ours minus the paper's (mean over Table 1's cells): MNIST -")
    assert "HTS minus scalar: MNIST +2.20 points [" in text and ", HTS higher." in text
    assert wording.LATE_UNDEFINED in text and "Fashion-MNIST" not in text
    assert wording.answer({}).startswith("This build has no runs")


def test_the_stability_pages_sentences_follow_their_numbers():
    def eps_run(scheme, bound, seed, broke):
        r = run([10.0 if broke else 90.0], seed=seed, distribution="normal", nudge_from=scheme, eps_min=bound)
        return r
    runs = stats.finals([eps_run("end", 0.01, s, True) for s in range(6)]
                        + [eps_run("branch", 0.01, s, False) for s in range(6)])
    text = wording.eps_min_text(runs)
    assert text.startswith("At ε_min = 0.01, 6 of 6 runs broke with the nudge from the free end and 0 of 6")
    assert "more often from the end" in text
    gaps = stats.spread_gaps(pairs([[90.0]] * 3, [[92.0], [92.2], [92.4]], sigma_eps=0.05))
    assert wording.spread_trend(gaps) == "On MNIST HTS is higher at σ_ε = 0.05."
    assert "swings by" in wording.curves_text(stats.finals(pairs([[90.0, 91.0]] * 2, [[90.0, 90.5]] * 2)))
