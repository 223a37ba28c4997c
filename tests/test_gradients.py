"""The gradient reference (hts_ep/gradients.py): BPTT against finite differences, the float64
rule against the package's, and a comparison that catches sign and transpose errors."""
import pytest
import torch
import torch.nn.functional as F

from hts_ep import Config, Ensemble
from hts_ep import gradients as G


def tiny(distribution="lognormal", n_out=3, n_hidden=7, **kw):
    """A small float64 network (and its float32 ensemble) with a batch of 4 samples."""
    kw = {"t_free": 20, "t_nudge": 6, **kw}
    c = Config(n_in=5, n_hidden=n_hidden, n_out=n_out, distribution=distribution, sigma_eps=0.1, seed=3, **kw)
    ens = Ensemble([c], device="cpu")
    g = torch.Generator().manual_seed(7)
    x = torch.rand(4, c.n_in, generator=g, dtype=torch.float64)
    y = F.one_hot(torch.randint(0, n_out, (4,), generator=g), n_out).double()
    return ens, G.Net.from_ensemble(ens, 0), x, y


# gamma away from 1 with a bound that binds (0.1: the free states reach about 0.6 without it)
GUARD = {"gamma": 1.7, "h_bound": 0.1}


@pytest.mark.parametrize("model", [{}, GUARD])
@pytest.mark.parametrize("kind", G.LOSSES)
def test_bptt_matches_finite_differences(kind, model):
    _, net, x, y = tiny(**model)
    _, grad = G.gradient(net, x, y, kind)
    h = 1e-6
    for name in G.PARAMS:
        ref = torch.zeros_like(grad[name])
        for i in range(ref.numel()):
            def loss_at(delta, name=name, i=i):
                p = {k: v.clone() for k, v in net.params().items()}
                p[name].view(-1)[i] += delta
                _, o0 = G.free_phase(net, p, x)
                return G.loss_of(o0, y, kind).item()
            ref.view(-1)[i] = (loss_at(h) - loss_at(-h)) / (2 * h)
        assert grad[name].shape == getattr(net, name).shape
        assert torch.allclose(grad[name], ref, rtol=1e-5, atol=1e-9), (name, (grad[name] - ref).abs().max())


@pytest.mark.parametrize("gamma,h_bound", [(1.0, None), (0.5, None), (1.7, 0.1)])
def test_free_phase_mirrors_the_package(gamma, h_bound):
    """gradients.py's free phase (the BPTT's: Net -> dynamics.Params, a model axis of 1) against the
    package's relaxation, gamma on both sides of 1 and a bound that binds."""
    ens, net, x, y = tiny(gamma=gamma, h_bound=h_bound)
    h0, o0 = G.free_phase(net, net.params(), x)
    with torch.no_grad():
        H0, O0, _ = ens.relax(ens.drive(x.float()[None]), *ens.zero_state(4), ens.t_free)
    assert torch.allclose(h0, H0[0].double(), atol=1e-5) and torch.allclose(o0, O0[0].double(), atol=1e-5)
    if h_bound:
        assert h0.max() <= h_bound + 1e-6 < G.free_phase(net.replace(h_bound=None), net.params(), x)[0].max()


# 7 hidden neurons take the PyTorch path, 16 the fused kernel (10 outputs, a multiple of 16)
@pytest.mark.parametrize("n_hidden", [7, 16])
@pytest.mark.parametrize("model", [{}, {"gamma": 0.5, "beta": 0.7}, {**GUARD, "beta": 0.05}])
@pytest.mark.parametrize("scheme", G.SCHEMES)
def test_rule_matches_ensemble_increments(scheme, model, n_hidden):
    """The float64 update is the one train_step applies (float32, the package's own relaxation),
    under both schedules, with gamma and beta away from their defaults and a binding bound."""
    ens, net, x, y = tiny(n_out=10, n_hidden=n_hidden, **model)
    ours = G.update(net, x, y, scheme=scheme)
    theirs = ens.increments(x.float()[None], y.float()[None], scheme)
    for name, t in zip(G.PARAMS, theirs):
        assert ours[name].shape == t[0].shape, name
        assert torch.allclose(ours[name], t[0].double(), rtol=1e-3, atol=1e-5), (name, scheme)
        assert ours[name].abs().max() > 1e-4                 # ten times the tolerance at least


def test_comparison_sign_and_scale():
    """An update equal to -eta * gradient gives cosine 1 and ratio 1; +eta * gradient gives -1."""
    _, net, x, y = tiny()
    _, grad = G.gradient(net, x, y)
    exact = {k: -net.eta(k) * g for k, g in grad.items()}
    for name, (cos, ratio) in G.agreement(exact, grad, net.eta).items():
        assert cos == pytest.approx(1, abs=1e-12) and ratio == pytest.approx(1, abs=1e-12), name
    wrong = {k: -u for k, u in exact.items()}
    for name, (cos, ratio) in G.agreement(wrong, grad, net.eta).items():
        assert cos == pytest.approx(-1, abs=1e-12) and ratio == pytest.approx(1, abs=1e-12), name
    half = {k: 0.5 * u for k, u in exact.items()}
    assert G.agreement(half, grad, net.eta)["layer2"][1] == pytest.approx(0.5)


def test_comparison_catches_a_transposed_layer():
    _, net, x, y = tiny()
    _, grad = G.gradient(net, x, y)
    exact = {k: -net.eta(k) * g for k, g in grad.items()}
    with pytest.raises(ValueError, match="W1"):       # non-square: a shape error, never flattened
        G.agreement({**exact, "W1": exact["W1"].T.contiguous()}, grad, net.eta)
    # square: shapes agree, so only the cosine can tell
    sq = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grad_sq = {**grad, "W1": sq}
    upd = {**exact, "W1": -net.eta1 * sq.T}
    cos, _ = G.agreement(upd, grad_sq, net.eta)["W1"]
    assert cos < 0.5


def test_rule_descends_at_small_beta():
    """A sign error anywhere in the pipeline (rule, gradient, comparison) shows here: at small beta
    the output layer's update points downhill on the squared error."""
    _, net, x, y = tiny(n_out=3)
    rows = G.compare(net, x, y, betas=[1e-3, net.beta], losses=("mse", "ce"))
    by = {(r["loss"], r["scheme"], r["beta"], r["param"]): r for r in rows}
    assert len(rows) == 2 * 2 * 2 * 6
    assert by[("mse", "branch", 1e-3, "W2")]["cosine"] > 0.5
    assert by[("mse", "branch", 1e-3, "layer2")]["cosine"] > 0.5
    assert by[("mse", "branch", 1e-3, "layer1")]["cosine"] > 0.5    # the hidden layer too
    for r in rows:
        assert -1 - 1e-9 <= r["cosine"] <= 1 + 1e-9 and r["ratio"] >= 0


@pytest.mark.parametrize("distribution", ["scalar", "gamma"])
def test_rule_is_the_gradient_at_equilibrium(distribution):
    """The case where the update is -gradient exactly, by physics rather than by hand: gamma = 1,
    both phases settled (long), beta -> 0. Then the fixed points are those of an energy and the
    nudged ones those of energy + beta * binary cross-entropy, so EP's theorem holds for the hidden
    layer (W1, b1) and the output bias; W2's rule lacks EP's o0 (hb - h0)^T term."""
    _, net, x, y = tiny(distribution, t_free=1200, t_nudge=600)
    _, grad = G.gradient(net, x, y, "bce")
    got = G.agreement(G.update(net, x, y, beta=1e-4, scheme="branch"), grad, net.eta)
    for name in ("W1", "b1", "b2", "layer1"):
        cos, ratio = got[name]
        assert cos > 1 - 1e-6 and ratio == pytest.approx(1, abs=1e-3), (name, cos, ratio)
    assert got["W2"][0] < 0.99                        # the rule's W2 term is not EP's


def test_compare_agrees_with_the_parts():
    _, net, x, y = tiny()
    rows = G.compare(net, x, y, betas=[0.1], schemes=["end"])
    _, grad = G.gradient(net, x, y)
    expected = G.agreement(G.update(net, x, y, beta=0.1, scheme="end"), grad, net.eta)
    for r in rows:
        assert r["cosine"] == pytest.approx(expected[r["param"]][0], abs=1e-10)
        assert r["ratio"] == pytest.approx(expected[r["param"]][1], rel=1e-10)
