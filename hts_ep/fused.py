"""Fused CPU relaxation: every step of a phase in one C++ loop, in cache.

Relaxation is independent per sample, so instead of sweeping the whole
[M, B, H] state through memory once per step and per elementwise op (what
eager PyTorch does), a thread takes 24 samples of one model and runs every
step of the phase on them. Each step goes over the hidden neurons in tiles of
512: for 3 samples at a time (4 with AVX-512) it updates the tile,
h += eps (-h + phi(d + gamma W2^T o)), then adds the tile's share of W2 h
while the tile and its 20 KiB of W2 are in L1. Every vector of W2 loaded into
a register serves those 3 or 4 samples at once, and rows are copied with one
cache line of padding, so that the rows of W2, the drive and the state, 4 KiB
apart otherwise, do not compete for the same L1 sets. The output layer's
update runs vectorised over the group's samples, its sigmoid through an
8-wide (AVX-512; else 4-wide) copy of glibc's expf. A training batch's three
relaxations (network.py's "branch" scheme) run in one pass, each group
copied in once; a zero start state (h None) is set in cache rather than read
from a tensor of zeros. For the paper's 1024 hidden neurons the row stride is
a compile-time constant.
The arithmetic is the synchronous Euler step of dynamics.py (eq-step,
eq-nudge), with the sums in the order of the one-sample-at-a-time kernel it
replaced (bit for bit the same states, so records made before keep their
NUMERICS_VERSION); against the reference only the order of the sums in
W2^T o and W2 h differs (float32 rounding, ~1e-7 on the states;
tests/test_fused.py checks it against the reference in float64).
benchmarks/bench_relax.py times it against the reference run eagerly and
against the machine's own matrix-product rate.

The C++ source is fused.cpp beside this file (package data), built once per
machine with torch's C++ extension loader (needs a C++ compiler and ninja)
for the CPU it runs on (-march=native: AVX2 or AVX-512 vectors, keyed by the
CPU's feature flags) and cached on disk under $TORCH_EXTENSIONS_DIR, keyed by
a hash of the source text, so later processes load it in a fraction of a second.
Set HTS_EP_KERNEL=torch to use the plain PyTorch path instead (see
config.KERNELS); if the build fails, that path is used with a warning.
"""
import functools
import hashlib
import time
import warnings
from pathlib import Path

import torch

from . import machine
from .config import kernel_choice

SOURCE_PATH = Path(__file__).with_name("fused.cpp")     # shipped beside this file (package data)
_module = None
_failed = False
_build_seconds = None


CFLAGS = ["-O3", "-march=native", "-fopenmp"]


@functools.cache
def source():
    """The kernel's C++ text (fused.cpp), read once per process."""
    return SOURCE_PATH.read_text()


def source_tag():
    """Names the kernel build: source, CPU (name and feature flags), torch and flags (also keys
    hts_ep.speed's cache).

    torch's location too: the build's include paths point into it, and two
    environments sharing one build folder would rebuild it in turn."""
    if kernel_choice() != "auto":
        return f"kernel={kernel_choice()}"
    return hashlib.sha1((source() + machine.cpu_name() + torch.__version__ + torch.__file__ + " ".join(CFLAGS)).encode()
                        ).hexdigest()[:10]


def _build():
    from torch.utils.cpp_extension import load_inline
    return load_inline(name=f"hts_ep_fused_{source_tag()}", cpp_sources=source(), extra_cflags=CFLAGS,
                       extra_ldflags=["-fopenmp"], verbose=False)


def build_seconds():
    """Seconds the first available() call took to build or load the kernel (None before it)."""
    return _build_seconds


def available():
    """Whether the fused kernel is in use (building it on first call)."""
    global _module, _failed, _build_seconds
    if kernel_choice() != "auto":
        return False
    if _module is None and not _failed:
        start = time.perf_counter()
        try:
            _module = _build()
            _build_seconds = time.perf_counter() - start
        except Exception as error:  # no compiler, no ninja, read-only cache ...
            _failed = True
            warnings.warn(f"fused CPU kernel unavailable ({error}); using the PyTorch path", stacklevel=2)
    return _module is not None


def supports(drive, o, slope):
    """The kernel covers CPU float32, 10 outputs, hidden size a multiple of 16 and a
    leaky-ReLU slope in [0, 1] (the paper's network)."""
    return (drive.device.type == "cpu" and drive.dtype == torch.float32 and o.shape[-1] == 10
            and drive.shape[-1] % 16 == 0 and 0 <= slope <= 1 and available())


def _weights(ens):
    M = len(ens)
    return (ens.W2.contiguous(), ens.b2.contiguous(), ens.eps_hidden.reshape(M, -1).contiguous(),
            ens.eps_out.reshape(M).contiguous(), ens.gamma.reshape(M).contiguous(), ens.beta.reshape(M).contiguous(),
            ens.bounds())


def _state(h):
    return torch.empty(0) if h is None else h.contiguous()     # empty: the zero state, set inside


def fma_peak(seconds=0.2, threads=None):
    """GFLOP/s of register-only vector multiply-adds on `threads` threads (default and at most:
    torch's thread count), the build's own vectors: the ceiling the relaxation's arithmetic
    shares. None where the kernel is not built."""
    threads = torch.get_num_threads() if threads is None else threads
    if not 1 <= threads <= torch.get_num_threads():
        raise ValueError(f"threads must be between 1 and torch's thread count ({torch.get_num_threads()}), "
                         f"got {threads}")
    return _module.fma_peak(float(seconds), int(threads)) if available() else None


def relax(ens, drive, h, o, steps, y=None):
    """Same contract as `Ensemble.relax` (h None: the zero state), on CPU float32 tensors."""
    y = torch.empty(0) if y is None else y.contiguous()
    h, o, residual = _module.relax(drive.contiguous(), _state(h), o.contiguous(), *_weights(ens), y, steps,
                                   ens.slope)
    return h, o, residual.amax(1)


def branch(ens, drive, h, o, t_branch, t_nudge, y=None, dh_scale=None):
    """The "branch" scheme's two phases in one pass: `t_branch` free steps from
    (h, o) (h None: the zero state), then from there `t_nudge` free steps and `t_nudge` steps nudged
    towards y. Returns ((h0, o0, residual), (hb, ob, residual)), bit for bit
    what three `relax` calls give. With `dh_scale` (one value per model), h0
    is replaced by (hb - h0) * dh_scale, as `Ensemble.train_step` needs it."""
    y = torch.empty(0) if y is None else y.contiguous()
    scale = torch.empty(0) if dh_scale is None else dh_scale.reshape(len(ens)).to(torch.float32).contiguous()
    h0, o0, r0, hb, ob, rb = _module.branch(drive.contiguous(), _state(h), o.contiguous(), *_weights(ens), y,
                                            t_branch, t_nudge, ens.slope, scale)
    return (h0, o0, r0.amax(1)), (hb, ob, rb.amax(1))
