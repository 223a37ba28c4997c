import math

import pytest
import torch
import torch.nn.functional as F

from hts_ep import Config, Ensemble, dynamics, fused
from hts_ep.data import subset
from hts_ep.train import evaluate, train_epoch

from conftest import small


def direct_phase(m, x, y, h, o, steps, ens):
    """model.md's update, one sample at a time, in float64, written out plainly: the check of the
    reference (dynamics.py) that does not go through it."""
    W1, b1, W2, b2 = (p[m].double() for p in (ens.W1, ens.b1, ens.W2, ens.b2))
    eps_h, eps_o = ens.eps_hidden[m, 0].double(), ens.eps_out[m].item()
    gamma, beta, slope, bound = ens.gamma[m].item(), ens.beta[m].item(), ens.slope, ens.bounds()[m].item()
    hs, os_ = [], []
    for b in range(x.shape[0]):
        hb, ob = h[b].clone(), o[b].clone()
        for _ in range(steps):
            z_h = W1 @ x[b] + b1 + gamma * W2.T @ ob
            phi = torch.where(z_h > 0, z_h, slope * z_h).clamp(-bound, bound)
            sig = 1 / (1 + torch.exp(-(W2 @ hb + b2)))
            h_next = hb + eps_h * (-hb + phi)
            o_next = ob + eps_o * (-ob + sig)
            if y is not None:
                o_next = o_next + eps_o * beta * (y[b] - ob)
            hb, ob = h_next, o_next
        hs.append(hb)
        os_.append(ob)
    return torch.stack(hs), torch.stack(os_)


def toy(n_out=10, distribution="gamma", gammas=(1.0, 1.0), **kw):
    configs = [Config(n_in=12, n_hidden=32, n_out=n_out, t_free=15, t_nudge=5, distribution=d,
                      eps_out=e, seed=s, gamma=g, **kw)
               for (d, e, s), g in zip([(distribution, 0.3, 0), ("normal", 0.2, 1)], gammas)]
    ens = Ensemble(configs, device="cpu")
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 6, 12, generator=g)
    y = F.one_hot(torch.randint(0, n_out, (2, 6), generator=g), n_out).float()
    return ens, x, y


def test_one_step_by_hand():
    """The reference's Euler step on numbers worked out by hand: two hidden neurons, one output,
    gamma 2, a bound that binds, the nudge on (eq-step, eq-nudge)."""
    col = lambda v: torch.tensor(v, dtype=torch.float64).view(1, 1, 1)      # noqa: E731
    net = dynamics.Params(W1=None, b1=None, W2=torch.tensor([[[0.5, -1.0]]], dtype=torch.float64),
                          b2=torch.zeros(1, 1, dtype=torch.float64),
                          eps_hidden=torch.tensor([[[0.5, 0.25]]], dtype=torch.float64), eps_out=col(0.5),
                          gamma=col(2.0), beta=col(0.5), eta1=None, eta2=None, h_bound=col(0.6), slope=0.1,
                          t_free=1, t_nudge=1)
    drive = torch.tensor([[[0.2, -0.4]]], dtype=torch.float64)
    h, o = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64), torch.tensor([[[0.5]]], dtype=torch.float64)
    # z_h = drive + gamma W2^T o = (0.2 + 0.5, -0.4 - 1.0) = (0.7, -1.4); phi = (0.7 -> 0.6 bound, -0.14)
    # h' = h + eps_h (phi - h) = (1 + 0.5 (-0.4), 2 + 0.25 (-2.14)) = (0.8, 1.465)
    # z_o = W2 h + b2 = 0.5 - 2 = -1.5; o' = 0.5 + 0.5 (sigma(-1.5) - 0.5 + 0.5 (1 - 0.5))
    h1, o1, residual = dynamics.relax(net, drive, h, o, 1, y=torch.ones(1, 1, 1, dtype=torch.float64))
    assert torch.allclose(h1, torch.tensor([[[0.8, 1.465]]], dtype=torch.float64), rtol=0, atol=1e-15)
    assert o1.item() == pytest.approx(0.5 + 0.5 * (1 / (1 + math.exp(1.5)) - 0.25), abs=1e-15)
    assert residual.item() == pytest.approx(0.535, abs=1e-15)
    h2, o2, _ = dynamics.relax(net, drive, h, o, 1)                         # free: no nudge term
    assert torch.equal(h2, h1) and o2.item() == pytest.approx(0.5 + 0.5 * (1 / (1 + math.exp(1.5)) - 0.5), abs=1e-15)


def test_rule_by_hand():
    """eq-rule on a batch of two, one model, worked out by hand: eta / (beta B) = 1 / (0.5 * 2) = 1."""
    t = lambda v: torch.tensor(v, dtype=torch.float64).unsqueeze(0)          # noqa: E731
    x = t([[1.0, 2.0], [3.0, 0.0]])                                        # [1, B=2, n_in=2]
    h0, hb = t([[0.0], [1.0]]), t([[0.5], [0.0]])                           # [1, 2, H=1]: hb - h0 = (0.5, -1)
    o0, ob = t([[0.2], [0.2]]), t([[0.4], [0.0]])                           # [1, 2, O=1]: ob - o0 = (0.2, -0.2)
    one = torch.tensor(0.5, dtype=torch.float64)
    dW1, db1, dW2, db2 = dynamics.rule(x, h0, o0, hb, ob, eta1=2 * one, eta2=one, beta=one)
    assert dW1.tolist() == [[[0.5 * 1 - 1 * 3, 0.5 * 2 - 1 * 0]]]            # (hb - h0)^T x
    assert db1.tolist() == [[-0.5]]
    assert torch.allclose(dW2, t([[0.5 * (0.2 * 0.5 - 0.2 * 0.0)]]))        # eta2/(beta B) = 0.5; (ob - o0)^T hb
    assert torch.allclose(db2, t([0.0]))


@pytest.mark.parametrize("gammas,h_bound", [((1.0, 1.0), None), ((0.5, 1.7), None), ((1.7, 0.5), 0.3)])
def test_reference_matches_direct_loop(gammas, h_bound):
    """dynamics.relax in float64 against the one-sample loop, free and nudged, gamma on both sides of 1,
    with a bound that binds."""
    ens, x, y = toy(gammas=gammas, h_bound=h_bound)
    x = 3 * x                                                                # states past the bound
    P = dynamics.Params.of(ens)
    d = dynamics.drive(P, x.double())
    h0, o0, _ = dynamics.relax(P, d, None, torch.zeros(2, 6, 10, dtype=torch.float64), 15)
    hb, ob, _ = dynamics.relax(P, d, h0, o0, 5, y=y.double())
    for m in range(2):
        H0, O0 = direct_phase(m, x[m].double(), None, torch.zeros(6, 32, dtype=torch.float64),
                              torch.zeros(6, 10, dtype=torch.float64), 15, ens)
        HB, OB = direct_phase(m, x[m].double(), y[m].double(), H0, O0, 5, ens)
        for ours, ref in ((h0, H0), (o0, O0), (hb, HB), (ob, OB)):
            assert (ours[m] - ref).abs().max() < 1e-12, (ours[m] - ref).abs().max()
    if h_bound:                                       # the bound binds: without it, states pass it
        free = dynamics.relax(P._replace(h_bound=None), d, None, torch.zeros_like(o0), 15)[0]
        assert h0.abs().max() <= h_bound + 1e-6 < free.abs().max()


@pytest.mark.parametrize("n_out", [10, 4])  # 10 takes the fused kernel, 4 the PyTorch path
def test_relaxation_matches_reference(n_out):
    ens, x, y = toy(n_out, gammas=(0.5, 1.7))
    assert fused.supports(ens.drive(x), y, ens.slope) == (n_out == 10 and fused.available())
    d = ens.drive(x)
    h, o = ens.zero_state(x.shape[1])
    h0, o0, r0 = ens.relax(d, h, o, 15)
    hb, ob, rb = ens.relax(d, h0, o0, 5, y=y)
    P = dynamics.Params.of(ens)
    d64 = dynamics.drive(P, x.double())
    ref_free = dynamics.relax(P, d64, None, o.double(), 15)
    ref_nudged = dynamics.relax(P, d64, *ref_free[:2], 5, y=y.double())
    for ours, ref in zip((h0, o0, r0, hb, ob, rb), (*ref_free, *ref_nudged)):
        assert (ours.double() - ref).abs().max() < 1e-5, (ours.double() - ref).abs().max()


@pytest.mark.parametrize("scheme", ["branch", "end"])
@pytest.mark.parametrize("n_out", [10, 4])
def test_train_step_applies_the_reference_rule(scheme, n_out):
    """train_step's weight change is the float64 reference's increments (dynamics.learn: both schedules
    and eq-rule), on either path."""
    ens, x, y = toy(n_out, nudge_from=scheme, gammas=(1.7, 0.5))
    before = [p.clone() for p in (ens.W1, ens.b1, ens.W2, ens.b2)]
    *_, increments = dynamics.learn(dynamics.Params.of(ens), x.double(), y.double(), scheme)
    ens.train_step(x, y)
    for p, q, inc in zip((ens.W1, ens.b1, ens.W2, ens.b2), before, increments):
        assert (p.double() - q.double() - inc).abs().max() < 1e-5 * max(1, inc.abs().max())
        assert inc.abs().max() > 1e-3                 # the update is far above the tolerance


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
    ens, x, y = toy(nudge_from="branch")
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
def test_fused_kernel_equals_reference(batch):
    """The paper's network: the fused kernel's phases and the update from its states, against the
    float64 reference (the PyTorch path's own check against it: test_fused.py)."""
    configs = [Config(distribution=d, seed=i) for i, d in enumerate(["lognormal", "scalar", "gamma"])]
    ens = Ensemble(configs, device="cpu")
    x = torch.rand(3, batch, 784, generator=torch.Generator().manual_seed(0))
    y = F.one_hot(torch.arange(batch) % 10, 10).float().expand(3, -1, -1)
    d = ens.drive(x)
    h, o = ens.zero_state(batch)
    assert fused.supports(d, o, ens.slope)
    a = ens.relax(d, h, o, 125)
    an = ens.relax(d, a[0], a[1], 12, y=y)
    P = dynamics.Params.of(ens)
    d64 = dynamics.drive(P, x.double())
    b = dynamics.relax(P, d64, None, o.double(), 125)
    bn = dynamics.relax(P, d64, *b[:2], 12, y=y.double())
    for u, v in zip((*a, *an), (*b, *bn)):
        assert (u.double() - v).abs().max() < 1e-4
    # the weight update from the kernel's states, against the reference's increments
    scale = ens.eta1 / (ens.beta * batch)
    before = ens.W1.clone(), ens.W2.clone()
    ens.update(x, (an[0] - a[0]) * scale, a[1], an[0], an[1])
    dW1, _, dW2, _ = dynamics.rule(x.double(), b[0], b[1], bn[0], bn[1], P.eta1, P.eta2, P.beta)
    assert (ens.W1 - before[0] - dW1).abs().max() < 1e-5 and (ens.W2 - before[1] - dW2).abs().max() < 1e-5


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
        Config(t_free=10, t_nudge=20, nudge_from="branch")
    Config(t_free=10, t_nudge=20, nudge_from="end")
    with pytest.raises(ValueError, match="must share nudge_from"):
        Ensemble([Config(nudge_from="branch"), Config(nudge_from="end")], device="cpu")
