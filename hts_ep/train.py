"""Training an ensemble: epochs of EP batches, evaluation, records, checkpoints.

Each model draws its own shuffle from its own random stream, so a model
trained inside an ensemble sees exactly what it would see trained alone.
A checkpoint after every epoch means an interrupt loses at most the epoch in
progress; a model whose state or weights turn non-finite is recorded as
diverged and retired, and the rest of the ensemble trains on.
"""
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__, data
from .config import check_ensemble
from .network import Ensemble

# Bump when a change alters the numbers training produces: it is part of
# every cache key, so stale results are never mistaken for current ones.
NUMERICS_VERSION = 2   # 2: the nudged phase branches off the free run (Config.nudge_from)
# Test-time batch: relaxation is per sample, so this changes speed and memory, not results.
EVAL_BATCH = 1000


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
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path, obj):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def environment(device):
    return {"hts_ep": __version__, "numerics_version": NUMERICS_VERSION, "torch": torch.__version__,
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


def load_checkpoint(path, configs):
    """The saved state if `path` holds a readable checkpoint of these very configs."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception as error:
        print(f"warning: ignoring unreadable checkpoint {path} ({error}); starting over")
        return None
    if state.get("configs") != [c.to_dict() for c in configs]:
        print(f"warning: checkpoint {path} belongs to other configurations; starting over")
        return None
    return state


def train(configs, data_root=None, device=None, progress=True, checkpoint=None,
          eval_batch_size=EVAL_BATCH, on_epoch=None):
    """Train the models of `configs` as one ensemble; return one record per model.

    `checkpoint`: a file updated after every epoch; a later call with the same
    configurations resumes from it. `on_epoch(records)` is called after each epoch.
    """
    check_ensemble(configs)
    ens = Ensemble(configs, device=device)
    c0 = configs[0]
    train_split = data.subset(data.load(c0.dataset, data_root, train=True, device=ens.device),
                              c0.train_subset)
    test_split = data.subset(data.load(c0.dataset, data_root, train=False, device=ens.device),
                             c0.test_subset)
    env = environment(ens.device)
    env["ensemble_size"] = len(configs)
    records = [new_record(c, env) for c in configs]

    state = load_checkpoint(checkpoint, configs)
    if state is not None:
        ens.load_state_dict(state["ensemble"])
        records = state["records"]
        print(f"resuming {len(configs)} models from checkpoint {checkpoint} at epoch "
              f"{len(records[0]['epochs']) + 1}", flush=True)
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
            payload = {"configs": [c.to_dict() for c in configs], "records": records,
                       "ensemble": ens.state_dict()}
            atomic_write(checkpoint, lambda f: torch.save(payload, f))
        if progress:
            print(epoch_summary(records), flush=True)
        if on_epoch is not None:
            on_epoch(records)
    return records
