import pytest
import torch
import torch.nn.functional as F

from hts_ep import Config, Ensemble, experiments, sources, stats, tables, wording


def ensemble(t_free, distributions=("scalar", "normal"), **kw):
    configs = [Config(n_in=12, n_hidden=32, t_free=t_free, t_nudge=5, distribution=d, seed=1, **kw)
               for d in distributions]
    ens = Ensemble(configs, device="cpu")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(len(configs), 8, 12, generator=g)
    y = F.one_hot(torch.randint(0, 10, (len(configs), 8), generator=g), 10).float()
    return ens, x, y


@pytest.mark.parametrize("scheme", ["branch", "end"])
def test_increments_are_what_train_step_applies(scheme):
    ens, x, y = ensemble(30, nudge_from=scheme)
    before = [p.clone() for p in (ens.W1, ens.b1, ens.W2, ens.b2)]
    inc = ens.increments(x, y)
    ens.train_step(x, y)
    for p, q, d in zip((ens.W1, ens.b1, ens.W2, ens.b2), before, inc):
        assert d.shape == p.shape
        assert torch.allclose(p - q, d, atol=1e-6)


def test_drift_share_separates_settled_from_drifting_states():
    # Scalar steps of 0.2 settle long before step 300 - 5: both schemes then
    # compare the same states and the share is ~0. Normal steps clipped at 0.01
    # are still moving at step 30: most of the end update is drift.
    ens, x, y = ensemble(300, eps_min=0.01)
    settled = stats.drift_share(ens, x, y)
    ens, x, y = ensemble(30, eps_min=0.01)
    drifting = stats.drift_share(ens, x, y)
    assert set(settled) == {"W1", "b1", "W2", "b2"}
    assert settled["W1"][0] < 1e-3 and settled["W2"][0] < 1e-3
    assert drifting["W1"][1] > 0.2 and drifting["W1"][1] > drifting["W1"][0]
    assert drifting["W1"][1] > 100 * settled["W1"][0]


def test_records_without_nudge_from_are_the_old_scheme():
    record = {"config": Config().to_dict(), "epochs": [{"epoch": 1, "test_acc": 0.9, "train_acc": 0.9,
                                                        "residual_free": 1e-3, "residual_nudge": 1e-2}],
              "diverged_epoch": None}
    del record["config"]["nudge_from"]
    assert stats.finals([record]).nudge_from.tolist() == ["end"]
    record["config"]["nudge_from"] = "branch"
    assert stats.finals([record]).nudge_from.tolist() == ["branch"]


def record(acc_curve, seed=0, diverged=None, **rates):
    # fixed rates, not the package's defaults: the expected indices below name them
    config = Config(seed=seed, **{"eta1": 1.0, "eta2": 0.2, "beta": 0.5, **rates}).to_dict()
    epochs = [{"epoch": i + 1, "test_acc": a / 100, "train_acc": a / 100, "residual_free": 0.0,
               "residual_nudge": 0.0} for i, a in enumerate(acc_curve)]
    return {"config": config, "epochs": epochs, "diverged_epoch": diverged}


def test_calibration_prefers_quiet_then_nearest_target():
    flat = [98.0] * 10
    noisy = [97.0, 99.0] * 5                                  # late std 1.0 point
    recs = ([record([98.4] * 10, seed=s, eta1=1.0) for s in range(3)]          # quiet, 0.03 off
            + [record(noisy[:-1] + [98.43], seed=s, eta1=0.5) for s in range(3)]  # on target, noisy
            + [record(flat, seed=s, eta1=0.25) for s in range(3)])             # quiet, 0.43 off
    t = stats.calibration_table(recs)
    assert t.loc[(1.0, 0.2, 0.5)].runs == 3
    assert t.loc[(0.5, 0.2, 0.5)].late_std > 0.9 and not t.loc[(0.5, 0.2, 0.5)].quiet
    assert t.loc[(0.25, 0.2, 0.5)].off_target == pytest.approx(0.43)
    assert stats.choose(t) == ((1.0, 0.2, 0.5), True)


def test_calibration_without_a_quiet_candidate_takes_the_quietest_near_the_best():
    a = [97.0, 99.0] * 5                 # final 99.0, late std 1.0
    b = [98.2, 98.8] * 5                 # final 98.8 (within 0.3 of 99.0), late std 0.3
    c = [95.5, 96.5] * 5                 # quieter than a, but 2.5 points below the best
    recs = [record(a, eta2=0.2), record(b, eta2=0.1), record(c, eta2=0.05)]
    t = stats.calibration_table(recs)
    assert not t.quiet.any()
    assert stats.choose(t) == ((1.0, 0.1, 0.5), False)


def test_calibration_ignores_diverged_candidates():
    recs = [record([98.43] * 10, eta1=1.0, diverged=10), record([97.0] * 10, eta1=0.5)]
    t = stats.calibration_table(recs)
    assert stats.choose(t) == ((0.5, 0.2, 0.5), True)
    with pytest.raises(ValueError, match="every calibration candidate diverged or was excluded"):
        stats.choose(t.drop(index=(0.5, 0.2, 0.5)))


def test_fashion_check_excludes_a_collapsed_candidate():
    mnist = [record([98.43] * 10, beta=0.1), record([98.0] * 10, beta=0.5)]
    fashion = [record([80.0], beta=0.5, dataset="fashion-mnist"),
               record([69.0], beta=0.1, dataset="fashion-mnist")]       # 11 points behind: collapsed
    assert stats.fashion_failures(fashion) == {(1.0, 0.2, 0.1)}
    assert stats.fashion_failures(fashion, margin=12) == set()
    t = stats.calibration_table(mnist)
    assert stats.choose(t)[0] == (1.0, 0.2, 0.1)
    assert stats.choose(t, excluded=stats.fashion_failures(fashion))[0] == (1.0, 0.2, 0.5)


def test_welch_interval_textbook_case():
    # equal n and std: df = 2 (n - 1) = 8, t(0.975, 8) = 2.306, se = sqrt(2/5)
    low, high = stats.welch_interval(10.0, 1.0, 5, 9.0, 1.0, 5)
    assert (high - low) / 2 == pytest.approx(2.306 * (2 / 5) ** 0.5, rel=1e-3)
    assert (low + high) / 2 == pytest.approx(1.0)
    assert all(v != v for v in stats.welch_interval(10.0, float("nan"), 1, 9.0, 1.0, 5))


def table1_records(dataset, eps_out, distribution, accs):
    return [record([a], seed=s, dataset=dataset, eps_out=eps_out, distribution=distribution)
            for s, a in enumerate(accs)]


def test_comparison_interval_decides_agreement():
    paper = stats.paper_table1()
    p = paper.loc[("mnist", 0.25), "scalar_mean"]
    close = table1_records("mnist", 0.25, "scalar", [p - 0.1, p, p + 0.1])
    far = table1_records("mnist", 0.25, "gamma", [p - 20.1, p - 20.0, p - 19.9])    # wide seeds do not excuse 20 points
    single = table1_records("mnist", 0.25, "normal", [p])
    comp = stats.comparison(close + far + single).set_index(["dataset", "eps_out", "condition"])
    row = comp.loc[("mnist", 0.25, "scalar")]
    assert row.seeds == 3 and row.difference == pytest.approx(0, abs=1e-9) and row.agrees == True  # noqa: E712
    assert row.ci_low < 0 < row.ci_high
    assert comp.loc[("mnist", 0.25, "gamma")].agrees == False  # noqa: E712
    assert comp.loc[("mnist", 0.25, "normal")].agrees is None
    assert comp.loc[("mnist", 0.15, "scalar")].seeds == 0 and comp.loc[("mnist", 0.15, "scalar")].agrees is None


def test_agreement_counts_cells_per_data_set():
    paper = stats.paper_table1()
    p = paper.loc[("mnist", 0.25), "scalar_mean"]
    q = paper.loc[("fashion-mnist", 0.15), "gamma_mean"]
    recs = (table1_records("mnist", 0.25, "scalar", [p - 0.1, p, p + 0.1])           # agrees, diff 0
            + table1_records("mnist", 0.25, "gamma", [p - 2.1, p - 2.0, p - 1.9])      # 2 below its paper cell
            + table1_records("mnist", 0.15, "normal", [p])                              # one run: no interval
            + table1_records("fashion-mnist", 0.15, "gamma", [q + 0.9, q + 1.0, q + 1.1]))
    a = stats.agreement(stats.comparison(recs))
    g = paper.loc[("mnist", 0.25), "gamma_mean"]
    n = paper.loc[("mnist", 0.15), "normal_mean"]
    m = a.loc["mnist"]
    assert (m.cells, m.run, m.interval, m.within) == (20, 3, 2, 1)
    diffs = [0.0, p - 2.0 - g, p - n]
    assert m.mean_diff == pytest.approx(sum(diffs) / 3, abs=1e-4)
    assert m.mean_abs_diff == pytest.approx(sum(abs(d) for d in diffs) / 3, abs=1e-4)
    f = a.loc["fashion-mnist"]
    assert (f.run, f.interval, f.within) == (1, 1, 0) and f.mean_diff == pytest.approx(1.0, abs=1e-4)
    assert "above" in wording.agreement_text(f) and "; 0 of 1 cells with" in wording.agreement_text(f)
    assert a.loc["kmnist"].run == 0 and wording.agreement_text(a.loc["kmnist"]) == "no runs"


def test_by_grid_point_keeps_every_axis_apart():
    spec = experiments.load_spec("calibration")
    assert stats.grid_axes(spec) == ["dataset", "distribution", "eps_out", "eta1", "eta2", "beta"]
    assert stats.grid_axes("timing") == ["dataset", "nudge_from", "eps_out", "distribution", "sigma_eps"]
    recs = [record([90.0 + s], seed=s, eta1=e1, beta=b) for e1 in (1.0, 0.5) for b in (0.5, 0.1) for s in (0, 1)]
    rows = stats.by_grid_point(recs, spec)
    assert len(rows) == 4 and (rows.runs == 2).all()
    assert rows.final_acc.tolist() == pytest.approx([90.5] * 4)


def test_gap_note_ends_once_and_keeps_options_as_code():
    reason = ("data set 'kmnist' is not available. Missing from the data folder/KMNIST/raw: "
              "train-images-idx3-ubyte.gz. Place the upstream files there, or point --data-root / "
              "HTS_EP_DATA at a folder holding KMNIST/raw/.")
    note = wording.gap_note("KMNIST", reason)
    assert note.startswith("```{note}\n**KMNIST** is a gap in this build, not a zero: data set 'kmnist'")
    assert note.endswith("KMNIST/raw/.\n```")                      # one full stop, not two
    assert "`--data-root`" in note and "`HTS_EP_DATA`" in note      # not typeset as a dash
    assert "`train-images" not in note and "`KMNIST" not in note
    assert wording.gap_note("X", "no data") == "```{note}\n**X** is a gap in this build, not a zero: no data.\n```"


def test_public_reason_hides_the_data_path(tmp_path):
    reason = f"Missing from {tmp_path}/KMNIST/raw: a.gz. Place files in {tmp_path}."
    assert sources.public(reason, tmp_path) == ("Missing from the data folder's KMNIST/raw: a.gz. "
                                                 "Place files in the data folder.")


def test_healthy_drops_diverged_and_collapsed_runs():
    ok, low, dead = record([80.0, 90.0]), record([30.0, 12.0], seed=1), record([50.0, 60.0], seed=2, diverged=2)
    assert stats.healthy([ok, low, dead]) == [ok]
    assert stats.healthy([low, ok]) == [ok]
    assert stats.healthy([]) == []


def test_source_says_when_no_record_carries_a_date():
    undated = [{**r, "environment": {"device": "cpu"}} for r in (record([90.0]), record([91.0], seed=1))]
    text = sources.source(undated, "calibration", archived=True, no_date="training date not recorded")
    assert "2 runs on cpu, training date not recorded" in text and "unknown" not in text
    assert "trained on unknown" in sources.source(undated, "calibration")      # the default is unchanged
    dated = [{**r, "finished": "2026-05-01T10:00:00Z"} for r in undated]
    assert "trained on 2026-05-01" in sources.source(dated, "calibration", no_date="training date not recorded")


def test_stability_table_says_diverged_instead_of_nan():
    import pandas as pd

    recs = ([record([80.0, 90.0], seed=s, beta=0.1) for s in range(2)]            # both survive
            + [record([80.0, 90.0], seed=0, beta=0.2),
               record([50.0, 60.0], seed=1, beta=0.2, diverged=2)]                # one survives
            + [record([50.0, 60.0], seed=s, beta=0.5, diverged=1) for s in range(2)])  # none does
    t = tables.stability_table(recs, by=("beta",))
    assert t.loc[0.1].tolist()[:3] == ["2", "90.00", "0.00"]
    assert t.loc[0.2, "final_acc"] == "90.00" and t.loc[0.2, "seed_std"] == tables.ONE_SURVIVOR
    assert (t.loc[0.5].drop(["runs", "divergence_rate"]) == "diverged").all()
    assert t.loc[0.5, "divergence_rate"] == "1.00" and t.loc[0.5, "runs"] == "2"
    assert not t.isin(["nan", "NaN"]).any().any()
    late = tables.readable(pd.DataFrame({"late_std": [float("nan")]}), [3])
    assert late.iat[0, 0] == "—"                                  # undefined, not diverged
    with pytest.raises(ValueError):
        tables.readable(pd.DataFrame({"x": [1.0]}), [])
    assert len(tables.stability_table([], by=("beta",))) == 0


def test_a_run_that_diverged_in_its_first_epoch_counts_as_diverged_not_as_never_started():
    first = record([50.0], diverged=1)
    first["epochs"][0].update(test_acc=None, train_acc=None)
    slow = record([20.0, 60.0], seed=1)
    slow["epochs"][0]["train_acc"] = 0.2
    f = stats.finals([first, slow])
    assert f.diverged.tolist() == [True, False]
    assert f.never_started.tolist() == [False, True]
