"""Relaxation on CUDA: one Triton kernel runs every step of a phase on chip.

Eager PyTorch launches about ten kernels per Euler step, 137 steps per
batch, each moving the whole [M, B, H] state through global memory; on a GPU
that is launch latency, not arithmetic. This kernel gives each program one
model and a tile of BLOCK_B samples, loads the tile's drive, states, W2 and
time steps once, runs all `steps` synchronous Euler steps of dynamics.py
(eq-step, eq-nudge) in registers, and writes back only the final h, o and
the residual of the last step. The two small products of a step (gamma W2^T o
and W2 h, with 10 outputs padded to 16) are `tl.dot`s in full float32
("ieee": TF32 would change the states by ~1e-3, far more than the 1e-4 the
benchmark allows).

Tested on CPU through Triton's interpreter (TRITON_INTERPRET=1 and
HTS_EP_KERNEL=triton, see tests/test_gpu.py) against the float64 reference
(dynamics.py); the interpreter checks the arithmetic, not register pressure
or speed, which only a GPU can measure (benchmarks/bench_relax.py).
HTS_EP_KERNEL=torch switches it off; if Triton cannot compile it for the
device, the PyTorch path is used with a warning.
"""
import os
import warnings

import torch

from .config import kernel_choice

try:
    import triton
    import triton.language as tl
    from triton.runtime.errors import TritonError
except ImportError:          # CPU-only torch builds ship without Triton
    triton = None

# Samples per program: tl.dot needs at least 16 rows, and with 32 the tile's
# layout conversions would need more shared memory than an H100/H200 block has.
BLOCK_B = 16
# Chosen without a GPU to time it: compiled for sm_90 (see compile_for), 8
# warps use 255 registers and spill 280 bytes a thread, 16 use 128 and spill
# 376, 4 spill 12.7 KB; all need 128 KiB of shared memory, one program per SM.
# Measured on an H200 (2026-11-30): a training step of M models takes 16 ms at
# M = 20 and 70 ms at M = 100, in proportion to the M x 16 programs, about 5.4 ms
# for each wave of them over the 132 SMs: some 3 TFLOP/s. Not yet tuned there;
# occupancy (more, smaller programs per SM) is the first thing to try.
NUM_WARPS = 8
# The tile's hidden layer lives on chip: W2 and one [16, H] state pass through
# shared memory, 128 KiB at H = 1024; the next size (2048) would need 256 KiB,
# more than an sm_90 block may have. Larger layers take the PyTorch path.
MAX_HIDDEN = 1024
_failed = False

# Launch settings that `HTS_EP_TRITON` may change, for tuning on a GPU
# (benchmarks/gpu_tune.py times each): "variant=outer,block_b=8,warps=4".
#   variant    dot: the two products as tl.dot (needs block_b >= 16 and W2 in
#              shared memory); outer: N_OUT rank-one updates and row sums
#   block_b    samples per program
#   warps      warps per program
# Compiled for sm_90 without a GPU (registers, spill per thread, shared memory):
# dot/16/8 255, 288 B, 128 KiB; dot/16/16 128, 384 B, 128 KiB; outer/4/8 184,
# none, 256 B; outer/8/16 128, 112 B, 512 B. (tl.dot in "tf32x3" precision, on
# tensor cores, would need 260 KiB at H = 1024: more than an SM has.)
DEFAULTS = {"variant": "dot", "block_b": BLOCK_B, "warps": NUM_WARPS}
CHOICES = {"variant": ("dot", "outer"), "block_b": (4, 8, 16, 32), "warps": (1, 2, 4, 8, 16)}


def settings(text=None):
    """DEFAULTS updated from `text` (else $HTS_EP_TRITON); ValueError naming a bad key or value."""
    text = os.environ.get("HTS_EP_TRITON", "") if text is None else text
    out = dict(DEFAULTS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if name not in CHOICES:
            raise ValueError(f"HTS_EP_TRITON: unknown setting {name!r}; allowed: {', '.join(CHOICES)}")
        allowed = CHOICES[name]
        if isinstance(allowed[0], int):
            value = int(value) if value.isdigit() else value
        if value not in allowed:
            raise ValueError(f"HTS_EP_TRITON: {name}={value!r} is not allowed; "
                             f"allowed: {', '.join(map(str, allowed))}")
        out[name] = value
    if out["variant"] == "dot" and out["block_b"] < 16:
        raise ValueError(f"HTS_EP_TRITON: variant=dot needs block_b >= 16 (tl.dot's smallest tile), "
                         f"not {out['block_b']}")
    return out


def settings_tag():
    """The launch settings in force, as text (speed estimates are cached per setting)."""
    return ",".join(f"{k}={v}" for k, v in settings().items())


def launch_options(s, n_hidden, n_out):
    """The kernel's constexpr arguments and num_warps under settings `s`."""
    return dict(BLOCK_B=s["block_b"], BLOCK_H=max(16, triton.next_power_of_2(n_hidden)),
                BLOCK_O=max(16, triton.next_power_of_2(n_out)), OUTER=s["variant"] == "outer",
                N_OUT=n_out, num_warps=s["warps"])


def interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


if triton is not None:
    # B and steps vary (last partial batch, evaluation batches, free/nudged
    # phase): not specialised on, so each phase compiles once per process.
    @triton.jit(do_not_specialize=["B", "steps", "n_tiles"])
    def _relax_kernel(drive_ptr, h_ptr, o_ptr, W2_ptr, b2_ptr, eps_ptr, eps_out_ptr, gamma_ptr,
                      beta_ptr, bound_ptr, y_ptr, res_ptr, B, H, O, steps, n_tiles, slope,
                      NUDGE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
                      BLOCK_O: tl.constexpr, OUTER: tl.constexpr = False, N_OUT: tl.constexpr = 0):
        m = tl.program_id(0)
        tile = tl.program_id(1)
        rows = tile * BLOCK_B + tl.arange(0, BLOCK_B)
        cols = tl.arange(0, BLOCK_H)
        outs = tl.arange(0, BLOCK_O)
        hmask = (rows[:, None] < B) & (cols[None, :] < H)
        omask = (rows[:, None] < B) & (outs[None, :] < O)
        hidx = m * B * H + rows[:, None] * H + cols[None, :]
        oidx = m * B * O + rows[:, None] * O + outs[None, :]

        # Padding is inert: padded W2 rows/columns and time steps are 0, so
        # padded neurons never move, and padded outputs are held at 0 (below)
        # so that they never reach z_h, not even as NaN = inf * 0.
        d = tl.load(drive_ptr + hidx, mask=hmask, other=0.0)
        h = tl.load(h_ptr + hidx, mask=hmask, other=0.0)
        o = tl.load(o_ptr + oidx, mask=omask, other=0.0)
        if not OUTER:
            W2 = tl.load(W2_ptr + m * O * H + outs[:, None] * H + cols[None, :],
                         mask=(outs[:, None] < O) & (cols[None, :] < H), other=0.0)  # [BLOCK_O, BLOCK_H]
            W2T = tl.trans(W2)
        b2 = tl.load(b2_ptr + m * O + outs, mask=outs < O, other=0.0)
        eps = tl.load(eps_ptr + m * H + cols, mask=cols < H, other=0.0)
        eps_out = tl.load(eps_out_ptr + m)
        gamma = tl.load(gamma_ptr + m)
        beta = tl.load(beta_ptr + m)
        bound = tl.load(bound_ptr + m)                                       # inf: unbounded
        if NUDGE:
            y = tl.load(y_ptr + oidx, mask=omask, other=0.0)

        dh = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
        for _ in range(steps):
            if OUTER:
                # The same two products as N_OUT rank-one updates and row sums: no tl.dot, so
                # no 16-row minimum, W2 never held whole, and rows of W2 re-read from L1.
                z_h = d                                                       # [BLOCK_B, BLOCK_H]
                z_o = tl.zeros((BLOCK_B, BLOCK_O), dtype=tl.float32)
                for k in tl.static_range(N_OUT):
                    w = tl.load(W2_ptr + m * O * H + k * H + cols, mask=cols < H, other=0.0)  # W2[k, :]
                    o_k = tl.sum(tl.where(outs[None, :] == k, o, 0.0), axis=1)              # o[:, k]
                    z_h += (gamma * o_k)[:, None] * w[None, :]
                    z_o += tl.where(outs[None, :] == k, tl.sum(h * w[None, :], axis=1)[:, None], 0.0)
                z_o += b2[None, :]
            else:
                z_h = d + tl.dot(gamma * o, W2, input_precision="ieee")       # W1 x + b1 + gamma W2^T o[t]
                z_o = tl.dot(h, W2T, input_precision="ieee") + b2[None, :]    # W2 h[t] + b2
            phi = tl.where(z_h > 0, z_h, slope * z_h)                         # leaky ReLU
            phi = tl.where(phi > bound, bound, tl.where(phi < -bound, -bound, phi))  # NaN stays NaN
            dh = eps[None, :] * (phi - h)
            do = tl.sigmoid(z_o) - o
            if NUDGE:
                do += beta * (y - o)
            h = h + dh
            o = tl.where(outs[None, :] < O, o + eps_out * do, 0.0)

        tl.store(h_ptr + hidx, h, mask=hmask)
        tl.store(o_ptr + oidx, o, mask=omask)
        # Residual max|h[T] - h[T-1]| over the tile's real samples; NaN if any
        # is NaN, as torch.amax reports it (the divergence check relies on it).
        step = tl.where(hmask, tl.abs(dh), 0.0)
        nan = tl.max(tl.where(hmask & (dh != dh), 1, 0))
        residual = tl.where(nan > 0, float("nan"), tl.max(step))
        tl.store(res_ptr + m * n_tiles + tile, residual)


def available():
    return triton is not None and not _failed and kernel_choice() != "torch"


def supports(drive, o):
    """CUDA float32 with a hidden layer up to MAX_HIDDEN; on CPU only when asked for (tests)."""
    M, B, H = drive.shape
    block_b = settings()["block_b"] if available() else BLOCK_B
    if not (available() and drive.dtype == torch.float32 and H <= MAX_HIDDEN
            and M * triton.cdiv(B, block_b) * block_b * H < 2**31):    # the kernel's offsets are 32-bit
        return False
    if drive.device.type == "cuda":
        return True
    if drive.device.type == "cpu" and kernel_choice() == "triton":
        if not interpreting():
            raise ValueError("HTS_EP_KERNEL=triton on CPU needs TRITON_INTERPRET=1 "
                             "set before Triton is imported (Triton's interpreter; slow, for tests)")
        return True
    return False


def relax(ens, drive, h, o, steps, y=None):
    """Same contract as `Ensemble.relax` (h None: the zero state); None if Triton could not
    compile for this device."""
    global _failed
    M, B, H = drive.shape
    O = o.shape[-1]
    h = torch.zeros_like(drive) if h is None else h.contiguous().clone()    # updated in place
    o = o.contiguous().clone()
    s = settings()
    n_tiles = triton.cdiv(B, s["block_b"])
    residual = torch.empty(M, n_tiles, device=drive.device, dtype=torch.float32)
    try:
        _relax_kernel[(M, n_tiles)](
            drive.contiguous(), h, o, ens.W2.contiguous(), ens.b2.contiguous(),
            ens.eps_hidden.reshape(M, H).contiguous(), ens.eps_out.reshape(M).contiguous(),
            ens.gamma.reshape(M).contiguous(), ens.beta.reshape(M).contiguous(), ens.bounds(),
            y.contiguous() if y is not None else o, residual, B, H, O, steps, n_tiles,
            float(ens.slope), NUDGE=y is not None, **launch_options(s, H, O))
    except (TritonError, RuntimeError) as error:   # out of resources, ptxas, driver ...
        _failed = True
        warnings.warn(f"Triton relaxation kernel unavailable ({error}); using the PyTorch path",
                      stacklevel=2)
        return None
    return h, o, residual.amax(1)


def compile_for(capability=90, n_hidden=MAX_HIDDEN, n_out=10, nudge=True, text=None):
    """Compile the kernel ahead of time for a CUDA compute capability, without a GPU.

    Returns the shared memory (bytes) the compiled kernel needs and the cubin;
    Triton's interpreter cannot tell whether the kernel compiles at all, this
    can (tests/test_gpu.py). Needs Triton with its bundled ptxas, and the
    kernel compiled, not interpreted (TRITON_INTERPRET unset at import).
    Compiled without the divisibility hints a real launch adds, so register
    counts are close to, not exactly, those of the kernel that runs. `text`:
    launch settings as HTS_EP_TRITON spells them (default: that variable's).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    constexprs = dict(NUDGE=nudge, **launch_options(settings(text), n_hidden, n_out))
    num_warps = constexprs.pop("num_warps")
    types = ["*fp32"] * 12 + ["i32"] * 5 + ["fp32"] + ["constexpr"] * len(constexprs)
    source = ASTSource(fn=_relax_kernel, signature=dict(zip(_relax_kernel.arg_names, types)),
                       constexprs=constexprs)
    kernel = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                            options={"num_warps": num_warps})
    return kernel.metadata.shared, kernel.asm["cubin"]
