"""Training an ensemble: epochs of EP batches, evaluation, records, checkpoints.

Each model draws its own shuffle from its own random stream, so a model
trained inside an ensemble sees exactly what it would see trained alone.
A checkpoint after every epoch means an interrupt loses at most the epoch in
progress; a model whose state or weights turn non-finite is recorded as
diverged and retired, and the rest of the ensemble trains on.
"""
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import pickle
import platform
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__, data
from .config import Config, check_ensemble, kernel_choice
from .network import Ensemble, default_device

# Bump when a change alters the numbers training produces: it is part of
# every cache key, so stale results are never mistaken for current ones.
log = logging.getLogger(__name__)
NUMERICS_VERSION = 2   # 2: the nudged phase branches off the free run (Config.nudge_from)
# Test-time batch: relaxation is per sample, so this changes speed and memory, not results.
EVAL_BATCH = 1000


def key(config):
    """Hash of every parameter and the numerics version: the record's address."""
    blob = json.dumps({"config": config.to_dict(), "numerics": NUMERICS_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def per_model_bytes(config, batch):
    """Memory one model of an ensemble needs, in bytes, for a batch of `batch` samples.

    Weights and time steps (W1, b1, W2, b2, eps_hidden: 4 (H n_in + O H + 2 H + O)),
    plus the training step's live tensors at its peak, per model: its gathered
    input x (B n_in), one-hot y (B O) and 7 [B, H] float32 tensors. The fused
    and Triton paths peak at 5 (drive, kept state, free and nudged states,
    hb - h0), the PyTorch path (HTS_EP_KERNEL=torch) at 6 (two states of the
    running step plus the step's temporary), and one more is margin. Measured peaks
    (benchmarks/bench_relax.py) stay below this. The fused kernel's own scratch
    (padded copies of W2, and per thread of up to 3 x 24 sample rows) is under
    1 MiB per thread. Not counted: data sets held
    on the device (shared by all models), the allocator's caching slack on
    CUDA, and evaluation batches larger than `batch` (train.evaluate uses 1000:
    pass the larger of the two).
    """
    H, n_in, O, B = config.n_hidden, config.n_in, config.n_out, batch
    weights = 4 * (H * n_in + O * H + 2 * H + O)
    activations = 4 * B * (n_in + O + 7 * H + 4 * O)
    return weights + activations



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


# The device types training runs on (the PyTorch path, the fused CPU kernel, the Triton
# kernel); torch knows others (meta, mps, xla ...) on which it would fail mid-training.
DEVICE_TYPES = ("cpu", "cuda")


def check_device_name(device):
    """torch.device(device), or InputError if that is no device name, or none training runs on."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1 ...)") from None
    if dev.type not in DEVICE_TYPES:
        raise InputError(f"--device {device!r} is not supported; allowed: {', '.join(DEVICE_TYPES)}, cuda:N")
    return dev


def check_kernel():
    """InputError unless HTS_EP_KERNEL names a relaxation code (it is read inside the first step)."""
    try:
        kernel_choice()
    except ValueError as error:
        raise InputError(str(error)) from None


def device_memory(dev):
    """Bytes of memory the device has in all (the host's RAM for the CPU)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(configs, dev):
    """InputError if the ensemble cannot fit the device's whole memory: it would fail in an
    allocation, with a traceback, or drive the machine into swap."""
    need = len(configs) * per_model_bytes(configs[0], max(configs[0].batch_size, EVAL_BATCH))
    have = device_memory(dev)
    if need > have:
        raise InputError(f"{len(configs)} models of n_hidden={configs[0].n_hidden} need about "
                         f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB of {dev}; "
                         "train fewer models at once or smaller ones")


def check_writable(path, what):
    """Fail now, not after hours of training, if `path` cannot be written as a file.

    Probes the nearest existing folder with a temporary file (removed at once):
    permission bits do not tell (root ignores them, read-only mounts do not show)."""
    path = Path(path)
    existing = path.absolute().parent
    while not os.path.lexists(existing):
        existing = existing.parent
    try:
        longest = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):       # not reported by this file system: its write will say
        longest = None
    # First: any other look at the path fails with "File name too long" itself.
    if longest is not None and len(path.name.encode()) > longest:
        raise InputError(f"{what}: the file name {path.name[:40]}... is longer than the {longest} bytes "
                         "a file name may have here")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name")
    check_writable_dir(path.parent, what, path)


def check_out(path):
    """Fail now unless `path` is free or a records file of this package: --out replaces the file,
    and a file someone made (a thesis.tex) is not ours to replace."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        return
    try:
        records = read_json(path)
        if not isinstance(records, dict) or set(records) != {"records"} or not isinstance(records["records"], list):
            raise ValueError('it does not hold {"records": [...]}')
        for r in records["records"]:
            check_record(r, complete=False)
    except ValueError as error:
        raise InputError(f"--out {path} exists and is not a records file of hts-ep ({error}); "
                         "give another name, or remove it") from None


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


def save_to(payload, f):
    torch.save(payload, f)


def atomic_write(path, write):
    """Write through a temporary file in the same folder, then rename: never half a file."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A short prefix of its own: a temporary name built from a long file name would pass
        # the file system's limit where the file's own name does not.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hts-ep-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; a store on a shared file system must be
        # readable by the others who sweep into it, so apply the usual umask.
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(error, OSError):      # disk full, quota, a folder at the path ...
            raise InputError(f"{path} could not be written ({error.strerror or error})") from None
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


def write_json(path, obj, indent=1):
    text = json.dumps(json_safe(obj), indent=indent, allow_nan=False)
    atomic_write(path, lambda f: f.write(text.encode()))


# Limits on a JSON file read from a store others write to (chosen): a record of 50 epochs is
# about 12 KB and nests 4 levels, a records file of 100 models about 1.2 MB and 6 levels. Past
# them a file is refused before it is parsed: Python's parser recurses once per level (a file
# of nested brackets raised RecursionError in every command that read the store) and holds
# the whole text in memory.
MAX_JSON_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 32
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_depth(blob):
    """The deepest nesting of brackets in JSON text `blob` (bytes), strings left out."""
    import numpy as np
    skeleton = np.frombuffer(_STRINGS.sub(b'""', blob), dtype=np.uint8)
    steps = np.zeros(len(skeleton), dtype=np.int32)
    steps[(skeleton == ord("[")) | (skeleton == ord("{"))] = 1
    steps[(skeleton == ord("]")) | (skeleton == ord("}"))] = -1
    return int(steps.cumsum().max(initial=0))


def read_json(path, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH):
    """The strict JSON value in the file `path`, or ValueError saying why not (unreadable,
    not a regular file, larger than `max_bytes`, nested deeper than `max_depth`, not JSON)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ValueError("a folder, not a record file")
        if not path.is_file():      # a FIFO blocks the reader for ever, a device never ends
            raise ValueError("not a regular file")
        with open(path, "rb") as f:
            blob = f.read(max_bytes + 1)
    except OSError as error:
        raise ValueError(f"cannot be read ({error.strerror or error})") from None
    if len(blob) > max_bytes:
        raise ValueError(f"larger than the {max_bytes} bytes a record file may have")
    if json_depth(blob) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    try:
        return json.loads(blob, parse_constant=refuse)
    except (ValueError, UnicodeDecodeError) as error:      # JSONDecodeError is a ValueError
        raise ValueError(f"not valid JSON ({' '.join(str(error).split())[:100]})") from None


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


# The record schema (what train() writes; the book reads nothing else). Records written before a
# field existed lack it: `finished`, `key` and `profile` are optional, so is every environment
# entry but where present each has its type; the config may lack fields added later (Config's
# default then holds, as LATER_FIELDS and stats.LEGACY say).
RECORD_KEYS = {"config", "environment", "epochs", "diverged_epoch", "complete"}
OPTIONAL_RECORD_KEYS = {"finished", "key", "profile"}
EPOCH_KEYS = ("epoch", "seconds", "train_acc", "test_acc", "residual_free", "residual_nudge")
ENVIRONMENT = {  # key -> (check, what it allows)
    "hts_ep": (lambda v: isinstance(v, str), "a text"),
    "torch": (lambda v: isinstance(v, str), "a text"),
    "python": (lambda v: isinstance(v, str), "a text"),
    "device": (lambda v: isinstance(v, str), "a text"),
    "device_name": (lambda v: isinstance(v, str), "a text"),
    "numerics_version": (lambda v: type(v) is int and v >= 1, "an integer >= 1"),
    "threads": (lambda v: type(v) is int and v >= 1, "an integer >= 1"),
    "ensemble_size": (lambda v: type(v) is int and v >= 1, "an integer >= 1"),
    "train_samples": (lambda v: type(v) is int and v >= 0, "an integer >= 0"),
    "test_samples": (lambda v: type(v) is int and v >= 0, "an integer >= 0"),
    "input_stats": (lambda v: isinstance(v, dict) and set(v) == {"mean", "std", "eta1_gain"}
                    and all(_number(x) and x > 0 for k, x in v.items() if k != "mean") and _number(v["mean"]),
                    "an object of mean, std and eta1_gain, finite numbers"),
}
FINISHED = "%Y-%m-%dT%H:%M:%SZ"


def _number(v):
    return type(v) in (int, float) and math.isfinite(v)


def _short(v):
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_record(record, config=None, complete=True):
    """Raise ValueError saying what is wrong unless `record` is a well-formed record (of `config`,
    when given; with all its epochs if `complete`). Records and checkpoints come from a store
    others can write to: nothing in them is trusted before this check, every field is."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object, not {type(record).__name__}")
    unknown = sorted(set(record) - RECORD_KEYS - OPTIONAL_RECORD_KEYS, key=str)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    lacking = sorted(RECORD_KEYS - set(record))
    if lacking:
        raise ValueError(f"no {lacking[0]!r}")
    saved = record["config"]
    if not isinstance(saved, dict):
        raise ValueError(f"config={_short(saved)} is not a JSON object")
    if config is not None and saved != config.to_dict():
        raise ValueError("written for another configuration")
    if config is None:
        try:
            config = Config.from_dict(saved)
        except (TypeError, ValueError) as error:
            raise ValueError(f"config: {' '.join(str(error).split())[:200]}") from None
    env = record["environment"]
    if not isinstance(env, dict):
        raise ValueError(f"environment={_short(env)} is not a JSON object")
    for k, v in env.items():
        if k in ENVIRONMENT:
            ok, allowed = ENVIRONMENT[k]
            if not ok(v):
                raise ValueError(f"environment: {k}={_short(v)} is not allowed; allowed: {allowed}")
        elif not (v is None or isinstance(v, (str, bool)) or _number(v)):
            raise ValueError(f"environment: {_short(k)}={_short(v)} is not a text or a number")
    for k in ("key", "profile"):
        if k in record and not isinstance(record[k], str):
            raise ValueError(f"{k}={_short(record[k])} is not a text")
    if "finished" in record:
        try:
            datetime.strptime(record["finished"], FINISHED)
        except (TypeError, ValueError):
            raise ValueError(f"finished={_short(record['finished'])} is not a date "
                             "(YYYY-MM-DDTHH:MM:SSZ)") from None
    if type(record["complete"]) is not bool:
        raise ValueError(f"complete={_short(record['complete'])} is not true or false")
    epochs = record["epochs"]
    if not isinstance(epochs, list):
        raise ValueError("no list of epochs")
    if (complete or record["complete"]) and (record["complete"] is not True or len(epochs) != config.epochs):
        raise ValueError(f"incomplete: {len(epochs)} of {config.epochs} epochs")
    if len(epochs) > config.epochs:
        raise ValueError(f"{len(epochs)} epochs, more than the {config.epochs} configured")
    diverged = record["diverged_epoch"]
    if diverged is not None and (type(diverged) is not int or not 1 <= diverged <= len(epochs)):
        raise ValueError(f"diverged_epoch={_short(diverged)} is not one of its epochs")
    for i, e in enumerate(epochs, 1):
        if not isinstance(e, dict) or e.get("epoch") != i or type(e.get("epoch")) is not int:
            raise ValueError(f"epoch {i} is missing or out of order")
        extra = sorted(set(e) - set(EPOCH_KEYS), key=str)
        if extra:
            raise ValueError(f"epoch {i} has unknown key {extra[0]!r}")
        for name in EPOCH_KEYS[1:]:
            if name not in e:
                raise ValueError(f"epoch {i} lacks {name}")
        if not (_number(e["seconds"]) and e["seconds"] >= 0):
            raise ValueError(f"epoch {i}: seconds={_short(e['seconds'])} is not a finite number >= 0")
        for name in ("train_acc", "test_acc"):
            v = e[name]
            if v is not None and not (_number(v) and 0 <= v <= 1):
                raise ValueError(f"epoch {i}: {name}={_short(v)} is not in [0, 1]")
        for name in ("residual_free", "residual_nudge"):
            v = e[name]
            if v is not None and not (_number(v) and v >= 0):
                raise ValueError(f"epoch {i}: {name}={_short(v)} is not a finite number >= 0")
        if diverged is None or i < diverged:
            if e["test_acc"] is None:
                raise ValueError(f"epoch {i} has no test accuracy but the model did not diverge")
        elif e["test_acc"] is not None:
            raise ValueError(f"diverged at epoch {diverged} yet has a test accuracy at epoch {i}")


class NotACheckpoint(ValueError):
    """A file that is no checkpoint of this package."""


class OtherRun(ValueError):
    """A checkpoint of other configurations than the ones being trained."""


def checkpoint_epochs(state, configs):
    """The epochs `state` holds, if it is a checkpoint of these configs with well-formed
    records; else ValueError saying why. Its tensors are not looked at: the sweep's plan
    reads checkpoints memory-mapped with this, training checks the tensors too."""
    if not isinstance(state, dict) or set(state) != {"configs", "records", "ensemble"}:
        raise NotACheckpoint("not a checkpoint of this program")
    saved = state["configs"]
    if saved != [c.to_dict() for c in configs]:
        changed = []
        if isinstance(saved, list) and len(saved) == len(configs):
            changed = sorted({k for s, c in zip(saved, configs) if isinstance(s, dict)
                              for k, v in c.to_dict().items() if s.get(k) != v})
        raise OtherRun("it holds other configurations" + (
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
    """Raise ValueError unless `state` is a checkpoint of these configs whose every field fits
    the freshly built ensemble `ens`: tensors of the same names, shapes and dtypes, finite; the
    hidden time steps its seeds draw; learning rates and alive flags that agree with its
    records; random states a generator takes."""
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
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in h):
            raise ValueError(f"its tensor {name!r} holds non-finite values")
    if not torch.equal(have["eps_hidden"], want["eps_hidden"]):
        raise ValueError("its hidden time steps are not the ones its seeds draw")
    for m, (r, alive) in enumerate(zip(state["records"], have["alive"].tolist()), 1):
        if alive != (r["diverged_epoch"] is None):
            raise ValueError(f"model {m} is {'alive' if alive else 'diverged'} in its tensors but "
                             f"{'diverged' if alive else 'alive'} in its record")
    alive = have["alive"].view(-1, 1, 1)
    for fresh, saved in zip(want["eta"], have["eta"]):
        if not torch.equal(saved, torch.where(alive, fresh, torch.zeros_like(fresh))):
            raise ValueError("its learning rates are not its models'")
    scratch = torch.Generator()
    for m, g in enumerate(have["generators"], 1):
        try:
            scratch.set_state(g)
        except RuntimeError:
            raise ValueError(f"the random state of model {m} is not a generator state") from None


def read_checkpoint(path):
    """The plain data and tensors of the file `path` (never unpickled: see load_checkpoint), or
    ValueError saying why it cannot be read."""
    if not Path(path).is_file():    # a FIFO blocks the reader for ever, a device never ends
        raise ValueError("not a regular file")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:   # unpickling refused, not a zip, truncated, unreadable: never fatal
        if isinstance(error, pickle.UnpicklingError):
            # torch's own message suggests weights_only=False: the one thing not to do here.
            raise ValueError("it holds more than tensors and plain data, and was not unpickled "
                             "(it could run code)") from None
        raise ValueError(" ".join(str(error).split())[:300]) from None


def check_resumable(path, configs):
    """InputError unless `path` is absent or a checkpoint of these very configs (whatever the
    state of its tensors): --checkpoint would otherwise overwrite a file of another run, or one
    that is no checkpoint at all. `--replace-checkpoint` skips this."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        return
    try:
        state = read_checkpoint(path)
    except ValueError as error:
        raise InputError(f"--checkpoint {path} is not a checkpoint of hts-ep ({error}); give another file, "
                         "or --replace-checkpoint to overwrite it") from None
    try:
        checkpoint_epochs(state, configs)
    except NotACheckpoint as error:
        raise InputError(f"--checkpoint {path} is not a checkpoint of hts-ep ({error}); give another file, "
                         "or --replace-checkpoint to overwrite it") from None
    except OtherRun as error:
        detail = str(error).partition(" (")[2].rstrip(")") or "other models"
        raise InputError(f"--checkpoint {path} holds another run ({detail}); give another file, "
                         "or --replace-checkpoint to start over in it") from None
    except Exception:       # ours, for these models, but damaged: training says so and starts over
        pass


def load_checkpoint(path, configs, ens):
    """The saved state if `path` holds a valid checkpoint of these very configs, else None.

    Read with weights_only=True: tensors and plain data only. A full unpickler
    would run whatever code a crafted file names, and the store may be on a
    shared file system where others can write. Anything unreadable or invalid
    is reported and ignored: training starts over (and overwrites it)."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = read_checkpoint(path)
        check_checkpoint(state, configs, ens)
    except Exception as error:      # ValueError from the checks; anything a crafted file provokes
        reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        log.warning("ignoring checkpoint %s: %s; starting over", path, " ".join(reason.split())[:300])
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
    check_kernel()
    dev = check_device(device)
    c0 = configs[0]
    data.check_config(c0)
    check_memory(configs, dev)
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
            atomic_write(checkpoint, functools.partial(save_to, payload))
        # The heartbeat of long runs, in logs too (a progress bar leaves nothing there).
        log.info("%s", epoch_summary(records))
        if on_epoch is not None:
            on_epoch(records)
    return records
