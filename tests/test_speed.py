"""The dry run's estimate: measured on this machine, cached by what changes it."""
import json

import pytest
import torch

from hts_ep import Config, fused, speed


@pytest.fixture
def cache(tmp_path, monkeypatch):
    fused.available()       # built or loaded first: torch keeps its builds under XDG_CACHE_HOME too
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (0.0, 0.0, 0.0))     # an idle machine
    monkeypatch.setattr(speed, "_this_process", {})
    return tmp_path / "hts-ep" / "speed.json"


SMALL = Config(n_in=20, n_hidden=32, batch_size=16, t_free=10, t_nudge=3, nudge_from="branch")


def test_measured_once_then_cached(cache, monkeypatch):
    calls = []
    measure = speed.measure
    monkeypatch.setattr(speed, "measure", lambda *a, **k: calls.append(1) or measure(*a, **k))
    first = speed.rates(SMALL, "cpu", 1)
    assert first["train"] > 0 and first["test"] > 0 and len(calls) == 1
    assert speed.rates(SMALL, "cpu", 1)["train"] == first["train"] and len(calls) == 1
    speed.rates(SMALL.replace(n_hidden=64), "cpu", 1)         # another network shape: another
    assert len(calls) == 2 and len(json.loads(cache.read_text())) == 2
    # other threads, another torch or kernel build: other keys (not measured here: two threads
    # beside other work on a 2-core machine would take minutes)
    assert speed.machine_key(SMALL, "cpu", 2) != speed.machine_key(SMALL, "cpu", 1)
    # another kernel path: the nudging scheme, a bound or none
    other = SMALL.replace(nudge_from="branch" if SMALL.nudge_from == "end" else "end")
    assert speed.machine_key(other, "cpu", 1) != speed.machine_key(SMALL, "cpu", 1)
    assert speed.machine_key(SMALL.replace(h_bound=None), "cpu", 1) != \
        speed.machine_key(SMALL.replace(h_bound=2.0), "cpu", 1)
    monkeypatch.setattr(speed.fused, "source_tag", lambda: "another build")
    assert speed.machine_key(SMALL, "cpu", 1) not in json.loads(cache.read_text())


def test_corrupted_or_implausible_cache_is_measured_again(cache):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert speed.rates(SMALL, "cpu", 1)["train"] > 0
    key = speed.machine_key(SMALL, "cpu", 1)
    cache.write_text(json.dumps({key: {"train": -1.0, "test": "fast"}}))
    assert speed.rates(SMALL, "cpu", 1)["train"] > 0


def test_estimate_follows_epochs_and_samples(cache, monkeypatch):
    monkeypatch.setattr(speed, "rates", lambda c, device=None, threads=None: {"train": 1e-3, "test": 1e-4})
    one = SMALL.replace(epochs=1, train_subset=1000, test_subset=500)
    assert speed.estimate_seconds([one]) == pytest.approx(1000 * 1e-3 + 500 * 1e-4)
    assert speed.estimate_seconds([one.replace(epochs=3), one]) == pytest.approx(4 * (1.0 + 0.05))
    full = SMALL.replace(epochs=2, train_subset=0, test_subset=0)      # 0: the whole data set
    assert speed.estimate_seconds([full]) == pytest.approx(2 * (60000 * 1e-3 + 10000 * 1e-4))
    # epochs a checkpoint holds are not counted again, and never below zero
    from hts_ep.experiments import key
    three = one.replace(epochs=3)
    assert speed.estimate_seconds([three, one], done={key(three): 2}) == pytest.approx(2 * 1.05)
    assert speed.estimate_seconds([three], done={key(three): 7}) == 0


def test_threads_are_restored(cache):
    before = torch.get_num_threads()
    speed.rates(SMALL, "cpu", 1 if before != 1 else 2)
    assert torch.get_num_threads() == before


def test_measurement_on_a_busy_machine_is_not_cached(cache, monkeypatch, caplog):
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    calls = []
    measure = speed.measure
    monkeypatch.setattr(speed, "measure", lambda *a, **k: calls.append(1) or measure(*a, **k))
    assert speed.estimate_seconds([SMALL.replace(seed=s) for s in range(5)], "cpu", 1) > 0
    assert not cache.exists() and "busy" in caplog.text
    assert len(calls) == 1              # measured once for the whole plan, not once per model
