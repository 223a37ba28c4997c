"""How fast this machine trains and evaluates: measured, cached, used for estimates.

`hts-ep sweep --dry-run` says how long the missing models will take. The
answer must be this machine's, not the one the project was developed on, so
it comes from a short measurement: a few training batches and one evaluation
batch of a small ensemble, on the device and with the threads the sweep would
use. The result is cached in the user cache (`speed.json`), keyed by
everything that changes it (CPU, device, threads, torch, kernel, network
shape, nudging scheme and bound), so only the first dry run on a machine pays the few seconds it takes.
"""
import json
import logging
import math
import os
import time

import torch
import torch.nn.functional as F
from filelock import FileLock, Timeout

from . import data, fused, gpu, machine
from .network import Ensemble, default_device
from .train import EVAL_BATCH, key, read_json

log = logging.getLogger(__name__)
_this_process = {}  # key -> rates measured by this process (also the ones too noisy to cache)
MODELS = 4          # ensemble size measured: per-model cost is flat from here up (bench_relax.py)
TRAIN_BATCHES = 3   # timed after one warm-up batch (kernel build or load, caches)


def cache_path():
    return data.cache_dir() / "speed.json"


def machine_key(config, device, threads):
    """Everything the rates depend on, as one string."""
    device = torch.device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else machine.cpu_name()
    shape = (config.n_in, config.n_hidden, config.n_out, config.t_free, config.t_nudge, config.batch_size)
    # the nudging scheme and the bound pick other kernel paths (one pass or two; a clamp per step)
    path = f"nudge={config.nudge_from}|bounded={config.h_bound is not None}"
    kernel = (f"fused={fused.source_tag()}:{fused.available()}" if device.type == "cpu"
              else f"triton={gpu.available()}:{gpu.settings_tag()}")
    return f"{device.type}|{where}|threads={threads}|torch={torch.__version__}|{kernel}|shape={shape}|{path}"


def measure(config, device=None, models=MODELS):
    """Seconds per model and sample: {"train": ..., "test": ...} for ensembles like `config`'s."""
    device = torch.device(device) if device is not None else default_device()
    ens = Ensemble([config.replace(seed=s) for s in range(models)], device=device)
    g = torch.Generator().manual_seed(0)
    B = config.batch_size
    x = torch.rand(models, B, config.n_in, generator=g).to(device)
    y = F.one_hot(torch.randint(0, config.n_out, (models, B), generator=g), config.n_out).float().to(device)
    xt = torch.rand(EVAL_BATCH, config.n_in, generator=g).to(device).expand(models, -1, -1)

    def timed(f, n):
        """The fastest of n calls after a warm-up: what the machine can do, not its worst moment."""
        f()
        best = math.inf
        for _ in range(n):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            f()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        return best

    train = timed(lambda: ens.train_step(x, y), TRAIN_BATCHES)
    test = timed(lambda: ens.predict(xt), 2)
    return {"train": train / (models * B), "test": test / (models * EVAL_BATCH)}


def _read(path):
    """The cached rates, or {} (none yet, or a file that is not one: measured again). Read with
    the records' limits: a crafted file in the cache made every dry run fail with RecursionError."""
    try:
        cached = read_json(path)
        return cached if isinstance(cached, dict) else {}
    except ValueError:
        return {}


def _usable(entry):
    return isinstance(entry, dict) and all(isinstance(entry.get(k), float) and math.isfinite(entry[k])
                                           and entry[k] > 0 for k in ("train", "test"))


def rates(config, device=None, threads=None):
    """`measure`'s result for this machine, from the cache or measured now.

    A measurement taken while other work keeps the CPU busy (load average
    above half the cores) says more about that work than about the machine:
    it is used for this estimate, with a warning, but not cached."""
    device = torch.device(device) if device is not None else default_device()
    threads = threads or torch.get_num_threads()
    key = machine_key(config, device, threads)
    if key in _this_process:
        return _this_process[key]
    path = cache_path()
    entry = _read(path).get(key)
    if _usable(entry):
        return entry
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = device.type == "cpu" and load > 0.5 * (os.cpu_count() or 1)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        entry = measure(config, device)
        entry["measured_in_seconds"] = round(time.perf_counter() - start, 2)
    finally:
        torch.set_num_threads(saved)
    _this_process[key] = entry
    if busy:
        log.warning("this machine is busy (load average %.1f on %d cores): the estimate measured now is "
                    "pessimistic and is not cached", load, os.cpu_count() or 1)
        return entry
    log.info("measured this machine's speed for the estimate in %.1f s (cached in %s)",
             entry["measured_in_seconds"], path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Another process may be adding its own measurement: read, add and replace under a lock.
        with FileLock(str(path) + ".lock", timeout=30):
            cached = _read(path)
            cached[key] = entry
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cached, indent=1))
            os.replace(tmp, path)
    except (OSError, Timeout) as error:      # a read-only cache costs a measurement per call, no more
        log.warning("could not cache the speed measurement in %s: %s", path, error)
    return entry


def estimate_seconds(configs, device=None, threads=None, done=None):
    """Training plus per-epoch evaluation of `configs`, in seconds on this machine;
    `done` maps a config's key to the epochs a checkpoint already holds."""
    total = 0.0
    for c in configs:
        r = rates(c, device, threads)
        n_train = c.train_subset or data.SIZES["train_subset"]
        n_test = c.test_subset or data.SIZES["test_subset"]
        epochs = c.epochs - min((done or {}).get(key(c), 0), c.epochs)
        total += epochs * (n_train * r["train"] + n_test * r["test"])
    return total
