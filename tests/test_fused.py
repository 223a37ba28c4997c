"""The fused CPU kernel against the PyTorch path, on the shapes its loops special-case."""
import math

import pytest
import torch
import torch.nn.functional as F

from hts_ep import Config, Ensemble, fused

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
    assert fused.supports(d, o)
    return ens.relax(d, h, o, steps, y=y), ens.relax_torch(d, h, o, steps, y=y)


@needs_kernel
@pytest.mark.parametrize("n_hidden", [16, 48, 160, 1024])  # tail blocks only, 8 + 2, 8 x 8 blocks of 16
def test_kernel_equals_pytorch_path(n_hidden):
    ens = ensemble(n_hidden)
    x, y = inputs(ens, 5)
    d = ens.drive(x)
    fast, ref = both_paths(ens, d, *ens.zero_state(5), 40)
    for u, v in zip(fast, ref):
        assert (u - v).abs().max() < 1e-5
    fast_n, ref_n = both_paths(ens, d, fast[0], fast[1], 7, y=y)
    for u, v in zip(fast_n, ref_n):
        assert (u - v).abs().max() < 1e-5
    assert (fast[2] > 0).all()          # a residual per model, of the last step


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


@needs_kernel
def test_non_finite_state_shows_in_residual():
    ens = ensemble(32)
    ens.W2[1, 0, 3] = math.inf          # model 1 blows up, the others do not
    x, _ = inputs(ens, 4)
    d = ens.drive(x)
    fast, ref = both_paths(ens, d, *ens.zero_state(4), 6)
    assert torch.isnan(fast[2][1]) and torch.isnan(ref[2][1])
    assert torch.isfinite(fast[2][[0, 2]]).all()
    assert torch.allclose(fast[0][[0, 2]], ref[0][[0, 2]], atol=1e-5)


def test_per_model_bytes_covers_weights_and_batch():
    c = Config()
    weights = 4 * (1024 * 784 + 10 * 1024 + 2 * 1024 + 10)
    b256, b1000 = fused.per_model_bytes(c, 256), fused.per_model_bytes(c, 1000)
    assert weights + 5 * 256 * 1024 * 4 < b256 < b1000 < 40 * 2**20
