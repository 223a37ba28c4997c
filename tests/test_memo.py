"""Page measurements cached by their inputs (hts_ep.memo)."""
import math

import pandas as pd

from hts_ep import memo


def test_computed_once_per_inputs_and_again_when_they_change(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"frame": pd.DataFrame({"a": [1.5, math.nan], "b": ["x", "y"]}), "n": 3}

    inputs = {"configs": [{"seed": 0}], "n_probe": 256}
    first, env = memo.cached("probe", inputs, compute, root=tmp_path)
    again, _ = memo.cached("probe", dict(inputs), compute, root=tmp_path)
    assert len(calls) == 1 and env["finished"]
    for r in (first, again):
        assert r["n"] == 3 and r["frame"].b.tolist() == ["x", "y"]
        assert r["frame"].a.iloc[0] == 1.5 and math.isnan(r["frame"].a.iloc[1])
    memo.cached("probe", {**inputs, "n_probe": 128}, compute, root=tmp_path)
    memo.cached("other", inputs, compute, root=tmp_path)
    assert len(calls) == 3


def test_numerics_version_is_part_of_the_key(monkeypatch):
    before = memo.key("probe", {"a": 1})
    monkeypatch.setattr(memo, "NUMERICS_VERSION", memo.NUMERICS_VERSION + 1)
    assert memo.key("probe", {"a": 1}) != before


def test_unreadable_or_foreign_file_is_computed_again(tmp_path, caplog):
    inputs = {"a": 1}
    memo.cached("probe", inputs, lambda: {"v": 1}, root=tmp_path)
    p = memo.path("probe", inputs, root=tmp_path)
    p.write_text("{not json")
    assert memo.cached("probe", inputs, lambda: {"v": 2}, root=tmp_path)[0] == {"v": 2}
    assert "ignoring cached measurement" in caplog.text
    text = p.read_text().replace('"a": 1', '"a": 2')       # a file that claims other inputs
    p.write_text(text)
    assert memo.cached("probe", inputs, lambda: {"v": 3}, root=tmp_path)[0] == {"v": 3}


def test_written_compactly_and_the_committed_files_read_back(tmp_path):
    import json

    from hts_ep import experiments
    memo.cached("probe", {"a": 1}, lambda: {"frame": pd.DataFrame({"x": [1.0, 2.0]})}, root=tmp_path)
    assert "\n" not in memo.path("probe", {"a": 1}, root=tmp_path).read_text()      # no indentation
    committed = sorted((experiments.REPO / "results" / "pages").glob("*/*.json"))
    assert committed
    for p in committed:          # each under the key of its own name and inputs: a build reads it, trains nothing
        stored = json.loads(p.read_text())
        assert memo.path(stored["name"], stored["inputs"], experiments.REPO / "results") == p
        assert memo.load(stored["name"], stored["inputs"], experiments.REPO / "results") is not None, p
