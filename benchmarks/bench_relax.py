"""Speed of the package's EP training step and test-time relaxation, against plain PyTorch.

    .venv/bin/python benchmarks/bench_relax.py [--batches N] [--models 1 20] [--threads T]

In one process, for ensembles of M models (784-1024-10, batch 256, 125 free +
12 nudged steps, real MNIST batches if `hts_ep.data.load` finds them, else
random inputs in [0, 1]), it times

  fast   the package: `Ensemble.train_step` and `Ensemble.predict` (on CPU the
         fused C++ relaxation of hts_ep/fused.py; on CUDA the Triton kernel of
         hts_ep/gpu.py)
  plain  the model's reference, hts_ep/dynamics.py, run eagerly: one op at a
         time, a new tensor per op, no in-place updates, no fusion; all M
         models batched with bmm (on a CPU without the fused kernel, or with
         HTS_EP_KERNEL=torch, the package runs this same reference)

alternating plain and fast batch by batch (and which goes first), so drifts in
machine load hit both alike, and right after every timed batch (of either,
so both start from the same cache state) the machine's own limit: one large
fp32 matrix product (and a bf16 one where the CPU has AMX or AVX512-BF16). It
reports the package's GFLOP/s as a fraction of that rate, for whole training
steps and for the relaxation alone, two ways: paired (each package batch
against the product timed right after it, the median over batches) and
fastest batch against fastest product. On a shared machine the rate jumps
between levels for seconds at a time; the paired ratio largely cancels the
level, while the best-against-best one sets a few kernel batches against
many more products, and so leans low. On CPU it also times a register-only
loop of vector multiply-adds (hts_ep.fused.fma_peak), the peak that a step's
multiply-adds share with its other vector operations, and says how close to
it the relaxation's op mix can come and came. It checks that both
implementations agree: max |h| and |o| differences after a full free phase,
and the weights after the timed training steps, must be <= 1e-4 (float32),
else it exits with status 1.

FLOP count per batch and model (B batch, H hidden, O outputs, n_in inputs):
  relaxation  steps x (2 B H O  [W2^T o]  +  2 B H O  [W2 h]  +  4 B H  [elementwise])
  drive       2 B n_in H
  update      2 B n_in H + 2 B H O        (training only)
with steps = 137 for a training step and 125 for predict.
"""
import argparse
import math
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if "HTS_EP_DATA" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
    os.environ["HTS_EP_DATA"] = str(REPO.parent / "shared" / "data")    # as the Makefile does
from hts_ep import Config, Ensemble, dynamics, experiments, fused, gpu, machine  # noqa: E402

EPOCH_BATCHES = 235          # ceil(60000 / 256): one MNIST/KMNIST/Fashion-MNIST training epoch
TEST_IMAGES = 10000          # evaluated after every epoch
PAPER_MODEL_EPOCHS = 3 * 20 * 5 * 50     # data sets x Table 1 cells x seeds x epochs
TOLERANCE = 1e-4             # max |state difference| after a free phase, float32
# Per neuron and sample, a step is 2 x 10 multiply-adds (W2^T o, W2 h) and, beside them, the
# leaky ReLU's multiply and maximum and the Euler update's subtraction and multiply-add. Where
# those four share the multiply-add ports (Intel's 512-bit units), a step takes 24 issue slots
# of 2 FLOP per lane for the 44 FLOP the count below gives it; where they have pipes of their
# own (AMD Zen), the bound is the 20 multiply-adds alone, and the ceiling is higher.
OTHER_OPS, STEP_FLOP = 4, 44
STEP_CEILING = STEP_FLOP / (2 * (20 + OTHER_OPS))
DISTRIBUTIONS = ("scalar", "normal", "lognormal", "gamma")
EPS_OUT = (0.15, 0.20, 0.25, 0.30, 0.35)


# -- the reference, run eagerly ------------------------------------------------

class Plain:
    """hts_ep/dynamics.py run eagerly, on a copy of an Ensemble's parameters (so both begin identical)."""

    def __init__(self, ens):
        self.p = dynamics.Params.of(ens, dtype=torch.float32, device=ens.device)
        self.nudge_from = ens.nudge_from

    def drive(self, x):
        return dynamics.drive(self.p, x)                                         # W1 x + b1

    def zero_output(self, x):
        return torch.zeros(*x.shape[:2], self.p.W2.shape[1], device=x.device)   # [M, B, O]

    @torch.no_grad()
    def predict(self, x):
        return dynamics.relax(self.p, self.drive(x), None, self.zero_output(x), self.p.t_free)[1]

    @torch.no_grad()
    def train_step(self, x, y):
        free, _, increments = dynamics.learn(self.p, x, y, self.nudge_from)
        self.p = self.p._replace(**{k: getattr(self.p, k) + d for k, d in zip(("W1", "b1", "W2", "b2"), increments)})
        return free[1]


# -- measurement helpers ----------------------------------------------------

def step_flops(c, batch):
    """One relaxation step of one model: both rank-10 products and the elementwise update."""
    return 4 * batch * c.n_hidden * c.n_out + 4 * batch * c.n_hidden


def flops(c, batch, train):
    B, H, O, n_in = batch, c.n_hidden, c.n_out, c.n_in
    steps = c.t_free + (c.t_nudge if train else 0)
    total = steps * step_flops(c, batch) + 2 * B * n_in * H
    if train:
        total += 2 * B * n_in * H + 2 * B * H * O
    return total


def relax_flops(c, batch, M):
    """A training batch's relaxation alone (t_free + t_nudge steps from zero), all M models."""
    return M * (c.t_free + c.t_nudge) * step_flops(c, batch)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(f, device):
    sync(device)
    start = time.perf_counter()
    f()
    sync(device)
    return time.perf_counter() - start


def peak_bytes(f, device):
    """Peak bytes allocated by tensors during f() beyond what was live before it."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        f()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        f()
    # allocations are attributed to the op that made them, frees are [memory] events:
    # replay both in time order and keep the high-water mark
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def load_data(device, M, batch, n_batches, seed=0):
    """n_batches training batches [M, B, 784] (per-model shuffles) with one-hot targets, and test batches."""
    g = torch.Generator().manual_seed(seed)
    try:
        from hts_ep import data
        train, test = data.load("mnist", train=True), data.load("mnist", train=False)
        source = "MNIST (hts_ep.data.load)"
        xtr, ytr, xte = train.x, train.y, test.x
    except Exception as error:  # no data here: random inputs in [0, 1]
        source = f"random inputs in [0, 1] (MNIST not found: {str(error).splitlines()[0][:80]})"
        xtr, ytr = torch.rand(60000, 784, generator=g), torch.randint(0, 10, (60000,), generator=g)
        xte = torch.rand(10000, 784, generator=g)
    out = []
    for k in range(n_batches):
        idx = torch.stack([torch.randperm(len(ytr), generator=g)[:batch] for _ in range(M)])   # [M, B]
        x = xtr[idx].to(device)
        y = F.one_hot(ytr[idx], 10).float().to(device)
        xt = xte[k * batch:(k + 1) * batch].to(device).expand(M, -1, -1)
        out.append((x, y, xt))
    return source, out


def ensemble_configs(M):
    if M == 1:
        return [Config()]
    grid = [(d, e) for d in DISTRIBUTIONS for e in EPS_OUT]
    return [Config(distribution=grid[m % len(grid)][0], eps_out=grid[m % len(grid)][1], seed=m // len(grid))
            for m in range(M)]


class MachineLimit:
    """The machine's own rate: one large matrix product (fp32; bf16 too where the CPU has
    AMX or AVX512-BF16), timed between the benchmark's batches so that it sees the same load."""

    def __init__(self, device):
        self.device = device
        n = 4096 if device.type == "cuda" else 2048
        self.n = n
        self.dtypes = [torch.float32]
        flags = machine.cpu_flags()
        if device.type == "cuda" or flags & {"amx_bf16", "avx512_bf16"}:
            self.dtypes.append(torch.bfloat16)
        g = torch.Generator().manual_seed(0)
        self.pairs = {dt: (torch.rand(n, n, generator=g).to(device, dt), torch.rand(n, n, generator=g).to(device, dt))
                      for dt in self.dtypes}
        self.times = {dt: [] for dt in self.dtypes}
        for dt in self.dtypes:                      # warm-up (library dispatch, caches)
            a, b = self.pairs[dt]
            a @ b

    def sample(self, repeats=3):
        """Three products per sample: on a shared machine one product often lands on a slow
        moment, and a low ceiling would flatter the kernel's fraction. Returns this sample's
        fp32 rate (its fastest product), the ceiling of the moment for a paired ratio."""
        for dt in self.dtypes:
            a, b = self.pairs[dt]
            for _ in range(repeats):
                self.times[dt].append(timed(partial(torch.matmul, a, b), self.device))
        return 2 * self.n ** 3 / min(self.times[torch.float32][-repeats:]) / 1e9

    def gflops(self, dtype=torch.float32):
        """The best of the samples: what the machine reaches, the kernel's ceiling."""
        return 2 * self.n ** 3 / min(self.times[dtype]) / 1e9

    def describe(self):
        flags = machine.cpu_flags()
        isa = ", ".join(sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})) or "n/a"
        return "; ".join(f"{str(dt).replace('torch.', '')} {self.n}x{self.n} product {self.gflops(dt):.1f} GFLOP/s"
                         for dt in self.dtypes) + (f" (CPU features: {isa})" if self.device.type == "cpu" else "")


def fmt_bytes(n):
    return f"{n / 2**20:7.1f} MiB"


# -- the benchmark -----------------------------------------------------------

def bench(M, args, device):
    states = {}
    configs = ensemble_configs(M)
    c = configs[0]
    ens = Ensemble(configs, device=device)
    plain = Plain(ens)
    source, data = load_data(device, M, args.batch, args.batches + 1)
    print(f"\n== M = {M} model{'s' if M > 1 else ''}: {c.n_in}-{c.n_hidden}-{c.n_out}, B = {args.batch}, "
          f"{c.t_free} + {c.t_nudge} steps; data: {source}")

    # 1. batch 0 (warm-up, not timed): the same states, and the peak memory of each call.
    #    State check: a full free phase from zero on the test batch, both implementations.
    x, y, xt = data[0]
    # One-time cost on first use of each phase (Triton compiles the free and
    # the nudged kernel; CUDA initialises), on a scratch copy: first call - steady.
    scratch = Ensemble(configs, device=device)
    first = {"predict": timed(lambda: scratch.predict(xt), device),
             "train": timed(lambda: scratch.train_step(x, y), device)}
    del scratch
    mem = {}
    with torch.no_grad():   # both as in predict: drive, zero state, free phase
        mem["fast", "predict"] = peak_bytes(
            lambda: states.update(fast=ens.relax(ens.drive(xt), *ens.zero_state(xt.shape[1]), ens.t_free)), device)
        mem["plain", "predict"] = peak_bytes(lambda: states.update(plain=dynamics.relax(
            plain.p, plain.drive(xt), None, plain.zero_output(xt), ens.t_free)), device)
        d, o = ens.drive(xt), ens.zero_state(xt.shape[1])[1]
        path = ("fused C++ kernel" if fused.supports(d, o, ens.slope) else "Triton kernel" if gpu.supports(d, o)
                else "PyTorch path (relax_torch)")
    (h, o, _), (hp, op, _) = states["fast"], states["plain"]
    dh, do = (h - hp).abs().max().item(), (o - op).abs().max().item()
    ok = math.isfinite(dh) and math.isfinite(do) and max(dh, do) <= TOLERANCE
    print(f"state check (free phase, package = {path}): max|dh| = {dh:.2e}, max|do| = {do:.2e} "
          f"(tolerance {TOLERANCE:g}) {'OK' if ok else 'FAILED'}")
    states.clear()
    torch_path = None
    has_kernel = fused.available() if device.type == "cpu" else gpu.available()
    if has_kernel:                      # the package's PyTorch path's memory too
        scratch = Ensemble(configs, device=device)
        saved = os.environ.get("HTS_EP_KERNEL")
        os.environ["HTS_EP_KERNEL"] = "torch"
        try:
            torch_path = peak_bytes(lambda: scratch.train_step(x, y), device)
        finally:
            if saved is None:
                del os.environ["HTS_EP_KERNEL"]
            else:
                os.environ["HTS_EP_KERNEL"] = saved
        del scratch
    mem["fast", "train"] = peak_bytes(lambda: ens.train_step(x, y), device)
    mem["plain", "train"] = peak_bytes(lambda: plain.train_step(x, y), device)

    # 2. interleaved timing of batches 1..N: wall and process CPU time; the machine's
    #    matrix-product rate sampled between them; the relaxation of a training batch
    #    (137 steps from zero) alone, to separate it from the drive and update products
    times = {(impl, kind): [] for impl in ("plain", "fast") for kind in ("train", "predict")}
    cpu = {key: [] for key in times}
    relax_times = []
    limit = MachineLimit(device)
    # kernel rate / product rate sampled right after it: on a shared machine the
    # rate moves between two or three levels for seconds at a time; a ratio taken
    # within one such moment largely cancels the level, where the fastest of a few
    # kernel batches against the fastest of many more products favours the product.
    paired = {"train": [], "predict": [], "relax": []}
    runs = {("plain", "train"): lambda b: plain.train_step(b[0], b[1]),
            ("fast", "train"): lambda b: ens.train_step(b[0], b[1]),
            ("plain", "predict"): lambda b: plain.predict(b[2]),
            ("fast", "predict"): lambda b: ens.predict(b[2])}
    for k, b in enumerate(data[1:]):
        order = ("plain", "fast") if k % 2 == 0 else ("fast", "plain")
        for kind in ("train", "predict"):
            for impl in order:
                c0 = time.process_time()
                times[impl, kind].append(timed(partial(runs[impl, kind], b), device))
                cpu[impl, kind].append(time.process_time() - c0)
                product = limit.sample()        # after plain batches too: the same cache state for both
                if impl == "fast":
                    rate = M * flops(c, args.batch, kind == "train") / times[impl, kind][-1] / 1e9
                    paired[kind].append(rate / product)
        with torch.no_grad():
            d_b = ens.drive(b[0])
            relax_times.append(timed(partial(ens.relax, d_b, *ens.zero_state(args.batch), c.t_free + c.t_nudge),
                                     device))
        paired["relax"].append(relax_flops(c, args.batch, M) / relax_times[-1] / 1e9 / limit.sample())

    # both trained on the same batches: how far apart are the weights now?
    dW1 = (ens.W1 - plain.p.W1).abs().max().item()
    dW2 = (ens.W2 - plain.p.W2).abs().max().item()

    per_model = experiments.per_model_bytes(c, args.batch)
    weights = sum(p[0].numel() * p.element_size() for p in (ens.W1, ens.b1, ens.W2, ens.b2, ens.eps_hidden))
    print(f"{'':14s}{'ms/batch':>10s}{'cpu-ms':>9s}{'s/epoch*':>10s}{'model-ep/s':>11s}{'GFLOP/s':>9s}"
          f"{'fast/plain':>11s}{'peak mem':>12s}{'peak/model':>12s}")
    rows = {}
    for kind in ("train", "predict"):
        fl = M * flops(c, args.batch, kind == "train")
        med = {impl: statistics.median(times[impl, kind]) for impl in ("plain", "fast")}
        for impl in ("plain", "fast"):
            t = med[impl]
            epoch = t * EPOCH_BATCHES
            speed = med["plain"] / t
            peak = mem[impl, kind]
            cpu_ms = 1e3 * statistics.median(cpu[impl, kind])
            print(f"{kind + ' ' + impl:14s}{1e3 * t:10.1f}{cpu_ms:9.1f}{epoch:10.2f}{M / epoch:11.3f}"
                  f"{fl / t / 1e9:9.1f}{speed:10.2f}x{fmt_bytes(peak):>12s}{fmt_bytes(peak / M):>12s}")
            rows[kind, impl] = dict(ms=1e3 * t, s_epoch=epoch, model_epochs_s=M / epoch, gflops=fl / t / 1e9,
                                    speedup=speed, peak=peak)
        spread = {impl: (1e3 * min(times[impl, kind]), 1e3 * max(times[impl, kind])) for impl in ("plain", "fast")}
        print(f"{'':14s}(min..max ms: plain {spread['plain'][0]:.1f}..{spread['plain'][1]:.1f}, "
              f"fast {spread['fast'][0]:.1f}..{spread['fast'][1]:.1f}; {len(times['fast', kind])} batches each)")
    print(f"ms/batch: median wall time; cpu-ms: median process CPU time (all threads). "
          f"* s/epoch = ms/batch x {EPOCH_BATCHES} batches\n  (one 60,000-image epoch at B = {args.batch}; "
          f"predict rows: the same count of test-time batches). Peak memory: tensors allocated during one call")
    print(f"FLOP per batch and model: train {flops(c, args.batch, True) / 1e9:.3f} G, "
          f"predict {flops(c, args.batch, False) / 1e9:.3f} G (formula in this file's docstring)")
    inputs = (x[0].numel() + y[0].numel()) * 4
    extra = "" if torch_path is None else f", {fmt_bytes(torch_path / M).strip()} (package, PyTorch path)"
    print(f"memory per model: weights {fmt_bytes(weights).strip()}, batch x and y {fmt_bytes(inputs).strip()}, "
          f"measured train-step peak on top {fmt_bytes(mem['fast', 'train'] / M).strip()} (fast), "
          f"{fmt_bytes(mem['plain', 'train'] / M).strip()} (plain){extra}; "
          f"hts_ep.experiments.per_model_bytes(config, {args.batch}) = {fmt_bytes(per_model).strip()} (all of it)")
    weights_ok = math.isfinite(dW1) and math.isfinite(dW2) and max(dW1, dW2) <= TOLERANCE
    ok &= weights_ok
    print(f"after {len(data)} identical training steps: max|W1 fast - plain| = {dW1:.2e}, max|W2| diff = {dW2:.2e} "
          f"(tolerance {TOLERANCE:g}) {'OK' if weights_ok else 'FAILED'}")
    mm = limit.gflops()
    relax_gf = relax_flops(c, args.batch, M) / min(relax_times) / 1e9
    print(f"machine limit, measured between the batches above (best of {len(limit.times[torch.float32])}): "
          f"{limit.describe()}")
    # Best against best: the product's rate is its fastest sample, so the kernel's is too
    # (medians mix in the moments another process took a core).
    best = {kind: M * flops(c, args.batch, kind == "train") / min(times["fast", kind]) / 1e9
            for kind in ("train", "predict")}
    print(f"fraction of the fp32 product rate (fastest batch each): train step {best['train'] / mm:.2f} "
          f"({best['train']:.1f} GFLOP/s), predict {best['predict'] / mm:.2f}, relaxation alone "
          f"{relax_gf / mm:.2f} ({relax_gf:.1f} GFLOP/s; a training step adds the drive and update "
          f"products, done by torch)")
    med = {kind: statistics.median(v) for kind, v in paired.items()}
    print(f"fraction of the fp32 product rate, paired (each batch against the product timed right after it, "
          f"median of {len(paired['train'])}): train step {med['train']:.2f}, predict {med['predict']:.2f}, "
          f"relaxation alone {med['relax']:.3f} (per batch, train: "
          f"{' '.join(f'{v:.2f}' for v in paired['train'])})")
    rows["limit"] = dict(fp32=mm, relax_gflops=relax_gf, train_gflops=best["train"], paired=med)
    if device.type == "cpu" and fused.available():
        peak = max(fused.fma_peak(0.2) for _ in range(3))
        lanes = fused._module.lanes
        print(f"multiply-add peak (register-only vector FMAs, 12 chains a thread, {torch.get_num_threads()} "
              f"threads, best of 3): {peak:.1f} GFLOP/s, of which the fp32 product reaches {mm / peak:.2f}. A "
              f"relaxation step issues per {lanes} neuron-samples 20 multiply-adds and {OTHER_OPS} other vector "
              f"operations for {STEP_FLOP} counted FLOP each: where these share the multiply-add ports, it can "
              f"reach at most {STEP_CEILING:.2f} of that peak; it reached {relax_gf / peak:.2f} (fastest batch)")
        rows["limit"].update(fma_peak=peak, relax_of_peak=relax_gf / peak)
    print(f"first call, fast: {first['predict']:.2f} s (predict), {first['train']:.2f} s (train) "
          f"against {rows['predict', 'fast']['ms'] / 1e3:.2f} / {rows['train', 'fast']['ms'] / 1e3:.2f} s "
          f"steady; the difference is one-time cost (Triton compilation unless cached from an earlier "
          f"run or M, CUDA start-up), not in the timings above")
    # A model-epoch: the training batches, then the test set, as train.py does
    # (it evaluates in batches of 1000; counted here at the benchmark's batch size).
    model_epoch = (EPOCH_BATCHES * rows["train", "fast"]["ms"]
                   + TEST_IMAGES / args.batch * rows["predict", "fast"]["ms"]) / 1e3 / M
    fastest = (EPOCH_BATCHES * min(times["fast", "train"])
               + TEST_IMAGES / args.batch * min(times["fast", "predict"])) / M
    print(f"projection: {model_epoch:.3f} s per model-epoch with evaluation at M = {M} (median batches; "
          f"{fastest:.3f} s from the fastest); the paper profile ({PAPER_MODEL_EPOCHS:,} model-epochs) would "
          f"take {PAPER_MODEL_EPOCHS * model_epoch / 3600:.2f} h ({PAPER_MODEL_EPOCHS * fastest / 3600:.2f} h) "
          f"on this device at this ensemble size")
    return ok, rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=5, help="timed batches per configuration (after 1 warm-up)")
    p.add_argument("--models", type=int, nargs="+", default=[1, 20], help="ensemble sizes M")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--batch", type=int, default=256, help="batch size B")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = p.parse_args(argv)
    if args.batches < 1 or args.threads is not None and args.threads < 1:
        p.error("--batches and --threads must be >= 1")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine.cpu()[0]
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores; load average at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    start = time.perf_counter()
    if device.type == "cpu":        # the C++ kernel is for CPU only: no build on a GPU machine
        have = fused.available()
        cost = time.perf_counter() - start
        print(f"fused kernel: {'available' if have else 'not available'}; first fused.available() took "
              f"{cost:.2f} s (one-time build, or loading the cached build; not in the timings below)")
    else:
        print(f"Triton kernel: {'available' if gpu.available() else 'not available'} "
              f"(HTS_EP_KERNEL={os.environ.get('HTS_EP_KERNEL', 'auto')})")

    ok = True
    for M in args.models:
        good, _ = bench(M, args, device)
        ok &= good
    print(f"\nload average at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"total {time.perf_counter() - start:.0f} s")
    if not ok:
        print(f"FAILED: the package's states or weights differ from the plain implementation by more than "
              f"{TOLERANCE:g}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
