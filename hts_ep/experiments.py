"""Declared experiments: specs x profiles -> a cached store of per-model records.

A spec (experiments/<name>.yaml) is a grid over Config fields; a profile
(experiments/profiles.yaml) scales it (seeds, epochs, samples) without
changing its meaning. Those four are the profile's alone: a spec that sets
one (in `fixed` or as an axis) is refused, not silently overridden. Every model of the grid has one record in
results/<profile>/<key>.json, where the key hashes its full configuration
and the numerics version of the training code: rerunning a sweep trains only
what is missing, and a change of any parameter is a new key.

Missing runs are grouped into ensembles (same data set and shapes, bounded
size) and trained in-process or on a Dask cluster, each group checkpointed
after every epoch so that an interrupted sweep resumes where it stopped.
"""
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from . import data
from .config import SEED_LIMIT, SHARED_FIELDS, Config
from .train import (  # noqa: F401  key and per_model_bytes: the store's address and a group's size, re-exported
    InputError,
    check_device,
    check_device_name,
    check_record,
    check_writable_dir,
    checkpoint_epochs,
    key,
    per_model_bytes,
    read_json,
    train,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
# In a source checkout (an editable install): the repository's experiments/ and results/.
# Installed from a wheel: the specs and profiles shipped as hts_ep/experiments_data/, and
# results/ in the current folder. HTS_EP_SPECS and HTS_EP_RESULTS override either.
CHECKOUT = (REPO / "pyproject.toml").is_file() and (REPO / "experiments" / "profiles.yaml").is_file()
SPEC_DIR = Path(os.environ.get("HTS_EP_SPECS") or (REPO / "experiments" if CHECKOUT
                                                   else Path(__file__).resolve().parent / "experiments_data"))
RESULTS = Path(os.environ.get("HTS_EP_RESULTS") or (REPO / "results" if CHECKOUT else Path.cwd() / "results"))
CONFIG_FIELDS = {f.name for f in dataclasses.fields(Config)}
log = logging.getLogger(__name__)
PROFILE_KEYS = {"description", "seeds", "epochs", "train_subset", "test_subset"}


class SpecError(ValueError):
    """A spec, profile or grid that cannot be run; the message says why."""


class StoreError(RuntimeError):
    """The results store cannot be used as asked (a lock, a folder in a record's place, a lock
    held past the wait allowed); the message says which file and why."""


# Limits on what a spec or profile file may ask for (chosen). The largest spec, table1 at the
# paper profile, is 300 models; 10,000 is some 500,000 model-epochs at 50 epochs, weeks of a
# GPU. A YAML file may alias a list inside a list (anchors): 100,000 values once expanded is
# a thousand times the largest spec, and reached long before a crafted file fills the memory
# (nine levels of ten aliases are 10**9 values). Specs are a few hundred bytes.
MAX_MODELS = 10_000
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 32
MAX_YAML_BYTES = 2**20
PROFILE_FIELDS = ("seed", "epochs", "train_subset", "test_subset")     # the profile's alone
# How long a sweep waits for a model's lock that another process holds (HTS_EP_LOCK_WAIT or
# --lock-wait, in seconds; chosen): a day, longer than the largest group of the paper profile
# takes on the slowest machine measured (100 models x 50 epochs x 5.9 s per model-epoch = 8 h),
# so that a legitimate wait is not cut short, yet a lock that is never released ends. While it
# waits it says whom it waits for every LOCK_REPORT_EVERY seconds.
DEFAULT_LOCK_WAIT = 24 * 3600
LOCK_REPORT_EVERY = 300
OWNER_BYTES = 1024                      # an owner file is about 80 bytes
HOST_NAME = re.compile(r"[A-Za-z0-9._-]{1,253}")


def lock_wait_seconds(value=None):
    """Seconds to wait for a held lock: `value`, else HTS_EP_LOCK_WAIT, else DEFAULT_LOCK_WAIT."""
    if value is None:
        value = os.environ.get("HTS_EP_LOCK_WAIT")
        if value is None:
            return DEFAULT_LOCK_WAIT
        where = f"HTS_EP_LOCK_WAIT={value!r}"
    else:
        where = f"--lock-wait={value!r}"
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise StoreError(f"{where} is not a number of seconds > 0")
    return seconds


def _seconds(seconds):
    return f"{seconds:g} s" if seconds < 5400 else f"{seconds / 3600:g} h"


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line):
        super().__init__(f"duplicate key {key!r} at line {line}")


class _Loader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML keeps the last silently)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        k = loader.construct_object(key_node, deep=True)
        try:
            if k in seen:
                raise _DuplicateKey(k, key_node.start_mark.line + 1)
            seen.add(k)
        except TypeError:           # an unhashable key: construct_mapping says so
            pass
    return loader.construct_mapping(node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _expanded_size(value):
    """(values, depth) of `value` counted as if every alias were written out, stopping past
    MAX_YAML_VALUES or MAX_YAML_DEPTH: the cost of walking it is bounded by those limits."""
    count, deepest, stack = 0, 0, [(value, 1)]
    while stack and count <= MAX_YAML_VALUES and deepest <= MAX_YAML_DEPTH:
        v, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        if isinstance(v, dict):
            stack += [(x, depth + 1) for pair in v.items() for x in pair]
        elif isinstance(v, list):
            stack += [(x, depth + 1) for x in v]
    return count, deepest


# -- specs and profiles ------------------------------------------------------

# Profile keys, each with its check and what is allowed (named in the error).
def _seeds_ok(v):
    return (isinstance(v, list) and v and all(type(x) is int and 0 <= x < SEED_LIMIT for x in v)
            and len(set(v)) == len(v))


SEEDS_ALLOWED = "a non-empty list of distinct integers from 0 to 2**63 - 1"


PROFILE_SCHEMA = {
    "description": (lambda v: isinstance(v, str), "a text"),
    "seeds": (_seeds_ok, SEEDS_ALLOWED),
    "epochs": (lambda v: type(v) is int and v >= 1, "an integer >= 1"),
    "train_subset": (lambda v: type(v) is int and 0 <= v <= data.SIZES["train_subset"],
                     f"an integer from 0 (all) to {data.SIZES['train_subset']}"),
    "test_subset": (lambda v: type(v) is int and 0 <= v <= data.SIZES["test_subset"],
                    f"an integer from 0 (all) to {data.SIZES['test_subset']}"),
}
REQUIRED_PROFILE_KEYS = ("seeds", "epochs", "train_subset", "test_subset")
SPEC_KEYS = ("name", "description", "grid", "fixed")


def read_yaml(path, what):
    """The mapping at the top of a YAML file, or SpecError naming the file and what is wrong."""
    try:
        if Path(path).exists() and not Path(path).is_file():     # a FIFO would block for ever
            raise SpecError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            text = f.read(MAX_YAML_BYTES + 1)
        if len(text) > MAX_YAML_BYTES:
            raise SpecError(f"{path}: larger than the {MAX_YAML_BYTES} bytes a {what} file may have")
        raw = yaml.load(text, Loader=_Loader)
    except _DuplicateKey as error:
        raise SpecError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise SpecError(f"{path}: not valid YAML{at} ({getattr(error, 'problem', None) or error})") from None
    except RecursionError:
        raise SpecError(f"{path}: nested deeper than YAML can be read") from None
    except OSError as error:
        raise SpecError(f"{path}: cannot be read ({error.strerror or error})") from None
    count, depth = _expanded_size(raw)
    if count > MAX_YAML_VALUES:
        raise SpecError(f"{path}: expands to more than {MAX_YAML_VALUES} values (aliases of aliases?)")
    if depth > MAX_YAML_DEPTH:
        raise SpecError(f"{path}: nested deeper than {MAX_YAML_DEPTH} levels")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a {what} file must hold a mapping at the top level, "
                        f"not {type(raw).__name__ if raw is not None else 'nothing'}")
    return raw


def load_profiles():
    """Every profile, unchecked (`load_profile` checks the one it returns)."""
    return read_yaml(SPEC_DIR / "profiles.yaml", "profiles")


def check_profile(name, profile, path):
    """SpecError naming the file, the profile, the key and what it allows."""
    if not isinstance(profile, dict):
        raise SpecError(f"{path}: profile {name!r} must be a mapping with keys {', '.join(PROFILE_SCHEMA)}")
    unknown = sorted(set(profile) - set(PROFILE_SCHEMA), key=str)
    if unknown:
        raise SpecError(f"{path}: profile {name!r} has unknown key {unknown[0]!r}; "
                        f"allowed: {', '.join(PROFILE_SCHEMA)}")
    missing = [k for k in REQUIRED_PROFILE_KEYS if k not in profile]
    if missing:
        raise SpecError(f"{path}: profile {name!r} lacks {', '.join(missing)}; "
                        f"required: {', '.join(REQUIRED_PROFILE_KEYS)}")
    for k, value in profile.items():
        ok, allowed = PROFILE_SCHEMA[k]
        if not ok(value):
            raise SpecError(f"{path}: profile {name!r}, key {k!r}: {value!r} is not allowed; "
                            f"allowed: {allowed}")


def load_profile(name):
    profiles = load_profiles()
    if name not in profiles:
        raise SpecError(f"unknown profile {name!r}; allowed: {', '.join(map(str, profiles))}")
    check_profile(name, profiles[name], SPEC_DIR / "profiles.yaml")
    return profiles[name]


def spec_names():
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml") if p.stem != "profiles")


@dataclass
class Spec:
    name: str
    grid: dict                      # axis -> list of values ("a,b" axes take lists of pairs)
    fixed: dict = field(default_factory=dict)
    description: str = ""
    path: str = ""                  # the file it was read from, for error messages

    def configs(self, profile):
        """Every Config of the grid under `profile`, in grid order."""
        seeds = profile["seeds"]
        if len(set(seeds)) != len(seeds):
            raise SpecError(f"profile seeds have duplicates: {seeds}")
        points = math.prod(len(values) for values in self.grid.values())
        if points * len(seeds) > MAX_MODELS:
            raise SpecError(f"{self.path or self.name}: {points * len(seeds)} models ({points} grid points x "
                            f"{len(seeds)} seeds), more than the {MAX_MODELS} a sweep may plan")
        scale = {k: profile[k] for k in ("epochs", "train_subset", "test_subset")}
        axes = [(name.split(","), values) for name, values in self.grid.items()]
        out = []
        for combo in itertools.product(*(values for _, values in axes), seeds):
            values = dict(self.fixed, **scale, seed=combo[-1])
            for (names, _), value in zip(axes, combo[:-1]):
                values.update(zip(names, value) if len(names) > 1 else [(names[0], value)])
            try:
                config = Config(**values)
                data.check_config(config)
            except ValueError as error:       # Config's or the data set's check: name the file
                raise SpecError(f"{self.path or self.name}: {error}") from None
            out.append(config)
        return out


def load_spec(name):
    path = SPEC_DIR / f"{name}.yaml"
    if name == "profiles" or not path.exists():
        raise SpecError(f"unknown spec {name!r}; allowed: {', '.join(spec_names())}")
    raw = read_yaml(path, "spec")
    unknown = sorted(set(raw) - set(SPEC_KEYS), key=str)
    if unknown:
        raise SpecError(f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(SPEC_KEYS)}")
    grid, fixed = raw.get("grid") or {}, raw.get("fixed") or {}
    if not isinstance(grid, dict) or not isinstance(fixed, dict):
        raise SpecError(f"{path}: 'grid' and 'fixed' must be mappings of Config fields to values")
    if not grid:
        raise SpecError(f"spec {name!r} ({path}) has an empty grid")
    for axis, values in grid.items():
        names = str(axis).split(",")
        owned = [n for n in names if n in PROFILE_FIELDS and n != "seed"]
        if owned:
            raise SpecError(f"{path}: axis {owned[0]!r} is the profile's to set (seeds, epochs, train_subset, "
                            "test_subset: profiles.yaml); remove it from the spec")
        bad = [n for n in names if n not in CONFIG_FIELDS or n == "seed"]
        if bad:
            raise SpecError(f"{path}: unknown axis {bad[0]!r}; allowed: Config fields except seed "
                            f"({', '.join(sorted(CONFIG_FIELDS - {'seed'}))})")
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: axis {axis!r} needs a non-empty list of values")
        if len(names) > 1 and any(not isinstance(v, list) or len(v) != len(names) for v in values):
            raise SpecError(f"{path}: axis {axis!r} takes lists of {len(names)} values")
        if len({json.dumps(v) for v in values}) != len(values):
            raise SpecError(f"{path}: axis {axis!r} has duplicate values {values}")
    bad = [k for k in fixed if k not in CONFIG_FIELDS]
    if bad:
        raise SpecError(f"{path}: unknown parameter {bad[0]!r} in fixed; allowed: Config fields "
                        f"({', '.join(sorted(CONFIG_FIELDS))})")
    owned = [k for k in fixed if k in PROFILE_FIELDS]
    if owned:
        # The profile's value would win without a word: the spec's is refused instead.
        raise SpecError(f"{path}: {owned[0]!r} in fixed is the profile's to set (seeds, epochs, train_subset, "
                        "test_subset: profiles.yaml); remove it from the spec")
    for k in ("name", "description"):
        if k in raw and not isinstance(raw[k], str):
            raise SpecError(f"{path}: key {k!r} must be a text, not {raw[k]!r}")
    return Spec(name=raw.get("name", name), grid=grid, fixed=fixed, description=raw.get("description", ""),
                path=str(path))


# -- the store ----------------------------------------------------------------

class Store:
    def __init__(self, profile, root=None):
        self.profile = profile
        self.dir = Path(root or RESULTS) / profile
        self.problems = []          # corrupted records seen, as (path, reason)

    def path(self, config):
        return self.dir / f"{key(config)}.json"

    def get(self, config):
        """The complete record of `config`, or None (missing, or bad: then reported in `problems`).

        A record is read with limits (size, nesting) and checked field by field before use: a
        store on a shared file system may hold anything, and one bad file must not stop every
        command that reads the store."""
        path = self.path(config)
        if not os.path.lexists(path):
            return None
        try:
            record = read_json(path)
            check_record(record, config)
            if record.get("key", path.stem) != path.stem:
                raise ValueError(f"key={record['key']!r} is not this file's {path.stem!r}")
        except ValueError as error:
            self.problems.append((str(path), f"{error}"))
            return None
        return record

    def check_writable_records(self, configs):
        """StoreError if a record of `configs` cannot be written where it belongs (a folder there,
        which replacing would delete): said before training, not after it."""
        for c in configs:
            path = self.path(c)
            if path.is_dir():
                raise StoreError(f"{path} is a folder where a record belongs; remove it, then rerun")

    def put(self, record):
        # `finished`: when the record was written (UTC); records written before this field
        # existed lack it, and the book shows their date as unknown.
        record = dict(record, profile=self.profile, key=key(Config.from_dict(record["config"])))
        record.setdefault("finished", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        write_json(self.dir / f"{record['key']}.json", record)

    def checkpoint(self, configs):
        keys = "".join(sorted(key(c) for c in configs))
        return self.dir / "checkpoints" / f"{hashlib.sha256(keys.encode()).hexdigest()[:20]}.ckpt"

    def lock(self, configs, wait=True, timeout=None):
        """Hold the lock of every model of `configs`: a list of held locks (release with
        `unlock`), or None if `wait` is False and another process holds one of them.

        One lock file per model (locks/<key>.lock), so that two sweeps that group
        the models differently still never train one twice. filelock takes an
        flock(2) lock, which the kernel drops when its process dies (kill -9, a lost
        node): a stale lock is taken over without any clean-up. Locks are taken
        in key order, so two processes waiting for each other cannot deadlock.

        Beside each held lock, locks/<key>.owner says who holds it (process, host, since when),
        so that a waiting process can say whom it waits for. A lock not free within `timeout`
        seconds (default: lock_wait_seconds(), HTS_EP_LOCK_WAIT) is a StoreError naming its holder."""
        from filelock import FileLock, Timeout
        timeout = lock_wait_seconds() if timeout is None else timeout
        folder = self.dir / "locks"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"lock folder {folder} cannot be made ({error.strerror or error})") from None
        held = []
        try:
            for k in sorted({key(c) for c in configs}):
                path = folder / f"{k}.lock"
                lock = FileLock(path)
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    if not wait:
                        self.unlock(held)
                        return None
                    self._wait(lock, k, timeout)
                except OSError as error:
                    raise StoreError(f"lock file {path} cannot be used ({error.strerror or error}); "
                                     "remove it if no sweep is running") from None
                held.append(lock)
                self._claim(k)
        except BaseException:
            self.unlock(held)
            raise
        return held

    def _wait(self, lock, k, timeout):
        """Acquire `lock` within `timeout` seconds, saying whom it waits for, now and every
        LOCK_REPORT_EVERY seconds; StoreError naming the holder when the time is up."""
        from filelock import Timeout
        start = time.monotonic()
        log.info("waiting for the lock of model %s (%s), held by %s; giving up after %s", k,
                 lock.lock_file, self.holder(k), _seconds(timeout))
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                raise StoreError(f"the lock of model {k} ({lock.lock_file}) is held by {self.holder(k)}; "
                                 f"gave up after {_seconds(timeout)} (HTS_EP_LOCK_WAIT or --lock-wait sets "
                                 "how long to wait)")
            try:
                lock.acquire(timeout=min(left, LOCK_REPORT_EVERY))
                return
            except Timeout:
                log.info("still waiting for the lock of model %s, held by %s", k, self.holder(k))
            except OSError as error:
                raise StoreError(f"lock file {lock.lock_file} cannot be used ({error.strerror or error})") from None

    def _owner(self, k):
        return self.dir / "locks" / f"{k}.owner"

    def _claim(self, k):
        """Say who holds the lock of `k` (best effort: a store others cannot read still trains)."""
        try:
            write_json(self._owner(k), {"pid": os.getpid(), "host": socket.gethostname(),
                                        "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
        except InputError:
            pass

    def holder(self, k):
        """Who holds the lock of `k`, in words, from its owner file (written by whoever holds it,
        so read with limits and checked like any file of the store)."""
        try:
            owner = read_json(self._owner(k), max_bytes=OWNER_BYTES, max_depth=2)
            pid, host, since = owner["pid"], owner["host"], owner["since"]
            datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ")
            if type(pid) is not int or not isinstance(host, str) or not HOST_NAME.fullmatch(host):
                raise ValueError
        except (ValueError, TypeError, KeyError):
            return "an unknown process"
        return f"process {pid} on {host} since {since}"

    @staticmethod
    def unlock(held):
        for lock in reversed(held):
            try:
                Path(str(lock.lock_file)).with_suffix(".owner").unlink(missing_ok=True)
            except OSError:
                pass
            lock.release()

    def resumable(self, groups):
        """{key: epochs done} for the models of `groups` (as the sweep forms them) whose group
        has a checkpoint here: what a sweep resumes instead of starting over. Read without
        the tensors (mmap) and checked as training checks it (train.checkpoint_epochs), less
        the tensors' shapes: one that training then rejects is trained from the start."""
        import torch
        done = {}
        for g in groups:
            path = self.checkpoint(g)
            if not path.exists():
                continue
            try:
                done.update(dict.fromkeys(map(key, g), checkpoint_epochs(
                    torch.load(path, weights_only=True, mmap=True), g)))
            except Exception:       # unreadable or not ours: training reports it when it meets it
                continue
        return done

    def tidy(self):
        """Remove checkpoints whose models all have complete records: left behind by a
        process that died between writing its last record and removing its checkpoint
        (no later sweep would run that group again). Skipped while their locks are held."""
        import torch
        for ckpt in sorted((self.dir / "checkpoints").glob("*.ckpt")):
            try:
                # mmap: the tensors are not read, only the plain data beside them.
                configs = [Config.from_dict(c) for c in torch.load(ckpt, weights_only=True, mmap=True)["configs"]]
            except Exception:       # not ours, or unreadable: training reports it if it meets it
                continue
            if not all(self.get(c) is not None for c in configs):
                continue
            held = self.lock(configs, wait=False)
            if held is not None:
                try:
                    ckpt.unlink(missing_ok=True)
                finally:
                    self.unlock(held)


# -- grouping and running -------------------------------------------------------

def memory_budget(device=None):
    """Bytes one ensemble may use: half the free GPU memory, or a quarter of the RAM (chosen)."""
    import torch
    dev = torch.device(device) if device else (torch.device("cuda") if torch.cuda.is_available() else None)
    if dev is not None and dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0] // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def group(configs, max_group, budget=None):
    """Ensembles of configs that share data set and shapes, at most `max_group`
    models each and no more than the measured per-model footprint lets fit in `budget`."""
    from .train import EVAL_BATCH
    buckets = {}
    for c in configs:
        buckets.setdefault(tuple(getattr(c, f) for f in SHARED_FIELDS), []).append(c)
    groups = []
    for b in buckets.values():
        fit = (budget or memory_budget()) // per_model_bytes(b[0], max(b[0].batch_size, EVAL_BATCH))
        size = max(1, min(max_group, fit))
        groups += [b[i:i + size] for i in range(0, len(b), size)]
    return groups


def run_group(configs, profile, results_root=None, data_root=None, device=None, threads=None,
              on_epoch=None, wait=True, lock_wait=None):
    """Train the models of one group that are still missing, write their records, drop the
    checkpoint; return the keys trained. Runs on Dask workers too.

    The group's locks are held throughout, and the store is read again once they
    are: another sweep may have trained some of these models while this one
    waited. With wait=False, returns None at once if another process holds a lock; with
    wait=True, StoreError after `lock_wait` seconds (default: HTS_EP_LOCK_WAIT, else a day)."""
    import torch
    store = Store(profile, results_root)
    held = store.lock(configs, wait, lock_wait)
    if held is None:
        return None
    try:
        if threads:
            torch.set_num_threads(threads)
        todo = [c for c in configs if store.get(c) is None]
        if todo:
            store.check_writable_records(todo)
            ckpt = store.checkpoint(todo)
            if ckpt.is_dir():
                raise StoreError(f"{ckpt} is a folder where a checkpoint belongs; remove it, then rerun")
            records = train(todo, data_root=data_root, device=device, progress=False,
                            checkpoint=ckpt, on_epoch=on_epoch)
            for r in records:
                store.put(r)
            ckpt.unlink(missing_ok=True)
        # The whole group's checkpoint too: left behind when a process died between
        # writing the last record and removing it, or when another process finished.
        store.checkpoint(configs).unlink(missing_ok=True)
        return [key(c) for c in todo]
    finally:
        store.unlock(held)


@dataclass
class Plan:
    spec: Spec
    profile: str
    cached: list
    missing: list
    skipped: dict                   # dataset -> reason it cannot run here
    problems: list
    trained: list = field(default_factory=list)     # keys this process trained (sweep)
    groups: list = field(default_factory=list)      # the ensembles a sweep trains the missing models in
    started: dict = field(default_factory=dict)     # key -> epochs their group's checkpoint holds

    def estimate_seconds(self, device=None, threads=None):
        """Seconds the missing models take on this machine (hts_ep.speed measures it once),
        less the epochs their checkpoints hold."""
        from . import speed
        return speed.estimate_seconds(self.missing, device, threads, done=self.started)


# Config fields that `overrides` may not set: other parameters of the book choose them.
NOT_OVERRIDABLE = {"seed": "seeds", "dataset": "datasets"}


FLOAT_FIELDS = {f.name for f in dataclasses.fields(Config) if isinstance(f.default, float)} | {"h_bound"}


def as_field_type(name, value):
    """An override's value as its field stores it: a whole number of a float field as a float (Config does
    the same; here the parsed overrides already show it), a number YAML left as text ('1e-3') as that
    number; anything else as given, for Config to check."""
    if name in FLOAT_FIELDS and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
    return value


def check_overrides(overrides):
    """`overrides` (Config fields to values; a YAML or Python mapping as text is read as one)
    as a checked dict, or SpecError naming the parameter, the field and what it allows."""
    if overrides is None:
        return {}
    if isinstance(overrides, str):
        try:
            overrides = yaml.safe_load(overrides) if overrides.strip() else {}
        except yaml.YAMLError:
            overrides = None
        if not isinstance(overrides, dict):
            raise SpecError("overrides: not a mapping of Config fields to values; allowed: e.g. "
                            "{'sigma_eps': 0.05, 'beta': 0.2}")
    if not isinstance(overrides, dict):
        raise SpecError(f"overrides={overrides!r} is a {type(overrides).__name__}; allowed: a mapping of "
                        "Config fields to values, e.g. {'sigma_eps': 0.05, 'beta': 0.2}")
    for name in overrides:
        if name in NOT_OVERRIDABLE:
            raise SpecError(f"overrides: {name!r} is chosen by the parameter {NOT_OVERRIDABLE[name]!r}, "
                            "not by overrides")
        if name not in CONFIG_FIELDS:
            raise SpecError(f"overrides: unknown Config field {name!r}; allowed: "
                            f"{', '.join(sorted(CONFIG_FIELDS - set(NOT_OVERRIDABLE)))}")
    overrides = {name: as_field_type(name, value) for name, value in overrides.items()}
    try:
        data.check_config(Config(**overrides))      # the types and ranges Config checks, sizes the data's
    except ValueError as error:
        raise SpecError(f"overrides: {error}") from None
    return dict(overrides)


def apply_overrides(configs, overrides, where="overrides"):
    """`configs` with the fields of `overrides` replaced; configs that become equal are kept once
    (an override of a grid axis collapses that axis to its one value)."""
    overrides = check_overrides(overrides)
    if not overrides:
        return list(configs)
    out, seen = [], set()
    for c in configs:
        try:
            c = c.replace(**overrides)
            data.check_config(c)
        except ValueError as error:
            raise SpecError(f"{where}: {error}") from None
        if key(c) not in seen:
            seen.add(key(c))
            out.append(c)
    return out


def grid_configs(spec, profile, datasets=None, seeds=None, overrides=None):
    """The spec's configs under `profile`, optionally for some data sets, other seeds only and
    with some Config fields replaced (`overrides`)."""
    prof = dict(load_profile(profile))
    if seeds is not None:
        prof["seeds"] = list(seeds)
    configs = [c for c in spec.configs(prof) if datasets is None or c.dataset in datasets]
    return apply_overrides(configs, overrides)


def plan(spec_name, profile, results_root=None, data_root=None, datasets=None, seeds=None, overrides=None,
         max_group=None, device=None):
    """What of the spec is stored, missing or cannot run here. With `max_group` (as the sweep
    gets it, and the sweep's `device`), also the groups the missing models train in and which
    of them a checkpoint resumes."""
    spec = load_spec(spec_name)
    configs = grid_configs(spec, profile, datasets, seeds, overrides)
    check_store(profile, results_root)
    store = Store(profile, results_root)
    skipped = {}
    for ds in sorted({c.dataset for c in configs}):
        reason = data.unavailable(ds, data_root)
        if reason:
            skipped[ds] = reason
    cached, todo = [], []
    for c in configs:
        (cached if store.get(c) is not None else todo).append(c)
    todo = [c for c in todo if c.dataset not in skipped]
    groups = group(todo, max_group, memory_budget(device)) if max_group and todo else []
    return Plan(spec, profile, cached, todo, skipped, store.problems, groups=groups,
                started=store.resumable(groups))


def describe(p, device=None, threads=None):
    """The plan in words, with the time the missing models take, measured on this machine
    (`device` and `threads` as the sweep will use them)."""
    # The paper profile's store is the archive committed in the repository (results/paper/).
    stored = "archived" if p.profile == "paper" else "cached"
    line = f"{p.spec.name} / {p.profile}: {len(p.cached)} {stored}, {len(p.missing)} to train"
    if p.started:
        epochs = sorted(set(p.started.values()))
        at = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]} to {epochs[-1]}"
        line += (f", {len(p.started)} of them checkpointed at {at} of {p.missing[0].epochs} "
                 "(the sweep resumes from there)")
    if p.missing:
        import torch

        from .network import default_device
        where = torch.device(device) if device is not None else default_device()
        threads = threads or torch.get_num_threads()
        try:
            seconds = p.estimate_seconds(where, threads)
        except (RuntimeError, AssertionError) as error:     # e.g. a device torch cannot use here
            line += f"; no estimate: {str(error).splitlines()[0]}"
        else:
            unit = f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"
            line += (f"; estimated {unit} here ({where.type}"
                     + (f", {threads} threads" if where.type == "cpu" else "")
                     + ", from a measurement of this machine)")
    lines = [line]
    for ds, reason in p.skipped.items():
        lines.append(f"skipped {ds}: {reason}")
    for path, reason in p.problems:
        if Path(path).is_dir():
            lines.append(f"corrupted record {path} ({reason}): remove it, the sweep cannot replace a folder")
        else:
            lines.append(f"corrupted record {path} ({reason}): will be retrained")
    return "\n".join(lines)


def sweep(spec_name, profile, results_root=None, data_root=None, device=None, threads=None,
          max_group=20, workers=None, scheduler=None, progress=True, connect_timeout=10,
          datasets=None, seeds=None, overrides=None, lock_wait=None):
    """Train every missing record of the spec under the profile; return the plan that was run
    (its `trained`: the keys this call trained; others may have been trained meanwhile by
    another sweep into the same store).

    `datasets` restricts the sweep to some of the spec's data sets, `seeds`
    replaces the profile's seeds (None: all of them, the profile's), `overrides`
    replaces Config fields in every model of the grid (new keys: trained and cached apart).
    `lock_wait`: seconds to wait for a model another process holds (default: HTS_EP_LOCK_WAIT,
    else DEFAULT_LOCK_WAIT), then StoreError naming the holder."""
    # Checked before anything else (grouping sizes ensembles by the device's memory),
    # not when the first group ends. On a cluster the device is the workers' (only its
    # name is checked here), the store must be shared.
    if not (workers or scheduler):
        check_device(device)
    elif device is not None:
        check_device_name(device)
    lock_wait = lock_wait_seconds(lock_wait)
    check_store(profile, results_root)
    p = plan(spec_name, profile, results_root, data_root, datasets, seeds, overrides, max_group, device)
    if progress:
        log.info("%s", describe(p, device, threads))
    Store(profile, results_root).tidy()
    if not p.missing:
        return p
    check_writable_dir(Store(profile, results_root).dir, "results folder")
    Store(profile, results_root).check_writable_records(p.missing)
    groups = p.groups
    total = sum(c.epochs - p.started.get(key(c), 0) for c in p.missing)      # resumed groups: what is left
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=f"{spec_name}/{profile}", unit="model-epoch")
    # Resolved here, so that workers in other processes write where this process reads.
    args = dict(results_root=Path(results_root or RESULTS).resolve(), data_root=data_root, device=device,
                threads=threads, lock_wait=lock_wait)
    try:
        if workers or scheduler:
            from .distributed import run_groups
            p.trained = run_groups(run_group, groups, profile, args, workers=workers, scheduler=scheduler,
                                   bar=bar, connect_timeout=connect_timeout)
        else:
            # Groups another process is training are put off, not waited for at once:
            # two sweeps into one store then share the work instead of queueing.
            deferred = []
            for g in groups:
                step = progress_step(bar, len(g))
                done = run_group(g, profile, on_epoch=step, wait=False, **args)
                if done is None:
                    deferred.append(g)
                else:
                    p.trained += done
            for g in deferred:
                log.info("waiting for another process that holds %d models of %s/%s (locks in %s)",
                         len(g), spec_name, profile, Store(profile, args["results_root"]).dir / "locks")
                p.trained += run_group(g, profile, on_epoch=progress_step(bar, len(g)), wait=True, **args)
    finally:
        if bar is not None:
            bar.close()
    return p


def check_store(profile, results_root=None):
    """StoreError if the results folder, or the profile's folder in it, is a file: every record
    would then read as missing (an empty table, a sweep that fails after its first group)."""
    top = Path(results_root or RESULTS)
    for folder, what in ((top, "results folder"), (top / profile, f"results folder of profile {profile!r}")):
        if os.path.lexists(folder) and not folder.is_dir():
            raise StoreError(f"{what} {folder} is a file, not a folder (HTS_EP_RESULTS sets where the store is)")


def missing(spec_name, profile, results_root=None, datasets=None, seeds=None, overrides=None):
    """The configs of the spec under the profile that have no usable record (missing or bad)."""
    store = Store(profile, results_root)
    return [c for c in grid_configs(load_spec(spec_name), profile, datasets, seeds, overrides)
            if store.get(c) is None]


def progress_step(bar, n):
    """on_epoch for a group of n models: the bar advances by n model-epochs (None: no bar)."""
    if bar is None:
        return None
    return lambda records: bar.update(n)


def records(spec_name, profile, results_root=None, datasets=None, seeds=None, overrides=None):
    """The complete records of the spec under the profile (missing ones left out)."""
    store = Store(profile, results_root)
    out = []
    for c in grid_configs(load_spec(spec_name), profile, datasets, seeds, overrides):
        r = store.get(c)
        if r is not None:
            out.append(r)
    return out


def problems(spec_name, profile, results_root=None, datasets=None, seeds=None, overrides=None):
    """[(path, reason)] for the records of the spec that exist but are corrupted or incomplete."""
    store = Store(profile, results_root)
    for c in grid_configs(load_spec(spec_name), profile, datasets, seeds, overrides):
        store.get(c)
    return store.problems


# -- which profile the book shows -------------------------------------------------

# The book's default mode (`python -m hts_ep.book --profile archive`): for each experiment,
# the paper profile's archived records (results/paper/) wherever it has any, never trained
# here, else the quick profile, trained where missing. Not a profile of profiles.yaml.
ARCHIVE = "archive"
ARCHIVED, FALLBACK = "paper", "quick"


def book_profiles():
    """The names the book's --profile accepts: every profile, and ARCHIVE."""
    return [*load_profiles(), ARCHIVE]


def check_book_profile(profile):
    """SpecError unless the book can be built under `profile`."""
    if profile == ARCHIVE:
        return
    if profile not in load_profiles():
        raise SpecError(f"unknown profile {profile!r}; allowed: {', '.join(map(str, book_profiles()))}")
    load_profile(profile)


def compute_profile(profile):
    """The profile whose scale a notebook uses for what it computes itself (no records)."""
    return FALLBACK if profile == ARCHIVE else profile


def resolve(spec_name, profile, results_root=None, datasets=None, seeds=None, overrides=None):
    """(profile whose records the book shows for the spec, whether missing ones may be trained).

    Under ARCHIVE: the paper profile, read only, if the archive covers every point of the
    spec's grid (at least one seed each) for at least one of its selected data sets; otherwise
    the quick profile. A few records that other experiments share with this one (the same
    configuration) therefore do not make it archived, and one page never mixes profiles."""
    if profile != ARCHIVE:
        return profile, True
    store = Store(ARCHIVED, results_root)
    points = {}                     # (dataset, configuration but its seed) -> any record of it?
    for c in grid_configs(load_spec(spec_name), ARCHIVED, datasets, seeds, overrides):
        point = (c.dataset, key(c.replace(seed=0)))
        points[point] = points.get(point, False) or store.get(c) is not None
    covered = {ds for ds, _ in points} - {ds for (ds, _), have in points.items() if not have}
    return (ARCHIVED, False) if covered else (FALLBACK, True)
