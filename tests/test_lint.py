"""The code follows the ruff configuration of pyproject.toml ([tool.ruff]): pycodestyle, pyflakes,
bugbear, isort and pyupgrade at 120 columns, over the package, tests, benchmarks and notebooks.
`make lint` runs the same check; `ruff check --fix` mends the import order and unused imports."""
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def ruff(*args, cwd=REPO):
    try:
        import ruff  # noqa: F401  (the dev extra's; its binary lies beside the module)
    except ImportError:
        pytest.fail("ruff is not installed: it is in the dev extra (make install)", pytrace=False)
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_configured():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]
    assert config["line-length"] == 120 and config["target-version"] == "py311"
    assert {"E", "W", "F", "B", "I", "UP"} <= set(config["lint"]["select"])


def test_ruff_check_passes():
    done = ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_ruff_catches_a_violation(tmp_path):
    """The check is live: the repository's configuration finds an unused import and a long line."""
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text("import os\n\nx = '" + "a" * 130 + "'\n")
    done = ruff("check", "--no-cache", "--output-format", "concise", ".", cwd=tmp_path)
    assert done.returncode == 1 and "F401" in done.stdout and "E501" in done.stdout, done.stdout + done.stderr
