"""The fused CPU kernel and the PyTorch path against the float64 reference (hts_ep/dynamics.py), on
the shapes the kernel's loops special-case, and the kernel against itself bit for bit."""
import math

import pytest
import torch
import torch.nn.functional as F

from hts_ep import Config, Ensemble, fused, machine

from reference import check_against_reference, close, guard_ensemble, reference

needs_kernel = pytest.mark.skipif(not fused.available(), reason="fused CPU kernel could not be built here")


def ensemble(n_hidden, n_in=20, **kw):
    configs = [Config(n_in=n_in, n_hidden=n_hidden, distribution=d, eps_out=e, seed=s, **kw)
               for d, e, s in [("gamma", 0.3, 0), ("lognormal", 0.15, 1), ("scalar", 0.35, 2)]]
    return Ensemble(configs, device="cpu")


def inputs(ens, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(ens), batch, ens.W1.shape[2], generator=g)
    y = F.one_hot(torch.randint(0, 10, (len(ens), batch), generator=g), 10).float()
    return x, y


def both_paths(ens, d, h, o, steps, y=None):
    """The fused kernel's and the PyTorch path's (h, o, residual), each checked against the reference."""
    assert fused.supports(d, o, ens.slope)
    fast, plain = ens.relax(d, h, o, steps, y=y), ens.relax_torch(d, h, o, steps, y=y)
    ref = reference(ens, d, h, o, steps, y)
    for path in (fast, plain):
        for u, v in zip(path, ref):
            assert close(u, v), (u.double() - v).abs().max()
    return fast, plain


@needs_kernel
# Hidden sizes: single vectors only, register blocks and a tail, two tiles of 512.
# Batches: one partial group (3 samples in a register block, 2 alone), and a full
# group of 24 plus a partial one (4 blocks, 1 alone): every way the kernel splits a batch.
@pytest.mark.parametrize("n_hidden,batch", [(16, 5), (48, 5), (160, 37), (1024, 5), (1024, 37)])
def test_kernel_and_pytorch_path_equal_reference(n_hidden, batch):
    ens = ensemble(n_hidden)
    x, y = inputs(ens, batch)
    d = ens.drive(x)
    fast, _ = both_paths(ens, d, *ens.zero_state(batch), 40)
    both_paths(ens, d, fast[0], fast[1], 7, y=y)
    assert (fast[2] > 0).all()          # a residual per model, of the last step


@pytest.mark.parametrize("path", ["fused", "torch"])
@pytest.mark.parametrize("bounds", [(None, None), (0.3, None)])
def test_full_free_phase_equals_float64_reference(path, bounds):
    """The paper's network (784-1024-10), 125 free steps: every CPU path within 1e-5 of float64,
    unbounded and with one model's hidden activation clamped to [-0.3, 0.3] (Config.h_bound).
    (The Triton kernel's own check is in test_gpu.py.)"""
    if path == "fused" and not fused.available():
        pytest.skip("fused CPU kernel could not be built here")
    configs = [Config(distribution=dist, seed=s, h_bound=b)
               for (dist, s), b in zip([("gamma", 0), ("scalar", 1)], bounds)]
    ens = Ensemble(configs, device="cpu")
    x = 3 * torch.rand(2, 19, 784, generator=torch.Generator().manual_seed(0))   # states past 0.3
    d = ens.drive(x)
    h0, o0 = ens.zero_state(19)
    if path == "fused":
        assert fused.supports(d, o0, ens.slope)
        h, o, _ = ens.relax(d, h0, o0, ens.t_free)
    else:
        h, o, _ = ens.relax_torch(d, h0, o0, ens.t_free)
    H, O, _ = reference(ens, d, h0, o0, ens.t_free)
    assert H.abs().max() > 0.1          # states far from zero: a real check of 1e-5
    assert (h.double() - H).abs().max() < 1e-5 and (o.double() - O).abs().max() < 1e-5
    for m, b in enumerate(bounds):      # the bound binds where set, and only there
        top = h[m].abs().max().item()
        assert top <= b + 1e-6 if b else top > 0.5


@needs_kernel
def test_inputs_are_not_modified_and_threads_agree():
    ens = ensemble(64)
    x, y = inputs(ens, 9)
    d = ens.drive(x)
    h, o = ens.relax(d, *ens.zero_state(9), 10)[:2]
    h_copy, o_copy = h.clone(), o.clone()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ens.relax(d, h, o, 5, y=y)
        torch.set_num_threads(2)
        two = ens.relax(d, h, o, 5, y=y)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(h, h_copy) and torch.equal(o, o_copy)
    for u, v in zip(one, two):          # samples are independent: same bits whatever the split
        assert torch.equal(u, v)


@pytest.mark.parametrize("kernel", ["fused", "torch"])
@pytest.mark.parametrize("scheme", ["branch", "end"])
@pytest.mark.parametrize("h_bound", [None, 0.5])
def test_every_phase_and_update_equal_reference_over_gamma_beta_bound(kernel, scheme, h_bound, monkeypatch):
    """The guard: gamma 0.5 and 1.7, beta 0.05 to 0.7, bounded and unbounded models in one ensemble,
    both schedules; the phases, increments and train_step of the fused kernel (under "branch" its
    one-pass branch, with dh formed inside) and of the PyTorch path against the float64 reference."""
    if kernel == "fused" and not fused.available():
        pytest.skip("fused CPU kernel could not be built here")
    monkeypatch.setenv("HTS_EP_KERNEL", "auto" if kernel == "fused" else "torch")
    ens, x, y = guard_ensemble(scheme, h_bound)
    assert fused.supports(ens.drive(x), y, ens.slope) == (kernel == "fused")
    check_against_reference(ens, x, y)


@needs_kernel
@pytest.mark.parametrize("h_bound", [None, 0.5])
def test_non_finite_state_shows_in_residual(h_bound):
    ens = ensemble(32, h_bound=h_bound)
    ens.W2[1, 0, 3] = math.inf          # model 1 blows up, the others do not
    x, _ = inputs(ens, 4)
    d = ens.drive(x)
    fast, ref = both_paths(ens, d, *ens.zero_state(4), 6)
    assert torch.isnan(fast[2][1]) and torch.isnan(ref[2][1])
    assert torch.isfinite(fast[2][[0, 2]]).all()
    assert torch.allclose(fast[0][[0, 2]], ref[0][[0, 2]], atol=1e-5)


@needs_kernel
def test_vector_exp_is_libm_expf_bit_for_bit():
    """The kernel's vector exp (the output sigmoid; 8 floats at a time with AVX-512, else
    4) against std::exp, bit for bit: every 97th float with |x| < 88 (its vector path), and every 10007th of all
    bit patterns (|x| >= 88, infinities and NaNs go through std::exp itself)."""
    if not fused._module.vector_expf:
        pytest.skip("no vector expf on this build (not x86-64 FMA+AVX2 with glibc >= 2.27): expw is std::exp")
    check = fused._module.exp_mismatches
    assert check(0, 0x42B00000, 97) == 0                  # 0 <= x < 88
    assert check(0x80000000, 0xC2B00000, 97) == 0         # -88 < x <= -0
    assert check(0, 1 << 32, 10007) == 0


@needs_kernel
def test_lane_sums_keep_the_scalar_order_bit_for_bit():
    """The register transpose that sums each output's lanes (8 or 16, by the build's
    vector width) rounds exactly as the scalar loop over the lanes, on sums whose
    rounding depends on the order (the reversed order differs in most of them)."""
    bad, reversed_differs = fused._module.lane_sum_mismatches(2000, 1)
    assert bad == 0
    assert reversed_differs > 1000


@needs_kernel
def test_saturated_output_sigmoid_equals_pytorch_path():
    """|z_o| beyond 88, where exp overflows or flushes to zero: the kernel's
    scalar fallback inside the vector sigmoid."""
    ens = ensemble(48)
    ens.b2[0] = 200.0
    ens.b2[1] = -200.0
    x, y = inputs(ens, 7)
    d = ens.drive(x)
    fast, ref = both_paths(ens, d, *ens.zero_state(7), 12, y=y)
    for u, v in zip(fast, ref):
        assert torch.isfinite(u).all() and (u - v).abs().max() < 1e-5


@needs_kernel
@pytest.mark.parametrize("n_hidden,batch", [(48, 5), (1024, 37)])
def test_branch_in_one_pass_is_three_relaxations_bit_for_bit(n_hidden, batch):
    """fused.branch (what Ensemble.phases uses) against the three relax calls it replaces."""
    ens = ensemble(n_hidden, nudge_from="branch")
    x, y = inputs(ens, batch)
    d = ens.drive(x)
    h, o = ens.zero_state(batch)
    t_branch, t_nudge = ens.t_free - ens.t_nudge, ens.t_nudge
    hk, ok, _ = fused.relax(ens, d, h, o, t_branch)
    expected = (fused.relax(ens, d, hk, ok, t_nudge), fused.relax(ens, d, hk, ok, t_nudge, y))
    for y_arg, want in ((y, expected), (None, (expected[0], expected[0]))):
        got = fused.branch(ens, d, h, o, t_branch, t_nudge, y_arg)
        for phase, ref in zip(got, want):
            for u, v in zip(phase, ref):
                assert torch.equal(u, v)
    assert ens.phases(d, y)[1][1].equal(expected[1][1])
    scale = ens.eta1 / (ens.beta * batch)              # train_step's form: dh instead of h0
    (dh, o0, r0), nudged = fused.branch(ens, d, h, o, t_branch, t_nudge, y, dh_scale=scale)
    assert torch.equal(dh, (expected[1][0] - expected[0][0]).mul_(scale))
    assert torch.equal(o0, expected[0][1]) and torch.equal(r0, expected[0][2])
    assert all(torch.equal(u, v) for u, v in zip(nudged, expected[1]))


@needs_kernel
@pytest.mark.parametrize("n_hidden", [48, 1024])      # stride at run time; fixed at compile time
def test_zero_state_set_in_the_kernel_equals_zero_tensors(n_hidden):
    """h None (predict and train_step: no [M, B, H] zeros allocated and copied in) against
    explicit zeros, bit for bit, for relax and branch; an h of another shape is refused."""
    ens = ensemble(n_hidden)
    x, y = inputs(ens, 37)
    d = ens.drive(x)
    h, o = ens.zero_state(37)
    for y_arg in (None, y):
        assert all(torch.equal(u, v) for u, v in zip(fused.relax(ens, d, None, o, 9, y_arg),
                                                     fused.relax(ens, d, h, o, 9, y_arg)))
    for got, want in zip(fused.branch(ens, d, None, o, 7, 3, y), fused.branch(ens, d, h, o, 7, 3, y)):
        assert all(torch.equal(u, v) for u, v in zip(got, want))
    assert torch.equal(ens.predict(x)[0], ens.relax(d, h, o, ens.t_free)[1])
    with pytest.raises(RuntimeError, match="shape of the drive"):
        fused.relax(ens, d, h[:, :5], o, 9)
    assert torch.equal(ens.relax_torch(d, None, o, 9)[0], ens.relax_torch(d, h, o, 9)[0])   # every path


@needs_kernel
def test_fma_peak_takes_at_most_torchs_threads():
    assert fused.fma_peak(0.01, 1) > 0
    with pytest.raises(ValueError, match="thread count"):
        fused.fma_peak(0.01, torch.get_num_threads() + 1)


@needs_kernel
@pytest.mark.parametrize("h_bound", [None, 1.2])
@pytest.mark.parametrize("scheme", ["branch", "end"])
def test_train_step_through_kernel_equals_pytorch_path(scheme, h_bound, monkeypatch):
    """The fused train_step (under "branch", dh formed in the kernel) against the PyTorch path, same
    batches, with the activation unbounded and bounded."""
    fast, ref = (ensemble(160, nudge_from=scheme, h_bound=h_bound) for _ in range(2))
    calls = []
    name = "branch" if scheme == "branch" else "relax"
    kernel = getattr(fused, name)
    monkeypatch.setattr(fused, name, lambda *a, **k: calls.append(k.get("dh_scale")) or kernel(*a, **k))
    for step in range(3):
        x, y = inputs(fast, 37, seed=step)
        out_fast = fast.train_step(x, y)
        with monkeypatch.context() as m:
            m.setenv("HTS_EP_KERNEL", "torch")
            out_ref = ref.train_step(x, y)
        for u, v in zip(out_fast, out_ref):     # o0 and both residuals
            assert (u - v).abs().max() < 1e-5
    if scheme == "branch":      # one kernel call per batch, dh formed there
        assert len(calls) == 3 and all(c is not None for c in calls)
    else:                       # the free and the nudged phase, each through the kernel
        assert len(calls) == 6
    for name in ("W1", "b1", "W2", "b2"):
        assert (getattr(fast, name) - getattr(ref, name)).abs().max() < 1e-6


@pytest.mark.parametrize("scheme", ["branch", "end"])
@pytest.mark.parametrize("kernel", ["auto", "torch"])
def test_phases_with_dh_scale_give_the_update_factor(scheme, kernel, monkeypatch):
    """phases(..., dh_scale) replaces h0 by dh_scale (hb - h0) on every path and scheme."""
    if kernel == "auto" and not fused.available():
        pytest.skip("fused kernel not built here")
    monkeypatch.setenv("HTS_EP_KERNEL", kernel)
    ens = ensemble(48)
    x, y = inputs(ens, 7)
    d = ens.drive(x)
    scale = ens.eta1 / (ens.beta * 7)
    (h0, o0, r0), nudged = ens.phases(d, y, scheme)
    (dh, o0s, r0s), nudged_s = ens.phases(d, y, scheme, dh_scale=scale)
    assert torch.equal(dh, (nudged[0] - h0).mul_(scale)) and dh.abs().max() > 0
    assert torch.equal(o0s, o0) and torch.equal(r0s, r0)
    assert all(torch.equal(u, v) for u, v in zip(nudged_s, nudged))
    # one value per model in any of its shapes, or one number for all, means the same
    assert torch.equal(ens.phases(d, y, scheme, dh_scale=scale.view(-1))[0][0], dh)
    one = ens.phases(d, y, scheme, dh_scale=0.5)[0][0]
    assert torch.equal(one, (nudged[0] - h0).mul_(0.5))


def test_build_is_keyed_by_the_source_text_and_the_cpu(monkeypatch):
    """fused.cpp, read at build time, names the build (the extension's name and hts_ep.speed's cache
    key), and so does the CPU: another text or another CPU is another build."""
    assert fused.source() == fused.SOURCE_PATH.read_text() and "PYBIND11_MODULE" in fused.source()
    monkeypatch.setenv("HTS_EP_KERNEL", "auto")
    tag = fused.source_tag()
    with monkeypatch.context() as m:
        m.setattr(fused, "source", lambda: fused.SOURCE_PATH.read_text() + "// another kernel\n")
        assert fused.source_tag() != tag
    with monkeypatch.context() as m:
        m.setattr(machine, "cpu_name", lambda: "another CPU [00000000]")
        assert fused.source_tag() != tag
    assert fused.source_tag() == tag
