"""The executable paper builds at the smoke profile, offline, with every table, figure and formula.

This is what CI checks: `python -m hts_ep.book --profile smoke` into a temporary
folder, with its own results store (so it trains the smoke runs itself, about
a minute on 2 cores), then the built HTML is inspected.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hts_ep import book

pytestmark = pytest.mark.data        # the smoke build trains on MNIST

REPO = Path(__file__).resolve().parent.parent
PAGES = ["01-time-steps", "02-table1", "03-learning-curves", "04-stability", "05-relaxation", "06-calibration",
         "07-timing", "08-gradients", "09-fidelity"]
FIGURE_PAGES = ["01-time-steps", "02-table1", "03-learning-curves", "04-stability", "05-relaxation",
                "06-calibration", "07-timing", "08-gradients", "09-fidelity"]


def build_smoke(tmp, *parameters):
    """Build a copy of the book sources (never the working tree's book/generated/) at the smoke
    profile into a store of its own under `tmp`; the HTML folder."""
    src = tmp / "src"
    src.mkdir()
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "notebooks", src / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(REPO / "book", src / "book", ignore=shutil.ignore_patterns("generated", "_vendor"))
    env = dict(os.environ, HTS_EP_RESULTS=str(tmp / "results"), OMP_NUM_THREADS="1")
    args = ["--parameters", *parameters] if parameters else []
    done = subprocess.run([sys.executable, "-m", "hts_ep.book", "--profile", "smoke", "--root", str(src), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"book build failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    out = src / "_build" / "html"
    assert (out / "index.html").exists()
    return out


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    return build_smoke(tmp_path_factory.mktemp("book"))


def test_builds_with_one_data_set_and_one_other_seed(tmp_path):
    # every glue key exists whatever rows exist: one data set, a seed the smoke profile does not have
    out = build_smoke(tmp_path, "datasets=['fashion-mnist']", "seeds=[3]")
    rows = side_by_side_rows(beside_paper(page(out, "book/generated/02-table1")))
    for dataset, _, ours, _ in rows:
        for cell in ours:
            if dataset == "Fashion-MNIST":
                assert re.match(r"\d+\.\d\d \(1 run, no spread\)|diverged", cell), cell
            else:
                assert cell == "gap: not run", (dataset, cell)
    seeds = {json.loads(f.read_text())["config"]["seed"] for f in (tmp_path / "results" / "smoke").glob("*.json")}
    assert seeds == {3}
    intro = " ".join(text_of(page(out, "book/intro")).split())
    assert "cannot tell apart (no interval: fewer than two seeds)" in intro
    assert "scalar: MNIST" not in intro and "scalar: Fashion-MNIST" in intro     # only the data sets it has


def page(html, name):
    path = html / "book" / f"{name}.html" if "/" not in name else html / f"{name}.html"
    return path.read_text()


def text_of(s):
    """Visible text: scripts, styles, code and math containers removed."""
    s = re.sub(r"<(script|style|pre)\b.*?</\1>", "", s, flags=re.S)
    s = re.sub(r'<(span|div) class="math[^"]*"[^>]*>.*?</\1>', "", s, flags=re.S)
    return re.sub(r"<[^>]+>", " ", s)


def beside_paper(page_html):
    """The table of Table 1 with this build's cells beside the paper's."""
    tables = re.findall(r"<table.*?</table>", page_html, flags=re.S)
    side = [t for t in tables if ">this build<" in t and ">paper<" in t]
    assert side, "no table beside the paper's"
    return side[0]


def test_every_page_is_built(html):
    for name in ["book/intro", "book/methods", "book/glossary", "book/reproducibility"] + \
            [f"book/generated/{p}" for p in PAGES]:
        assert (html / f"{name}.html").exists(), name


def side_by_side_rows(table_html):
    """(data set, eps_out, [ours per condition], [paper per condition]) for each body row of the
    side-by-side table, whose columns alternate (this build, paper) per condition."""
    from bs4 import BeautifulSoup
    rows, dataset = [], None
    for tr in BeautifulSoup(table_html, "html.parser").find("tbody").find_all("tr"):
        heads = [th.get_text(strip=True) for th in tr.find_all("th")]
        cells = [td.get_text(strip=True) for td in tr.find_all("td")]
        dataset = heads[0] if len(heads) == 2 else dataset
        rows.append((dataset, heads[-1], cells[0::2], cells[1::2]))
    return rows


def test_table1_rows(html):
    from hts_ep import data
    s = page(html, "book/generated/02-table1")
    side = beside_paper(s)
    for cond in ("Normal", "Log-normal", "Gamma", "Scalar"):
        assert f">{cond}<" in side
    rows = side_by_side_rows(side)
    names = {"mnist": "MNIST", "kmnist": "KMNIST", "fashion-mnist": "Fashion-MNIST"}
    assert [(d, e) for d, e, _, _ in rows] == [(names[d], f"{e:.2f}") for d in names
                                               for e in (0.15, 0.2, 0.25, 0.3, 0.35)]
    # the paper's numbers, cell by cell, in the paper columns, from the one file that holds them
    paper = pd.read_csv(REPO / "hts_ep" / "paper_table1.csv", comment="#")
    for (_, row), (_, _, ours, published) in zip(paper.iterrows(), rows):
        assert published == [f"{row[c + '_mean']:.2f} ± {row[c + '_std']:.2f}"
                             for c in ("normal", "lognormal", "gamma", "scalar")]
        # ours: run (mean ± std, possibly with a divergence count), or a stated gap, never a zero
        missing = data.unavailable(row["dataset"])
        for cell in ours:
            if missing:
                assert cell == "gap: no data", (row["dataset"], cell)
            else:
                assert re.match(r"(\d+\.\d\d ± \d+\.\d\d|diverged)", cell), (row["dataset"], cell)
    if any(data.unavailable(d) for d in names):
        assert "is a gap in this build" in s


def test_figures_exist_and_are_referenced(html):
    for name in FIGURE_PAGES:
        path = html / "book" / "generated" / f"{name}.html"
        srcs = re.findall(r'<img[^>]+src="([^"]+\.png)"', path.read_text())
        assert srcs, f"{name}: no figure"
        for img in re.findall(r'<img[^>]+\.png"[^>]*>', path.read_text()):     # the figures, not the logos
            alt = re.search(r'alt="([^"]*)"', img)
            assert alt and len(alt.group(1)) > 20, f"{name}: figure without alt text: {img[:120]}"
        for src in srcs:
            assert (path.parent / src).resolve().exists(), f"{name}: {src} missing"
    stab = re.findall(r'<img[^>]+src="([^"]+\.png)"', page(html, "book/generated/04-stability"))
    assert len(stab) >= 2            # the four metrics and the divergence map


def test_math_rendered_locally(html):
    for f in html.rglob("*.html"):
        s = f.read_text()
        assert not re.search(r"https?://[^\"' ]*mathjax", s, flags=re.I), f"{f}: MathJax from a CDN"
        for src in re.findall(r'<script[^>]+src="([^"]+)"', s):
            assert not src.startswith(("http:", "https:", "//")), f"{f}: remote script {src}"
            if "mathjax" in src.lower():
                assert (f.parent / src.split("?")[0]).resolve().exists(), f"{f}: {src} missing"
    methods = page(html, "book/methods")
    assert re.search(r'<script[^>]+src="[^"]*_static/mathjax/tex-chtml\.js', methods)
    assert methods.count('class="math') >= 5         # display and inline math handed to MathJax


def test_no_raw_latex(html):
    for name in ["book/intro", "book/methods"] + [f"book/generated/{p}" for p in PAGES]:
        text = text_of((html / f"{name}.html").read_text())
        leftovers = re.findall(r"\$[^$\s][^$]*\\[a-zA-Z]+|\\(?:epsilon|frac|begin|mathcal|odot|sigma)\b", text)
        assert not leftovers, f"{name}: raw LaTeX {leftovers[:3]}"


def test_glued_numbers_resolved(html):
    for name in ["book/intro"] + [f"book/generated/{p}" for p in PAGES]:
        text = text_of(page(html, name))
        assert "{glue" not in text and "glue:text" not in text, name
    intro = " ".join(text_of(page(html, "book/intro")).split())
    assert re.search(r"Table 1 again: \d+ runs at profile smoke: 1 epoch on 512 training images, 2 seeds per cell, "
                     r"not the paper.s protocol", intro)
    # the abstract's verdicts and the summary table's rows are there, each a sentence of wording's
    assert re.search(r"HTS minus scalar: MNIST [+-]\d+\.\d\d points", intro)
    assert "late spread, HTS − scalar (the stability endpoint)" in intro


def test_provenance_table_lists_every_field(html):
    import dataclasses

    from hts_ep import Config
    from hts_ep.config import PROVENANCE
    methods = page(html, "book/methods")
    for f in dataclasses.fields(Config):
        assert f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{f.name}</span></code>" in methods
        assert PROVENANCE[f.name][0] in ("stated", "inferred", "chosen")


def test_a_field_without_provenance_stops_the_build(monkeypatch):
    from hts_ep import config
    monkeypatch.delitem(config.PROVENANCE, "beta")
    with pytest.raises(book.BookError, match="Config.beta has no entry"):
        book.provenance_markdown()


def test_no_stderr_in_pages(html):
    for name in PAGES:
        s = page(html, f"book/generated/{name}")
        assert "output stderr" not in s and "TqdmWarning" not in s and "it/s]" not in s
        assert "IPython.core.display" not in s, f"{name}: an object's repr instead of its output"
        nans = re.findall(r"<td[^>]*>\s*[+-]?nan\s*</td>", s, flags=re.I)
        assert not nans, f"{name}: a table cell reads {nans[0]!r} (say gap, diverged or why there is no value)"


def test_failing_notebook_is_named(tmp_path):
    nb = {"cells": [{"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]}, "outputs": [],
                     "execution_count": None, "source": 'profile = "quick"'},
                    {"cell_type": "code", "id": "b", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": 'raise ValueError("boom in " + profile)'}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(book.BookError, match=r"broken\.ipynb failed in cell .*boom in smoke"):
        book.execute(path, "smoke", {}, out_dir=tmp_path / "out")


def test_parameters_parse():
    assert book.parse_parameters(["seeds=[0, 1]", "device=cuda", "datasets=None"]) == \
        {"seeds": [0, 1], "device": "cuda", "datasets": None}
    with pytest.raises(book.BookError):
        book.parse_parameters(["seeds"])


def test_fingerprint_follows_inputs(tmp_path):
    nb = book.REPO / "notebooks" / "01-time-steps.ipynb"
    a = book.fingerprint(nb, {"profile": "smoke"})
    assert a == book.fingerprint(nb, {"profile": "smoke"})
    assert a != book.fingerprint(nb, {"profile": "smoke", "seeds": [0]})
    copy = tmp_path / nb.name
    copy.write_text(nb.read_text().replace("Hidden time steps", "Hidden time steps!"))
    assert a != book.fingerprint(copy, {"profile": "smoke"})
