"""What the learning rule computes, against the gradient it would follow if it were exact.

The reference is backpropagation through time (BPTT): the loss of the free
phase's end state o0 = o[t_free], differentiated by autograd through every
Euler step of the free phase, in float64. The learning rule's update
(Ensemble.increments) is recomputed here in float64 on the same batch from
the same weights, under either nudging scheme and any beta, and the two are
compared per parameter and per layer by

    cosine(update, -gradient)                 1: the rule descends the loss exactly
    norm ratio ||update|| / (eta ||gradient||)   1: as large as an SGD step with the same eta

The dynamics, the nudge schedules and the rule are dynamics.py's (eq-step,
eq-nudge, eq-rule of book/methods.md), run here on one model (a model axis
of 1) in float64. They are a leaky-integrator vector field, not the gradient of an energy
(their Jacobian is not symmetric), so EP's theorem (update -> -gradient as
beta -> 0) does not apply to the trajectory. With gamma = 1 the fixed points
are those of an energy, and the nudge's those of energy + beta * binary
cross-entropy to first order in beta: with both phases settled and beta
small, the hidden layer's update is -eta1 times the gradient of the binary
cross-entropy (tests/test_gradients.py checks it); the output layer's misses
EP's o0 (hb - h0)^T term. With 12 nudged steps, nothing is settled: how
close the rule comes is a measurement.
"""
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import dynamics

PARAMS = ("W1", "b1", "W2", "b2")
LAYERS = {"layer1": ("W1", "b1"), "layer2": ("W2", "b2")}     # hidden layer, output layer
LOSSES = ("mse", "bce", "ce")
SCHEMES = dynamics.SCHEMES


@dataclass(frozen=True)
class Net:
    """One model of an ensemble, in float64: weights, time steps and the rule's constants."""
    W1: torch.Tensor        # [H, n_in]
    b1: torch.Tensor        # [H]
    W2: torch.Tensor        # [O, H]
    b2: torch.Tensor        # [O]
    eps_h: torch.Tensor     # [H]  one time step per hidden neuron
    eps_o: float
    gamma: float
    beta: float
    eta1: float
    eta2: float
    slope: float
    t_free: int
    t_nudge: int
    h_bound: float | None = None    # phi clamped to [-h_bound, h_bound]; None: unbounded

    @classmethod
    def from_ensemble(cls, ens, m):
        """Model m of `ens`, copied to float64 on the CPU."""
        f64 = lambda t: t[m].detach().to("cpu", torch.float64).clone()     # noqa: E731
        return cls(W1=f64(ens.W1), b1=f64(ens.b1), W2=f64(ens.W2), b2=f64(ens.b2),
                   eps_h=f64(ens.eps_hidden)[0], eps_o=ens.eps_out[m].item(), gamma=ens.gamma[m].item(),
                   beta=ens.beta[m].item(), eta1=ens.eta1[m].item(), eta2=ens.eta2[m].item(),
                   slope=ens.slope, t_free=ens.t_free, t_nudge=ens.t_nudge,
                   h_bound=None if ens.h_bound is None else ens.h_bound[m].item())

    def params(self):
        return {k: getattr(self, k) for k in PARAMS}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def eta(self, name):
        """The learning rate of a parameter or a layer."""
        return self.eta1 if name in ("W1", "b1", "layer1") else self.eta2

    def dynamics(self, p=None, beta=None):
        """This model as dynamics.Params, with a model axis of 1: weights from p (default: its own,
        may require grad), beta from `beta` (default: its own)."""
        p = self.params() if p is None else p
        def column(v):
            return torch.full((1, 1, 1), float(v), dtype=torch.float64)
        return dynamics.Params(
            *(p[k].unsqueeze(0) for k in PARAMS), eps_hidden=self.eps_h.view(1, 1, -1),
            eps_out=column(self.eps_o), gamma=column(self.gamma), beta=column(self.beta if beta is None else beta),
            eta1=column(self.eta1), eta2=column(self.eta2),
            h_bound=None if self.h_bound is None else column(self.h_bound),
            slope=self.slope, t_free=self.t_free, t_nudge=self.t_nudge)


def start(P, x):
    """The drive W1 x + b1 [1,B,H] of inputs x [B,n_in] under P, and the zero output [1,B,O]."""
    drive = dynamics.drive(P, x.unsqueeze(0))
    return drive, drive.new_zeros(1, x.shape[0], P.W2.shape[1])


def loss_of(o, y, kind):
    """Loss of the free end state o [B,O] against one-hot y [B,O], averaged over the batch.

    mse: 1/2 ||o - y||^2, whose -d/do = y - o is the nudge's direction;
    bce: binary cross-entropy of each output o_j in (0, 1) against y_j, the loss whose gradient
         the rule estimates at equilibrium for gamma = 1 and small beta (methods page);
    ce:  cross-entropy of softmax(o) against the label (o read as logits).
    """
    if kind == "mse":
        return 0.5 * ((o - y) ** 2).sum(1).mean()
    if kind == "bce":
        return F.binary_cross_entropy(o, y, reduction="sum") / o.shape[0]
    if kind == "ce":
        return F.cross_entropy(o, y.argmax(1))
    raise ValueError(f"unknown loss {kind!r}; allowed: {', '.join(LOSSES)}")


def free_phase(net, p, x):
    """The free phase from zero with parameters p (may require grad): (h0 [B,H], o0 [B,O]) at t_free."""
    P = net.dynamics(p)
    drive, o = start(P, x)
    h0, o0, _ = dynamics.relax(P, drive, None, o, net.t_free)
    return h0[0], o0[0]


def gradients(net, x, y, losses):
    """BPTT through one free phase, for each loss: {kind: (loss, {"W1": [H,n_in], ..., "b2": [O]})}."""
    p = {k: v.clone().requires_grad_(True) for k, v in net.params().items()}
    _, o0 = free_phase(net, p, x)
    out = {}
    for kind in losses:
        loss = loss_of(o0, y, kind)
        grads = torch.autograd.grad(loss, [p[k] for k in PARAMS], retain_graph=True)
        out[kind] = (loss.item(), {k: g.contiguous() for k, g in zip(PARAMS, grads)})
    return out


def gradient(net, x, y, kind="mse"):
    """BPTT through the free phase: (loss, {"W1": [H,n_in], "b1": [H], "W2": [O,H], "b2": [O]})."""
    return gradients(net, x, y, [kind])[kind]


def rule(P, x, h0, o0, hb, ob):
    """dynamics.rule on one model's states ([1,B,H], [1,B,O]): {"W1": [H,n_in], "b1": [H], "W2": [O,H], "b2": [O]}."""
    return unbatched(dynamics.rule(x.unsqueeze(0), h0, o0, hb, ob, P.eta1, P.eta2, P.beta))


def unbatched(increments):
    """(dW1, db1, dW2, db2) of one model, model axis dropped, as a dict by parameter name."""
    return {k: t[0] for k, t in zip(PARAMS, increments)}


@torch.no_grad()
def update(net, x, y, scheme, beta=None):
    """The rule's update on batch x [B,n_in], y [B,O] under `scheme` ("branch" or "end": no default, the
    two differ), at beta (default: net.beta)."""
    return unbatched(dynamics.learn(net.dynamics(beta=beta), x.unsqueeze(0), y.unsqueeze(0), scheme)[2])


def agreement(upd, grad, eta):
    """Per parameter and per layer: cosine(update, -gradient) and ||update|| / (eta ||gradient||).

    upd, grad: dicts of tensors of equal shapes (a transposed weight is an error, not a
    flattened match); eta: name -> learning rate (a callable). Returns {name: (cosine, ratio)}.
    """
    for k in PARAMS:
        if upd[k].shape != grad[k].shape:
            raise ValueError(f"{k}: update {tuple(upd[k].shape)} and gradient {tuple(grad[k].shape)} differ")
    # per parameter: <u, -g>, ||u||^2, ||g||^2 with u = update / eta (on the gradient's scale);
    # a layer's weight and bias share eta, so its sums are the sums of its parameters'
    parts = {}
    for k in PARAMS:
        u, g = upd[k].flatten() / eta(k), grad[k].flatten()
        parts[k] = torch.stack([torch.dot(u, -g), torch.dot(u, u), torch.dot(g, g)])
    out = {}
    for name, keys in {**{k: (k,) for k in PARAMS}, **LAYERS}.items():
        dot, uu, gg = sum(parts[k] for k in keys).tolist()
        out[name] = (dot / (uu * gg) ** 0.5, (uu / gg) ** 0.5)
    return out


def compare(net, x, y, betas=None, schemes=SCHEMES, losses=("mse",)):
    """Every comparison on one batch x [B,n_in], y one-hot [B,O]: one row per
    (loss, scheme, beta, parameter or layer) with its cosine and norm ratio.

    The free phase runs once with autograd (the gradients) and once per scheme without
    (kept where that scheme's nudge starts); each beta's nudged phase runs from there.
    """
    betas = [net.beta] if betas is None else list(betas)
    grads = gradients(net, x, y, losses)
    rows = []
    P = net.dynamics()
    drive, o = start(P, x)
    with torch.no_grad():
        for scheme in schemes:
            (h0, o0, _), kept = dynamics.free_phase(dynamics.relaxer(P, drive), None, o, net.t_free, net.t_nudge,
                                                    scheme)
            for beta in betas:                         # each beta's nudged phase from the kept state
                Pb = net.dynamics(beta=beta)
                hb, ob, _ = dynamics.relax(Pb, drive, *kept, net.t_nudge, y.unsqueeze(0))
                upd = rule(Pb, x, h0, o0, hb, ob)
                for kind, (loss, grad) in grads.items():
                    for name, (cos, ratio) in agreement(upd, grad, net.eta).items():
                        rows.append({"loss": kind, "scheme": scheme, "beta": beta, "param": name,
                                     "cosine": cos, "ratio": ratio, "loss_value": loss})
    return rows
