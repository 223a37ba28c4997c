"""The float64 reference (hts_ep/dynamics.py) as the tests of every path use it: test_fused.py
(the fused kernel and the PyTorch path), test_gpu.py (the Triton kernel)."""
import torch
import torch.nn.functional as F

from hts_ep import Config, Ensemble, dynamics

# Three models with gamma on both sides of 1, beta small and large, hidden bounds that bind on
# both sides (slope 0.5: negative drives reach past -bound too) beside an unbounded model: a
# gamma, beta or bound misplaced or dropped in any path moves its states far past the tolerance
# (check_against_reference asserts that it would, on the reference itself).
GUARD = [dict(distribution="gamma", eps_out=0.3, gamma=0.5, beta=0.3),
         dict(distribution="lognormal", eps_out=0.15, gamma=1.7, beta=0.05),
         dict(distribution="scalar", eps_out=0.35, gamma=1.7, beta=0.7)]


def close(u, v, tol=1e-5):
    """|u - v| < tol elementwise, NaN and infinities in the same places; u in any dtype, v float64."""
    u = u.double()
    return bool((((u - v).abs() < tol) | (u == v) | (u.isnan() & v.isnan())).all())


def reference(ens, d, h, o, steps, y=None):
    """dynamics.relax in float64 on a copy of ens's parameters (and of d, h, o, y)."""
    f64 = lambda t: None if t is None else t.double()          # noqa: E731
    return dynamics.relax(dynamics.Params.of(ens, device=d.device), f64(d), f64(h), f64(o), steps, f64(y))


def guard_ensemble(scheme, h_bound, n_hidden=160, t_free=40, t_nudge=12, batch=29, device="cpu"):
    """The GUARD models (model 0 bounded by h_bound, model 2 by 0.2) and a batch x [3, B, 20], y
    one-hot, inputs scaled by 4 so that the bounds bind."""
    configs = [Config(n_in=20, n_hidden=n_hidden, t_free=t_free, t_nudge=t_nudge, slope=0.5, seed=s,
                      nudge_from=scheme, h_bound=b, **kw)
               for s, (kw, b) in enumerate(zip(GUARD, [h_bound, None, 0.2]))]
    ens = Ensemble(configs, device=device)
    g = torch.Generator().manual_seed(0)
    x = 4 * torch.rand(3, batch, 20, generator=g)
    y = F.one_hot(torch.randint(0, 10, (3, batch), generator=g), 10).float()
    return ens, x.to(device), y.to(device)


def check_against_reference(ens, x, y):
    """Ensemble.phases, .increments and .train_step on (x, y), on whichever path is in force,
    against dynamics.learn in float64 under the ensemble's scheme: states within 1e-5, each
    model's increments and weight change within 1e-4 of its largest increment."""
    scheme = ens.nudge_from
    P = dynamics.Params.of(ens, device=x.device)
    x64, y64 = x.double(), y.double()
    free, nudged, increments = dynamics.learn(P, x64, y64, scheme)
    got = ens.phases(ens.drive(x), y)
    for u, v in zip((*got[0], *got[1]), (*free, *nudged)):
        assert close(u, v), (u.double() - v).abs().max()

    def within(u, v):      # per model: the largest error against the largest increment
        err, top = (u.double() - v).flatten(1).abs().amax(1), v.flatten(1).abs().amax(1)
        return bool((err <= 1e-4 * top).all() and (top > 1e-3).all())
    for u, v in zip(ens.increments(x, y), increments):
        assert within(u, v)
    before = [p.clone() for p in (ens.W1, ens.b1, ens.W2, ens.b2)]
    ens.train_step(x, y)
    for p, q, v in zip((ens.W1, ens.b1, ens.W2, ens.b2), before, increments):
        assert within(p - q, v)
    # the check has teeth: gamma, beta and the bound each move the reference by far more than 1e-5
    h0 = free[0]
    assert (dynamics.learn(P._replace(gamma=torch.ones_like(P.gamma)), x64, y64, scheme)[0][0] - h0).abs().max() > 1e-3
    assert (dynamics.learn(P._replace(beta=2 * P.beta), x64, y64, scheme)[1][1] - nudged[1]).abs().max() > 1e-3
    assert (dynamics.learn(P._replace(h_bound=None), x64, y64, scheme)[0][0] - h0).abs().max() > 1e-3
    assert h0[2].abs().max() <= 0.2 + 1e-6 and h0[1].max() > 0.5 and h0[1].min() < -0.5     # both sides bind
