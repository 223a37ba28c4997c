"""The model's dynamics, its two nudge schedules and its learning rule, written once.

This is the reference: plain, out-of-place PyTorch that runs in any dtype
(float32 in Ensemble.relax_torch, float64 where fast paths are checked and
in gradients.py) and that autograd can run back through (gradients.py's
BPTT). The fast paths (the fused C++ kernel of fused.py, the Triton kernel
of gpu.py) are checked against it, in float64, by the tests.

Every tensor carries a leading model axis M ([M, B, H] states, [M, O, H]
weights, [M, 1, 1] per-model values), as in network.Ensemble. What a step
reads, `net`, is any object with the attributes of `Params` (an Ensemble is
one). Equations as labelled in book/methods.md:

  eq-step   h[t+1] = h[t] + eps_h * (-h[t] + phi(W1 x + b1 + gamma W2^T o[t]))
            o[t+1] = o[t] + eps_o * (-o[t] + sigma(W2 h[t] + b2))
            phi: leaky ReLU, clamped to [-h_bound, h_bound] where set
  eq-nudge  o[t+1] = (same) + eps_o * beta * (y - o[t])
  eq-rule   dW1 = eta1 / (beta B) (hb - h0)^T x    db1 = eta1 / (beta B) sum_b (hb - h0)
            dW2 = eta2 / (beta B) (ob - o0)^T hb   db2 = eta2 / (beta B) sum_b (ob - o0)

and the two nudge schedules of the methods page's "Where the nudged phase
starts" (Config.nudge_from): "branch" keeps the free state at step
t_free - t_nudge and runs from it both the rest of the free phase (h0, o0)
and the nudged phase (hb, ob); "end" runs the nudged phase from the free end.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

SCHEMES = ("branch", "end")


class Params(NamedTuple):
    """One ensemble's parameters under the names the functions below read (Ensemble's own)."""
    W1: torch.Tensor            # [M, H, n_in]
    b1: torch.Tensor            # [M, H]
    W2: torch.Tensor            # [M, O, H]
    b2: torch.Tensor            # [M, O]
    eps_hidden: torch.Tensor    # [M, 1, H]  one time step per hidden neuron
    eps_out: torch.Tensor       # [M, 1, 1]
    gamma: torch.Tensor         # [M, 1, 1]  feedback strength
    beta: torch.Tensor          # [M, 1, 1]  nudging strength
    eta1: torch.Tensor          # [M, 1, 1]  learning rate of the hidden layer
    eta2: torch.Tensor          # [M, 1, 1]  learning rate of the output layer
    h_bound: torch.Tensor | None  # [M, 1, 1] (inf: unbounded), or None: no model is bounded
    slope: float                # the leaky ReLU's negative slope
    t_free: int
    t_nudge: int

    @classmethod
    def of(cls, net, dtype=torch.float64, device="cpu"):
        """A detached copy of `net` (an Ensemble) in `dtype` on `device`: the float64 reference that the
        tests check every fast path by, from the same weights."""
        def cast(t):
            return None if t is None else t.detach().to(device, dtype).clone()
        return cls(*(cast(getattr(net, k)) for k in cls._fields[:11]), net.slope, net.t_free, net.t_nudge)


# -- relaxation ---------------------------------------------------------------

def drive(net, x):
    """W1 x + b1 [M, B, H] for inputs x [M, B, n_in]: constant through both phases."""
    return torch.baddbmm(net.b1.unsqueeze(1), x, net.W1.transpose(1, 2))


def step(net, drive, h, o, y=None):
    """One synchronous Euler step (eq-step; eq-nudge towards the one-hot y [M, B, O] if given).

    drive [M, B, H], h [M, B, H], o [M, B, O]; both layers read step t.
    Returns h[t+1], o[t+1] and dh = h[t+1] - h[t] (its largest |.| is the residual).
    Out of place throughout, so that autograd can run back through it (in place,
    the float32 path would be faster on CPU, where fresh [M, B, H] buffers cost
    page faults; the fused and Triton kernels are the fast paths).
    """
    z_h = torch.baddbmm(drive, o, net.gamma * net.W2)                 # [M,B,H]  W1 x + b1 + gamma W2^T o[t]
    z_o = torch.baddbmm(net.b2.unsqueeze(1), h, net.W2.transpose(1, 2))   # [M,B,O]  W2 h[t] + b2
    phi = F.leaky_relu(z_h, net.slope)                                # [M,B,H]
    if net.h_bound is not None:                                       # clamp keeps NaN: divergence still shows
        phi = torch.clamp(phi, -net.h_bound, net.h_bound)
    dh = (phi - h) * net.eps_hidden                                   # [M,B,H]
    do = torch.sigmoid(z_o) - o                                       # [M,B,O]
    if y is not None:
        do = do + net.beta * (y - o)                                  # the nudge, eq-nudge
    return h + dh, o + do * net.eps_out, dh


def relax(net, drive, h, o, steps, y=None, trace=None):
    """`steps` Euler steps from (h, o) (h None: the zero state); nudged towards y if given.

    Returns the final h [M, B, H], o [M, B, O] and the residual max|h[T] - h[T-1]| per
    model [M] (NaN where a state is NaN; 0 after no step). `trace`, a list, collects
    the residual of every step.
    """
    h = torch.zeros_like(drive) if h is None else h
    residual = drive.new_zeros(drive.shape[0])
    for t in range(steps):
        h, o, dh = step(net, drive, h, o, y)
        if t == steps - 1 or trace is not None:
            residual = dh.abs().amax(dim=(1, 2))
            if trace is not None:
                trace.append(residual)
    return h, o, residual


def relaxer(net, drive):
    """The reference's relax on `drive` as the schedules below take it: relax(h, o, steps, y=None).
    (The schedules take a function so that an Ensemble runs them on its own fast relax.)"""
    return lambda h, o, steps, y=None: relax(net, drive, h, o, steps, y)


# -- the two nudge schedules -------------------------------------------------

def nudge_start(scheme, t_free, t_nudge):
    """The free-phase step the nudged phase starts from: t_free - t_nudge ("branch") or t_free ("end")."""
    if scheme == "branch":
        return t_free - t_nudge
    if scheme == "end":
        return t_free
    raise ValueError(f"unknown scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")


def free_phase(relax, h, o, t_free, t_nudge, scheme):
    """The free phase from (h, o), kept where `scheme`'s nudged phase starts.

    relax(h, o, steps, y=None) -> (h, o, residual) runs the steps (the reference's
    `relax`, or an Ensemble's fast one). Returns the free end (h0, o0, residual) and
    the kept state (hk, ok); under "end" they are one state, relaxed in one call.
    """
    k = nudge_start(scheme, t_free, t_nudge)
    kept = relax(h, o, k)
    free = relax(kept[0], kept[1], t_free - k) if k < t_free else kept
    return free, kept[:2]


def phases(relax, h, o, t_free, t_nudge, scheme, y=None):
    """The free end (h0, o0, residual) and the nudged end (hb, ob, residual) the rule compares.

    branch: t_free - t_nudge free steps, then from that state t_nudge free steps
            (h0, o0) and t_nudge nudged steps (hb, ob): both states of age t_free;
    end:    t_free free steps (h0, o0), then t_nudge nudged steps from there (hb, ob):
            hb - h0 then also holds t_nudge steps of free drift.
    Either relaxes t_free + t_nudge steps. y None: the nudged phase without its
    target force (under "branch" then hb = h0 exactly).
    """
    free, kept = free_phase(relax, h, o, t_free, t_nudge, scheme)
    return free, relax(kept[0], kept[1], t_nudge, y)


# -- the learning rule -------------------------------------------------------

def rate(eta, beta, batch):
    """eta / (beta B), the factor of eq-rule, per model ([M, 1, 1] for Ensemble's eta and beta)."""
    return eta / (beta * batch)


def rule(x, h0, o0, hb, ob, eta1, eta2, beta):
    """The predictive rule's increments (eq-rule), not applied.

    x [M, B, n_in]; free end h0, o0 and nudged end hb, ob, [M, B, H] and [M, B, O].
    Returns dW1 [M, H, n_in], db1 [M, H], dW2 [M, O, H], db2 [M, O].
    """
    B = x.shape[1]
    dh = (hb - h0) * rate(eta1, beta, B)                              # [M,B,H]  postsynaptic, hidden
    do = (ob - o0) * rate(eta2, beta, B)                              # [M,B,O]  postsynaptic, output
    return dh.transpose(1, 2) @ x, dh.sum(1), do.transpose(1, 2) @ hb, do.sum(1)


def learn(net, x, y, scheme):
    """One training batch of the reference from the zero state, under `scheme`: the free end
    (h0, o0, residual), the nudged end (hb, ob, residual) and the rule's increments (not applied).

    x [M, B, n_in], y one-hot [M, B, O] (None: no target force).
    """
    d = drive(net, x)                                                 # [M,B,H]
    o = d.new_zeros(*x.shape[:2], net.W2.shape[1])                    # [M,B,O]  the zero state
    free, nudged = phases(relaxer(net, d), None, o, net.t_free, net.t_nudge, scheme, y)
    return free, nudged, rule(x, *free[:2], *nudged[:2], net.eta1, net.eta2, net.beta)
