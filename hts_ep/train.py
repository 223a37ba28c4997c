"""Training an ensemble: epochs of EP batches, evaluation, records, checkpoints.

Each model draws its own shuffle from its own random stream, so a model
trained inside an ensemble sees exactly what it would see trained alone.
A checkpoint after every epoch means an interrupt loses at most the epoch in
progress; a model whose state or weights turn non-finite is recorded as
diverged and retired, and the rest of the ensemble trains on.
"""
import dataclasses
import json
import logging
import math
import os
import pickle
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__, data
from .config import check_ensemble
from .network import Ensemble, default_device

# Bump when a change alters the numbers training produces: it is part of
# every cache key, so stale results are never mistaken for current ones.
log = logging.getLogger(__name__)
NUMERICS_VERSION = 2   # 2: the nudged phase branches off the free run (Config.nudge_from)
# Test-time batch: relaxation is per sample, so this changes speed and memory, not results.
EVAL_BATCH = 1000


class InputError(ValueError):
    """Input that cannot be trained (device, output path, ...): the message says which and why."""


def check_device(device):
    """The torch.device `device` names, if this machine has it (None: the default device).

    Checked before any work: a device that does not exist otherwise fails with
    a traceback from deep inside the ensemble's construction."""
    if device is None:
        return default_device()
    dev = check_device_name(device)
    try:
        torch.empty(1, device=dev)
    except Exception as error:   # torch raises RuntimeError, AssertionError, ... per backend
        reason = " ".join(str(error).split())[:200]
        raise InputError(f"--device {device!r} is not available on this machine ({reason})") from None
    return dev


def check_device_name(device):
    """torch.device(device), or InputError if that is no device name at all."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1 ...)") from None


def check_writable(path, what):
    """Fail now, not after hours of training, if `path` cannot be written as a file.

    Probes the nearest existing folder with a temporary file (removed at once):
    permission bits do not tell (root ignores them, read-only mounts do not show)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name")
    check_writable_dir(path.parent, what, path)


def check_writable_dir(folder, what, target=None):
    """Fail now if files cannot be created in `folder` (made on first write if missing)."""
    target = target or folder
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} {target} cannot be written: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InputError(f"{what} {target} cannot be written: {existing} is not writable "
                         f"({error.strerror})") from None


def atomic_write(path, write):
    """Write through a temporary file in the same folder, then rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; a store on a shared file system must be
        # readable by the others who sweep into it, so apply the usual umask.
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _current_umask()


def json_safe(obj):
    """`obj` with every non-finite float replaced by None: records are strict JSON
    (NaN and Infinity are not JSON, and many readers reject them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path, obj):
    text = json.dumps(json_safe(obj), indent=1, allow_nan=False)
    atomic_write(path, lambda f: f.write(text.encode()))


def environment(device):
    return {"hts_ep": __version__, "numerics_version": NUMERICS_VERSION, "torch": str(torch.__version__),
            "python": platform.python_version(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "threads": torch.get_num_threads()}


def new_record(config, env):
    return {"config": config.to_dict(), "environment": env, "epochs": [],
            "diverged_epoch": None, "complete": False}


@torch.no_grad()
def evaluate(ens, split, batch_size=EVAL_BATCH):
    """Test accuracy per model, free phase only (argmax of the output layer)."""
    M = len(ens)
    correct = torch.zeros(M, device=ens.device)
    for start in range(0, len(split.y), batch_size):
        x = split.x[start:start + batch_size].expand(M, -1, -1)
        o, _ = ens.predict(x)
        correct += (o.argmax(-1) == split.y[start:start + batch_size]).sum(-1)
    return (correct / len(split.y)).tolist()


def batches(ens, n, batch_size):
    """Per-model shuffled index batches [M, B] (the last batch may be smaller)."""
    perms = torch.stack([torch.randperm(n, generator=g) for g in ens.generators]).to(ens.device)
    for start in range(0, n, batch_size):
        yield perms[:, start:start + batch_size]


def train_epoch(ens, train, progress=None):
    """One epoch; returns per-model running train accuracy and mean residuals."""
    M, n, n_out = len(ens), len(train.y), ens.W2.shape[1]
    correct = torch.zeros(M, device=ens.device)
    res_free = torch.zeros(M, device=ens.device)
    res_nudge = torch.zeros(M, device=ens.device)
    count = seen = 0
    for k, idx in enumerate(batches(ens, n, ens.configs[0].batch_size)):
        labels = train.y[idx]                                   # [M, B]
        o0, rf, rn = ens.train_step(train.x[idx], F.one_hot(labels, n_out).float())
        bad = ~torch.isfinite(rn) | ~torch.isfinite(o0).flatten(1).all(1)
        if bad.any():
            ens.retire(bad & ens.alive)
        correct += (o0.argmax(-1) == labels).sum(-1)
        res_free += rf
        res_nudge += rn
        count += 1
        seen += idx.shape[1]
        if progress is not None:
            progress.update(1)
            if k % 20 == 0:
                alive = ens.alive.float()
                acc = (correct * alive).sum() / alive.sum().clamp(min=1) / seen
                progress.set_postfix(train_acc=f"{100 * acc.item():.2f}%")
    return (correct / n).tolist(), (res_free / count).tolist(), (res_nudge / count).tolist()


def epoch_summary(records):
    """One line: the epoch, its time, and the test accuracy of every model."""
    last = [r["epochs"][-1] for r in records]
    accs = " ".join("div" if e["test_acc"] is None else f"{100 * e['test_acc']:.2f}" for e in last)
    return f"epoch {last[0]['epoch']}/{records[0]['config']['epochs']}: {last[0]['seconds']:.1f} s, test % {accs}"


def check_record(record, config, complete=True):
    """Raise ValueError saying what is wrong unless `record` is a well-formed record of
    `config` (with all its epochs if `complete`). Records and checkpoints come from a
    store others can write to: nothing in them is trusted before this check."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object, not {type(record).__name__}")
    if record.get("config") != config.to_dict():
        raise ValueError("written for another configuration")
    epochs = record.get("epochs")
    if not isinstance(epochs, list):
        raise ValueError("no list of epochs")
    if complete and (record.get("complete") is not True or len(epochs) != config.epochs):
        raise ValueError(f"incomplete: {len(epochs)} of {config.epochs} epochs")
    if len(epochs) > config.epochs:
        raise ValueError(f"{len(epochs)} epochs, more than the {config.epochs} configured")
    diverged = record.get("diverged_epoch")
    if diverged is not None and (type(diverged) is not int or not 1 <= diverged <= len(epochs)):
        raise ValueError(f"diverged_epoch={diverged!r} is not one of its epochs")
    for i, e in enumerate(epochs, 1):
        if not isinstance(e, dict) or e.get("epoch") != i:
            raise ValueError(f"epoch {i} is missing or out of order")
        for name in ("seconds", "train_acc", "test_acc", "residual_free", "residual_nudge"):
            v = e.get(name)
            if v is not None and (type(v) not in (int, float) or not math.isfinite(v)):
                raise ValueError(f"epoch {i}: {name}={v!r} is not a finite number")
        if e.get("test_acc") is None and (diverged is None or i < diverged):
            raise ValueError(f"epoch {i} has no test accuracy but the model did not diverge")


def checkpoint_epochs(state, configs):
    """The epochs `state` holds, if it is a checkpoint of these configs with well-formed
    records; else ValueError saying why. Its tensors are not looked at: the sweep's plan
    reads checkpoints memory-mapped with this, training checks the tensors too."""
    if not isinstance(state, dict) or set(state) != {"configs", "records", "ensemble"}:
        raise ValueError("not a checkpoint of this program")
    saved = state["configs"]
    if saved != [c.to_dict() for c in configs]:
        changed = []
        if isinstance(saved, list) and len(saved) == len(configs):
            changed = sorted({k for s, c in zip(saved, configs) if isinstance(s, dict)
                              for k, v in c.to_dict().items() if s.get(k) != v})
        raise ValueError("it holds other configurations" + (
            f" (they differ in {', '.join(changed)}; a changed parameter is a new run)" if changed else ""))
    records = state["records"]
    if not isinstance(records, list) or len(records) != len(configs):
        raise ValueError("its records do not match its models")
    for r, c in zip(records, configs):
        check_record(r, c, complete=False)
    epochs = {len(r["epochs"]) for r in records}
    if len(epochs) != 1:
        raise ValueError("its models stopped at different epochs")
    return epochs.pop()


def check_checkpoint(state, configs, ens):
    """Raise ValueError unless `state` is a checkpoint of these configs whose tensors
    fit the freshly built ensemble `ens` (same names, shapes and dtypes)."""
    checkpoint_epochs(state, configs)
    want, have = ens.state_dict(), state["ensemble"]
    if not isinstance(have, dict) or set(have) != set(want):
        raise ValueError("its ensemble state has other entries")
    for name in want:
        w, h = want[name], have[name]
        if isinstance(w, torch.Tensor):
            w, h = [w], [h]
        if not isinstance(h, (list, tuple)) or len(h) != len(w) or not all(
                isinstance(b, torch.Tensor) and b.shape == a.shape and b.dtype == a.dtype
                for a, b in zip(w, h)):
            raise ValueError(f"its tensor {name!r} does not fit the models' shapes")


def load_checkpoint(path, configs, ens):
    """The saved state if `path` holds a valid checkpoint of these very configs, else None.

    Read with weights_only=True: tensors and plain data only. A full unpickler
    would run whatever code a crafted file names, and the store may be on a
    shared file system where others can write. Anything unreadable or invalid
    is reported and ignored: training starts over (and overwrites it)."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        check_checkpoint(state, configs, ens)
    except Exception as error:   # unpickling refused, not a zip, failed check: never fatal
        if isinstance(error, pickle.UnpicklingError):
            # torch's own message suggests weights_only=False: the one thing not to do here.
            reason = "it holds more than tensors and plain data, and was not unpickled (it could run code)"
        else:
            reason = " ".join(str(error).split())[:300]
        log.warning("ignoring checkpoint %s: %s; starting over", path, reason)
        return None
    return state


def train(configs, data_root=None, device=None, progress=True, checkpoint=None,
          eval_batch_size=EVAL_BATCH, on_epoch=None):
    """Train the models of `configs` as one ensemble; return one record per model.

    `checkpoint`: a file updated after every epoch; a later call with the same
    configurations resumes from it. `on_epoch(records)` is called after each epoch.
    """
    # Everything that can be checked is checked before the first batch.
    check_ensemble(configs)
    dev = check_device(device)
    c0 = configs[0]
    data.check_config(c0)
    if checkpoint is not None:
        check_writable(checkpoint, "checkpoint")
    train_split, test_split = (
        data.scaled(data.subset(data.load(c0.dataset, data_root, train=part, device=dev), n, name), c0)
        for part, n, name in ((True, c0.train_subset, "train_subset"), (False, c0.test_subset, "test_subset")))
    ens = Ensemble(configs, device=dev)
    env = environment(ens.device)
    env["ensemble_size"] = len(configs)
    # The counts actually used, so that a record never claims more samples than it saw.
    env["train_samples"], env["test_samples"] = len(train_split.y), len(test_split.y)
    if c0.inputs != "unit":     # the statistics the inputs were scaled with, and eta1's factor
        env["input_stats"] = dataclasses.asdict(data.INPUT_STATS[c0.dataset])
    records = [new_record(c, env) for c in configs]

    state = load_checkpoint(checkpoint, configs, ens)
    if state is not None:
        ens.load_state_dict(state["ensemble"])
        records = state["records"]
        log.info("resuming %d models from checkpoint %s at epoch %d", len(configs), checkpoint,
                 len(records[0]["epochs"]) + 1)
    first_epoch = len(records[0]["epochs"]) + 1

    n_batches = -(-len(train_split.y) // c0.batch_size)
    for epoch in range(first_epoch, c0.epochs + 1):
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{c0.epochs} ({len(configs)} models)",
                       unit="batch", leave=False)
        start = time.perf_counter()
        train_acc, res_free, res_nudge = train_epoch(ens, train_split, bar)
        test_acc = evaluate(ens, test_split, eval_batch_size)
        finite = ens.finite_models()
        ens.retire(~finite & ens.alive)
        seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
        alive = ens.alive.tolist()
        for m, rec in enumerate(records):
            if rec["diverged_epoch"] is None and not alive[m]:
                rec["diverged_epoch"] = epoch
            ok = rec["diverged_epoch"] is None
            rec["epochs"].append({
                "epoch": epoch, "seconds": seconds,
                "train_acc": train_acc[m] if ok else None, "test_acc": test_acc[m] if ok else None,
                "residual_free": res_free[m] if ok else None, "residual_nudge": res_nudge[m] if ok else None})
            rec["complete"] = epoch == c0.epochs
        if checkpoint is not None:
            # Plain data only (a JSON round trip drops any str or float subclass), so that
            # the checkpoint loads under weights_only=True.
            payload = {"configs": [c.to_dict() for c in configs], "ensemble": ens.state_dict(),
                       "records": json.loads(json.dumps(json_safe(records), allow_nan=False))}
            atomic_write(checkpoint, lambda f: torch.save(payload, f))
        # The heartbeat of long runs, in logs too (a progress bar leaves nothing there).
        log.info("%s", epoch_summary(records))
        if on_epoch is not None:
            on_epoch(records)
    return records
