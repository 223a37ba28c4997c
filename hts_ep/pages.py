"""The book's generated pages (book/generated/, gitignored): the provenance table
from `hts_ep.config`, the experiments and profiles from their spec files, the command
line's reference from its parser, and the software versions of the build. Nothing on them is typed by hand."""
import dataclasses
import platform
import subprocess
from pathlib import Path

from .errors import BookError
from .mathjax import MATHJAX_VERSION

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "book" / "generated"


def rel(path):
    """A path relative to the repository where it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def md_table(header, rows):
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def provenance_markdown():
    from .config import PROVENANCE, STRUCTURE, Config
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
    text += "\nThe model's structure, from the design card (`docs/model.md`):\n\n"
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


def cli_markdown():
    """The command line's reference page, read from its argparse parser (`hts_ep.cli.parser`) when the
    book is built: every command and option, with its values, default and help."""
    import argparse
    import re

    from .cli import parser
    from .config import Config
    fields = {f.name for f in dataclasses.fields(Config)}
    top = parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {a.dest: a.help for a in sub._choices_actions}
    # Flags, variables and placeholders as code: Sphinx would typeset '--' as a dash, '<x>' as HTML.
    code = lambda text: re.sub(r"(--[a-z][\w-]*|\$[A-Z][A-Z0-9_]*|[^\s(]*<[^>]+>[^\s,;)]*)", r"`\1`", text)  # noqa: E731

    def rows(p):
        out = []
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if isinstance(a, argparse._VersionAction):
                out.append(("`--version`", "", "", "print the version and exit"))
                continue
            flag = ", ".join(f"`{o}`" for o in a.option_strings) or f"`{a.metavar or a.dest.upper()}`"
            if a.choices and not isinstance(a, argparse._SubParsersAction):
                values = ", ".join(f"`{c}`" for c in a.choices)
            elif a.nargs == 0:
                values = "flag"
            elif a.type in (None, str):
                values = "text"
            elif a.type in (int, float):
                values = a.type.__name__
            else:       # a converter function: its docstring says what it takes, after the flag
                values = code((a.type.__doc__ or a.type.__name__).strip().split("\n")[0].split(": ", 1)[-1].rstrip("."))
            if a.nargs == "+":
                values += " (one or more)"
            default = a.default[0] if isinstance(a.default, list) and len(a.default) == 1 else a.default
            default = "" if a.nargs == 0 or default is None or a.required or not a.option_strings else f"`{default}`"
            if a.required and a.option_strings:
                default = "required"
            text = p._get_formatter()._expand_help(a) if a.help else ""
            # a model option's help repeats its default: the column has it
            text = re.sub(r"^default [^;]*(; )?", "", text)
            if a.dest in fields:
                text = "; ".join(filter(None, [f"`Config.{a.dest}`", text]))
            out.append((flag, values, default, code(text)))
        return out

    lines = ["# Command line", "",
             "Every command and option of `hts-ep`, generated from its parser (`hts_ep.cli.parser`) when this "
             "book was built; `hts-ep COMMAND --help` prints the same. A model option that takes one or more "
             "values trains one ensemble of the product of all the values given; its default is the "
             "provenance table's on the methods page.", "",
             "```text", f"hts-ep [--version] {{{','.join(sub.choices)}}} ...", "```", "",
             md_table(("option", "values", "default", "what"), rows(top)),
             md_table(("command", "what"), [(f"`hts-ep {n}`", code(summaries[n])) for n in sub.choices])]
    for name, p in sub.choices.items():
        positional = " ".join(f"{(a.metavar or a.dest).upper()}" for a in p._actions
                              if not a.option_strings and not isinstance(a, argparse._HelpAction))
        lines += ["", f"## `hts-ep {name}`", "", code(summaries[name][0].upper() + summaries[name][1:]) + ".", "",
                  "```text", f"hts-ep {name} {positional + ' ' if positional else ''}[options]", "```", "",
                  md_table(("option", "values", "default", "what"), rows(p))]
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
    what = (" (the paper profile's archived records where they cover an experiment, shown as "
            "\"paper (archived)\", the quick profile elsewhere)") if profile == "archive" else ""
    return (f"This build: profile `{profile}`{what}, notebook parameters {params}.\n\n"
            + md_table(("software", "version"), rows))


def write_generated(profile, parameters, generated=GENERATED):
    generated.mkdir(parents=True, exist_ok=True)
    (generated / "provenance.md").write_text(provenance_markdown())
    (generated / "profiles.md").write_text(profiles_markdown())
    (generated / "experiments.md").write_text(experiments_markdown())
    (generated / "cli.md").write_text(cli_markdown())
    (generated / "versions.md").write_text(versions_markdown(profile, parameters))
