"""The notebook sources: committed without outputs, each with a papermill parameters cell."""
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# What every notebook that trains or reads records takes; `overrides` every notebook takes.
PARAMETERS = {"profile", "seeds", "device", "data_root", "overrides"}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: strip them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell(path):
    from hts_ep.runner import notebook_parameters
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    declared = notebook_parameters(path)
    if "profile" in declared:
        assert PARAMETERS <= declared and "overrides = {}" in "".join(tagged[0]["source"])
        # the profile that shows real numbers fastest where a notebook is opened on its own (Binder)
        assert 'profile = "archive"' in "".join(tagged[0]["source"])


def names_read(source):
    import ast
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_declared_parameter_is_used(path):
    from hts_ep.runner import notebook_parameters
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    later = [c for c in cells if "parameters" not in c.get("metadata", {}).get("tags", [])]
    read = set().union(*(names_read("".join(c["source"])) for c in later))
    unused = notebook_parameters(path) - read
    assert not unused, f"{path.name} declares parameters it never reads: {sorted(unused)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_in_table_of_contents(path):
    toc = (REPO / "_toc.yml").read_text()
    assert f"book/generated/{path.stem}" in toc


def test_toc_parses():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    assert toc["root"] == "book/intro"


LONGEST_CELL = 25       # lines: a chapter's code cells are short steps (the rest is in the package)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_are_short_and_a_third_visible(path):
    code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    lengths = [len("".join(c["source"]).strip().splitlines()) for c in code]
    assert max(lengths) <= LONGEST_CELL, f"{path.name}: a code cell of {max(lengths)} lines"
    hiding = {"hide-input", "remove-cell", "remove-input"}
    hidden = [c for c in code if hiding & set(c.get("metadata", {}).get("tags", []))]
    assert len(code) - len(hidden) >= len(code) / 3, f"{path.name}: {len(hidden)} of {len(code)} code cells hidden"
