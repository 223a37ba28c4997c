"""The EP network of model.md, as an ensemble of M independent models.

Every tensor carries a leading model axis M, so one batched program relaxes
and updates all models at once (one Table 1 row, or a whole seed, in one
pass). Model m is exactly the network built from `configs[m]` alone: its own
weights, hidden time steps `eps_hidden`, `eps_out`, `gamma`, `beta`, learning
rates and random stream.

The model itself (the Euler step, the two nudge schedules, the learning rule)
is written once, in dynamics.py, with its equations; this class holds the
weights and routes each relaxation to the fastest path that covers it: on CPU
the fused C++ kernel (fused.py), on CUDA the Triton kernel (gpu.py), else the
reference itself (`relax_torch`). The nudged phase branches off the free run
(Config.nudge_from = "branch") or starts from its end ("end").
"""
import math

import torch

from . import data, dynamics, fused, gpu
from .config import check_ensemble
from .sampler import sample_time_steps


def default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def eta1_gain(config):
    """The factor standardised inputs apply to eta1 (data.InputStats.eta1_gain); 1 for unit inputs."""
    return 1.0 if config.inputs == "unit" else data.INPUT_STATS[config.dataset].eta1_gain


def per_model(values, device):
    """A [M, 1, 1] column, broadcasting one value per model over batch and neurons."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


class Ensemble:
    def __init__(self, configs, device=None):
        check_ensemble(configs)
        self.configs = list(configs)
        self.device = torch.device(device) if device is not None else default_device()
        c0 = configs[0]
        self.slope, self.t_free, self.t_nudge = c0.slope, c0.t_free, c0.t_nudge
        self.nudge_from = c0.nudge_from
        self.generators = [torch.Generator().manual_seed(c.seed) for c in configs]
        parts = [self._init_model(c, g) for c, g in zip(configs, self.generators)]
        self.W1, self.b1, self.W2, self.b2, eps_hidden = (
            torch.stack(p).to(self.device) for p in zip(*parts))
        self.eps_hidden = eps_hidden.unsqueeze(1)           # [M, 1, H]
        self.eps_out = per_model([c.eps_out for c in configs], self.device)
        self.gamma = per_model([c.gamma for c in configs], self.device)
        self.beta = per_model([c.beta for c in configs], self.device)
        # eta1 is given for unit inputs; standardised inputs scale it by the data set's gain
        self.eta1 = per_model([c.eta1 * eta1_gain(c) for c in configs], self.device)
        self.eta2 = per_model([c.eta2 for c in configs], self.device)
        self.alive = torch.ones(len(configs), dtype=torch.bool, device=self.device)
        # phi clamped to [-c, c] per model (inf: unbounded); None when no model is bounded
        bounds = [math.inf if c.h_bound is None else c.h_bound for c in configs]
        self.h_bound = None if all(b == math.inf for b in bounds) else per_model(bounds, self.device)

    @staticmethod
    def _init_model(c, g):
        """nn.Linear's default init (chosen), then the hidden time steps, from one stream."""
        def uniform(shape, fan_in):
            bound = 1 / math.sqrt(fan_in)
            return torch.empty(shape).uniform_(-bound, bound, generator=g)
        W1, b1 = uniform((c.n_hidden, c.n_in), c.n_in), uniform((c.n_hidden,), c.n_in)
        W2, b2 = uniform((c.n_out, c.n_hidden), c.n_hidden), uniform((c.n_out,), c.n_hidden)
        eps = sample_time_steps(c.distribution, c.n_hidden, c.mu, c.sigma_eps,
                                c.eps_min, c.eps_max, generator=g)
        return W1, b1, W2, b2, eps

    def __len__(self):
        return len(self.configs)

    def bounds(self):
        """Config.h_bound per model, [M] (inf: unbounded), as the kernels take it."""
        if self.h_bound is None:
            return torch.full((len(self),), math.inf, device=self.device)
        return self.h_bound.reshape(-1).contiguous()

    # -- relaxation ---------------------------------------------------------

    def drive(self, x):
        """W1 x + b1 [M, B, H] for inputs x [M, B, n_in]: constant through both phases, so computed once."""
        return dynamics.drive(self, x)

    def relax(self, drive, h, o, steps, y=None, trace=None):
        """Run `steps` Euler steps from (h, o); nudged towards one-hot y [M, B, n_out] if given.
        h None: the zero state (every path takes it; the fused kernel sets it in cache).

        Returns the final h, o and the residual max|h[T] - h[T-1]| per model.
        On CPU the fused C++ kernel does the work (fused.py), on CUDA a Triton
        kernel (gpu.py): same arithmetic, summed in another order;
        `trace`, a list, collects the residual of every step (PyTorch path only).
        """
        if trace is None and fused.supports(drive, o, self.slope):
            return fused.relax(self, drive, h, o, steps, y)
        if trace is None and gpu.supports(drive, o):
            result = gpu.relax(self, drive, h, o, steps, y)
            if result is not None:
                return result
        return self.relax_torch(drive, h, o, steps, y, trace)

    def relax_torch(self, drive, h, o, steps, y=None, trace=None):
        """The reference (dynamics.relax) in the ensemble's float32: the path where no kernel applies."""
        return dynamics.relax(self, drive, h, o, steps, y, trace)

    def zero_state(self, batch):
        M, H = len(self), self.W1.shape[1]
        return torch.zeros(M, batch, H, device=self.device), self.zero_output(batch)

    def zero_output(self, batch):
        return torch.zeros(len(self), batch, self.W2.shape[1], device=self.device)

    @torch.no_grad()
    def predict(self, x):
        """Free phase only; returns the class scores o [M, B, n_out] and the free residual."""
        o = self.zero_output(x.shape[1])
        h, o, residual = self.relax(self.drive(x), None, o, self.t_free)
        return o, residual

    # -- learning -----------------------------------------------------------

    @torch.no_grad()
    def train_step(self, x, y):
        """One batch: free phase, nudged phase, weight update. x [M,B,n_in], y one-hot [M,B,n_out].

        Returns the free-phase output o0 (for running accuracy) and the residuals
        at the end of the free and the nudged phase. y=None runs the nudged
        phase without its target force (a check that the update measures
        only the nudge: under "branch" it is then exactly zero).
        """
        drive = self.drive(x)
        scale = dynamics.rate(self.eta1, self.beta, x.shape[1])     # eta1 / (beta B), [M, 1, 1]
        (dh, o0, res_free), (hb, ob, res_nudge) = self.phases(drive, y, dh_scale=scale)
        self.update(x, dh, o0, hb, ob)
        return o0, res_free, res_nudge

    def phases(self, drive, y, nudge_from=None, dh_scale=None):
        """The free and the nudged end states, each (h, o, residual), as the learning rule compares them
        (dynamics.phases: the scheme `nudge_from`, default Config.nudge_from, on this ensemble's relax).

        With `dh_scale` (one value per model: [M], [M, 1, 1], or one number for all), the
        free state's h0 is replaced by dh = dh_scale (hb - h0), the factor of the weight
        update (the fused kernel forms it while both states are in cache).
        Under "branch" the fused CPU kernel runs all three relaxations in one call
        (fused.branch), not through `self.relax`: replacing `relax` on an instance
        does not reach that path.
        """
        scheme = nudge_from or self.nudge_from
        if dh_scale is not None:    # [M, 1, 1] on every path
            dh_scale = torch.as_tensor(dh_scale, dtype=torch.float32, device=drive.device)
            dh_scale = dh_scale.reshape(-1, 1, 1).expand(len(self), 1, 1)
        h, o = None, self.zero_output(drive.shape[1])     # h None: the zero state
        if scheme == "branch" and fused.supports(drive, o, self.slope):   # the three relaxations in one pass
            return fused.branch(self, drive, h, o, self.t_free - self.t_nudge, self.t_nudge, y, dh_scale=dh_scale)
        free, nudged = dynamics.phases(lambda h, o, steps, y=None: self.relax(drive, h, o, steps, y),
                                       h, o, self.t_free, self.t_nudge, scheme, y)
        if dh_scale is not None:
            free = ((nudged[0] - free[0]).mul_(dh_scale), *free[1:])
        return free, nudged

    @torch.no_grad()
    def increments(self, x, y, nudge_from=None):
        """The update train_step would apply to this batch (dynamics.rule), under either scheme, not
        applied: (dW1 [M,H,n_in], db1 [M,H], dW2 [M,O,H], db2 [M,O])."""
        (h0, o0, _), (hb, ob, _) = self.phases(self.drive(x), y, nudge_from)
        return dynamics.rule(x, h0, o0, hb, ob, self.eta1, self.eta2, self.beta)

    def update(self, x, dh, o0, hb, ob):
        """Apply one batch's update (dynamics.rule) in place; dh = eta1 / (beta B) (hb - h0), already
        formed. In place and fused (W += dh^T x in one baddbmm_): the bits every record was made with."""
        do = (ob - o0).mul_(dynamics.rate(self.eta2, self.beta, x.shape[1]))   # eta2 / (beta B) (ob - o0)
        self.W1.baddbmm_(dh.transpose(1, 2), x)            # W1 += dh^T x
        self.b1.add_(dh.sum(1))
        self.W2.baddbmm_(do.transpose(1, 2), hb)           # W2 += do^T hb
        self.b2.add_(do.sum(1))

    # -- divergence ---------------------------------------------------------

    def finite_models(self):
        """Per model: are all weights finite?"""
        return torch.stack([torch.isfinite(p).flatten(1).all(1)
                            for p in (self.W1, self.b1, self.W2, self.b2)]).all(0)

    def retire(self, mask):
        """Stop the models in `mask` (diverged): zero weights, zero learning rates.

        They keep their place in the ensemble (the shapes stay), but no longer
        produce non-finite values that would slow the arithmetic or spill into
        aggregate statistics.
        """
        self.alive &= ~mask
        for p in (self.W1, self.b1, self.W2, self.b2):
            p[mask] = 0
        self.eta1[mask] = 0
        self.eta2[mask] = 0

    # -- checkpoints --------------------------------------------------------

    TENSORS = ("W1", "b1", "W2", "b2", "eps_hidden", "alive")

    def state_dict(self):
        state = {k: getattr(self, k).cpu() for k in self.TENSORS}
        state["eta"] = (self.eta1.cpu(), self.eta2.cpu())
        state["generators"] = [g.get_state() for g in self.generators]
        return state

    def load_state_dict(self, state):
        for k in self.TENSORS:
            getattr(self, k).copy_(state[k])
        self.eta1.copy_(state["eta"][0])
        self.eta2.copy_(state["eta"][1])
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)
