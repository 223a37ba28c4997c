"""Build the executable paper: run every notebook with papermill, then jupyter-book.

    python -m hts_ep.book --profile quick [--parameters key=value ...]

1. Local MathJax (`hts_ep.mathjax`), installed once from the npm registry.
2. Generated pages (`hts_ep.pages`): provenance, experiments and profiles, versions.
3. Each notebooks/*.ipynb executed by papermill into book/generated/ with the
   profile and parameters injected (`hts_ep.runner`).
4. `jupyter-book build -W --keep-going` renders the executed copies into
   _build/html (or --output/_build/html).

This module is the command line; the notebooks' figures are drawn by hts_ep.figures.
"""
import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import BookError
from .mathjax import ensure_mathjax
from .pages import GENERATED, experiments_markdown, provenance_markdown, rel, write_generated
from .runner import (
    check_parameter_types,
    check_parameter_values,
    execute,
    fingerprint,
    notebook_parameters,
    parse_parameters,
)

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
__all__ = ["BookError", "build", "check_parameter_types", "check_parameter_values", "ensure_mathjax", "execute",
           "experiments_markdown", "fingerprint", "main", "notebook_parameters", "parse_parameters",
           "provenance_markdown", "write_generated", "GENERATED", "NOTEBOOKS", "REPO"]
log = logging.getLogger(__name__)


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


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m hts_ep.book", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="archive", help="archive (the default: the paper profile's archived "
                   "records where an experiment has them, the quick profile elsewhere), or a profile of "
                   "experiments/profiles.yaml (smoke, quick, paper), run in full")
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
            experiments.check_book_profile(args.profile)       # fail early on a bad name or profile
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
        try:
            check_parameter_values(parameters, args.profile, sorted(nb_dir.glob("*.ipynb")))
        except experiments.SpecError as error:
            raise BookError(f"--parameters {error}") from None
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
