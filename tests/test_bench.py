"""benchmarks/bench_relax.py runs, reports the machine's limit, and fails when the package's numbers move."""
import importlib.util
from pathlib import Path

import pytest
import torch

from hts_ep import Ensemble, fused

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
    if fused.available():                     # the multiply-add peak: a rate, above the kernel's
        line = next(l for l in out.splitlines() if l.startswith("multiply-add peak"))
        peak = float(line.split("best of 3): ")[1].split(" ")[0])
        reached = float(line.split("it reached ")[1].split(" ")[0])
        assert peak > 1 and 0 < reached < 1.5      # a rate near the peak or below it (timing noise aside)


def test_paired_fraction_divides_each_batch_by_the_product_timed_next_to_it(bench, capsys, monkeypatch):
    """Each package batch's ratio uses the product sampled right after it. The products are
    pinned per position: 1e-9 GFLOP/s after plain batches (any ratio taken from one explodes),
    1e3 after a fast training batch, 1 after a fast predict batch, 1e6 after the relaxation."""
    P, T, Q, R = 1e-9, 1e3, 1.0, 1e6
    rates = iter([P, T, P, Q, R,            # batch 0: plain first (train, then predict), relaxation
                  T, P, Q, P, R])           # batch 1: fast first
    sample = bench.MachineLimit.sample
    monkeypatch.setattr(bench.MachineLimit, "sample", lambda self, repeats=3: (sample(self, 1), next(rates))[1])
    assert bench.main(ARGS[:3] + ["2"] + ARGS[4:]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "paired" in l)
    assert "median of 2" in line
    train = [float(v) for v in line.split("train: ")[1].rstrip(")").split()]
    predict = float(line.split("predict ")[1].split(",")[0])
    relax = float(line.split("relaxation alone ")[1].split(" ")[0])
    assert len(train) == 2 and all(v < 0.1 for v in train)     # a few GFLOP/s over 1e3
    assert 0.01 < predict < 1e4                                # a few GFLOP/s over 1
    assert relax < 0.001                                       # a few GFLOP/s over 1e6


def test_fails_when_the_package_drifts_from_the_plain_model(bench, capsys, monkeypatch):
    relax = Ensemble.relax
    monkeypatch.setattr(Ensemble, "relax", lambda self, d, h, o, steps, y=None, trace=None:
                        tuple(t * 1.001 if i < 2 else t for i, t in enumerate(relax(self, d, h, o, steps, y, trace))))
    assert bench.main(ARGS) == 1
    assert "FAILED" in capsys.readouterr().out


KERNEL_AB = BENCH.parent / "kernel_ab.py"


@pytest.fixture
def kernel_ab():
    spec = importlib.util.spec_from_file_location("kernel_ab", KERNEL_AB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not fused.available(), reason="no C++ compiler for the kernel here")
def test_kernel_ab_times_variants_of_the_source_and_checks_their_states(kernel_ab, capsys):
    """Two variants in one binary: the package's source, and one whose leaky ReLU has another
    slope (other states: its checksum must differ, the identical build's must not)."""
    src = fused.SOURCE_PATH
    changed = f"slope=>{src}:const vec zz = z[s][u], sz = slope * zz;=>const vec zz = z[s][u], sz = 0.5f * zz;"
    assert kernel_ab.main(["--reps", "4", f"base={src}", f"new={src}", changed.replace("slope=>", "other=")]) == 0
    lines = {l.split()[0]: l for l in capsys.readouterr().out.splitlines() if "checksum" in l}
    sums = {name: float(line.rsplit("checksum ", 1)[1]) for name, line in lines.items()}
    assert set(sums) == {"base", "new", "other"}          # "new": a C++ keyword, still a name
    assert sums["base"] == sums["new"] != sums["other"]
    assert "time / base: median 1.000" in lines["base"]


def test_kernel_ab_names_a_replacement_it_cannot_find(kernel_ab):
    with pytest.raises(SystemExit, match="not found"):
        kernel_ab.main(["--reps", "4", f"x={fused.SOURCE_PATH}:no such text=>y"])
