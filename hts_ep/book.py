"""Build the book: execute the notebooks with papermill, then run jupyter-book."""
import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m hts_ep.book", description=__doc__)
    p.add_argument("--profile", default="quick")
    args = p.parse_args(argv)
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(REPO), "-W", "--keep-going"]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
