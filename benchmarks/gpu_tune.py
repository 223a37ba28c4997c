"""Time the Triton kernel's launch settings on a GPU, each checked against the PyTorch path.

    python3 benchmarks/gpu_tune.py [--models 20 100] [--settings TEXT ...] [--out FILE]

Each setting is spelled as HTS_EP_TRITON spells it (hts_ep/gpu.py: variant,
block_b, warps). For each, on the paper's shapes (784-1024-10, batch 256,
125 + 12 steps, test batches of 1000):

  error     max |h|, |o| difference after a free phase of 125 steps from zero
            and a nudged phase of 12 from there, against `Ensemble.relax_torch`
            (over 1e-4: the setting is rejected)
  step      seconds per training step of M models (mean of --reps, after a warm-up)
  predict   seconds per test batch of M models
  epoch     seconds per model-epoch: (235 steps + 10 test batches) / M

A setting that Triton cannot compile or launch on this device is reported as
such (the package would fall back to PyTorch). The fastest accepted setting at
the largest M is printed last; make it the default in hts_ep/gpu.py
(DEFAULTS) only with the numbers in the commit.
"""
import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hts_ep import Config, Ensemble, gpu  # noqa: E402

SETTINGS = ["variant=dot,block_b=16,warps=8", "variant=dot,block_b=16,warps=16",
            "variant=outer,block_b=4,warps=4", "variant=outer,block_b=4,warps=8",
            "variant=outer,block_b=8,warps=8", "variant=outer,block_b=8,warps=16",
            "variant=outer,block_b=16,warps=16"]
TOLERANCE = 1e-4
EPOCH_STEPS, EPOCH_TESTS = 235, 10


def configs(M, **shape):
    dists = ("scalar", "normal", "lognormal", "gamma")
    return [Config(distribution=dists[i % 4], eps_out=0.15 + 0.05 * (i % 5), seed=i, **shape)
            for i in range(M)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(text, models, device, reps=3, batch=256, test_batch=1000, **shape):
    """One setting: its error against the PyTorch path and its times per M (or why it failed)."""
    os.environ["HTS_EP_TRITON"] = text
    os.environ["HTS_EP_KERNEL"] = "triton"        # never time the PyTorch fallback as a setting
    gpu._failed = False
    row = {"setting": text}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ens = Ensemble(configs(2, **shape), device=device)
        n_out = ens.W2.shape[1]
        x = torch.rand(2, 37, ens.W1.shape[2], device=device)    # 37: a partial tile for every block_b
        y = F.one_hot(torch.randint(0, n_out, (2, 37), device=device), n_out).float()
        d = ens.drive(x)
        fast = ens.relax(d, *ens.zero_state(37), ens.t_free)         # free phase from zero
        ref = ens.relax_torch(d, *ens.zero_state(37), ens.t_free)
        fast_n = ens.relax(d, fast[0], fast[1], ens.t_nudge, y=y)     # nudged phase from there
        ref_n = ens.relax_torch(d, ref[0], ref[1], ens.t_nudge, y=y)
        if gpu._failed:
            return {**row, "failed": " ".join(str(w.message) for w in caught)[:300]}
    row["error"] = max((u[i] - v[i]).abs().max().item() for u, v in ((fast, ref), (fast_n, ref_n))
                       for i in (0, 1))
    if not row["error"] <= TOLERANCE:
        return {**row, "failed": f"differs from the PyTorch path by {row['error']:.2e} > {TOLERANCE}"}
    for M in models:
        ens = Ensemble(configs(M, **shape), device=device)
        n_in, n_out = ens.W1.shape[2], ens.W2.shape[1]
        x = torch.rand(M, batch, n_in, device=device)
        y = F.one_hot(torch.randint(0, n_out, (M, batch), device=device), n_out).float()
        xt = torch.rand(M, test_batch, n_in, device=device)
        ens.train_step(x, y)
        ens.predict(xt)
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            ens.train_step(x, y)
        sync(device)
        step = (time.perf_counter() - start) / reps
        start = time.perf_counter()
        ens.predict(xt)
        sync(device)
        predict = time.perf_counter() - start
        if gpu._failed:                     # a launch at this size failed: PyTorch was timed
            return {**row, "failed": f"the kernel could not run at M={M}"}
        row[f"M{M}"] = {"step": step, "predict": predict,
                        "epoch": (EPOCH_STEPS * step + EPOCH_TESTS * predict) / M}
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, nargs="+", default=[20, 100])
    p.add_argument("--settings", nargs="+", default=SETTINGS)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=None, help="JSON file for the rows")
    args = p.parse_args(argv)
    for text in args.settings:
        gpu.settings(text)                     # every setting is valid before the first is timed
    device = torch.device(args.device)
    rows = []
    for text in args.settings:
        row = measure(text, args.models, device, args.reps)
        rows.append(row)
        if "failed" in row:
            print(f"{text:40s} FAILED: {row['failed']}", flush=True)
        else:
            times = "  ".join(f"M={M}: step {1e3 * row[f'M{M}']['step']:.1f} ms, "
                              f"predict {1e3 * row[f'M{M}']['predict']:.1f} ms, "
                              f"{row[f'M{M}']['epoch']:.3f} s/model-epoch" for M in args.models)
            print(f"{text:40s} error {row['error']:.1e}  {times}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    good = [r for r in rows if "failed" not in r]
    if good:
        best = min(good, key=lambda r: r[f"M{args.models[-1]}"]["epoch"])
        print(f"fastest at M={args.models[-1]}: {best['setting']}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
