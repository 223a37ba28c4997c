import json
import os

import pytest
import torch

from hts_ep.train import atomic_write, train, write_json

from conftest import small


def run(tmp_path, configs, **kw):
    return train(configs, progress=False, **kw)


@pytest.mark.data
def test_record_contents(tmp_path):
    records = run(tmp_path, [small(train_subset=300, epochs=2, distribution="normal")])
    r = records[0]
    assert r["config"]["distribution"] == "normal" and r["complete"] and r["diverged_epoch"] is None
    assert r["environment"]["torch"] == torch.__version__ and r["environment"]["device"] == "cpu"
    assert [e["epoch"] for e in r["epochs"]] == [1, 2]
    assert r["environment"]["train_samples"] == 300 and r["environment"]["test_samples"] == 10000
    for e in r["epochs"]:
        assert 0.0 <= e["train_acc"] <= 1 and 0.1 < e["test_acc"] <= 1
        assert e["seconds"] > 0 and e["residual_free"] >= 0 and e["residual_nudge"] >= 0


@pytest.mark.data
def test_divergence_is_recorded_not_fatal():
    # eta2 overflows the output weights on the first batch. (A huge eta1 alone is
    # not enough under the branching nudge: the two compared hidden states of
    # a saturated network can be equal to the last bit, so its update is zero.) The
    # bad model's activation is unbounded: a bound (the default) keeps the states
    # finite however large the weights, and the run then collapses instead.
    good = small(train_subset=256, epochs=2, seed=0)
    bad = small(train_subset=256, epochs=2, seed=0, eta2=1e30, h_bound=None)
    records = train([good, bad], progress=False)
    assert records[1]["diverged_epoch"] == 1
    assert all(e["test_acc"] is None for e in records[1]["epochs"])
    # the healthy model is untouched by its neighbour's divergence
    alone = train([good], progress=False)[0]
    assert records[0]["diverged_epoch"] is None
    assert [e["test_acc"] for e in records[0]["epochs"]] == pytest.approx([e["test_acc"] for e in alone["epochs"]],
                                                                          abs=2e-4)


class Stop(Exception):
    pass


@pytest.mark.data
def test_interrupt_resumes_from_checkpoint(tmp_path):
    configs = [small(train_subset=300, epochs=3, seed=s) for s in (0, 1)]
    full = train(configs, progress=False)
    ckpt = tmp_path / "run.ckpt"

    def stop_after_two(records):
        if len(records[0]["epochs"]) == 2:
            raise Stop
    with pytest.raises(Stop):
        train(configs, progress=False, checkpoint=ckpt, on_epoch=stop_after_two)
    seen = []
    resumed = train(configs, progress=False, checkpoint=ckpt, on_epoch=lambda r: seen.append(len(r[0]["epochs"])))
    assert seen == [3]  # only the third epoch was trained again
    for a, b in zip(full, resumed):
        assert [e["test_acc"] for e in a["epochs"]] == [e["test_acc"] for e in b["epochs"]]


@pytest.mark.data
def test_corrupt_checkpoint_is_reported_and_ignored(tmp_path, caplog):
    ckpt = tmp_path / "run.ckpt"
    ckpt.write_bytes(b"not a checkpoint")
    records = train([small(train_subset=128)], progress=False, checkpoint=ckpt)
    assert any(r.levelname == "WARNING" and "ignoring checkpoint" in r.getMessage() for r in caplog.records)
    assert records[0]["complete"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})

    def half_then_fail(f):
        f.write(b'{"a": 2, "trunc')
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]
