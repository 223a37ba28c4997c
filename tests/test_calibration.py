"""The package's defaults are what the archived calibration chose, by its written rule."""
import json
from pathlib import Path

from hts_ep import Config, analysis
from hts_ep.train import NUMERICS_VERSION

FINALISTS = Path(__file__).resolve().parent.parent / "results" / "calibration" / "branch" / "mnist-finalists.json"


def test_defaults_are_the_calibrations_choice():
    records = json.loads(FINALISTS.read_text())["records"]
    table = analysis.calibration_table(records)
    assert (table.runs >= 3).all(), table
    for r in records:                                   # the full protocol, current numerics
        c = r["config"]
        assert r["complete"] and len(r["epochs"]) == Config().epochs
        assert (c["train_subset"], c["test_subset"], c["nudge_from"]) == (0, 0, Config().nudge_from)
        assert r["environment"]["numerics_version"] == NUMERICS_VERSION
    chosen, _ = analysis.choose(table)
    assert chosen == tuple(getattr(Config(), k) for k in analysis.RATES)
