import pytest
import torch
import torch.nn.functional as F

from hts_ep import Config, Ensemble, fused
from hts_ep.train import evaluate, train_epoch
from hts_ep.data import subset
from conftest import small


def direct_phase(m, x, y, h, o, steps, ens):
    """model.md's update, one sample at a time, in float64, written out plainly."""
    W1, b1, W2, b2 = (p[m].double() for p in (ens.W1, ens.b1, ens.W2, ens.b2))
    eps_h, eps_o = ens.eps_hidden[m, 0].double(), ens.eps_out[m].item()
    gamma, beta, slope = ens.gamma[m].item(), ens.beta[m].item(), ens.slope
    hs, os_ = [], []
    for b in range(x.shape[0]):
        hb, ob = h[b].clone(), o[b].clone()
        for _ in range(steps):
            z_h = W1 @ x[b] + b1 + gamma * W2.T @ ob
            phi = torch.where(z_h > 0, z_h, slope * z_h)
            sig = 1 / (1 + torch.exp(-(W2 @ hb + b2)))
            h_next = hb + eps_h * (-hb + phi)
            o_next = ob + eps_o * (-ob + sig)
            if y is not None:
                o_next = o_next + eps_o * beta * (y[b] - ob)
            hb, ob = h_next, o_next
        hs.append(hb)
        os_.append(ob)
    return torch.stack(hs), torch.stack(os_)


def toy(n_out=10, distribution="gamma", **kw):
    configs = [Config(n_in=12, n_hidden=32, n_out=n_out, t_free=15, t_nudge=5, distribution=d,
                      eps_out=e, seed=s, **kw)
               for d, e, s in [(distribution, 0.3, 0), ("normal", 0.2, 1)]]
    ens = Ensemble(configs, device="cpu")
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 6, 12, generator=g)
    y = F.one_hot(torch.randint(0, n_out, (2, 6), generator=g), n_out).float()
    return ens, x, y


@pytest.mark.parametrize("n_out", [10, 4])  # 10 takes the fused kernel, 4 the PyTorch path
def test_relaxation_matches_direct_loop(n_out):
    ens, x, y = toy(n_out)
    d = ens.drive(x)
    h, o = ens.zero_state(x.shape[1])
    h0, o0, _ = ens.relax(d, h, o, 15)
    hb, ob, _ = ens.relax(d, h0, o0, 5, y=y)
    for m in range(2):
        H0, O0 = direct_phase(m, x[m].double(), None, torch.zeros(6, 32, dtype=torch.float64),
                              torch.zeros(6, n_out, dtype=torch.float64), 15, ens)
        HB, OB = direct_phase(m, x[m].double(), y[m].double(), H0, O0, 5, ens)
        for ours, ref in ((h0, H0), (o0, O0), (hb, HB), (ob, OB)):
            assert torch.allclose(ours[m].double(), ref, atol=1e-5), (ours[m].double() - ref).abs().max()


@pytest.mark.parametrize("scheme", ["branch", "end"])
@pytest.mark.parametrize("n_out", [10, 4])
def test_learning_rule_matches_model_md(scheme, n_out):
    # toy(): t_free = 15, t_nudge = 5. model.md's phases, written out with relax.
    ens, x, y = toy(n_out, nudge_from=scheme)
    before = [p.clone() for p in (ens.W1, ens.b1, ens.W2, ens.b2)]
    d = ens.drive(x)
    if scheme == "branch":    # keep step 10; free on to 15; nudged 10 -> 15
        hk, ok, _ = ens.relax(d, *ens.zero_state(6), 10)
        h0, o0, _ = ens.relax(d, hk, ok, 5)
        hb, ob, _ = ens.relax(d, hk, ok, 5, y=y)
    else:                     # free to 15; nudged 15 -> 20
        h0, o0, _ = ens.relax(d, *ens.zero_state(6), 15)
        hb, ob, _ = ens.relax(d, h0, o0, 5, y=y)
    ens2, _, _ = toy(n_out, nudge_from=scheme)
    ens2.train_step(x, y)
    for m in range(2):
        k1 = ens.eta1[m].item() / (ens.beta[m].item() * 6)
        k2 = ens.eta2[m].item() / (ens.beta[m].item() * 6)
        expected = [before[0][m] + k1 * (hb[m] - h0[m]).T @ x[m], before[1][m] + k1 * (hb[m] - h0[m]).sum(0),
                    before[2][m] + k2 * (ob[m] - o0[m]).T @ hb[m], before[3][m] + k2 * (ob[m] - o0[m]).sum(0)]
        for p, e in zip((ens2.W1, ens2.b1, ens2.W2, ens2.b2), expected):
            assert torch.allclose(p[m], e, atol=1e-6)
        assert not torch.allclose(ens2.W1[m], before[0][m])


@pytest.mark.parametrize("n_out", [10, 4])  # the fused kernel and the PyTorch path
def test_without_target_force_branch_learns_nothing(n_out):
    # Slow hidden neurons (eps down to 0.01) are still moving at step t_free.
    # With the nudging force off (y=None) the nudged phase is a free phase:
    # branching compares two identical states, nudging from the end compares
    # the free end with t_nudge steps of further free drift.
    changes = {}
    for scheme in ("branch", "end"):
        ens, x, _ = toy(n_out, distribution="normal", eps_min=0.01, nudge_from=scheme)
        assert ens.eps_hidden.min() == pytest.approx(0.01)
        before = [p.clone() for p in (ens.W1, ens.b1, ens.W2, ens.b2)]
        ens.train_step(x, None)
        changes[scheme] = max((p - q).abs().max().item()
                              for p, q in zip((ens.W1, ens.b1, ens.W2, ens.b2), before))
    assert changes["branch"] == 0
    assert changes["end"] > 1e-3, changes


def test_both_schemes_relax_the_same_number_of_steps(monkeypatch):
    monkeypatch.setenv("HTS_EP_KERNEL", "torch")   # one relax call per phase part (fused: one branch call)
    ens, x, y = toy()
    calls = []
    relax = ens.relax
    ens.relax = lambda d, h, o, steps, y=None: calls.append((steps, y is not None)) or relax(d, h, o, steps, y)
    ens.train_step(x, y)
    assert calls == [(10, False), (5, False), (5, True)]
    ens.nudge_from = "end"
    calls.clear()
    ens.train_step(x, y)
    assert calls == [(15, False), (5, True)]


@pytest.mark.skipif(not fused.available(), reason="fused CPU kernel could not be built here")
@pytest.mark.parametrize("batch", [7, 64])  # odd sizes leave a partial tile
def test_fused_kernel_equals_pytorch_path(batch):
    configs = [Config(distribution=d, seed=i) for i, d in enumerate(["lognormal", "scalar", "gamma"])]
    ens = Ensemble(configs, device="cpu")
    x = torch.rand(3, batch, 784, generator=torch.Generator().manual_seed(0))
    y = F.one_hot(torch.arange(batch) % 10, 10).float().expand(3, -1, -1)
    d = ens.drive(x)
    h, o = ens.zero_state(batch)
    a = ens.relax(d, h, o, 125)
    b = ens.relax_torch(d, h, o, 125)
    for u, v in zip(a, b):
        assert (u - v).abs().max() < 1e-4
    an = ens.relax(d, a[0], a[1], 12, y=y)
    bn = ens.relax_torch(d, b[0], b[1], 12, y=y)
    for u, v in zip(an, bn):
        assert (u - v).abs().max() < 1e-4
    # the weight update from either path's states
    e1, e2 = Ensemble(configs, device="cpu"), Ensemble(configs, device="cpu")
    scale = e1.eta1 / (e1.beta * batch)
    e1.update(x, (an[0] - a[0]) * scale, a[1], an[0], an[1])
    e2.update(x, (bn[0] - b[0]) * scale, b[1], bn[0], bn[1])
    assert (e1.W1 - e2.W1).abs().max() < 1e-5 and (e1.W2 - e2.W2).abs().max() < 1e-5


@pytest.mark.data
def test_ensemble_equals_models_trained_alone(mnist):
    # One data set's Table 1 grid: 4 conditions x 5 output steps, one seed.
    train, test = subset(mnist[0], 500), subset(mnist[1], 500)   # 500 = 3 x 128 + a partial batch
    configs = [small(distribution=d, eps_out=e, seed=3)
               for d in ("scalar", "normal", "lognormal", "gamma")
               for e in (0.15, 0.20, 0.25, 0.30, 0.35)]
    ens = Ensemble(configs, device="cpu")
    acc_train, _, _ = train_epoch(ens, train)
    acc_test = evaluate(ens, test)
    for m, c in enumerate(configs):
        alone = Ensemble([c], device="cpu")
        a_train, _, _ = train_epoch(alone, train)
        a_test = evaluate(alone, test)
        assert torch.allclose(alone.W1[0], ens.W1[m], atol=1e-5)
        assert torch.allclose(alone.W2[0], ens.W2[m], atol=1e-5)
        assert torch.equal(alone.eps_hidden[0], ens.eps_hidden[m])
        assert abs(a_train[0] - acc_train[m]) <= 2 / 500 and abs(a_test[0] - acc_test[m]) <= 2 / 500


def test_models_differ_only_where_configs_differ():
    a, b, c = Config(seed=1), Config(seed=1, distribution="gamma"), Config(seed=2)
    ens = Ensemble([a, b, c], device="cpu")
    assert torch.equal(ens.W1[0], ens.W1[1])          # same seed: same initial weights
    assert not torch.equal(ens.W1[0], ens.W1[2])
    assert torch.all(ens.eps_hidden[0] == 0.2) and ens.eps_hidden[1].std() > 0.05


@pytest.mark.data
def test_learns_mnist_subset(mnist):
    # The full 784-1024-10 network, one short epoch on 2,000 real images.
    from hts_ep.train import train_epoch
    train, test = subset(mnist[0], 2000), subset(mnist[1], 2000)
    ens = Ensemble([Config()], device="cpu")
    before = evaluate(ens, test)[0]
    train_epoch(ens, train)
    after = evaluate(ens, test)[0]
    assert after > 0.5 and after > before + 0.3, (before, after)


def test_bad_ensemble_is_rejected():
    with pytest.raises(ValueError, match="must share n_hidden"):
        Ensemble([Config(n_hidden=32), Config(n_hidden=64)], device="cpu")
    with pytest.raises(ValueError, match="eps_out=-0.1 must be > 0"):
        Config(eps_out=-0.1)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        Config(dataset="cifar")
    with pytest.raises(ValueError, match="unknown nudge_from 'middle'; allowed: branch, end"):
        Config(nudge_from="middle")
    with pytest.raises(ValueError, match="t_nudge=20 must be <= t_free=10"):
        Config(t_free=10, t_nudge=20)
    Config(t_free=10, t_nudge=20, nudge_from="end")
    with pytest.raises(ValueError, match="must share nudge_from"):
        Ensemble([Config(), Config(nudge_from="end")], device="cpu")
