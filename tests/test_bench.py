"""benchmarks/bench_relax.py runs, reports the machine's limit, and fails when the package's numbers move."""
import importlib.util
from pathlib import Path

import pytest
import torch

from hts_ep import Ensemble

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_relax.py"
ARGS = ["--models", "1", "--batches", "1", "--batch", "16", "--threads", "1", "--device", "cpu"]


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("bench_relax", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)


def test_reports_limit_fraction_and_projection(bench, capsys):
    assert bench.main(ARGS) == 0
    out = capsys.readouterr().out
    assert "state check" in out and "OK" in out
    assert "float32 2048x2048 product" in out and "fraction of the fp32 product rate" in out
    assert "projection:" in out and "FAILED" not in out


def test_fails_when_the_package_drifts_from_the_plain_model(bench, capsys, monkeypatch):
    relax = Ensemble.relax
    monkeypatch.setattr(Ensemble, "relax", lambda self, d, h, o, steps, y=None, trace=None:
                        tuple(t * 1.001 if i < 2 else t for i, t in enumerate(relax(self, d, h, o, steps, y, trace))))
    assert bench.main(ARGS) == 1
    assert "FAILED" in capsys.readouterr().out
