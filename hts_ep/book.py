"""Build the executable paper: run every notebook with papermill, then jupyter-book.

    python -m hts_ep.book --profile quick [--parameters key=value ...]

1. Local MathJax: `mathjax@3` from the npm registry, installed once into
   book/_vendor/ (gitignored) and served from the book's own static files.
2. Generated pages (book/generated/, gitignored): the provenance table from
   `hts_ep.config`, the profiles and the software versions.
3. Each notebooks/*.ipynb is executed by papermill into book/generated/ with
   the profile and parameters injected. Training goes through the cached
   store (results/<profile>/), so a second build trains nothing.
4. `jupyter-book build -W --keep-going` renders the executed copies into
   _build/html (or --output/_build/html).

The notebooks' own figure helpers are in hts_ep.plots.
"""
import argparse
import ast
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
BOOK = REPO / "book"
GENERATED = BOOK / "generated"
VENDOR = BOOK / "_vendor"
MATHJAX_STATIC = VENDOR / "static" / "mathjax"     # -> _build/html/_static/mathjax/
MATHJAX_VERSION = "3.2.2"
# What the book needs from the npm package's es5/ folder: the combined TeX
# loader plus what it may load lazily (extensions, fonts, menu, a11y).
MATHJAX_PARTS = ("tex-chtml.js", "input", "output", "ui", "a11y", "sre", "adaptors")

log = logging.getLogger("hts_ep.book")


class BookError(RuntimeError):
    """A step of the build failed; the message says which and why."""


# -- MathJax ------------------------------------------------------------------

def ensure_mathjax(root=REPO):
    """The local MathJax copy under `root`; installed from the npm registry on first use."""
    static = Path(root) / MATHJAX_STATIC.relative_to(REPO)
    target = static / "tex-chtml.js"
    if target.exists():
        return target
    if Path(root).resolve() != REPO:                  # a copy of the sources: reuse the repository's
        shutil.copytree(MATHJAX_STATIC if (MATHJAX_STATIC / "tex-chtml.js").exists()
                        else ensure_mathjax().parent, static)
        return target
    source = os.environ.get("HTS_EP_MATHJAX")          # an es5/ folder already on disk
    if source:
        es5 = Path(source)
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise BookError("MathJax is not installed in book/_vendor and `npm` is not on PATH: install "
                            "Node.js/npm, or set HTS_EP_MATHJAX to a MathJax 3 es5/ folder")
        prefix = VENDOR / "npm"
        prefix.mkdir(parents=True, exist_ok=True)
        log.info("installing mathjax@%s from the npm registry into %s", MATHJAX_VERSION, prefix)
        done = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix",
                               str(prefix), f"mathjax@{MATHJAX_VERSION}"], capture_output=True, text=True)
        if done.returncode != 0:
            raise BookError(f"npm install mathjax@{MATHJAX_VERSION} failed:\n{done.stderr.strip()}")
        es5 = prefix / "node_modules" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").exists():
        raise BookError(f"{es5} holds no tex-chtml.js: not a MathJax 3 es5/ folder")
    tmp = MATHJAX_STATIC.with_name(f"mathjax.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in MATHJAX_PARTS:
        src = es5 / part
        if src.is_dir():
            shutil.copytree(src, tmp / part)
        elif src.exists():
            shutil.copy2(src, tmp / part)
    shutil.rmtree(MATHJAX_STATIC, ignore_errors=True)
    tmp.rename(MATHJAX_STATIC)
    return target


# -- generated pages ------------------------------------------------------------

# model.md's structural choices that are not Config fields.
STRUCTURE = [
    ("hidden activation", "leaky ReLU", "stated", "the paper names it"),
    ("output activation", "logistic sigmoid", "stated", "the paper names it"),
    ("data sets", "MNIST, KMNIST, Fashion-MNIST", "stated", "the paper's three benchmarks"),
    ("hidden time steps", "one per hidden neuron; output layer scalar", "stated",
     "heterogeneity in the hidden layer only"),
    ("clipping", "to [eps_min, eps_max]", "stated", "the bounds' values are chosen (below)"),
    ("form of the Euler step", "eps * (-s + activation(input))", "inferred",
     "leaky-integrator form of the first author's earlier code"),
    ("start of the free phase", "h = 0, o = 0", "inferred", "earlier code"),
    ("update order", "synchronous (both layers read step t)", "inferred", "earlier code"),
    ("learning rule", "pre(nudged) x (post(nudged) - post(free))", "inferred",
     "predictive rule without prediction units, as in earlier code"),
    ("time steps through training", "drawn once, kept fixed", "inferred", "not said otherwise"),
    ("moment matching", "each family has mean mu and std sigma_eps before clipping", "chosen",
     "the paper gives mean and std only"),
    ("weight initialisation", "PyTorch nn.Linear default", "chosen", "not given"),
    ("optimiser", "plain SGD, no momentum", "chosen", "not given"),
]

def md_table(header, rows):
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def provenance_markdown():
    from .config import PROVENANCE, Config
    defaults = Config()
    rows = []
    for f in dataclasses.fields(Config):
        if f.name not in PROVENANCE:
            raise BookError(f"Config.{f.name} has no entry in hts_ep.config.PROVENANCE: say where its value "
                            "comes from (stated, inferred or chosen) before the book can print it")
        cls, note = PROVENANCE[f.name]
        rows.append((f"`{f.name}`", f"`{getattr(defaults, f.name)}`", f"**{cls}**", note))
    counts = {k: sum(r[2] == f"**{k}**" for r in rows) for k in ("stated", "inferred", "chosen")}
    text = ("Every field of `hts_ep.Config` with its default, generated from "
            "`hts_ep.config.PROVENANCE` when the book was built "
            f"({counts['stated']} stated, {counts['inferred']} inferred, {counts['chosen']} chosen):\n\n")
    text += md_table(("parameter", "default", "provenance", "note"), rows)
    text += "\nThe model's structure, from the design card (`model.md`):\n\n"
    text += md_table(("element", "choice", "provenance", "note"),
                     [(a, b, f"**{c}**", d) for a, b, c, d in STRUCTURE])
    return text


def profiles_markdown():
    from . import experiments
    rows = []
    for name, p in experiments.load_profiles().items():
        rows.append((f"`{name}`", ", ".join(map(str, p["seeds"])), p["epochs"],
                     p["train_subset"] or "all", p["test_subset"] or "all", p.get("description", "")))
    return md_table(("profile", "seeds", "epochs", "training samples", "test samples", "purpose"), rows)


def experiments_markdown():
    """The page listing every experiment spec and profile, read from the spec folder
    (experiments/ or $HTS_EP_SPECS) when the book is built: nothing in it is typed by hand."""
    import math
    from . import experiments
    profiles = experiments.load_profiles()
    lines = ["# Experiments and profiles", "",
             "Every experiment the book runs, as declared in its spec file, and every profile that "
             f"scales it; generated from `{rel(experiments.SPEC_DIR)}/` when this book was built. "
             "A spec is a grid over `hts_ep.Config` fields (the product of its axes, times the "
             "profile's seeds); fields it does not set keep the defaults of the provenance table "
             "on the methods page.", "", "## Profiles", "", profiles_markdown()]
    for name in experiments.spec_names():
        try:
            spec = experiments.load_spec(name)
        except experiments.SpecError as error:
            raise BookError(f"the experiments page cannot list spec {name!r}: {error}") from None
        cells = math.prod(len(v) for v in spec.grid.values())
        lines += ["", f"## `{name}`", ""]
        if spec.description:
            lines += [" ".join(spec.description.split()), ""]
        lines += [f"File `{rel(Path(spec.path))}`; {cells} configurations per seed.", ""]
        show = lambda v: ", ".join(  # noqa: E731
            "(" + ", ".join(map(str, x)) + ")" if isinstance(x, list) else str(x) for x in v)
        rows = [(f"`{axis}`", show(values)) for axis, values in spec.grid.items()]
        rows += [(f"`{k}` (fixed)", show([v])) for k, v in spec.fixed.items()]
        lines += [md_table(("axis", "values"), rows)]
        lines += [md_table(("profile", "models", "run it"),
                           [(f"`{p}`", cells * len(prof.get("seeds") or []),
                             f"`hts-ep sweep {name} --profile {p}`") for p, prof in profiles.items()])]
    return "\n".join(lines)


def versions_markdown(profile, parameters):
    from importlib.metadata import PackageNotFoundError, version
    rows = [("python", platform.python_version()), ("platform", platform.platform())]
    for pkg in ("hts-ep", "torch", "numpy", "pandas", "matplotlib", "papermill", "jupyter-book",
                "myst-nb", "sphinx", "dask", "distributed"):
        try:
            rows.append((pkg, version(pkg)))
        except PackageNotFoundError:
            rows.append((pkg, "not installed"))
    rows.append(("MathJax (local)", MATHJAX_VERSION))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except OSError:
        commit = "unknown"
    rows.append(("git commit", commit))
    params = ", ".join(f"`{k}={v!r}`" for k, v in parameters.items()) or "none"
    return (f"This build: profile `{profile}`, notebook parameters {params}.\n\n"
            + md_table(("software", "version"), rows))


def write_generated(profile, parameters, generated=GENERATED):
    generated.mkdir(parents=True, exist_ok=True)
    (generated / "provenance.md").write_text(provenance_markdown())
    (generated / "profiles.md").write_text(profiles_markdown())
    (generated / "experiments.md").write_text(experiments_markdown())
    (generated / "versions.md").write_text(versions_markdown(profile, parameters))


# -- notebooks ------------------------------------------------------------------

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


def notebook_parameters(path):
    """Names assigned in the notebook's `parameters` cell."""
    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return {t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
    return set()


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
    params = {"profile": profile, **{k: v for k, v in parameters.items() if k in known}}
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
    for folder in (experiments.SPEC_DIR, experiments.RESULTS / params["profile"], experiments.RESULTS / "calibration"):
        if folder.is_dir():
            for f in sorted(folder.glob("*.json")) + sorted(folder.glob("*.yaml")):   # not logs, checkpoints
                if f.is_file():
                    st = f.stat()
                    h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def rel(path):
    """A path relative to the repository where it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def tidy(path):
    """Fold the injected-parameters cell: the reader sees it behind a toggle."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            tags.append("hide-input")
    path.write_text(json.dumps(nb, indent=1))


def build(output=None, root=REPO):
    """jupyter-book build of the book sources in `root` into `output`/_build/html."""
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(root), "-W", "--keep-going"]
    if output is not None:
        cmd += ["--path-output", str(output)]
    log.info("building the book: jupyter-book %s", " ".join(cmd[3:]))
    if subprocess.call(cmd, cwd=root) != 0:
        raise BookError("jupyter-book build failed (warnings are errors); see the messages above")
    html = Path(output or root) / "_build" / "html"
    return html


# Types of the notebook parameters whose default is None (the default says nothing):
# what each takes besides None.
PARAMETER_TYPES = {"datasets": "list of str", "seeds": "list of int", "device": "str", "data_root": "str",
                   "results_dir": "str"}


def check_parameter_types(parameters, notebooks):
    """BookError unless each --parameters value has the type of the notebooks' default
    (an int passes for a float): otherwise it fails later, inside a notebook."""
    defaults = {}
    for nb in notebooks:
        cells = json.loads(Path(nb).read_text())["cells"]
        for cell in cells:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                for node in ast.parse("".join(cell["source"])).body:
                    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                        try:
                            defaults.setdefault(node.targets[0].id, ast.literal_eval(node.value))
                        except ValueError:
                            pass
    def kind(v):
        if isinstance(v, list):
            inner = {kind(x) for x in v}
            return "list of " + inner.pop() if len(inner) == 1 else "list" if not v else "mixed list"
        return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(v), type(v).__name__)
    for name, value in parameters.items():
        default = defaults.get(name)
        want = PARAMETER_TYPES.get(name) if default is None else kind(default)
        got = kind(value)
        if want is None or value is None or got == want or (want == "float" and got == "int") \
                or (want.startswith("list of") and got == "list"):
            continue
        raise BookError(f"--parameters {name}={value!r} is of type {got}; {name} takes: {want}"
                        + (" or None" if default is None else ""))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m hts_ep.book", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick", help="smoke, quick or paper (experiments/profiles.yaml)")
    p.add_argument("--parameters", nargs="*", default=[], metavar="KEY=VALUE",
                   help="notebook parameters (Python literals), e.g. seeds=[0,1] device='cuda'")
    p.add_argument("--only", nargs="*", metavar="NAME", help="execute only these notebooks (file stems); "
                   "the others keep their last executed copy")
    p.add_argument("--no-execute", action="store_true", help="reuse the executed copies; only rebuild pages")
    p.add_argument("--force", action="store_true", help="execute every notebook, even those whose source, "
                   "parameters, code and results are unchanged since their last run")
    p.add_argument("--output", help="folder for _build/ (default: the repository)")
    p.add_argument("--root", default=str(REPO), help="folder holding the book sources (_config.yml, "
                   "_toc.yml, book/, notebooks/); default: the repository. The tests build a copy.")
    p.add_argument("--kernel", default="python3")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s", stream=sys.stdout)
    start = time.perf_counter()
    shared = REPO.parent / "shared" / "data"        # as the Makefile does
    if not os.environ.get("HTS_EP_DATA") and shared.is_dir():
        os.environ["HTS_EP_DATA"] = str(shared)
    try:
        from . import experiments
        try:
            experiments.load_profile(args.profile)             # fail early on a bad name or profile
        except experiments.SpecError as error:
            raise BookError(str(error)) from None
        parameters = parse_parameters(args.parameters)
        if "profile" in parameters:
            # One place only: the pages and versions.md state --profile's value.
            raise BookError("--parameters profile=...: set the profile with --profile")
        root = Path(args.root).resolve()
        nb_dir, generated = root / "notebooks", root / "book" / "generated"
        if not (root / "_toc.yml").exists():
            raise BookError(f"{root} holds no _toc.yml: not a book source folder")
        # The arguments are checked before anything is installed or written.
        notebooks = sorted(nb_dir.glob("*.ipynb"))
        if args.only:
            unknown = set(args.only) - {n.stem for n in notebooks}
            if unknown:
                raise BookError(f"--only: no notebook {sorted(unknown)}; have {[n.stem for n in notebooks]}")
            notebooks = [n for n in notebooks if n.stem in args.only]
        known = set().union(*(notebook_parameters(n) for n in notebooks)) if notebooks else set()
        unknown = set(parameters) - known
        if unknown:
            raise BookError(f"--parameters {sorted(unknown)}: no notebook has such a parameter; "
                            f"known: {sorted(known)}")
        check_parameter_types(parameters, notebooks)
        ensure_mathjax(root)
        write_generated(args.profile, parameters, generated)
        if not args.no_execute:
            failed = []
            for i, nb in enumerate(notebooks, 1):
                log.info("notebook %d/%d: %s", i, len(notebooks), nb.name)
                try:
                    execute(nb, args.profile, parameters, args.kernel, out_dir=generated,
                            force=args.force or bool(args.only))
                except BookError as error:
                    log.error("%s", error)
                    failed.append(str(error))
            if failed:
                raise BookError(f"{len(failed)} notebook(s) failed, the book was not built:\n  "
                                + "\n  ".join(failed))
        missing = [n.name for n in sorted(nb_dir.glob("*.ipynb")) if not (generated / n.name).exists()]
        if missing:
            raise BookError(f"no executed copy of {missing} in {rel(generated)}: run without "
                            "--no-execute / --only first")
        html = build(args.output, root)
    except BookError as error:
        log.error("FAILED: %s", error)
        return 1
    log.info("book built in %.0f s: %s", time.perf_counter() - start, html / "index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
