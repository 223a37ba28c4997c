"""What the learning rule computes, against the gradient it would follow if it were exact.

The reference is backpropagation through time (BPTT): the loss of the free
phase's end state o0 = o[t_free], differentiated by autograd through every
Euler step of the free phase, in float64. The learning rule's update
(Ensemble.increments) is recomputed here in float64 on the same batch from
the same weights, under either nudging scheme and any beta, and the two are
compared per parameter and per layer by

    cosine(update, -gradient)                 1: the rule descends the loss exactly
    norm ratio ||update|| / (eta ||gradient||)   1: as large as an SGD step with the same eta

The dynamics are those of network.py (one model, no model axis):

    h[t+1] = h[t] + eps_h * (-h[t] + phi(W1 x + b1 + gamma * W2^T o[t]))
    o[t+1] = o[t] + eps_o * (-o[t] + sigma(W2 h[t] + b2))   [+ eps_o * beta * (y - o[t]) nudged]

They are a leaky-integrator vector field, not the gradient of an energy
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

PARAMS = ("W1", "b1", "W2", "b2")
LAYERS = {"layer1": ("W1", "b1"), "layer2": ("W2", "b2")}     # hidden layer, output layer
LOSSES = ("mse", "bce", "ce")
SCHEMES = ("branch", "end")


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

    @classmethod
    def from_ensemble(cls, ens, m):
        """Model m of `ens`, copied to float64 on the CPU."""
        f64 = lambda t: t[m].detach().to("cpu", torch.float64).clone()     # noqa: E731
        return cls(W1=f64(ens.W1), b1=f64(ens.b1), W2=f64(ens.W2), b2=f64(ens.b2),
                   eps_h=f64(ens.eps_hidden)[0], eps_o=ens.eps_out[m].item(), gamma=ens.gamma[m].item(),
                   beta=ens.beta[m].item(), eta1=ens.eta1[m].item(), eta2=ens.eta2[m].item(),
                   slope=ens.slope, t_free=ens.t_free, t_nudge=ens.t_nudge)

    def params(self):
        return {k: getattr(self, k) for k in PARAMS}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def eta(self, name):
        """The learning rate of a parameter or a layer."""
        return self.eta1 if name in ("W1", "b1", "layer1") else self.eta2


def relax(net, p, drive, h, o, steps, y=None, beta=None):
    """`steps` Euler steps from (h [B,H], o [B,O]); differentiable in p = {"W2", "b2"} and drive.

    As Ensemble.relax_torch, written out of place so that autograd can run back
    through it. drive = W1 x + b1 [B,H]; y one-hot [B,O] nudges with strength beta.
    """
    for _ in range(steps):
        z_h = drive + net.gamma * o @ p["W2"]          # [B,H]  W1 x + b1 + gamma W2^T o[t]
        z_o = h @ p["W2"].T + p["b2"]                  # [B,O]  W2 h[t] + b2
        dh = net.eps_h * (F.leaky_relu(z_h, net.slope) - h)
        do = torch.sigmoid(z_o) - o
        if y is not None:
            do = do + beta * (y - o)
        h, o = h + dh, o + net.eps_o * do              # synchronous: both read step t
    return h, o


def zero_state(net, batch):
    H, O = net.W1.shape[0], net.W2.shape[0]
    return torch.zeros(batch, H, dtype=torch.float64), torch.zeros(batch, O, dtype=torch.float64)


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


def free_phase(net, p, x, keep=None):
    """The free phase from zero with parameters p (may require grad): (h0, o0) at t_free.

    With keep=k it also returns the state at step k (detached), where the branching nudge starts.
    """
    drive = x @ p["W1"].T + p["b1"]                    # [B,H]
    h, o = zero_state(net, x.shape[0])
    if keep is None:
        return relax(net, p, drive, h, o, net.t_free)
    hk, ok = relax(net, p, drive, h, o, keep)
    h0, o0 = relax(net, p, drive, hk, ok, net.t_free - keep)
    return h0, o0, (hk.detach(), ok.detach())


def gradient(net, x, y, kind="mse"):
    """BPTT through the free phase: (loss, {"W1": [H,n_in], "b1": [H], "W2": [O,H], "b2": [O]})."""
    p = {k: v.clone().requires_grad_(True) for k, v in net.params().items()}
    _, o0 = free_phase(net, p, x)
    loss = loss_of(o0, y, kind)
    grads = torch.autograd.grad(loss, [p[k] for k in PARAMS])
    return loss.item(), dict(zip(PARAMS, grads))


@torch.no_grad()
def nudged_state(net, drive, y, beta, scheme, start):
    """(hb, ob) of the nudged phase: from the branch point (scheme 'branch') or the free end ('end').

    drive = W1 x + b1 [B,H]; start: the state it begins in, (hk, ok) at step t_free - t_nudge
    or (h0, o0) at t_free.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
    return relax(net, net.params(), drive, start[0], start[1], net.t_nudge, y=y, beta=beta)


@torch.no_grad()
def rule(net, x, h0, o0, hb, ob, beta):
    """The learning rule's update (network.py, model.md), not applied: dW1 [H,n_in] ... db2 [O]."""
    B = x.shape[0]
    dh = (hb - h0) * (net.eta1 / (beta * B))          # [B,H]
    do = (ob - o0) * (net.eta2 / (beta * B))          # [B,O]
    return {"W1": dh.T @ x, "b1": dh.sum(0), "W2": do.T @ hb, "b2": do.sum(0)}


def update(net, x, y, beta=None, scheme="branch"):
    """The rule's update on batch x [B,n_in], y [B,O] under `scheme`, at beta (default: net.beta)."""
    beta = net.beta if beta is None else beta
    with torch.no_grad():
        keep = net.t_free - net.t_nudge
        h0, o0, branch_point = free_phase(net, net.params(), x, keep=keep)
        start = branch_point if scheme == "branch" else (h0, o0)
        hb, ob = nudged_state(net, x @ net.W1.T + net.b1, y, beta, scheme, start)
    return rule(net, x, h0, o0, hb, ob, beta)


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

    The free phase runs once (with autograd); each nudge runs from its start state.
    """
    betas = [net.beta] if betas is None else list(betas)
    p = {k: v.clone().requires_grad_(True) for k, v in net.params().items()}
    keep = net.t_free - net.t_nudge
    h0, o0, branch_point = free_phase(net, p, x, keep=keep)
    grads = {}
    for kind in losses:
        loss = loss_of(o0, y, kind)
        grads[kind] = (loss.item(), dict(zip(PARAMS, torch.autograd.grad(loss, [p[k] for k in PARAMS],
                                                                            retain_graph=True))))
    h0, o0 = h0.detach(), o0.detach()
    drive = (x @ net.W1.T + net.b1)                    # [B,H]
    rows = []
    for scheme in schemes:
        start = branch_point if scheme == "branch" else (h0, o0)
        for beta in betas:
            hb, ob = nudged_state(net, drive, y, beta, scheme, start)
            upd = rule(net, x, h0, o0, hb, ob, beta)
            for kind, (loss, grad) in grads.items():
                for name, (cos, ratio) in agreement(upd, grad, net.eta).items():
                    rows.append({"loss": kind, "scheme": scheme, "beta": beta, "param": name,
                                 "cosine": cos, "ratio": ratio, "loss_value": loss})
    return rows
