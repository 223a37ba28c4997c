"""Declared experiments: specs x profiles -> a cached store of per-model records.

A spec (experiments/<name>.yaml) is a grid over Config fields; a profile
(experiments/profiles.yaml) scales it (seeds, epochs, samples) without
changing its meaning. Every model of the grid has one record in
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
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import data
from .config import SHARED_FIELDS, Config
from .train import NUMERICS_VERSION, train, write_json

REPO = Path(__file__).resolve().parent.parent
# Specs and profiles; HTS_EP_SPECS points elsewhere (a user's own study, the tests).
SPEC_DIR = Path(os.environ.get("HTS_EP_SPECS", REPO / "experiments"))
RESULTS = Path(os.environ.get("HTS_EP_RESULTS", REPO / "results"))
CONFIG_FIELDS = {f.name for f in dataclasses.fields(Config)}
PROFILE_KEYS = {"description", "seeds", "epochs", "train_subset", "test_subset"}

# Measured on the project's 2-core CPU (fused kernel): one model, one
# 256-sample batch of 137 steps with its update; one sample evaluated (125
# steps). Used only for the dry run's estimate, which is therefore that
# machine's time: `make bench` measures the speed of yours.
SECONDS_PER_TRAIN_SAMPLE = 7.0 / 60000
SECONDS_PER_TEST_SAMPLE = 1.0 / 10000


class SpecError(ValueError):
    """A spec, profile or grid that cannot be run; the message says why."""


# -- specs and profiles ------------------------------------------------------

def load_profiles():
    with open(SPEC_DIR / "profiles.yaml") as f:
        return yaml.safe_load(f)


def load_profile(name):
    profiles = load_profiles()
    if name not in profiles:
        raise SpecError(f"unknown profile {name!r}; allowed: {', '.join(profiles)}")
    profile = profiles[name]
    unknown = set(profile) - PROFILE_KEYS
    if unknown:
        raise SpecError(f"profile {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(PROFILE_KEYS)}")
    return profile


def spec_names():
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml") if p.stem != "profiles")


@dataclass
class Spec:
    name: str
    grid: dict                      # axis -> list of values ("a,b" axes take lists of pairs)
    fixed: dict = field(default_factory=dict)
    description: str = ""

    def configs(self, profile):
        """Every Config of the grid under `profile`, in grid order."""
        seeds = profile["seeds"]
        if len(set(seeds)) != len(seeds):
            raise SpecError(f"profile seeds have duplicates: {seeds}")
        scale = {k: profile[k] for k in ("epochs", "train_subset", "test_subset")}
        axes = [(name.split(","), values) for name, values in self.grid.items()]
        out = []
        for combo in itertools.product(*(values for _, values in axes), seeds):
            values = dict(self.fixed, **scale, seed=combo[-1])
            for (names, _), value in zip(axes, combo[:-1]):
                values.update(zip(names, value) if len(names) > 1 else [(names[0], value)])
            out.append(Config(**values))
        return out


def load_spec(name):
    path = SPEC_DIR / f"{name}.yaml"
    if name == "profiles" or not path.exists():
        raise SpecError(f"unknown spec {name!r}; allowed: {', '.join(spec_names())}")
    with open(path) as f:
        raw = yaml.safe_load(f)
    grid, fixed = raw.get("grid") or {}, raw.get("fixed") or {}
    if not grid:
        raise SpecError(f"spec {name!r} has an empty grid")
    for axis, values in grid.items():
        names = axis.split(",")
        bad = [n for n in names if n not in CONFIG_FIELDS or n == "seed"]
        if bad:
            raise SpecError(f"spec {name!r}: unknown axis {bad[0]!r}; allowed: Config fields except seed "
                            f"({', '.join(sorted(CONFIG_FIELDS - {'seed'}))})")
        if not isinstance(values, list) or not values:
            raise SpecError(f"spec {name!r}: axis {axis!r} needs a non-empty list of values")
        if len(names) > 1 and any(not isinstance(v, list) or len(v) != len(names) for v in values):
            raise SpecError(f"spec {name!r}: axis {axis!r} takes lists of {len(names)} values")
        if len({json.dumps(v) for v in values}) != len(values):
            raise SpecError(f"spec {name!r}: axis {axis!r} has duplicate values {values}")
    bad = [k for k in fixed if k not in CONFIG_FIELDS]
    if bad:
        raise SpecError(f"spec {name!r}: unknown parameter {bad[0]!r} in fixed")
    return Spec(name=raw.get("name", name), grid=grid, fixed=fixed, description=raw.get("description", ""))


# -- the store ----------------------------------------------------------------

def key(config):
    """Hash of every parameter and the numerics version: the record's address."""
    blob = json.dumps({"config": config.to_dict(), "numerics": NUMERICS_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class Store:
    def __init__(self, profile, root=None):
        self.profile = profile
        self.dir = Path(root or RESULTS) / profile
        self.problems = []          # corrupted records seen, as (path, reason)

    def path(self, config):
        return self.dir / f"{key(config)}.json"

    def get(self, config):
        """The complete record of `config`, or None (missing, or corrupted: then reported)."""
        path = self.path(config)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            ok = record.get("complete") is True and record["config"] == config.to_dict()
            reason = "incomplete or for another configuration"
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            ok, reason = False, f"unreadable: {error}"
        if not ok:
            self.problems.append((str(path), reason))
            return None
        return record

    def put(self, record):
        record = dict(record, profile=self.profile, key=key(Config(**record["config"])))
        write_json(self.dir / f"{record['key']}.json", record)

    def checkpoint(self, configs):
        keys = "".join(sorted(key(c) for c in configs))
        return self.dir / "checkpoints" / f"{hashlib.sha256(keys.encode()).hexdigest()[:20]}.ckpt"


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
    from .fused import per_model_bytes
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
              on_epoch=None):
    """Train one group, write its records, drop its checkpoint. Runs on Dask workers too."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    store = Store(profile, results_root)
    ckpt = store.checkpoint(configs)
    records = train(configs, data_root=data_root, device=device, progress=False,
                    checkpoint=ckpt, on_epoch=on_epoch)
    for r in records:
        store.put(r)
    ckpt.unlink(missing_ok=True)
    return [key(c) for c in configs]


@dataclass
class Plan:
    spec: Spec
    profile: str
    cached: list
    missing: list
    skipped: dict                   # dataset -> reason it cannot run here
    problems: list

    def estimate_seconds(self):
        total = 0.0
        for c in self.missing:
            n_train = c.train_subset or 60000
            n_test = c.test_subset or 10000
            total += c.epochs * (n_train * SECONDS_PER_TRAIN_SAMPLE + n_test * SECONDS_PER_TEST_SAMPLE)
        return total


def grid_configs(spec, profile, datasets=None, seeds=None):
    """The spec's configs under `profile`, optionally for some data sets and other seeds only."""
    prof = dict(load_profile(profile))
    if seeds is not None:
        prof["seeds"] = list(seeds)
    return [c for c in spec.configs(prof) if datasets is None or c.dataset in datasets]


def plan(spec_name, profile, results_root=None, data_root=None, datasets=None, seeds=None):
    spec = load_spec(spec_name)
    configs = grid_configs(spec, profile, datasets, seeds)
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
    return Plan(spec, profile, cached, todo, skipped, store.problems)


def describe(p):
    lines = [f"{p.spec.name} / {p.profile}: {len(p.cached)} cached, {len(p.missing)} to train"
             f" (estimated {p.estimate_seconds() / 60:.1f} min on one 2-core CPU)"]
    for ds, reason in p.skipped.items():
        lines.append(f"skipped {ds}: {reason}")
    for path, reason in p.problems:
        lines.append(f"corrupted record {path} ({reason}): will be retrained")
    return "\n".join(lines)


def sweep(spec_name, profile, results_root=None, data_root=None, device=None, threads=None,
          max_group=20, workers=None, scheduler=None, progress=True, connect_timeout=10,
          datasets=None, seeds=None):
    """Train every missing record of the spec under the profile; return the plan that was run.

    `datasets` restricts the sweep to some of the spec's data sets, `seeds`
    replaces the profile's seeds (None: all of them, the profile's)."""
    p = plan(spec_name, profile, results_root, data_root, datasets, seeds)
    if progress:
        print(describe(p), flush=True)
    groups = group(p.missing, max_group, memory_budget(device))
    if not groups:
        return p
    total = sum(c.epochs for c in p.missing)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=f"{spec_name}/{profile}", unit="model-epoch")
    # Resolved here, so that workers in other processes write where this process reads.
    args = dict(results_root=Path(results_root or RESULTS).resolve(), data_root=data_root, device=device,
                threads=threads)
    try:
        if workers or scheduler:
            from .distributed import run_groups
            run_groups(groups, profile, args, workers=workers, scheduler=scheduler,
                       bar=bar, connect_timeout=connect_timeout)
        else:
            for g in groups:
                step = (lambda records, n=len(g): bar.update(n)) if bar is not None else None
                run_group(g, profile, on_epoch=step, **args)
    finally:
        if bar is not None:
            bar.close()
    return p


def records(spec_name, profile, results_root=None, datasets=None, seeds=None):
    """The complete records of the spec under the profile (missing ones left out)."""
    store = Store(profile, results_root)
    out = []
    for c in grid_configs(load_spec(spec_name), profile, datasets, seeds):
        r = store.get(c)
        if r is not None:
            out.append(r)
    return out
