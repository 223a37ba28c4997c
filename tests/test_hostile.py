"""Hostile input: each fails before any work, in one line, without a traceback;
checkpoints cannot run code; two sweeps into one store train each model once."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from hts_ep import Config, book, cli, data, experiments
from hts_ep.network import Ensemble
from hts_ep.train import load_checkpoint, write_json

from conftest import SHARED_DATA, small

PROFILES = """
tiny:
  seeds: [0]
  epochs: 1
  train_subset: 256
  test_subset: 500
frac: {seeds: [0], epochs: 1.5, train_subset: 256, test_subset: 500}
noseeds: {epochs: 1, train_subset: 256, test_subset: 500}
strseeds: {seeds: abc, epochs: 1, train_subset: 256, test_subset: 500}
extra: {seeds: [0], epochs: 1, train_subset: 256, test_subset: 500, speed: 3}
big: {seeds: [0], epochs: 1, train_subset: 100000, test_subset: 500}
hugeseed: {seeds: [18446744073709551616], epochs: 1, train_subset: 256, test_subset: 500}
"""
# Nine levels of anchors inside a grid axis: 10**9 values once expanded (a "billion laughs").
LAUGHS = ("grid:\n  dataset: [mnist]\n  eps_out:\n    - &a0 [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]\n"
          + "".join(f"    - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)))
# 100 x 100 x 100 distinct values: a grid of 10**6 points.
HUGE_GRID = ("grid:\n  dataset: [mnist]\n"
             + "".join(f"  {axis}: [{', '.join(str(round(0.01 * (i + 1), 2)) for i in range(100))}]\n"
                       for axis in ("eps_out", "eta1", "eta2")))
SMALL_SPEC = """
grid:
  dataset: [mnist]
  distribution: [scalar, gamma]
  eps_out: [0.2, 0.3]
fixed: {n_hidden: 32, t_free: 10, t_nudge: 3, batch_size: 64}
"""
BAD_SPECS = {
    "broken": "grid: [unclosed\n",
    "listed": "- grid\n- fixed\n",
    "empty": "",
    "word": "grid:\n  eps_out: [abc]\n",
    "extrakey": "grid:\n  eps_out: [0.2]\nsteps: 3\n",
    "narrow": "grid:\n  eps_out: [0.2]\nfixed: {n_in: 100}\n",
    "gridlist": "grid: [eps_out, 0.2]\n",
    "dupkey": "grid:\n  eps_out: [0.2]\n  eps_out: [0.3]\n",
    "dupfixed": "grid:\n  eps_out: [0.2]\nfixed: {beta: 0.1, beta: 0.5}\n",
    "fixedepochs": "grid:\n  eps_out: [0.2]\nfixed: {epochs: 3}\n",
    "fixedseed": "grid:\n  eps_out: [0.2]\nfixed: {seed: 7}\n",
    "fixedsubset": "grid:\n  eps_out: [0.2]\nfixed: {train_subset: 100}\n",
    "gridepochs": "grid:\n  epochs: [1, 2]\n",
    "laughs": LAUGHS,
    "hugegrid": HUGE_GRID,
}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Spec folder (good and bad specs and profiles), empty results, a file and a folder to misuse."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "profiles.yaml").write_text(PROFILES)
    (specs / "small.yaml").write_text(SMALL_SPEC)
    for name, text in BAD_SPECS.items():
        (specs / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(experiments, "SPEC_DIR", specs)
    monkeypatch.setattr(experiments, "RESULTS", tmp_path / "results")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "thesis.tex").write_text("\\documentclass{article}")
    return tmp_path


def run_cli(argv):
    try:
        return cli.main(argv)
    except SystemExit as exit:          # argparse's own errors
        return exit.code


def files(root):
    return {(p, p.stat().st_mtime_ns) for p in root.rglob("*")}


TRAIN = ["train", "--out", "{tmp}/out.json", "--n-hidden", "32", "--t-free", "10", "--t-nudge", "3",
         "--train-subset", "256", "--epochs", "1", "--threads", "1", "--no-progress"]
SWEEP = ["sweep", "small", "--profile", "tiny", "--threads", "1", "--no-progress"]

HOSTILE = [
    # (id, argv, expected in the one line of stderr)
    ("eta1-nan", TRAIN + ["--eta1", "nan"], "eta1=nan must be a finite number"),
    ("eta2-inf", TRAIN + ["--eta2", "inf"], "eta2=inf must be a finite number"),
    ("gamma-minus-inf", TRAIN + ["--gamma=-inf"], "gamma=-inf must be a finite number"),
    ("slope-nan", TRAIN + ["--slope", "nan"], "slope=nan must be a finite number"),
    ("beta-inf", TRAIN + ["--beta", "inf"], "beta=inf must be a finite number"),
    ("eps-out-nan", TRAIN + ["--eps-out", "0.2", "nan"], "eps_out=nan must be a finite number"),
    ("n-in", TRAIN + ["--n-in", "100"], "n_in=100 does not fit 'mnist', which has 784 pixels"),
    ("n-out", TRAIN + ["--n-out", "5"], "n_out=5 does not fit 'mnist', which has 10 classes"),
    ("device-name", TRAIN + ["--device", "nosuch"], "--device 'nosuch' is not a device name"),
    ("device-absent", TRAIN + ["--device", "cuda:99"], "--device 'cuda:99' is not available on this machine"),
    ("train-subset", TRAIN + ["--train-subset", "70000"], "train_subset=70000 is larger than the 60000"),
    ("test-subset", TRAIN + ["--test-subset", "20000"], "test_subset=20000 is larger than the 10000"),
    ("epochs-fraction", TRAIN + ["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    ("threads-zero", TRAIN + ["--threads", "0"], "--threads=0 must be >= 1"),
    ("out-folder", TRAIN + ["--out", "{tmp}/dir"], "is a folder; give a file name"),
    ("out-under-file", TRAIN + ["--out", "{tmp}/afile/out.json"], "afile is a file, not a folder"),
    ("checkpoint-under-file", TRAIN + ["--checkpoint", "{tmp}/afile/deeper/c.ckpt"],
     "--checkpoint {tmp}/afile/deeper/c.ckpt cannot be written"),
    ("checkpoint-folder", TRAIN + ["--checkpoint", "{tmp}/dir"], "--checkpoint {tmp}/dir is a folder"),
    ("profile-unknown", SWEEP + ["--profile", "nosuch"], "unknown profile 'nosuch'; allowed: tiny, frac"),
    ("profile-fraction", SWEEP + ["--profile", "frac"],
     "profiles.yaml: profile 'frac', key 'epochs': 1.5 is not allowed; allowed: an integer >= 1"),
    ("profile-fraction-dry-run", SWEEP + ["--profile", "frac", "--dry-run"], "key 'epochs': 1.5"),
    ("profile-no-seeds", SWEEP + ["--profile", "noseeds"], "profile 'noseeds' lacks seeds; required: seeds"),
    ("profile-seeds-text", SWEEP + ["--profile", "strseeds"],
     "key 'seeds': 'abc' is not allowed; allowed: a non-empty list"),
    ("profile-unknown-key", SWEEP + ["--profile", "extra"], "profile 'extra' has unknown key 'speed'; allowed:"),
    ("profile-subset", SWEEP + ["--profile", "big"], "key 'train_subset': 100000 is not allowed"),
    ("spec-yaml", ["sweep", "broken", "--profile", "tiny"], "broken.yaml: not valid YAML at line"),
    ("spec-list", ["sweep", "listed", "--profile", "tiny", "--dry-run"],
     "listed.yaml: a spec file must hold a mapping at the top level, not list"),
    ("spec-empty", ["sweep", "empty", "--profile", "tiny"], "must hold a mapping at the top level, not nothing"),
    ("spec-text-for-number", ["sweep", "word", "--profile", "tiny", "--dry-run"],
     "word.yaml: eps_out='abc' must be a finite number"),
    ("spec-unknown-key", ["sweep", "extrakey", "--profile", "tiny"],
     "extrakey.yaml: unknown key 'steps'; allowed: name, description, grid, fixed"),
    ("spec-shape", ["sweep", "narrow", "--profile", "tiny"], "narrow.yaml: n_in=100 does not fit 'mnist'"),
    ("spec-grid-list", ["sweep", "gridlist", "--profile", "tiny"], "'grid' and 'fixed' must be mappings"),
    ("max-group", SWEEP + ["--max-group", "0"], "--max-group=0 must be >= 1"),
    ("workers", SWEEP + ["--workers", "0"], "--workers=0 must be >= 1"),
    ("sweep-threads", SWEEP + ["--threads", "0"], "--threads=0 must be >= 1"),
    # These plan first, which reads MNIST, before reaching their check.
    ("sweep-device", SWEEP + ["--device", "nosuch"], "--device 'nosuch' is not a device name"),
    ("scheduler-address", SWEEP + ["--scheduler", "no address"], "no Dask scheduler answered at no address"),
    # issue 26
    ("threads-1e9", TRAIN + ["--threads", "1000000000"], "--threads=1000000000 must be <= 1024"),
    ("sweep-threads-1e9", SWEEP + ["--threads", "1000000000"], "--threads=1000000000 must be <= 1024"),
    ("lock-wait-text", SWEEP + ["--lock-wait", "soon"], "--lock-wait='soon' is not a number of seconds > 0"),
    ("seed-2-64", TRAIN + ["--seed", str(2**64)], "seed=18446744073709551616 must be < 2**63"),
    ("profile-seed-2-64", SWEEP + ["--profile", "hugeseed"], "key 'seeds': [18446744073709551616] is not allowed"),
    ("n-hidden-1e9", TRAIN + ["--n-hidden", "1000000000"], "n_hidden=1000000000 must be <= 1048576"),
    ("t-free-1e12", TRAIN + ["--t-free", "1000000000000"], "t_free=1000000000000 must be <= 1000000"),
    ("device-meta", TRAIN + ["--device", "meta"], "--device 'meta' is not supported; allowed: cpu, cuda"),
    ("out-name-300", TRAIN + ["--out", "{tmp}/" + "x" * 300 + ".json"], "is longer than the 255 bytes"),
    ("out-thesis", TRAIN + ["--out", "{tmp}/thesis.tex"], "--out {tmp}/thesis.tex exists and is not a records"),
    ("checkpoint-thesis", TRAIN + ["--checkpoint", "{tmp}/thesis.tex"], "is not a checkpoint of hts-ep"),
    ("spec-duplicate-key", ["sweep", "dupkey", "--profile", "tiny"], "dupkey.yaml: duplicate key 'eps_out' at line 3"),
    ("spec-duplicate-fixed", ["sweep", "dupfixed", "--profile", "tiny"], "duplicate key 'beta' at line 3"),
    ("spec-fixed-epochs", ["sweep", "fixedepochs", "--profile", "tiny"],
     "fixedepochs.yaml: 'epochs' in fixed is the profile's to set (seeds, epochs, train_subset, test_subset: "
     "profiles.yaml); remove it from the spec"),
    ("spec-fixed-seed", ["sweep", "fixedseed", "--profile", "tiny"], "'seed' in fixed is the profile's to set"),
    ("spec-fixed-subset", ["sweep", "fixedsubset", "--profile", "tiny", "--dry-run"],
     "'train_subset' in fixed is the profile's to set"),
    ("spec-grid-epochs", ["sweep", "gridepochs", "--profile", "tiny"],
     "gridepochs.yaml: axis 'epochs' is the profile's to set"),
    ("spec-billion-laughs", ["sweep", "laughs", "--profile", "tiny", "--dry-run"],
     "laughs.yaml: expands to more than 100000 values"),
    ("spec-huge-grid", ["sweep", "hugegrid", "--profile", "tiny", "--dry-run"],
     "hugegrid.yaml: 1000000 models (1000000 grid points x 1 seeds), more than the 10000 a sweep may plan"),
]
NEEDS_DATA = {"sweep-device", "scheduler-address"}


@pytest.mark.parametrize("argv, message", [
    pytest.param(argv, message, id=name, marks=[pytest.mark.data] if name in NEEDS_DATA else [])
    for name, argv, message in HOSTILE])
def test_hostile_input(store, monkeypatch, capsys, argv, message):
    def trained(*args, **kw):
        raise AssertionError("training started")
    monkeypatch.setattr("hts_ep.train.train", trained)
    monkeypatch.setattr(experiments, "train", trained)
    before = files(store)
    start = time.perf_counter()
    code = run_cli([a.replace("{tmp}", str(store)) for a in argv])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert seconds < 30, f"took {seconds:.0f} s to fail"
    assert len(err.strip().splitlines()) == 1, err
    assert message.replace("{tmp}", str(store)) in err
    assert "Traceback" not in err
    assert files(store) == before          # nothing written (nor any folder made)


def test_main_lets_bugs_through(monkeypatch):
    """Only the package's own errors become one-line messages: a bug keeps its traceback."""
    def bug(args):
        raise KeyError("a bug")
    monkeypatch.setattr(cli, "cmd_train", bug)
    with pytest.raises(KeyError):
        cli.main(["train", "--out", "x.json"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(store, capsys):
    ro = store / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert run_cli([a.replace("{tmp}", str(store)) for a in TRAIN] + ["--out", str(ro / "x.json")]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


@pytest.mark.data
def test_results_folder_not_writable(store, monkeypatch, capsys):
    monkeypatch.setattr(experiments, "RESULTS", store / "afile" / "results")
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("training started"))
    assert run_cli(SWEEP) == 2
    err = capsys.readouterr().err
    assert "results folder" in err and "afile is a file, not a folder" in err


@pytest.mark.parametrize("dry", [[], ["--dry-run"]], ids=["sweep", "dry-run"])
def test_results_store_that_is_a_file(store, monkeypatch, capsys, dry):
    """A dry run said '8 to train' into a store that is a file, and the sweep failed after its first group."""
    monkeypatch.setattr(experiments, "RESULTS", store / "afile")
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("training started"))
    assert run_cli(SWEEP + dry) == 2
    err = capsys.readouterr().err
    assert f"results folder {store / 'afile'} is a file, not a folder" in err and len(err.strip().splitlines()) == 1


def test_profiles_file_with_a_duplicate_key(store, capsys):
    (store / "specs" / "profiles.yaml").write_text(PROFILES + "tiny: {seeds: [5], epochs: 9, train_subset: 256, "
                                                   "test_subset: 500}\n")
    assert run_cli(SWEEP + ["--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "profiles.yaml: duplicate key 'tiny' at line" in err and len(err.strip().splitlines()) == 1


def test_spec_that_is_a_fifo_does_not_block(store, capsys):
    import threading
    os.mkfifo(store / "specs" / "fifo.yaml")
    codes = []
    worker = threading.Thread(target=lambda: codes.append(run_cli(["sweep", "fifo", "--profile", "tiny"])),
                              daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "blocked on the FIFO"
    assert codes == [2] and "fifo.yaml: not a regular file" in capsys.readouterr().err


def test_profiles_file_that_is_a_list(store):
    (store / "specs" / "profiles.yaml").write_text("- smoke\n- quick\n")
    assert run_cli(SWEEP) == 2


def test_sweep_that_can_run_nothing_fails(store, monkeypatch, capsys):
    monkeypatch.setattr(data, "unavailable", lambda ds, root=None: "its files are not here")
    assert run_cli(SWEEP) == 2
    err = capsys.readouterr().err
    assert "nothing to train, no data set of the spec is available here (mnist: its files are not here)" in err
    assert len(err.strip().splitlines()) == 1


# -- checkpoints ----------------------------------------------------------------

class Payload:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_checkpoint_runs_nothing(tmp_path, caplog):
    configs = [small()]
    ens = Ensemble(configs, device="cpu")
    marker, ckpt = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"configs": [c.to_dict() for c in configs], "records": [], "ensemble": Payload(marker)}, ckpt)
    assert load_checkpoint(ckpt, configs, ens) is None
    assert not marker.exists()
    assert "was not unpickled (it could run code)" in caplog.text
    # The file is a real attack: the full unpickler the code used before runs its command.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def checkpoint_of(configs, ens, epochs_done=0):
    records = [{"config": c.to_dict(), "environment": {}, "diverged_epoch": None, "complete": False,
                "epochs": [{"epoch": i, "seconds": 1.0, "train_acc": 0.5, "test_acc": 0.5, "residual_free": 0.0,
                            "residual_nudge": 0.0} for i in range(1, epochs_done + 1)]} for c in configs]
    return {"configs": [c.to_dict() for c in configs], "records": records, "ensemble": ens.state_dict()}


def test_checkpoint_is_validated(tmp_path, capsys):
    configs = [small(epochs=3, seed=s) for s in (0, 1)]
    ens = Ensemble(configs, device="cpu")
    ckpt = tmp_path / "c.ckpt"
    torch.save(checkpoint_of(configs, ens, 1), ckpt)
    assert load_checkpoint(ckpt, configs, ens) is not None
    # the same models, more epochs: said, not silently started over
    longer = [c.replace(epochs=4) for c in configs]
    assert load_checkpoint(ckpt, longer, Ensemble(longer, device="cpu")) is None
    assert "they differ in epochs" in capsys.readouterr().err
    bad = checkpoint_of(configs, ens, 1)
    bad["ensemble"]["W1"] = torch.zeros(2, 3)
    torch.save(bad, ckpt)
    assert load_checkpoint(ckpt, configs, ens) is None
    assert "tensor 'W1' does not fit" in capsys.readouterr().err
    torch.save(checkpoint_of(configs, ens, 4), ckpt)           # more epochs than configured
    assert load_checkpoint(ckpt, configs, ens) is None
    assert "more than the 3 configured" in capsys.readouterr().err


# -- records ----------------------------------------------------------------------

def fake_record(config, acc=0.9, complete=True):
    epochs = [{"epoch": i, "seconds": 1.0, "train_acc": acc, "test_acc": acc, "residual_free": 0.0,
               "residual_nudge": 0.0} for i in range(1, config.epochs + 1)]
    return {"config": config.to_dict(), "environment": {}, "epochs": epochs if complete else [],
            "diverged_epoch": None, "complete": True}


def test_records_are_strict_json_and_readable_by_others(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": float("-inf")}})

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    assert json.loads(path.read_text(), parse_constant=refuse) == {"a": None, "b": [None, 1.5], "c": {"d": None}}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_complete_record_without_epochs_is_not_cached(tmp_path):
    store = experiments.Store("p", tmp_path)
    c = Config(epochs=2)
    store.put(fake_record(c, complete=False))
    assert store.get(c) is None
    assert "incomplete: 0 of 2 epochs" in store.problems[0][1]
    store.put(fake_record(c))
    assert store.get(c) is not None


@pytest.mark.data
def test_table_lists_bad_records_and_prints_no_nan(store, capsys):
    specs = store / "specs"
    (specs / "table1.yaml").write_text("grid:\n  dataset: [mnist]\n  distribution: [scalar]\n  eps_out: [0.25]\n")
    (specs / "profiles.yaml").write_text("two: {seeds: [0, 1], epochs: 1, train_subset: 256, test_subset: 500}\n")
    configs = experiments.load_spec("table1").configs(experiments.load_profile("two"))
    results = experiments.Store("two")
    results.put(fake_record(configs[0]))
    results.put(fake_record(configs[1], complete=False))     # "complete": true and no epochs
    code = run_cli(["table", "table1", "--profile", "two"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "± nan" not in out and "90.00 (1 run, no spread)" in out
    assert "source: profile two; 1 run on unknown device, trained on" in out     # the complete one
    assert f"{results.path(configs[1])} (incomplete: 0 of 1 epochs): left out of the table" in err


# -- data -------------------------------------------------------------------------

@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="needs the shared MNIST .gz files")
def test_corrupted_gz_is_named_with_expected_md5(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.FILES:
        (raw / name).write_bytes((SHARED_DATA / "MNIST" / "raw" / name).read_bytes())
    bad = raw / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:1000])        # truncated
    reason = data.unavailable("mnist", tmp_path / "root")
    assert f"Corrupted: {bad} has MD5" in reason
    assert "expected ec29112dd5afa0611ce80d1b7f02629c" in reason    # torchvision's MNIST.resources
    assert "Missing from" not in reason


def test_a_silent_network_ends_in_the_missing_data_message(tmp_path, monkeypatch):
    """A mirror that takes the connection and never answers (as a firewall that drops
    packets does) gives the missing-data message after the download time-out, not a hang."""
    import socket
    import threading

    import torchvision
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)                  # connections wait in the backlog: never accepted, never answered
    monkeypatch.setattr(torchvision.datasets.KMNIST, "mirrors", [f"http://127.0.0.1:{server.getsockname()[1]}/"])
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 0.5)
    monkeypatch.setattr(data, "_silent", [], raising=False)      # no earlier time-out in this process
    monkeypatch.delenv("HTS_EP_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    outcome = []

    def load():
        try:
            data.load_uncached("kmnist", tmp_path / "root")
        except data.DataMissingError as error:
            outcome.append(str(error))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(60)
    hung = loader.is_alive()
    server.close()                    # lets a hung download fail, so the thread ends
    assert not hung, "the download did not time out"
    assert "timed out" in outcome[0] and "KMNIST/raw" in outcome[0]
    assert socket.getdefaulttimeout() is None          # the program's default is restored


def test_subset_larger_than_split_is_an_error():
    split = data.Split(torch.zeros(5, 784), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(data.DataMismatchError, match="train_subset=6 is larger than the data set's 5"):
        data.subset(split, 6, "train_subset")
    assert len(data.subset(split, 0).y) == 5 and len(data.subset(split, 3).y) == 3


# -- the lock ---------------------------------------------------------------------

def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    root = tmp_path / "results"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hts_ep import Config, experiments; "
         f"held = experiments.Store('p', {str(root)!r}).lock([Config()]); print('held', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert experiments.Store("p", root).lock([Config()], wait=False) is None      # held: not taken
    finally:
        holder.kill()                    # SIGKILL: no clean-up, the lock file stays behind
        holder.wait()
    assert list((root / "p" / "locks").glob("*.lock"))
    held = experiments.Store("p", root).lock([Config()], wait=False)
    assert held is not None
    experiments.Store.unlock(held)


@pytest.mark.data
def test_two_concurrent_sweeps_train_each_model_once(store):
    """Both sweeps plan the same four missing models while the test holds their locks; once
    released, one trains them and the other finds them done. Without the lock both train all four."""
    results = store / "results"
    configs = experiments.load_spec("small").configs(experiments.load_profile("tiny"))
    held = experiments.Store("tiny", results).lock(configs)
    env = dict(os.environ, HTS_EP_SPECS=str(store / "specs"), HTS_EP_RESULTS=str(results))
    procs, logs = [], []
    for i in range(2):
        out, err = open(store / f"out{i}", "w+"), open(store / f"err{i}", "w+")
        logs.append((out, err))
        procs.append(subprocess.Popen([sys.executable, "-m", "hts_ep.cli", *SWEEP], env=env, stdout=out,
                                      stderr=err, text=True))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not all(
                "waiting for another process" in (store / f"err{i}").read_text() or procs[i].poll() is not None
                for i in range(2)):
            time.sleep(0.2)
    finally:
        experiments.Store.unlock(held)
    for p in procs:
        p.wait(timeout=300)
    outs = [(store / f"out{i}").read_text() for i in range(2)]
    errs = [(store / f"err{i}").read_text() for i in range(2)]
    for f in logs:
        f[0].close(), f[1].close()
    assert [p.returncode for p in procs] == [0, 0], errs
    assert all("waiting for another process that holds 4 models" in e for e in errs), errs
    trained = sorted(int(o.split("trained ")[1].split()[0]) for o in outs)
    assert trained == [0, 4], outs
    assert "4 were trained meanwhile by another sweep" in "".join(outs)
    assert len(experiments.records("small", "tiny", results_root=results)) == 4
    assert not list((results / "tiny" / "checkpoints").glob("*.ckpt"))


@pytest.mark.data
def test_checkpoint_of_finished_models_is_removed(store):
    """A process that died between its last record and removing its checkpoint left it behind."""
    configs = experiments.load_spec("small").configs(experiments.load_profile("tiny"))
    results = experiments.Store("tiny")
    for c in configs:
        results.put(fake_record(c))
    ckpt = results.checkpoint(configs)
    ckpt.parent.mkdir(parents=True)
    torch.save(checkpoint_of(configs, Ensemble(configs, device="cpu"), 1), ckpt)
    other = ckpt.with_name("unfinished.ckpt")          # a group still missing records: kept
    torch.save(checkpoint_of([c.replace(seed=5) for c in configs[:1]],
                             Ensemble([configs[0].replace(seed=5)], device="cpu")), other)
    p = experiments.sweep("small", "tiny", progress=False)
    assert len(p.cached) == 4 and not p.trained
    assert not ckpt.exists() and other.exists()


# -- the book's arguments ---------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--profile", "nosuch"], "unknown profile 'nosuch'"),
    (["--parameters", "seeds=abc"], "seeds='abc' is of type str; seeds takes: list of int or None"),
    (["--parameters", "n_probe=1.5"], "n_probe=1.5 is of type float; n_probe takes: int"),
    (["--parameters", "datasets=mnist"], "datasets='mnist' is of type str; datasets takes: list of str"),
    (["--parameters", "profile='paper'"], "set the profile with --profile"),
    # by value too (issue 26), before any notebook runs
    (["--parameters", "datasets=['fashion_mnist']"],
     "datasets=['fashion_mnist']: unknown data set 'fashion_mnist'; allowed: mnist, kmnist, fashion-mnist"),
    (["--parameters", "datasets=[]"], "datasets=[] must name at least one data set"),
    (["--parameters", "betas=[0.1, 1e999]"],
     "betas=[0.1, inf] is not allowed; allowed: a non-empty list of finite numbers > 0"),
    (["--parameters", "seeds=[-1]"],
     "seeds=[-1] is not allowed; allowed: a non-empty list of distinct integers from 0 to 2**63 - 1"),
    (["--parameters", "seeds=[0, 0]"], "seeds=[0, 0] is not allowed; allowed: a non-empty list of distinct integers"),
    (["--parameters", "seeds=[18446744073709551616]"], "seeds=[18446744073709551616] is not allowed"),
    (["--parameters", "n_probe=0"], "n_probe=0 must be an integer from 1 to 10000"),
    (["--parameters", "train_epochs=-1"], "train_epochs=-1 must be an integer >= 1"),
    (["--parameters", "spreads=[0.1, -0.1]"], "spreads=[0.1, -0.1] is not allowed"),
    (["--parameters", "t_frees=[25, 0]"], "t_frees=[25, 0] is not allowed; allowed: a non-empty list of integers "
                                          "from 1 to 1000000"),
    (["--parameters", "device='meta'"], "--device 'meta' is not supported"),
    (["--parameters", "overrides={'eps_max': 0.5}"],
     "stability.yaml: mu=1.0 must lie in [eps_min, eps_max] = [0.01, 0.5]"),
    (["--parameters", "overrides={'train_subset': 1000000}"], "train_subset=1000000 is larger than the 60000"),
], ids=["profile-unknown", "seeds-text", "n-probe-float", "datasets-text", "profile-parameter",
        "datasets-misspelt", "datasets-empty", "betas-inf", "seeds-negative", "seeds-repeated", "seeds-2-64",
        "n-probe-zero", "train-epochs-negative", "spreads-negative", "t-frees-zero", "device-meta", "overrides-grid",
        "overrides-subset"])
def test_book_arguments_fail_before_any_work(monkeypatch, caplog, argv, message):
    def work(*args, **kw):
        raise AssertionError("the build started")
    for name in ("ensure_mathjax", "write_generated", "execute", "build"):
        monkeypatch.setattr(book, name, work)
    assert book.main(argv) == 1
    assert message in caplog.text


def test_book_parameters_of_the_right_type_pass():
    notebooks = sorted(book.NOTEBOOKS.glob("*.ipynb"))
    book.check_parameter_types({"seeds": [0, 1], "eps_out": 0.3, "n_probe": 64, "datasets": ["mnist"],
                                "device": "cpu", "data_root": None}, notebooks)


# -- sampler parameters that underflow --------------------------------------------------

@pytest.mark.parametrize("std", [1e-160, 1e-200, 5e-324])
@pytest.mark.parametrize("family", ["normal", "lognormal", "gamma"])
def test_tiny_spread_is_the_limit_not_a_clip(family, std):
    """A spread far below float32's resolution gives every neuron the mean, as spread 0 does
    (it gave eps_max for gamma at 1e-160, ZeroDivisionError at 1e-200)."""
    from hts_ep import sampler
    eps = sampler.sample_time_steps(family, 64, 0.2, std, 0.01, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(eps, torch.full((64,), 0.2))
    assert sampler.clipped_fractions(family, 0.2, std, 0.01, 0.5) == (0.0, 0.0)
    Config(distribution=family, sigma_eps=std)
