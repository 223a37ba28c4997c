"""Executing the notebooks: papermill with the profile and parameters injected, into
book/generated/, skipped when nothing a notebook depends on has changed since its
last successful run. Training goes through the cached store (results/<profile>/),
so even a rerun trains nothing that is already there."""
import ast
import json
import logging
import math
import os
import time
from pathlib import Path

from .errors import BookError
from .pages import GENERATED, rel

log = logging.getLogger(__name__)


def parse_parameters(items):
    """key=value pairs; values are Python literals where they parse as such, else strings."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise BookError(f"--parameters takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def parameter_defaults(path):
    """{name: default} of the notebook's `parameters` cell (default None where it is no literal)."""
    nb = json.loads(Path(path).read_text())
    out = {}
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            for node in ast.parse("".join(cell["source"])).body:
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            try:
                                out.setdefault(t.id, ast.literal_eval(node.value))
                            except ValueError:
                                out.setdefault(t.id, None)
            break
    return out


def notebook_parameters(path):
    """Names assigned in the notebook's `parameters` cell."""
    return set(parameter_defaults(path))


def execute(path, profile, parameters, kernel="python3", out_dir=None, force=True):
    """Run one notebook with papermill into book/generated/; raise BookError naming it on failure.

    With force=False a notebook whose inputs (`fingerprint`) are unchanged since its
    last successful run is not run again.
    """
    import papermill
    path = Path(path).resolve()
    out = Path(out_dir or GENERATED) / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    known = notebook_parameters(path)
    params = {k: v for k, v in {"profile": profile, **parameters}.items() if k in known}
    stamp = out.with_suffix(".stamp")
    key = fingerprint(path, params)
    if not force and out.exists() and stamp.exists() and stamp.read_text() == key:
        log.info("%s unchanged (source, parameters, code and results): reusing %s", path.name, rel(out))
        return out
    stamp.unlink(missing_ok=True)
    log.info("executing %s with %s -> %s", rel(path), params, rel(out))
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(path), str(out), parameters=params, kernel_name=kernel,
                                   log_output=True, progress_bar=False, cwd=str(path.parent))
    except papermill.PapermillExecutionError as error:
        raise BookError(f"notebook {rel(path)} failed in cell {error.exec_count} "
                        f"({error.ename}: {error.evalue}); the partly executed copy is {rel(out)}") from None
    except Exception as error:  # kernel died, timeout, bad notebook JSON ...
        raise BookError(f"notebook {rel(path)} could not be executed: "
                        f"{type(error).__name__}: {error}") from None
    tidy(out)
    stamp.write_text(fingerprint(path, params))     # after the run: the sweep may have added results
    log.info("%s done in %.0f s", path.name, time.perf_counter() - start)
    return out


def fingerprint(path, params):
    """What an executed notebook depends on: its source, its parameters, the package's code and
    the results it reads (file names, sizes and times of the stores). Equal: no need to rerun."""
    import hashlib

    from . import experiments
    h = hashlib.sha256(Path(path).read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(json.dumps({k: os.environ.get(k) for k in ("HTS_EP_RESULTS", "HTS_EP_DATA", "HTS_EP_SPECS")},
                        sort_keys=True).encode())
    for f in sorted(Path(__file__).parent.glob("*.py")) + sorted(Path(__file__).parent.glob("*.csv")):
        h.update(f.read_bytes())
    profile = params.get("profile")     # a notebook without one reads no records
    stores = ([experiments.ARCHIVED, experiments.FALLBACK] if profile == experiments.ARCHIVE
              else [profile] if profile else [])
    folders = (experiments.SPEC_DIR, *(experiments.RESULTS / p for p in stores), experiments.RESULTS / "calibration")
    for folder in folders:
        if folder.is_dir():
            for f in sorted(folder.glob("*.json")) + sorted(folder.glob("*.yaml")):   # not logs, checkpoints
                if f.is_file():
                    st = f.stat()
                    h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def tidy(path):
    """Fold the injected-parameters cell: the reader sees it behind a toggle."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            tags.append("hide-input")
    path.write_text(json.dumps(nb, indent=1))


# Types of the notebook parameters whose default is None (the default says nothing):
# what each takes besides None.
PARAMETER_TYPES = {"datasets": "list of str", "seeds": "list of int", "device": "str", "data_root": "str",
                   "results_dir": "str"}


def _int_in(low, high=None):
    def ok(v):
        return type(v) is int and v >= low and (high is None or v <= high)
    return ok, (f"an integer >= {low}" if high is None else f"an integer from {low} to {high}")


def _list_of(item, allowed):
    return (lambda v: isinstance(v, list) and len(v) > 0 and all(item(x) for x in v)), allowed


def _finite(v, low, strict):
    return type(v) in (int, float) and math.isfinite(v) and (v > low if strict else v >= low)


def parameter_values():
    """{parameter: (check, what it allows)} for the notebooks' parameters whose values can be wrong
    although their type is right (the limits are chosen: the data sets' sizes, Config's own
    limits, and draws that fit in memory)."""
    from . import data, experiments
    from .config import SEED_LIMIT, UPPER_LIMITS
    return {
        "seeds": (experiments._seeds_ok, experiments.SEEDS_ALLOWED),
        "seed": (lambda v: type(v) is int and 0 <= v < SEED_LIMIT, "an integer from 0 to 2**63 - 1"),
        # 01: draws per family, float64, four families at once: 10**7 is 320 MB
        "n_samples": _int_in(1, 10**7),
        "n_probe": _int_in(1, data.SIZES["test_subset"]),
        "n_test": _int_in(1, data.SIZES["test_subset"]),
        "train_epochs": _int_in(1),
        "long_factor": _int_in(1),
        "batch": _int_in(1, data.SIZES["train_subset"]),
        "n_batches": _int_in(1),
        "spreads": _list_of(lambda x: _finite(x, 0, False), "a non-empty list of finite numbers >= 0"),
        "betas": _list_of(lambda x: _finite(x, 0, True), "a non-empty list of finite numbers > 0"),
        "t_frees": _list_of(lambda x: type(x) is int and 1 <= x <= UPPER_LIMITS["t_free"],
                            f"a non-empty list of integers from 1 to {UPPER_LIMITS['t_free']}"),
    }


def check_parameter_values(parameters, profile, notebooks):
    """BookError unless each --parameters value is one the notebooks can use: data set names,
    seeds, ranges, a device training runs on, and overrides that every grid a notebook reads
    takes under `profile` (checked here, before any notebook runs, not in the seventh)."""
    from . import data, experiments, train
    checks = parameter_values()
    for name, value in parameters.items():
        if value is None:
            continue
        if name == "datasets":
            if not value:
                raise BookError("--parameters datasets=[] must name at least one data set (None: all of them)")
            for ds in value:
                if ds not in data.DATASETS:
                    raise BookError(f"--parameters datasets={value!r}: unknown data set {ds!r}; allowed: "
                                    f"{', '.join(data.DATASETS)}")
            if len(set(value)) != len(value):
                raise BookError(f"--parameters datasets={value!r} names a data set twice")
        elif name == "device":
            try:
                train.check_device_name(value)
            except train.InputError as error:
                raise BookError(f"--parameters device: {error}") from None
        elif name in checks:
            ok, allowed = checks[name]
            if not ok(value):
                if isinstance(value, list) or name == "seeds":
                    raise BookError(f"--parameters {name}={value!r} is not allowed; allowed: {allowed}")
                raise BookError(f"--parameters {name}={value!r} must be {allowed}")
    overrides = experiments.check_overrides(parameters.get("overrides"))
    if not (overrides or "seeds" in parameters or "datasets" in parameters):
        return
    profiles = ([experiments.ARCHIVED, experiments.FALLBACK] if profile == experiments.ARCHIVE else [profile])
    for spec in specs_read(notebooks):
        for prof in profiles:
            spec_obj = experiments.load_spec(spec)
            try:
                experiments.apply_overrides(
                    experiments.grid_configs(spec_obj, prof, parameters.get("datasets"), parameters.get("seeds")),
                    overrides, where=f"overrides: {spec_obj.path}")
            except experiments.SpecError as error:
                raise BookError(f"--parameters {error}") from None


def specs_read(notebooks):
    """The experiment specs the notebooks name (as a quoted string in their code)."""
    from . import experiments
    sources = "".join("".join(c["source"]) for nb in notebooks
                      for c in json.loads(Path(nb).read_text())["cells"] if c["cell_type"] == "code")
    return [name for name in experiments.spec_names() if f'"{name}"' in sources or f"'{name}'" in sources]


def check_parameter_types(parameters, notebooks):
    """BookError unless each --parameters value has the type of the notebooks' default
    (an int passes for a float): otherwise it fails later, inside a notebook."""
    defaults = {}
    for nb in notebooks:
        for name, value in parameter_defaults(nb).items():
            defaults.setdefault(name, value)

    def kind(v):
        if isinstance(v, list):
            inner = {kind(x) for x in v}
            return "list of " + inner.pop() if len(inner) == 1 else "list" if not v else "mixed list"
        return {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}.get(type(v), type(v).__name__)
    if "overrides" in parameters:
        from . import experiments
        try:
            experiments.check_overrides(parameters["overrides"])
        except experiments.SpecError as error:
            raise BookError(f"--parameters {error}") from None
    for name, value in parameters.items():
        if name == "overrides":         # checked above (it may come as text, papermill -p style)
            continue
        default = defaults.get(name)
        want = PARAMETER_TYPES.get(name) if default is None else kind(default)
        got = kind(value)
        if want is None or value is None or got == want or (want == "float" and got == "int") \
                or (want.startswith("list of") and got == "list"):
            continue
        raise BookError(f"--parameters {name}={value!r} is of type {got}; {name} takes: {want}"
                        + (" or None" if default is None else ""))
