import json
import os
import subprocess
import sys

import pytest

# Sixteen batches of 32 and 40 free steps: one batch of 256 leaves every model at chance, and after
# 20 free steps the nudge from the free end (the default) starts from a state still drifting.
SMALL = ["--n-hidden", "32", "--t-free", "40", "--t-nudge", "4", "--train-subset", "512", "--batch-size", "32",
         "--epochs", "1", "--threads", "1", "--no-progress"]


def cli(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "hts_ep.cli", *args], capture_output=True, text=True, env=e,
                          timeout=300)


@pytest.mark.data
def test_train_happy_path_ensemble(tmp_path):
    out = tmp_path / "run.json"
    p = cli("train", "--dataset", "mnist", "--distribution", "scalar", "gamma", "--eps-out", "0.2", "0.3",
            "--out", str(out), *SMALL)
    assert p.returncode == 0, p.stderr
    records = json.loads(out.read_text())["records"]
    assert len(records) == 4
    assert {(r["config"]["distribution"], r["config"]["eps_out"]) for r in records} == \
        {("scalar", 0.2), ("scalar", 0.3), ("gamma", 0.2), ("gamma", 0.3)}
    assert all(r["epochs"][0]["test_acc"] > 0.25 for r in records)     # chance is 0.1
    assert records[0]["environment"]["ensemble_size"] == 4


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["--distribution", "uniform"], "invalid choice: 'uniform'"),
    (["--eps-out", "-0.1"], "eps_out=-0.1 must be > 0"),
    (["--sigma-eps", "0.5"], "larger than the mean allows"),
    (["--eps-min", "0"], "eps_min=0.0 must be > 0"),
    (["--mu", "0.7"], "mu=0.7 must lie in [eps_min, eps_max]"),
    (["--seed", "1", "1"], "--seed has duplicates"),
    (["--epochs", "0"], "epochs=0 must be > 0"),
    (["--eta1", "nan"], "eta1=nan must be a finite number"),        # tests/test_hostile.py has the rest
    (["--n-in", "100"], "n_in=100 does not fit 'mnist'"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    p = cli("train", "--out", str(tmp_path / "x.json"), *SMALL, *args)
    assert p.returncode == 2
    assert message in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "x.json").exists()


def test_missing_dataset_names_files_and_place(tmp_path, monkeypatch):
    # Hermetic: a data root without KMNIST and no download, whatever this machine has or reaches.
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("HTS_EP_OFFLINE", "1")
    p = cli("train", "--dataset", "kmnist", "--data-root", str(root), "--out", str(tmp_path / "x.json"),
            *SMALL)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "data set 'kmnist' is not available" in p.stderr
    assert "train-images-idx3-ubyte.gz" in p.stderr and "KMNIST/raw" in p.stderr


def test_missing_root_entirely(tmp_path):
    p = cli("train", "--dataset", "fashion-mnist", "--out", str(tmp_path / "x.json"), *SMALL,
            env={"HTS_EP_DATA": str(tmp_path / "nothing")})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "t10k-labels-idx1-ubyte.gz" in p.stderr and "HTS_EP_DATA" in p.stderr


@pytest.mark.parametrize("stat", ["final", "best", "last5"])
def test_table_prints_the_statistic_asked_for(stat, capsys):
    from hts_ep import cli, experiments, stats, tables
    assert cli.main(["table", "table1", "--profile", "paper", "--format", "csv", "--stat", stat]) == 0
    printed = capsys.readouterr().out
    records = experiments.records("table1", "paper", datasets=["mnist"])
    cell = tables.table1(records, datasets=["mnist"], stat=stat).iloc[0, 0]
    assert f"mnist,0.15,{cell}," in printed
    others = {tables.table1(records, datasets=["mnist"], stat=s).iloc[0, 0] for s in stats.STATS} - {cell}
    assert others and not any(f"mnist,0.15,{o}," in printed for o in others)


def test_set_reads_values_as_yaml_and_checks_them():
    from hts_ep import cli
    from hts_ep.experiments import SpecError
    assert cli.parse_sets(["h_bound=1.2", "inputs=standardised", "nudge-from=end"]) == \
        {"h_bound": 1.2, "inputs": "standardised", "nudge_from": "end"}
    assert cli.parse_sets(["h_bound=null"]) == cli.parse_sets(["h_bound=none"]) == {"h_bound": None}
    # whole numbers of float fields as floats (another type is another key), '1e-3' as a number
    assert cli.parse_sets(["eta1=1", "h_bound=2", "beta=1e-3", "epochs=3"]) == \
        {"eta1": 1.0, "h_bound": 2.0, "beta": 0.001, "epochs": 3}
    assert type(cli.parse_sets(["eta1=1"])["eta1"]) is float
    with pytest.raises(cli.UserError, match="no value"):
        cli.parse_sets(["h_bound="])
    assert cli.parse_sets([]) == {}
    with pytest.raises(cli.UserError, match="not FIELD=VALUE"):
        cli.parse_sets(["h_bound"])
    with pytest.raises(SpecError, match="unknown Config field 'hbound'; allowed: .*h_bound"):
        cli.parse_sets(["hbound=1.2"])
    with pytest.raises(SpecError, match="unknown inputs 'weird'; allowed: unit, standardised"):
        cli.parse_sets(["inputs=weird"])


def test_set_reaches_the_sweep(monkeypatch):
    from types import SimpleNamespace

    from hts_ep import cli, experiments
    seen = {}

    def fake_sweep(*args, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace(skipped={}, missing=[], cached=[1], trained=[])
    monkeypatch.setattr(experiments, "sweep", fake_sweep)
    assert cli.main(["sweep", "stability", "--profile", "smoke", "--threads", "1", "--no-progress",
                     "--set", "beta=0.3", "--set", "h_bound=1.2", "--dataset", "mnist"]) == 0
    assert seen["overrides"] == {"beta": 0.3, "h_bound": 1.2} and seen["datasets"] == ["mnist"]
    # a data set the spec does not train is refused, not "trained 0 models"
    assert cli.main(["sweep", "ablation_paper", "--profile", "paper", "--dataset", "kmnist"]) == 2


def test_table_with_set_reads_the_records_at_those_fields(capsys):
    from hts_ep import cli, experiments, tables
    # the set-up before the fidelity ablation: its archive is Table 1's first
    overrides = {"h_bound": None, "inputs": "unit", "nudge_from": "branch"}
    records = experiments.records("table1", "paper", datasets=["mnist"], overrides=overrides)
    if not records:
        pytest.skip("no archived Table 1 records at the set-up before the ablation")
    cli.main(["table", "table1", "--profile", "paper", "--format", "csv", "--stat", "best",
              "--set", "h_bound=none", "--set", "inputs=unit", "--set", "nudge_from=branch"])
    printed = capsys.readouterr().out
    cell = tables.table1(records, datasets=["mnist"], stat="best").loc[("mnist", 0.25), "Scalar"]
    default = tables.table1(experiments.records("table1", "paper", datasets=["mnist"]), datasets=["mnist"],
                            stat="best").loc[("mnist", 0.25), "Scalar"]
    assert cell != default
    row = next(line for line in printed.splitlines() if line.startswith("mnist,0.25,"))
    assert row.endswith("," + cell)
