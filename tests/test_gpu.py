"""The Triton relaxation kernel against the float64 reference (hts_ep/dynamics.py).

Without a GPU, Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py)
executes the kernel program by program with NumPy on CPU tensors: that
checks its arithmetic, padding, masking and dispatch, not register use or
speed, which need a GPU (benchmarks/bench_relax.py). With CUDA, the same
tests run the compiled kernel on the GPU (benchmarks/gpu_check.sh).
"""
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hts_ep import Config, Ensemble, gpu

from reference import check_against_reference, close, guard_ensemble, reference

interpreted = pytest.mark.skipif(gpu.triton is None or not gpu.interpreting(),
                                 reason="needs Triton and TRITON_INTERPRET=1 before its import")


@pytest.fixture
def device():
    """Where the kernel runs: CPU under the interpreter, else the GPU (compiled), else skip."""
    if gpu.triton is not None and gpu.interpreting():
        return "cpu"
    if gpu.triton is not None and torch.cuda.is_available():
        return "cuda"
    pytest.skip("needs Triton with TRITON_INTERPRET=1 set before its import, or CUDA")


@pytest.fixture
def triton_kernel(monkeypatch):
    """Ensemble.relax dispatches to the Triton kernel, counting its calls; a kernel that
    failed (and fell back to PyTorch, which would compare PyTorch with itself) fails the test."""
    monkeypatch.setenv("HTS_EP_KERNEL", "triton")
    calls = []
    relax = gpu.relax
    monkeypatch.setattr(gpu, "relax", lambda *a, **k: calls.append(1) or relax(*a, **k))
    yield calls
    assert not gpu._failed, "the Triton kernel failed and the PyTorch path ran instead"


def ensemble(n_hidden=40, n_in=20, n_out=10, device="cpu"):
    configs = [Config(n_in=n_in, n_hidden=n_hidden, n_out=n_out, distribution=d, eps_out=e, seed=s)
               for d, e, s in [("gamma", 0.3, 0), ("lognormal", 0.15, 1), ("scalar", 0.35, 2)]]
    return Ensemble(configs, device=device)


def inputs(ens, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_out = ens.W2.shape[1]
    x = torch.rand(len(ens), batch, ens.W1.shape[2], generator=g)
    y = F.one_hot(torch.randint(0, n_out, (len(ens), batch), generator=g), n_out).float()
    return x.to(ens.device), y.to(ens.device)


def check_phases(ens, batch, tolerance=1e-5):
    """A free phase from zero, then a nudged one: kernel (via Ensemble.relax) against the float64 reference."""
    x, y = inputs(ens, batch)
    d = ens.drive(x)
    h, o = ens.zero_state(batch)
    h_copy = h.clone()
    fast, ref = ens.relax(d, h, o, 30), reference(ens, d, h, o, 30)
    assert torch.equal(h, h_copy)                       # the inputs are not modified
    for u, v in zip(fast, ref):
        assert u.shape == v.shape and close(u, v, tolerance), (u.double() - v).abs().max()
    fast_n = ens.relax(d, fast[0], fast[1], 7, y=y)
    ref_n = reference(ens, d, ref[0], ref[1], 7, y=y)
    for u, v in zip(fast_n, ref_n):
        assert close(u, v, tolerance), (u.double() - v).abs().max()
    assert (fast_n[2] > 0).all()
    assert not torch.allclose(fast_n[1], fast[1])        # the nudge moved the outputs


# 21 samples: a full tile of 16 and a partial one; hidden and output sizes
# that are not powers of two (nor 10) exercise the padding.
@pytest.mark.parametrize("n_hidden,n_out", [(40, 10), (64, 3), (16, 17)])
def test_kernel_equals_reference(triton_kernel, device, n_hidden, n_out):
    check_phases(ensemble(n_hidden, n_out=n_out, device=device), 21)
    assert len(triton_kernel) == 2


def test_kernel_takes_the_zero_state_as_none(triton_kernel, device):
    """h None (what predict and train_step pass) gives the kernel's own result from zeros."""
    ens = ensemble(40, device=device)
    d = ens.drive(inputs(ens, 5)[0])
    h, o = ens.zero_state(5)
    for u, v in zip(ens.relax(d, None, o, 6), ens.relax(d, h, o, 6)):
        assert torch.equal(u, v)
    assert len(triton_kernel) == 2


# Every formulation HTS_EP_TRITON can choose (benchmarks/gpu_tune.py times them on a GPU),
# with tiles smaller and larger than the 21 samples.
@pytest.mark.parametrize("text", ["variant=outer,block_b=4,warps=2", "variant=outer,block_b=8",
                                  "variant=outer,block_b=32,warps=4", "variant=dot,block_b=32,warps=4"])
def test_kernel_settings_equal_reference(triton_kernel, device, monkeypatch, text):
    monkeypatch.setenv("HTS_EP_TRITON", text)
    launched = []
    options = gpu.launch_options
    monkeypatch.setattr(gpu, "launch_options", lambda *a: launched.append(options(*a)) or launched[-1])
    check_phases(ensemble(40, n_out=10, device=device), 21)
    check_phases(ensemble(16, n_out=17, device=device), 5)
    assert len(triton_kernel) == 4
    want = gpu.settings(text)                           # the setting reached every launch
    assert all((o["OUTER"], o["BLOCK_B"], o["num_warps"]) == (want["variant"] == "outer", want["block_b"],
                                                              want["warps"]) for o in launched)
    assert len(launched) == 4


def test_kernel_settings_are_checked(monkeypatch):
    assert gpu.settings("") == gpu.DEFAULTS
    assert gpu.settings(" variant=outer , block_b=4 ")["block_b"] == 4
    for text, message in [("tile=4", "unknown setting 'tile'; allowed: variant, block_b"),
                          ("block_b=5", "block_b=5 is not allowed; allowed: 4, 8, 16, 32"),
                          ("warps=x", "warps='x' is not allowed"),
                          ("variant=dot,block_b=8", "variant=dot needs block_b >= 16")]:
        with pytest.raises(ValueError, match=message):
            gpu.settings(text)
    monkeypatch.setenv("HTS_EP_TRITON", "variant=fast")
    with pytest.raises(ValueError, match="variant='fast'"):
        gpu.settings()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # NumPy, on inf * 0
@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")   # NumPy, a row sum of NaN
@pytest.mark.parametrize("text", ["", "variant=outer,block_b=4,warps=4"])
def test_non_finite_state_shows_in_residual(triton_kernel, device, monkeypatch, text):
    monkeypatch.setenv("HTS_EP_TRITON", text)
    ens = ensemble(32, device=device)
    ens.W2[1, 0, 3] = math.inf          # model 1 blows up, the others do not
    x, _ = inputs(ens, 4)
    d = ens.drive(x)
    fast = ens.relax(d, *ens.zero_state(4), 6)
    ref = reference(ens, d, *ens.zero_state(4), 6)
    assert triton_kernel
    assert torch.isnan(fast[2][1]) and torch.isnan(ref[2][1])
    assert torch.isfinite(fast[2][[0, 2]]).all()
    assert close(fast[0][[0, 2]], ref[0][[0, 2]])


@pytest.mark.parametrize("scheme", ["branch", "end"])
@pytest.mark.parametrize("h_bound", [None, 0.5])
def test_every_phase_and_update_equal_reference_over_gamma_beta_bound(triton_kernel, device, scheme, h_bound):
    """The guard of test_fused.py through the Triton kernel: gamma 0.5 and 1.7, beta 0.05 to 0.7,
    bounded and unbounded models, both schedules; phases, increments and train_step against the
    float64 reference."""
    ens, x, y = guard_ensemble(scheme, h_bound, n_hidden=48, t_free=20, t_nudge=6, batch=21, device=device)
    check_against_reference(ens, x, y)
    assert len(triton_kernel) == 3 * (3 if scheme == "branch" else 2)   # phases, increments, train_step


def test_training_through_the_kernel_equals_pytorch_path(triton_kernel, device, monkeypatch):
    """Same outputs, residuals and weight updates as the PyTorch path, partial last batch included."""
    fast, plain = ensemble(48, device=device), ensemble(48, device=device)
    monkeypatch.setattr(plain, "relax", plain.relax_torch)
    for batch, seed in [(16, 0), (5, 1)]:
        x, y = inputs(fast, batch, seed)
        for u, v in zip(fast.train_step(x, y), plain.train_step(x, y)):
            assert (u - v).abs().max() < 1e-5
    # per batch: branch point, free end and nudged phase ("branch"), or free and nudged phase ("end")
    assert len(triton_kernel) == 2 * (3 if fast.nudge_from == "branch" else 2)
    for name in ("W1", "b1", "W2", "b2"):
        assert (getattr(fast, name) - getattr(plain, name)).abs().max() < 1e-5
    assert not torch.equal(fast.W1, ensemble(48, device=device).W1)    # the weights did move


@interpreted
def test_compile_failure_falls_back_to_pytorch(monkeypatch):
    class Broken:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise RuntimeError("out of resource: shared memory")
            return launch
    monkeypatch.setenv("HTS_EP_KERNEL", "triton")
    monkeypatch.setattr(gpu, "_relax_kernel", Broken())
    monkeypatch.setattr(gpu, "_failed", False)
    ens = ensemble()
    x, _ = inputs(ens, 3)
    d = ens.drive(x)
    with pytest.warns(UserWarning, match="out of resource"):
        h, o, res = ens.relax(d, *ens.zero_state(3), 5)
    ref = ens.relax_torch(d, *ens.zero_state(3), 5)
    assert torch.equal(h, ref[0]) and torch.equal(res, ref[2])
    assert not gpu.available()                          # not retried on every call


@interpreted
def test_kernel_choice(monkeypatch):
    d, o = torch.zeros(1, 2, 16), torch.zeros(1, 2, 10)
    assert not gpu.supports(d, o)                       # CPU by default: fused.py's job
    monkeypatch.setenv("HTS_EP_KERNEL", "triton")
    assert gpu.supports(d, o)
    assert not gpu.supports(torch.zeros(1, 2, gpu.MAX_HIDDEN + 16), o)   # too large for shared memory
    assert not gpu.supports(d.double(), o)
    assert not gpu.supports(torch.zeros(1, 1, 16).expand(2**16, 2**11, 16), o)   # 2^31 elements: 32-bit offsets
    monkeypatch.setenv("HTS_EP_KERNEL", "torch")
    assert not gpu.supports(d, o)
    monkeypatch.setenv("HTS_EP_KERNEL", "cuda")
    with pytest.raises(ValueError, match="'cuda' is not one of auto, torch, triton"):
        gpu.supports(d, o)
    monkeypatch.setenv("HTS_EP_KERNEL", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        gpu.supports(d, o)


@pytest.mark.skipif(not torch.cuda.is_available() or gpu.triton is None, reason="needs CUDA and Triton")
def test_compiled_kernel_on_cuda_paper_size(triton_kernel):
    ens = ensemble(1024, n_in=784, device="cuda")
    check_phases(ens, 300, tolerance=1e-4)
    assert len(triton_kernel) == 2


@pytest.mark.skipif(gpu.triton is None, reason="needs Triton")
def test_kernel_compiles_for_hopper():
    """The interpreter does not compile the kernel; compile it for sm_90 (H100/H200) without a GPU."""
    script = ("from hts_ep import gpu\n"
              "for nudge in (False, True):\n"
              "    shared, cubin = gpu.compile_for(90, nudge=nudge)\n"
              "    print(shared, len(cubin))\n"
              "for text in ('variant=outer,block_b=4,warps=8', 'warps=16'):\n"
              "    shared, cubin = gpu.compile_for(90, text=text)\n"
              "    print(shared, len(cubin))\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=600, cwd=Path(gpu.__file__).parent.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    for line in run.stdout.split("\n")[:4]:
        shared, cubin = map(int, line.split())
        assert cubin > 0 and shared <= 227 * 1024            # the most one block gets on sm_90


@interpreted
def test_gpu_tune_times_checks_and_rejects(monkeypatch):
    """benchmarks/gpu_tune.py: a setting is timed only if it matches the PyTorch path, and a
    kernel that computes something else, or cannot launch, is reported instead."""
    monkeypatch.setattr(gpu, "_failed", False)          # restored (False) after the test
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import gpu_tune
    monkeypatch.setenv("HTS_EP_KERNEL", "triton")       # restored after the test: measure() sets both
    monkeypatch.setenv("HTS_EP_TRITON", "")
    small = dict(n_in=20, n_hidden=40, t_free=6, t_nudge=2)

    def measure():
        return gpu_tune.measure("variant=outer,block_b=4,warps=2", [2], torch.device("cpu"), reps=1,
                                batch=5, test_batch=7, **small)

    row = measure()
    assert row["error"] < 1e-5 and row["M2"]["step"] > 0 and row["M2"]["epoch"] > 0
    assert os.environ["HTS_EP_TRITON"] == "variant=outer,block_b=4,warps=2"
    relax = gpu.relax
    monkeypatch.setattr(gpu, "relax", lambda ens, d, h, o, steps, y=None: (
        lambda r: (r[0] + 1e-3, r[1], r[2]))(relax(ens, d, h, o, steps, y)))
    assert re.fullmatch(r"differs from the PyTorch path by [12]\.\d\de-03 > 0.0001", measure()["failed"])

    def unavailable(*args, **kwargs):
        gpu._failed = True
        warnings.warn("Triton relaxation kernel unavailable (out of resource: shared memory)", stacklevel=2)

    monkeypatch.setattr(gpu, "relax", unavailable)
    assert "out of resource" in measure()["failed"]
    monkeypatch.setattr(gpu, "relax", lambda *a, **k: relax(*a, **k) if a[4] != 2 else unavailable())
    assert "out of resource" in measure()["failed"]      # only 2-step phases (the nudged one) fail
