"""The package's defaults are what the archived calibration chose, by its written rule."""
import json
from pathlib import Path

from hts_ep import Config, stats
from hts_ep.train import NUMERICS_VERSION

BRANCH = Path(__file__).resolve().parent.parent / "results" / "calibration" / "branch"


def test_defaults_are_the_calibrations_choice():
    records = json.loads((BRANCH / "mnist-finalists.json").read_text())["records"]
    fashion = json.loads((BRANCH / "fashion-mnist-check.json").read_text())["records"]
    assert {tuple(r["config"][k] for k in stats.RATES) for r in fashion} == \
        {tuple(r["config"][k] for k in stats.RATES) for r in records}    # every finalist checked
    table = stats.calibration_table(records)
    assert (table.runs >= 3).all(), table
    for r in records:                                   # the full protocol, current numerics
        c = r["config"]
        assert r["complete"] and len(r["epochs"]) == Config().epochs
        # made before the fidelity ablation, under the branching nudge (which it kept the rates of)
        assert (c["train_subset"], c["test_subset"], c["nudge_from"]) == (0, 0, "branch")
        assert r["environment"]["numerics_version"] == NUMERICS_VERSION
    chosen, _ = stats.choose(table, excluded=stats.fashion_failures(fashion))
    assert chosen == tuple(getattr(Config(), k) for k in stats.RATES)
