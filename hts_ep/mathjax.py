"""The book's local MathJax: `mathjax@3` from the npm registry, installed once into
book/_vendor/ (gitignored) and served from the book's own static files, so that a
built book loads nothing from the internet."""
import logging
import os
import shutil
import subprocess
from pathlib import Path

from .errors import BookError

REPO = Path(__file__).resolve().parent.parent
VENDOR = REPO / "book" / "_vendor"
MATHJAX_STATIC = VENDOR / "static" / "mathjax"     # -> _build/html/_static/mathjax/
MATHJAX_VERSION = "3.2.2"
# What the book needs from the npm package's es5/ folder: the combined TeX
# loader plus what it may load lazily (extensions, fonts, menu, a11y).
MATHJAX_PARTS = ("tex-chtml.js", "input", "output", "ui", "a11y", "sre", "adaptors")

log = logging.getLogger(__name__)


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
