"""Publishing: the CI workflow, the version, the citation, Binder, the experiments page, and a
wheel that works outside the repository.

The wheel test builds the sdist and, from it, the wheel of a copy of the sources (nothing is
written into the working tree), installs the wheel with --no-deps into a fresh venv that sees
the project venv's heavy dependencies (torch, ...) through a .pth file, and runs `hts-ep` from a
folder outside the repository. About 30 s on 2 busy cores.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

import hts_ep
from hts_ep import book, experiments

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "book.yml"


# -- the workflow ---------------------------------------------------------------

def makefile_targets():
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.$()/-]+(?:\s+[A-Za-z0-9_.$()/-]+)*)\s*:(?![=:])", line)
        if m and not line.startswith(("\t", "#")):
            targets.update(t for t in m.group(1).split() if not t.startswith((".", "$")))
    return targets


def workflow():
    wf = yaml.safe_load(WORKFLOW.read_text())
    wf["on"] = wf.pop(True, wf.get("on"))          # YAML 1.1 reads the key `on` as True
    return wf


def steps(wf, job=None):
    for name, j in wf["jobs"].items():
        if job is None or name == job:
            yield from j.get("steps", [])


def test_makefile_targets_parsed():
    assert {"install", "test", "book", "bench", "clean"} <= makefile_targets()


def test_workflow_runs_only_make_targets():
    wf = workflow()
    runs = [s["run"] for s in steps(wf) if "run" in s]
    assert runs, "the workflow runs nothing"
    called = set()
    for run in runs:
        found = re.findall(r"(?<![\w./-])make\s+([A-Za-z_][\w.-]*)", run)
        assert found, f"a run step that calls no make target (only make targets are allowed): {run!r}"
        called.update(found)
    missing = called - makefile_targets()
    assert not missing, f"the workflow runs make targets the Makefile lacks: {sorted(missing)}"
    assert {"install", "test", "book"} <= called


def test_workflow_pull_requests_test_and_upload_smoke_book():
    wf = workflow()
    assert "pull_request" in wf["on"] and wf["on"]["push"]["branches"] == ["main"]
    pr = [name for name, j in wf["jobs"].items()
          if re.fullmatch(r"github\.event_name == 'pull_request'", j.get("if", "").strip())]
    assert len(pr) == 1
    runs = " ; ".join(s["run"] for s in steps(wf, pr[0]) if "run" in s)
    assert "make test" in runs and re.search(r"make book PROFILE=smoke\b", runs)
    uploads = [s for s in steps(wf, pr[0]) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html"


def test_workflow_deploys_pages_with_the_official_actions():
    wf = workflow()
    uses = {name: [s.get("uses", "").split("@")[0] for s in steps(wf, name)] for name in wf["jobs"]}
    deploy = [name for name, u in uses.items() if "actions/deploy-pages" in u]
    assert len(deploy) == 1, "one job deploys to GitHub Pages"
    job = wf["jobs"][deploy[0]]
    assert job["permissions"] == {"pages": "write", "id-token": "write"}
    assert job["environment"]["name"] == "github-pages"
    assert job["concurrency"]["cancel-in-progress"] is False
    assert "refs/heads/main" in job["if"]
    build = job["needs"]
    assert {"actions/configure-pages", "actions/upload-pages-artifact"} <= set(uses[build])
    upload = next(s for s in steps(wf, build) if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert any(re.search(r"\bmake book\b", s.get("run", "")) for s in steps(wf, build))
    assert wf["permissions"] == {"contents": "read"}       # the rest of the workflow reads only


def test_workflow_caches():
    wf = workflow()
    for job in wf["jobs"]:
        if job == "deploy":
            continue
        paths = " ".join(s["with"]["path"] for s in steps(wf, job) if s.get("uses", "").startswith("actions/cache@"))
        assert "book/_vendor" in paths and "~/.cache/torch_extensions" in paths, job
        setup = next(s for s in steps(wf, job) if s.get("uses", "").startswith("actions/setup-python@"))
        assert setup["with"]["cache"] == "pip"


# -- version, citation, changelog, Binder, _config ------------------------------------

def test_version_in_one_place():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hts_ep.__version__"}
    from packaging.version import Version
    Version(hts_ep.__version__)                                   # PEP 440
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert str(cff["version"]) == hts_ep.__version__
    changelog = (REPO / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d[^\]]*)\]", changelog, flags=re.M)
    assert "0.1.0" in released
    assert f"## [Unreleased] ({hts_ep.__version__})" in changelog or hts_ep.__version__ in released


def test_citation():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["message"]
    assert cff["repository-code"] == "https://github.com/hts-ep/hts-ep"
    paper = next(r for r in cff["references"] if "arXiv:2603.03402" in str(r))
    assert paper["title"] == "Heterogeneous Time Constants Improve Stability in Equilibrium Propagation"
    assert [a["family-names"] for a in paper["authors"]] == ["Kubo", "Modi", "Patel"] and paper["year"] == 2026


def test_book_config_launch_buttons_and_repository():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["repository"]["url"] == "https://github.com/hts-ep/hts-ep"
    assert config["html"]["use_repository_button"] is True
    assert config["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    # only links: nothing remote is loaded when the book is built or read
    assert config["launch_buttons"]["thebe"] is False
    assert config["sphinx"]["config"]["mathjax_path"].startswith("mathjax/")
    # jupyter-book 1.x's schema knows every key set here
    schema = __import__("json").loads(
        (Path(__import__("jupyter_book").__file__).parent / "config_schema.json").read_text())["properties"]
    for section in ("repository", "html", "launch_buttons"):
        unknown = set(config[section]) - set(schema[section]["properties"])
        assert not unknown, f"{section}: keys jupyter-book does not know: {unknown}"


def test_binder_installs_the_package_and_places_the_chapters():
    post = (REPO / "binder" / "postBuild").read_text()
    assert re.search(r"pip install .*-e \"?\.\[book\]", post)
    assert os.access(REPO / "binder" / "postBuild", os.X_OK)
    # the launch buttons open book/generated/<chapter>.ipynb, a build product: postBuild puts it there
    assert "cp notebooks/*.ipynb book/generated/" in post
    env = yaml.safe_load((REPO / "binder" / "environment.yml").read_text())
    assert any(str(d).startswith("python") for d in env["dependencies"])


# -- the experiments page --------------------------------------------------------------

def test_experiments_page_lists_every_spec_and_profile():
    page = book.experiments_markdown()
    assert page.startswith("# ")
    for name in experiments.spec_names():
        assert f"## `{name}`" in page and f"hts-ep sweep {name} --profile quick" in page
    for profile in experiments.load_profiles():
        assert f"| `{profile}` |" in page
    spec = experiments.load_spec("table1")
    assert "60 configurations per seed" in page and len(spec.configs(experiments.load_profile("smoke"))) == 120
    assert "- file: book/generated/experiments" in (REPO / "_toc.yml").read_text()


def test_experiments_page_names_a_broken_spec(tmp_path, monkeypatch):
    for f in (REPO / "experiments").glob("*.yaml"):
        shutil.copy2(f, tmp_path / f.name)
    (tmp_path / "broken.yaml").write_text("grid: {no_such_field: [1]}\n")
    monkeypatch.setattr(experiments, "SPEC_DIR", tmp_path)
    with pytest.raises(book.BookError, match="broken.*no_such_field"):
        book.experiments_markdown()


# -- the wheel, installed outside the repository ----------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding the wheel built from an sdist of a copy of the sources."""
    pytest.importorskip("build")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("hts_ep", "experiments"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # sdist, then the wheel from the sdist (python -m build's default): both must be complete.
    # --no-isolation: setuptools from this venv, no download.
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheel, = (tmp / "dist").glob("*.whl")
    sdist, = (tmp / "dist").glob("*.tar.gz")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # torch and the rest, without reinstalling them: the project venv's site-packages, appended to
    # sys.path after the fresh venv's own (its .pth files, the editable hts_ep among them, are not read)
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                           "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(wheel=wheel, sdist=sdist, bin=env_dir / "bin", cwd=tmp_path_factory.mktemp("elsewhere"))


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTS_EP_", "PYTHON"))}
    data = os.environ.get("HTS_EP_DATA") or str(REPO.parent / "shared" / "data")
    return dict(env, HTS_EP_DATA=data, OMP_NUM_THREADS="1", **extra)


def test_wheel_ships_specs_and_profiles(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for f in (REPO / "experiments").glob("*.yaml"):
        assert f"hts_ep/experiments_data/{f.name}" in names
    assert "hts_ep/paper_table1.csv" in names
    assert installed["wheel"].name.startswith(f"hts_ep-{hts_ep.__version__}-")
    assert installed["sdist"].name == f"hts_ep-{hts_ep.__version__}.tar.gz"


def test_installed_wheel_runs_outside_the_repository(installed):
    cwd, bin_ = installed["cwd"], installed["bin"]
    env = clean_env()
    where = subprocess.run([str(bin_ / "python"), "-c",
                            "import hts_ep, importlib.metadata as m; from hts_ep import experiments as e; "
                            "print(hts_ep.__file__); print(e.SPEC_DIR); print(e.RESULTS); print(m.version('hts-ep'))"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-3000:]
    module, spec_dir, results, version = where.stdout.split("\n")[:4]
    assert Path(module).is_relative_to(bin_.parent), f"imported {module}, not the installed wheel"
    assert spec_dir.endswith("experiments_data") and Path(spec_dir).is_relative_to(bin_.parent)
    assert Path(results) == cwd / "results" and version == hts_ep.__version__

    done = subprocess.run([str(bin_ / "hts-ep"), "--help"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "sweep" in done.stdout, done.stderr[-3000:]
    done = subprocess.run([str(bin_ / "hts-ep"), "sweep", "table1", "--profile", "smoke", "--dry-run"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "table1" in done.stdout + done.stderr
    assert not (cwd / "results" / "smoke").exists() or not any((cwd / "results" / "smoke").glob("*.json"))
