"""Measurements a page makes itself (networks it trains and probes, no records of the store),
cached by everything they depend on.

A measurement is a function of its inputs (the configurations, the data and its sizes, the
seeds, the measurement's own parameters and version) and of the training code's numerics;
`cached` keys its result by a hash of exactly those, in results/pages/<name>/<key>.json. A
rebuild after a change that leaves them alone (a docstring, a figure, a sentence) reads the
file instead of training again; a changed parameter or profile is a new key, computed once.
The files of the default pages are committed, like the paper-scale records, so that a first
build trains nothing. A file that cannot be read back is reported and computed again.
"""
import hashlib
import io
import json
import logging
import platform
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from . import experiments
from .train import NUMERICS_VERSION, json_safe, write_json

log = logging.getLogger(__name__)
FRAME = "__frame__"     # marks a DataFrame inside a stored result


def key(name, inputs):
    """The measurement's address: a hash of its name, inputs and the numerics version."""
    blob = json.dumps({"name": name, "inputs": inputs, "numerics": NUMERICS_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def path(name, inputs, root=None):
    return Path(root or experiments.RESULTS) / "pages" / name / f"{key(name, inputs)}.json"


def encode(obj):
    """`obj` as plain JSON data: DataFrames (flat index) as their split form, recursively."""
    if isinstance(obj, pd.DataFrame):
        return {FRAME: json.loads(obj.to_json(orient="split", index=False, double_precision=15))}
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    return obj


def decode(obj):
    if isinstance(obj, dict) and set(obj) == {FRAME}:
        return pd.read_json(io.StringIO(json.dumps(obj[FRAME])), orient="split")
    if isinstance(obj, dict):
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


def load(name, inputs, root=None):
    """(result, environment) stored for these inputs, or None (missing, or unreadable: reported).
    Without `root`: the results store, else the repository's own results/ (a build into another
    store, such as the tests' smoke build, still reads the measurements committed with the code)."""
    p = path(name, inputs, root)
    if not p.exists() and root is None:
        p = path(name, inputs, experiments.REPO / "results")
    if not p.exists():
        return None
    try:
        stored = json.loads(p.read_text())
        if not isinstance(stored, dict) or stored.get("name") != name or stored.get("inputs") != json_safe(inputs):
            raise ValueError("written for other inputs")
        return decode(stored["result"]), stored.get("environment") or {}
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring cached measurement %s (%s); computing it again", p, error)
        return None


def cached(name, inputs, compute, root=None):
    """compute()'s result for `inputs` (JSON data: numbers, texts, lists, dicts, flat DataFrames),
    computed at most once per distinct inputs and numerics version; returns (result, environment),
    the environment saying where and when it was computed."""
    hit = load(name, inputs, root)
    if hit is not None:
        return hit
    import torch
    result = compute()
    env = {"device": str(inputs.get("device") or "cpu"), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(), "processor": platform.processor(),
           "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    write_json(path(name, inputs, root), {"name": name, "inputs": inputs, "result": encode(result),
                                          "environment": env}, indent=None)      # compact: committed files
    return decode(encode(result)), env


def computed(env, profile):
    """Where a page's own measurement comes from, in one sentence (`cached`'s environment)."""
    when = (env.get("finished") or "")[:10] or "an unknown date"
    n = env.get("threads")
    threads = f", {n} thread{'s' if n != 1 else ''}" if n else ""
    device = env.get("device", "an unknown device")
    return f"computed on {when} on {device}{threads}, at the scale of profile {profile}."
