"""The fidelity ablation's rule (hts_ep/ablation.py), on records made up to test each clause."""
import pytest

from hts_ep import Config, ablation, stats

BOUNDED = (1.2, "unit", "branch", 1.0)
SLOW = (None, "unit", "branch", 0.35)
STANDARD = (None, "standardised", "end", 1.0)
CHOSEN = (1.2, "standardised", "end", 1.0)      # stage 2's choice, the defaults since


def record(v, curve, seed=0, distribution="scalar", dataset="fashion-mnist", eps_out=0.35, start=70.0):
    """A complete run of variant `v` whose test accuracy follows `curve` (%), epoch 1's
    training accuracy `start` (%)."""
    config = Config(dataset=dataset, distribution=distribution, eps_out=eps_out, seed=seed, epochs=len(curve),
                    **dict(zip(ablation.FACTORS, v))).to_dict()
    epochs = [{"epoch": i + 1, "test_acc": a / 100, "train_acc": (start if i == 0 else a) / 100,
               "residual_free": 0.0, "residual_nudge": 0.0, "seconds": 1.0} for i, a in enumerate(curve)]
    return {"config": config, "epochs": epochs, "diverged_epoch": None, "complete": True}


def runs(v, level, swing=0.0, **kw):
    """Scalar and log-normal runs of variant `v`, 3 seeds, ending at `level` (seed s off by s * swing)."""
    return [record(v, [level - 5, level + 1, level + s * swing], seed=s, distribution=d, **kw)
            for d in ("scalar", "lognormal") for s in range(3)]


def test_run_statistics_final_best_and_last5():
    assert stats.run_stats([50, 80, 70, 75, 76, 74, 72]) == (72, 80, 2, pytest.approx(73.4))
    assert stats.run_stats([1, 3, 3]) == (3, 3, 2, 7 / 3)          # first of equal maxima
    assert stats.run_stats([50, None]) == (None, None, None, None)   # diverged


def test_a_run_that_never_starts_excludes_its_variant():
    records = runs(ablation.FORMER, 85) + runs(BOUNDED, 86) + runs(SLOW, 80)
    records[6] = record(BOUNDED, [84, 86, 86], start=30.0)              # best level, but one stuck start
    t = ablation.screen(records)
    assert t.variant.tolist() == [ablation.FORMER, SLOW, BOUNDED]
    assert dict(zip(t.variant, t.failed)) == {ablation.FORMER: 0, SLOW: 0, BOUNDED: 1}
    assert ablation.finalists(t, n=1) == [SLOW, ablation.FORMER]


def test_screen_scores_accuracy_against_seed_spread():
    records = runs(BOUNDED, 86, swing=3.0) + runs(SLOW, 85) + runs(STANDARD, 84) + runs(ablation.FORMER, 80)
    t = {r.variant: r for r in ablation.screen(records).itertuples()}
    assert t[BOUNDED].spread == pytest.approx(3.0)
    assert t[SLOW].spread == 0
    # (best + final) / 2 - spread: seeds end at 86, 89, 92 after a best of 87, 89, 92
    assert t[BOUNDED].score == pytest.approx(((87 + 89 + 92) / 3 + 89) / 2 - 3.0)
    assert t[SLOW].score == pytest.approx(85.5)
    assert ablation.finalists(ablation.screen(records)) == [BOUNDED, SLOW, ablation.FORMER]


def paper_runs(v, mnist, fashion, **kw):
    return [r for ds, level in (("mnist", mnist), ("fashion-mnist", fashion))
            for r in runs(v, level, dataset=ds, eps_out=0.25, **kw)]


def test_judge_measures_distance_to_the_paper():
    paper = ablation.paper_cells("mnist", 0.25)
    assert paper["scalar"] == 98.44 and paper["lognormal"] == 98.44      # the paper's Table 1
    records = paper_runs(BOUNDED, 97.44, 88.57)
    t = ablation.judge(records).iloc[0]
    # best = level + 1 = 98.44 on MNIST, final = level: 1 point below
    assert t["mnist gap best"] == pytest.approx(0.0, abs=1e-9)
    assert t["mnist gap final"] == pytest.approx(-1.0)
    # Fashion-MNIST at 0.25: paper 89.57 scalar, 89.66 log-normal; ours 89.57 (best) for both
    assert t["fashion-mnist gap best"] == pytest.approx((0 - 0.09) / 2)
    assert t["fashion-mnist HTS error"] == pytest.approx(0.09)
    assert t.score == pytest.approx(-(0 + 1 + 0.045 + 1.045 + 0.09))


def test_decide_adopts_only_a_clear_failure_free_winner():
    good = paper_runs(BOUNDED, 97.4, 88.6)
    today = paper_runs(ablation.FORMER, 97.4, 88.6)
    assert ablation.decide(ablation.judge(good + today))[:2] == (ablation.FORMER, False)    # a tie keeps today's
    worse = paper_runs(ablation.FORMER, 97.1, 88.3)          # 0.3 points lower everywhere: 1.2 in all
    assert ablation.decide(ablation.judge(good + worse))[:2] == (BOUNDED, True)           # 0.5 points or more
    close = paper_runs(ablation.FORMER, 97.3, 88.5)          # 0.1 lower everywhere: 0.4 in all
    assert ablation.decide(ablation.judge(good + close))[:2] == (ablation.FORMER, False)
    stuck = paper_runs(ablation.FORMER, 97.4, 88.6)
    stuck[-1] = record(ablation.FORMER, [10, 60, 80], seed=2, distribution="lognormal", eps_out=0.25, start=12.0)
    variant, adopted, reason = ablation.decide(ablation.judge(good + stuck))
    assert (variant, adopted) == (BOUNDED, True) and "1 failed run of 12" in reason
    all_stuck = [dict(r) for r in good]
    all_stuck[0] = record(BOUNDED, [10, 60, 80], dataset="mnist", eps_out=0.25, start=12.0)
    assert ablation.decide(ablation.judge(all_stuck + stuck))[:2] == (ablation.FORMER, False)


def test_variants_of_archived_records_read_as_todays():
    legacy = record(ablation.FORMER, [80, 85, 86])
    assert "h_bound" not in legacy["config"] and "inputs" not in legacy["config"]
    assert ablation.screen([legacy]).variant.tolist() == [ablation.FORMER]


def test_effects_average_each_factor_over_the_others():
    records = runs(ablation.FORMER, 80) + runs(BOUNDED, 86) + runs(SLOW, 84) + runs((1.2, "unit", "branch", 0.35), 88)
    records[0] = record(ablation.FORMER, [70, 80, 80], start=20.0)
    e = ablation.effects(records).set_index(["factor", "level"])
    assert e.loc[("h_bound", "none"), "runs"] == 12 and e.loc[("h_bound", 1.2), "runs"] == 12
    assert e.loc[("h_bound", "none"), "never_started"] == 1 and e.loc[("h_bound", 1.2), "never_started"] == 0
    assert e.loc[("h_bound", 1.2), "final"] == pytest.approx(87.0)       # (86 + 88) / 2, seeds' swing 0
    assert e.loc[("eta1", 0.35), "final"] == pytest.approx(86.0)
    assert e.loc[("inputs", "unit"), "hts_minus_scalar"] == pytest.approx(0.0)


def test_factor_effects_pair_each_run_with_its_twin():
    # bounded runs end 2 points above their unbounded twins (same seed, distribution, other factors)
    records = [record(v, [c - 5, c + 1, c + s * 0.5], seed=s, distribution=d)
               for v, c in ((ablation.FORMER, 84), (BOUNDED, 86), (SLOW, 80), ((1.2, "unit", "branch", 0.35), 82))
               for d in ("scalar", "lognormal") for s in range(3)]
    records[0] = record(ablation.FORMER, [79, 85, 84], seed=0, start=20.0)       # never started, same accuracy
    e = ablation.factor_effects(records).set_index(["factor", "quantity"])
    bound = e.loc[("h_bound", "final_acc")]
    assert bound.pairs == 12 and bound["diff"] == pytest.approx(2.0) and bound.ci_low == pytest.approx(2.0)
    assert e.loc[("eta1", "final_acc"), "diff"] == pytest.approx(-4.0)
    assert (e.loc[("h_bound", "never_started"), "former"], e.loc[("h_bound", "never_started"), "author"]) == (1, 0)
    assert e.loc[("inputs", "final_acc"), "pairs"] == 0          # no standardised run: nothing paired


def test_stage2_spec_is_stage1s_choice_and_keeps_todays_keys(tmp_path, monkeypatch):
    import yaml

    from hts_ep import experiments
    finalists = [BOUNDED, STANDARD, ablation.FORMER]
    spec = yaml.safe_load(ablation.stage2_yaml(finalists))
    rows = spec["grid"][",".join(ablation.FACTORS)]
    assert [tuple(r) for r in rows] == finalists and all(isinstance(r[3], float) for r in rows)
    (tmp_path / "ablation_paper.yaml").write_text(ablation.stage2_yaml(finalists))
    for name in ("profiles", "table1", "table1_before"):
        (tmp_path / f"{name}.yaml").write_text((experiments.SPEC_DIR / f"{name}.yaml").read_text())
    monkeypatch.setattr(experiments, "SPEC_DIR", tmp_path)
    former = [c for c in experiments.grid_configs(experiments.load_spec("ablation_paper"), "paper")
              if ablation.variant(c.to_dict() | {"h_bound": c.h_bound, "inputs": c.inputs}) == ablation.FORMER]
    # the former defaults' runs are the first archive's own: the same keys as Table 1's before the ablation
    before = {experiments.key(c) for c in experiments.grid_configs(experiments.load_spec("table1_before"), "paper")}
    assert former and all(experiments.key(c) in before for c in former)


def test_overrides_and_the_rerun_status():
    # overrides: against the package's defaults (the chosen set-up since the switch); changed: against
    # the defaults before the ablation, whatever the defaults are now
    assert ablation.overrides(CHOSEN) == {}
    assert ablation.overrides(ablation.FORMER) == {"h_bound": None, "inputs": "unit", "nudge_from": "branch"}
    assert ablation.overrides(STANDARD) == {"h_bound": None}
    assert ablation.changed(STANDARD) == {"inputs": "standardised", "nudge_from": "end"}
    assert ablation.changed(CHOSEN) == {"h_bound": 1.2, "inputs": "standardised", "nudge_from": "end"}
    assert ablation.rerun_text(STANDARD, False, 0, 200, False).startswith("The defaults did not change")
    text = ablation.rerun_text(STANDARD, True, 37, 200, False)
    assert text.startswith("37 of 200 runs") and "switch" in text
    assert "was trained again" in ablation.rerun_text(STANDARD, True, 200, 200, True)
    assert "is being trained again at them (37 of 200" in ablation.rerun_text(STANDARD, True, 37, 200, True)
    assert "--set" not in text and "hts-ep" not in text      # prose: the commands are shown as code
    commands = ablation.rerun_commands(STANDARD, True, False)
    assert "\nhts-ep sweep table1_rerun --profile paper\n" in commands
    assert "hts-ep sweep SPEC --set h_bound=none\n" in commands
    assert "hts-ep table SPEC --set h_bound=none\n" in commands
    assert ablation.rerun_commands(STANDARD, True, True) == ablation.rerun_commands(STANDARD, False, False) == ""
    assert ablation.set_options(BOUNDED) == "--set inputs=unit --set nudge_from=branch"
    assert ablation.set_options((2.0, "standardised", "end", 1.0)) == "--set h_bound=2.0"
    assert ablation.rerun_text(STANDARD, True, 37, 200, False, decided=False).endswith("until stage 2 has decided.")


def test_stage2_is_judged_only_when_complete():
    good = paper_runs(BOUNDED, 97.4, 88.6)
    stuck = paper_runs(ablation.FORMER, 97.4, 88.6)
    stuck[-1] = record(ablation.FORMER, [10, 60, 80], seed=2, distribution="lognormal", eps_out=0.25, start=12.0)
    table = ablation.judge(good + stuck)
    partial = ablation.stage2_text(table, len(good + stuck) - 1, len(good + stuck), 12)
    assert partial.startswith(f"Stage 2 is under way: {len(good + stuck) - 1} of {len(good + stuck)} runs")
    whole = ablation.stage2_text(table, len(good + stuck), len(good + stuck), 12)
    assert whole.startswith("The rule adopts bound 1.2, unit, branch") and "1 failed run of 12" in whole
    assert ablation.paper_size() == 60        # 3 variants x 2 data sets x 2 distributions x 5 seeds
    # today's runs complete with a failed one: the partial sentence says what that settles already
    assert "already had 1 failed run of 12" in partial
    assert "already had" not in ablation.stage2_text(ablation.judge(good), 12, 24, 12)


def test_a_variant_without_all_its_runs_has_no_score():
    good = paper_runs(BOUNDED, 97.4, 88.6)
    mnist_only = [r for r in paper_runs(STANDARD, 98.4, 89.6) if r["config"]["dataset"] == "mnist"]
    table = ablation.judge(good + mnist_only, runs_each=12)
    scores = table.set_index("variant").score
    assert scores[BOUNDED] < 0 and scores[STANDARD] != scores[STANDARD]            # NaN, not a better score
    assert table.variant.tolist() == [BOUNDED, STANDARD]
    from hts_ep import tables
    shown = tables.stage2(table, [BOUNDED, STANDARD, ablation.FORMER])
    assert shown[("", "runs")].tolist() == [12, 6, 0]
    assert shown.index[2].endswith("(the defaults before)")
    assert shown.loc[shown.index[1], ("", "score (points)")] == "—"
    assert shown.loc[shown.index[1], ("Fashion-MNIST", "gap best (points)")] == "—"
    assert shown.loc[shown.index[0], ("", "trained on: runs")] == "unknown device: 12"     # made-up records name none


def test_a_partial_rerun_is_compared_with_the_same_runs():
    before = paper_runs(ablation.FORMER, 97.4, 88.6)
    after = runs(BOUNDED, 97.5, dataset="mnist", eps_out=0.25)[:2]       # scalar, seeds 0 and 1
    kept = ablation.same_runs(before, after)
    assert [(r["config"]["dataset"], r["config"]["distribution"], r["config"]["seed"]) for r in kept] == \
        [("mnist", "scalar", 0), ("mnist", "scalar", 1)]


def test_before_after_table_compares_the_same_runs():
    from hts_ep import tables
    before = paper_runs(ablation.FORMER, 97.4, 88.6)
    before[-1] = record(ablation.FORMER, [10, 60, 80], seed=2, distribution="lognormal", dataset="fashion-mnist",
                        eps_out=0.25, start=12.0)
    after = paper_runs(BOUNDED, 97.6, 89.0)
    t = tables.before_after(ablation.before_after(ablation.same_runs(before, after), after))
    row = t.loc[("Fashion-MNIST", "final epoch")]
    assert row["never started before"] == "1 of 6" and row["never started after"] == "0 of 6"
    assert row["accuracy after (%)"] == pytest.approx(89.0)
    assert t.loc[("MNIST", "final epoch"), "accuracy before (%)"] == pytest.approx(97.4)
    assert tables.before_after(ablation.before_after([], after)) == "No runs of Table 1 on both sides yet."
    mnist_before = [r for r in before if r["config"]["dataset"] == "mnist"]     # one data set on one side only
    assert list(tables.before_after(ablation.before_after(mnist_before, after)).index.levels[0]) == ["MNIST"]


def test_paired_change_pairs_the_same_runs_and_says_what_its_interval_supports():
    from hts_ep import wording
    before = paper_runs(ablation.FORMER, 97.4, 88.6, swing=0.3)
    after = paper_runs(CHOSEN, 97.4, 89.6, swing=0.2)      # Fashion-MNIST 1 point higher, seed by seed
    after += [record(CHOSEN, [80, 81, 82], seed=9, dataset="fashion-mnist", eps_out=0.25)]   # no twin before
    change = ablation.paired_change(before, after).set_index(["dataset", "quantity"])
    fm = change.loc[("fashion-mnist", "final_acc")]
    # final = level + seed * swing: the differences are 1.0, 0.9, 0.8 for both distributions
    assert fm.pairs == 6 and fm["diff"] == pytest.approx(0.9) and 0.8 < fm.ci_low < 0.9 < fm.ci_high < 1.0
    mn = change.loc[("mnist", "final_acc")]
    assert mn["diff"] == pytest.approx(-0.1) and mn.ci_low < -0.1 < mn.ci_high
    text = wording.change_verdict(change.reset_index())
    assert "Fashion-MNIST, 6 pairs of runs: best-epoch accuracy +1.00 points" in text
    assert "final accuracy +0.90 points [" in text and "(higher)" in text
    # MNIST's best epochs are equal (0 at every seed; its finals differ by 0, -0.1, -0.2): no direction
    assert "MNIST, 6 pairs of runs: best-epoch accuracy +0.00 points" in text and "(cannot tell)" in text
    assert wording.change_verdict(ablation.paired_change([], after)) == "No run of Table 1 is on both sides yet."
    import matplotlib
    matplotlib.use("Agg")
    from hts_ep import figures
    fig = figures.change(change.reset_index())
    assert len(fig.axes) == len(ablation.CHANGE)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["MNIST", "Fashion-MNIST"]
    x = fig.axes[1].lines[0].get_xdata()                      # final accuracy: MNIST, then Fashion-MNIST
    assert list(x) == pytest.approx([-0.1, 0.9])
    assert figures.change(ablation.paired_change([], after)).axes      # nothing to draw: still a figure


def test_rerun_spec_is_table1_at_the_choice_with_the_overrides_keys(tmp_path, monkeypatch):
    from hts_ep import experiments
    (tmp_path / "table1_rerun.yaml").write_text(ablation.rerun_yaml(STANDARD))
    for name in ("profiles", "table1"):
        (tmp_path / f"{name}.yaml").write_text((experiments.SPEC_DIR / f"{name}.yaml").read_text())
    monkeypatch.setattr(experiments, "SPEC_DIR", tmp_path)
    rerun = [experiments.key(c) for c in experiments.grid_configs(experiments.load_spec("table1_rerun"), "paper")]
    over = [experiments.key(c) for c in experiments.grid_configs(experiments.load_spec("table1"), "paper",
                                                                 overrides=ablation.overrides(STANDARD))]
    assert rerun == over and len(rerun) == 300
    bounded = experiments.grid_configs(experiments.load_spec("table1"), "paper", overrides=ablation.overrides(BOUNDED))
    (tmp_path / "table1_rerun.yaml").write_text(ablation.rerun_yaml(BOUNDED))
    assert [experiments.key(c) for c in experiments.grid_configs(experiments.load_spec("table1_rerun"), "paper")] == \
        [experiments.key(c) for c in bounded]
    # the chosen set-up is the defaults now: its spec still fixes every field it changed, so its keys are
    # Table 1's at the defaults
    (tmp_path / "table1_rerun.yaml").write_text(ablation.rerun_yaml(CHOSEN))
    assert [experiments.key(c) for c in experiments.grid_configs(experiments.load_spec("table1_rerun"), "paper")] == \
        [experiments.key(c) for c in experiments.grid_configs(experiments.load_spec("table1"), "paper")]


def test_a_committed_rerun_spec_is_stage2s_decision():
    from hts_ep import experiments, sources
    if not (experiments.SPEC_DIR / "table1_rerun.yaml").exists():
        pytest.skip("stage 2 has not decided a new set-up (no experiments/table1_rerun.yaml)")
    finalists = ablation.paper_variants()
    runs = sources.archived("ablation_paper", "paper")
    assert len(runs) == ablation.paper_size()
    chosen, adopted, _ = ablation.decide(ablation.judge(runs, runs_each=ablation.paper_size() // len(finalists)))
    assert adopted and (experiments.SPEC_DIR / "table1_rerun.yaml").read_text() == ablation.rerun_yaml(chosen)
    assert (experiments.SPEC_DIR / "table1_before.yaml").read_text() == ablation.before_yaml(chosen)


def test_the_intro_gets_the_rerun_progress_only():
    short = ablation.rerun_text(STANDARD, True, 20, 200, False, short=True)
    assert short == ("20 of 200 runs of Table 1 are archived at it so far; until all are, this book shows the "
                     "archive made before.")
    assert ablation.rerun_text(STANDARD, False, 0, 200, False, short=True).startswith("The defaults did not change")
