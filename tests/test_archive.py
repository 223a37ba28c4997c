"""The book's sources of numbers: the paper-profile archive, the quick fallback, overrides,
and what every table says about where its numbers come from. Hand-made records in a
temporary results root; nothing here trains, and results/paper/ (the committed archive) is
only read, by the last two tests, which check it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hts_ep import Config, book, experiments, sources, stats, tables, wording

REPO = Path(__file__).resolve().parent.parent


def fake_record(config, acc, finished="2026-05-01T10:00:00Z", device="cpu"):
    epochs = [{"epoch": e, "seconds": 1.0, "train_acc": acc / 100, "test_acc": acc / 100,
               "residual_free": 1e-3, "residual_nudge": 1e-2} for e in range(1, config.epochs + 1)]
    record = {"config": config.to_dict(), "environment": {"device": device, "device_name": ""},
              "epochs": epochs, "diverged_epoch": None, "complete": True}
    if finished:
        record["finished"] = finished
    return record


def archive(root, spec="table1", datasets=("mnist",), seeds=(0, 1), acc=lambda c: 98.0, **kw):
    """Write paper-profile records of `spec` for `datasets` and `seeds` into `root`/paper/."""
    folder = root / "paper"
    folder.mkdir(parents=True, exist_ok=True)
    configs = experiments.grid_configs(experiments.load_spec(spec), "paper", list(datasets), list(seeds))
    for c in configs:
        (folder / f"{experiments.key(c)}.json").write_text(json.dumps(fake_record(c, acc(c), **kw)))
    return configs


@pytest.fixture
def no_training(monkeypatch):
    def sweep(*args, **kw):
        raise AssertionError("the archive must not be trained")
    monkeypatch.setattr(experiments, "sweep", sweep)


def test_archived_experiment_is_shown_from_the_archive_without_training(tmp_path, no_training):
    # MNIST archived at every cell (one seed missing at one), Fashion-MNIST's scalar column only:
    # the missing cells are gaps, never filled from another profile
    configs = archive(tmp_path, acc=lambda c: 98.0 + 0.1 * c.seed + (0.2 if c.distribution != "scalar" else 0))
    drop = next(c for c in configs if c.distribution == "gamma" and c.eps_out == 0.15)
    (tmp_path / "paper" / f"{experiments.key(drop)}.json").unlink()
    fashion = [c for c in archive(tmp_path, datasets=("fashion-mnist",)) if c.distribution != "scalar"]
    for c in fashion:
        (tmp_path / "paper" / f"{experiments.key(c)}.json").unlink()
    res = sources.obtain("table1", "archive", results_root=tmp_path)
    assert (res.profile, res.archived) == ("paper", True)
    assert len(res.records) == 2 * len(configs) - 1 - len(fashion)
    assert set(res.gaps) == {"kmnist"} and "not in the paper-profile archive" in res.gaps["kmnist"]
    shown = tables.table1(res.records, gaps=res.gaps, gap_label=res.gap_label, missing=res.missing)
    assert shown.loc[("kmnist", 0.25), "Scalar"] == "gap: not archived"
    assert shown.loc[("fashion-mnist", 0.35), "Normal"] == "gap: not archived"
    assert shown.loc[("fashion-mnist", 0.35), "Scalar"] == "98.00 ± 0.00"
    assert shown.loc[("mnist", 0.15), "Gamma"] == "98.30 (1 run, no spread)"     # seed 1 left
    assert shown.loc[("mnist", 0.25), "Scalar"] == "98.05 ± 0.07"
    text = res.source()
    assert text.startswith("profile paper, archived records not retrained")
    assert "on cpu" in text and "trained on 2026-05-01" in text
    # an archive that covers no data set's whole grid is not shown: the quick profile runs instead
    for c in configs:
        (tmp_path / "paper" / f"{experiments.key(c)}.json").unlink(missing_ok=True)
    assert experiments.resolve("table1", "archive", tmp_path) == ("quick", True)


def test_experiment_without_archive_runs_at_the_quick_profile(tmp_path, monkeypatch):
    archive(tmp_path)      # table1 archived; sigma_eps only where it shares table1's configurations
    calls = []
    monkeypatch.setattr(experiments, "sweep", lambda spec, profile, **kw: calls.append((spec, profile)))
    res = sources.obtain("sigma_eps", "archive", results_root=tmp_path)
    assert (res.profile, res.archived, calls) == ("quick", False, [("sigma_eps", "quick")])
    # an explicit profile is that profile, whatever the archive holds
    res = sources.obtain("table1", "quick", results_root=tmp_path)
    assert (res.profile, res.archived) == ("quick", False)
    assert calls[-1] == ("table1", "quick")
    assert experiments.resolve("table1", "paper", tmp_path) == ("paper", True)


def test_records_without_a_date_still_load_and_say_unknown(tmp_path, no_training):
    archive(tmp_path, seeds=(0,), finished=None)
    res = sources.obtain("table1", "archive", results_root=tmp_path, datasets=["mnist"])
    assert res.records and "trained on unknown" in res.source()
    store = experiments.Store("smoke", tmp_path)
    c = Config(epochs=1, train_subset=512, test_subset=1000)
    store.put(fake_record(c, 50.0, finished=None))
    assert store.get(c)["finished"].endswith("Z")                 # new records carry their date
    mixed = [store.get(c), fake_record(c, 50.0, finished=None)]
    assert "(1 of 2 undated)" in sources.source(mixed, "smoke")


def test_gain_has_an_interval_over_seeds():
    c = Config(dataset="fashion-mnist", epochs=1)
    recs = [fake_record(c.replace(distribution=d, eps_out=e, seed=s), 80 + s + (2 + s if d != "scalar" else 0))
            for d in stats.CONDITIONS for e in (0.15, 0.25) for s in range(3)]
    gain = stats.hts_gain(recs).loc["fashion-mnist"]
    assert gain.seeds == 3 and gain.gap == pytest.approx(3.0)           # per seed: 2, 3, 4
    assert gain.ci_low == pytest.approx(3.0 - 4.302653 / 3 ** 0.5, abs=1e-4)   # t(0.975, 2) * 1 / sqrt(3)
    assert "above zero" in wording.gain_verdict(gain, 0.16)
    one = stats.hts_gain([r for r in recs if r["config"]["seed"] == 0]).loc["fashion-mnist"]
    assert one.seeds == 1 and one.ci_low != one.ci_low
    assert "single seed" in wording.gain_verdict(one, 0.16)
    std = stats.seed_std_columns(recs)
    assert std.loc["fashion-mnist", ("scalar", "ours")] == pytest.approx(1.0)
    assert std.loc["fashion-mnist", ("scalar", "paper")] == pytest.approx(
        stats.paper_table1().loc["fashion-mnist", "scalar_std"].mean())


# -- overrides -------------------------------------------------------------------------

def test_overrides_are_keyed_apart_and_collapse_an_axis():
    spec = experiments.load_spec("sigma_eps")
    plain = experiments.grid_configs(spec, "smoke")
    over = experiments.grid_configs(spec, "smoke", overrides={"sigma_eps": 0.05, "beta": 0.1})
    pairs = spec.grid["distribution,sigma_eps"]             # one point per distribution is left
    assert len(over) == len(plain) // len(pairs) * len({d for d, _ in pairs})
    assert all(c.sigma_eps == 0.05 and c.beta == 0.1 for c in over)
    assert not {experiments.key(c) for c in over} & {experiments.key(c) for c in plain}
    assert experiments.grid_configs(spec, "smoke", overrides="{sigma_eps: 0.05, beta: 0.1}") == over


@pytest.mark.parametrize("value, message", [
    ({"sigma_eps": "a"}, "overrides: sigma_eps='a' must be a finite number"),
    ({"epochs": 1.5}, "overrides: epochs=1.5 must be an integer"),
    ({"sigma": 0.1}, "overrides: unknown Config field 'sigma'; allowed: batch_size, beta,"),
    ({"seed": 3}, "'seed' is chosen by the parameter 'seeds'"),
    ([0.1], "overrides=[0.1] is a list; allowed: a mapping of Config fields"),
    ("sigma_eps 0.1", "overrides: not a mapping of Config fields to values"),
])
def test_bad_overrides_name_the_parameter_and_what_is_allowed(value, message):
    with pytest.raises(experiments.SpecError) as error:
        experiments.check_overrides(value)
    assert message in str(error.value)


def test_book_rejects_bad_overrides_before_any_work(monkeypatch, caplog):
    for name in ("ensure_mathjax", "write_generated", "execute", "build"):
        monkeypatch.setattr(book, name, lambda *a, **k: pytest.fail("the build started"))
    assert book.main(["--parameters", "overrides={'sigma_eps': 'a'}"]) == 1
    assert "overrides: sigma_eps='a' must be a finite number" in caplog.text
    assert book.main(["--profile", "nosuch"]) == 1
    assert "allowed: smoke, quick, paper, screen, archive" in caplog.text


def papermill(tmp_path, *args):
    out = tmp_path / "out.ipynb"
    done = subprocess.run([sys.executable, "-m", "papermill", str(REPO / "notebooks" / "01-time-steps.ipynb"),
                           str(out), "--cwd", str(REPO / "notebooks"), "-p", "n_samples", "2000", *args],
                          capture_output=True, text=True, timeout=600)
    return done, out


def outputs(path):
    nb = json.loads(path.read_text())
    return json.dumps([c.get("outputs") for c in nb["cells"]])


def test_plain_papermill_takes_overrides(tmp_path):
    done, out = papermill(tmp_path, "-p", "overrides", '{"sigma_eps": 0.05}')
    assert done.returncode == 0, done.stderr[-3000:]
    text = outputs(out)
    assert "built with overrides: `sigma_eps = 0.05`" in text
    # the clipped draws' std (last column of the fractions table) follows the overridden spread
    table = json.loads(out.read_text())["cells"][-2]["outputs"][-1]["data"]["text/plain"]
    stds = [float(line.split()[-1]) for line in table if line.split()[:1] in (["Normal"], ["Log-normal"], ["Gamma"])]
    assert all(0.04 < v < 0.06 for v in stds[-3:]), stds
    done, out = papermill(tmp_path, "-y", "overrides: {sigma_eps: 0.05}")
    assert done.returncode == 0 and "sigma_eps = 0.05" in outputs(out)
    done, _ = papermill(tmp_path, "-y", "overrides: {sigma_eps: wide}")
    assert done.returncode != 0
    assert "overrides: sigma_eps='wide' must be a finite number" in done.stderr + done.stdout


def test_source_states_the_training_time_once_per_ensemble():
    """An epoch's seconds are the whole ensemble's, written into each model's record:
    summed over records they are divided by the ensemble size, per device."""
    def rec(device, size, seconds):
        return {"environment": {"device": device, "ensemble_size": size}, "finished": "2026-11-30T00:00:00Z",
                "epochs": [{"seconds": s} for s in seconds]}
    pair = [rec("cpu", 2, [1800, 1800]), rec("cpu", 2, [1800, 1800])]       # one ensemble of 2: 1 h
    assert sources.compute_hours(pair) == {"cpu": pytest.approx(1.0)}
    assert "2 runs on cpu, trained on 2026-11-30; training time 1.0 h (summed over its ensembles)." in \
        sources.source(pair, "paper")
    both = pair + [rec("cuda", 1, [60, 60])]
    assert sources.compute_hours(both) == {"cpu": pytest.approx(1.0), "cuda": pytest.approx(2 / 60)}
    assert "training time 1.0 h on cpu, 2 min on cuda (summed" in sources.source(both, "paper")
    untimed = sources.source([rec("cpu", 1, []), rec("cuda", 1, [60])], "paper")
    assert "training time 1 min on cuda" in untimed                 # named: the runs span two devices
    assert "training time" not in sources.source([rec("cpu", 1, [])], "paper")    # no epoch times: not claimed
    assert [sources.duration(m / 60) for m in (0.2, 0.6, 59.4, 59.6, 90)] == ["<1 min", "1 min", "59 min",
                                                                           "1.0 h", "1.5 h"]


def test_committed_archive_is_current_and_belongs_to_a_spec():
    """Every committed paper-profile record is complete and well formed, filed under the key
    of its configuration at today's NUMERICS_VERSION (else the book would silently stop
    showing it), and is a point of some spec's paper-profile grid (no orphans)."""
    grid = {experiments.key(c): c for name in experiments.spec_names()
            for c in experiments.grid_configs(experiments.load_spec(name), "paper")}
    found = sorted((REPO / "results" / "paper").glob("*.json"))
    assert found, "results/paper/ holds no records"
    for path in found:
        stem, record = path.stem, json.loads(path.read_text())
        assert stem in grid, f"{stem}.json is no point of any spec's paper-profile grid (stale numerics?)"
        assert record.get("key") == stem and record.get("profile") == "paper", stem
        experiments.check_record(record, grid[stem])


def test_committed_archive_covers_table1_for_mnist_and_fashion_mnist():
    """Issue 11's campaign and issue 24's re-run: the paper's full grid for the two data sets available
    offline, at the defaults (the fidelity ablation's set-up) and as first archived (table1_before)."""
    for spec in ("table1", "table1_before"):
        for ds in ("mnist", "fashion-mnist"):
            configs = experiments.grid_configs(experiments.load_spec(spec), "paper", [ds])
            have = experiments.records(spec, "paper", datasets=[ds])
            assert len(configs) == 100 and len(have) == len(configs), f"{spec}, {ds}: {len(have)} of {len(configs)}"
        assert experiments.problems(spec, "paper") == []
