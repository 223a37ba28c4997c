"""Records, checkpoints and lock files are data from strangers (issue 26): a store on a shared
file system may hold anything. Each bad file is named and left out (a record: retrained by
`sweep`, reported by `table` with exit 1), never a traceback for everyone who reads the store."""
import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hts_ep import Config, cli, experiments, train
from hts_ep.network import Ensemble

from conftest import small

REPO = Path(__file__).resolve().parent.parent

PROFILES = "two: {seeds: [0, 1], epochs: 1, train_subset: 256, test_subset: 500}\n"
SPECS = {
    "table1": "grid:\n  dataset: [mnist]\n  distribution: [scalar]\n  eps_out: [0.25]\n"
              "fixed: {n_hidden: 32, t_free: 10, t_nudge: 3, batch_size: 64}\n",
}


@pytest.fixture
def store(tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "profiles.yaml").write_text(PROFILES)
    for name, text in SPECS.items():
        (specs / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(experiments, "SPEC_DIR", specs)
    monkeypatch.setattr(experiments, "RESULTS", tmp_path / "results")
    return tmp_path


def run_cli(argv):
    try:
        return cli.main(argv)
    except SystemExit as exit:
        return exit.code


def good_record(config, acc=0.9):
    epochs = [{"epoch": i, "seconds": 1.0, "train_acc": acc, "test_acc": acc, "residual_free": 1e-4,
               "residual_nudge": 1e-3} for i in range(1, config.epochs + 1)]
    env = {"hts_ep": "0.2.0", "numerics_version": 2, "torch": "2.0", "python": "3.11.0", "device": "cpu",
           "device_name": "", "threads": 1, "ensemble_size": 1, "train_samples": 256, "test_samples": 500}
    return {"config": config.to_dict(), "environment": env, "epochs": epochs, "diverged_epoch": None,
            "complete": True, "finished": "2026-12-01T10:00:00Z"}


def first_epoch(**changes):
    def change(r):
        r["epochs"][0].update(changes)
    return change


# (id, what is written at the record's path: a function changing a good record, or raw text,
#  what the reason says)
BAD = [
    ("nested-list", "[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
    ("nested-object", '{"a":' * 50_000 + "1" + "}" * 50_000, "nested deeper than 32 levels"),
    ("too-large", '{"config": "' + "x" * (17 * 2**20) + '"}', "larger than"),
    ("not-json", "{not json", "not valid JSON"),
    ("finished-number", lambda r: r.update(finished=5), "finished=5 is not a date"),
    ("finished-text", lambda r: r.update(finished="yesterday"), "finished='yesterday' is not a date"),
    ("environment-text", lambda r: r.update(environment="cpu"), "environment='cpu' is not a JSON object"),
    ("environment-device-number", lambda r: r["environment"].update(device=3), "environment: device=3"),
    ("input-stats-list", lambda r: r["environment"].update(input_stats=[1]), "input_stats=[1]"),
    ("test-acc-7.5", first_epoch(test_acc=7.5), "epoch 1: test_acc=7.5 is not in [0, 1]"),
    ("train-acc-negative", first_epoch(train_acc=-0.1), "epoch 1: train_acc=-0.1 is not in [0, 1]"),
    ("seconds-negative", first_epoch(seconds=-1.0), "epoch 1: seconds=-1.0 is not a finite number >= 0"),
    ("seconds-missing", first_epoch(seconds=None), "epoch 1: seconds=None is not a finite number >= 0"),
    ("residual-negative", first_epoch(residual_free=-1.0), "residual_free=-1.0"),
    ("accuracy-text", first_epoch(test_acc="0.9"), "test_acc='0.9'"),
    ("accuracy-bool", first_epoch(test_acc=True), "test_acc=True"),
    ("epoch-key-missing", lambda r: r["epochs"][0].pop("residual_nudge"), "epoch 1 lacks residual_nudge"),
    ("epoch-key-extra", first_epoch(loss=1.0), "epoch 1 has unknown key 'loss'"),
    ("config-list", lambda r: r.update(config=[1]), "config=[1] is not a JSON object"),
    ("unknown-key", lambda r: r.update(extra=1), "unknown key 'extra'"),
    ("complete-text", lambda r: r.update(complete="yes"), "complete='yes' is not true or false"),
    ("key-of-another-record", lambda r: r.update(key="0" * 20), "key='00000000000000000000' is not"),
    ("diverged-yet-accurate", lambda r: r.update(diverged_epoch=1), "diverged at epoch 1 yet has a test accuracy"),
]


def write_bad(path, bad):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(bad, str):
        path.write_text(bad)
    else:
        raise TypeError(bad)


@pytest.mark.parametrize("bad, reason", [pytest.param(b, r, id=i) for i, b, r in BAD])
def test_bad_record_is_named_and_left_out(tmp_path, bad, reason):
    store = experiments.Store("p", tmp_path)
    c = small(epochs=2)
    path = store.path(c)
    path.parent.mkdir(parents=True)
    if callable(bad):
        record = good_record(c)
        bad(record)
        path.write_text(json.dumps(record))
    else:
        path.write_text(bad)
    start = time.perf_counter()
    assert store.get(c) is None
    assert time.perf_counter() - start < 5
    assert store.problems and store.problems[0][0] == str(path)
    assert reason in store.problems[0][1], store.problems


def test_good_records_pass_with_or_without_later_fields(tmp_path):
    store = experiments.Store("p", tmp_path)
    # the set-up records had before h_bound and inputs existed (their configs lack both), and the
    # defaults' since the fidelity ablation: each is filed under its own key, whatever the defaults
    for c in (small(epochs=2, h_bound=None, inputs="unit"), small(epochs=2, h_bound=1.2, inputs="standardised")):
        record = good_record(c)
        if c.inputs != "unit":
            record["environment"]["input_stats"] = {"mean": 0.1, "std": 0.3, "eta1_gain": 0.15}
        store.put(record)
        assert (tmp_path / "p" / f"{experiments.key(c)}.json").is_file()
        assert store.get(c) is not None, store.problems
    diverged = good_record(small(epochs=3, seed=7))
    diverged["diverged_epoch"] = 2
    for e in diverged["epochs"][1:]:
        e.update(train_acc=None, test_acc=None, residual_free=None, residual_nudge=None)
    store.put(diverged)
    assert store.get(small(epochs=3, seed=7)) is not None, store.problems


def test_archived_and_calibration_records_validate():
    """The committed records (results/paper/, results/calibration/) pass the schema: it must not
    turn the archive into 'bad records'."""
    paper = sorted((REPO / "results" / "paper").glob("*.json"))
    assert len(paper) >= 200
    for path in paper:
        record = train.read_json(path)
        train.check_record(record, Config.from_dict(record["config"]))
        assert record["key"] == path.stem
    calibration = sorted((REPO / "results" / "calibration").rglob("*.json"))
    assert calibration
    n = 0
    for path in calibration:
        for record in train.read_json(path)["records"]:
            train.check_record(record, complete=record["complete"])     # older configs: no Config to match
            n += 1
    assert n >= 40


@pytest.mark.data
@pytest.mark.parametrize("bad", ["nested-list", "finished-number", "environment-text", "test-acc-7.5",
                                 "seconds-negative"])
def test_table_names_a_bad_record_and_exits_1(store, capsys, bad):
    change, reason = next((b, r) for i, b, r in BAD if i == bad)
    configs = experiments.load_spec("table1").configs(experiments.load_profile("two"))
    results = experiments.Store("two")
    results.put(good_record(configs[0]))
    path = results.path(configs[1])
    if callable(change):
        record = good_record(configs[1])
        change(record)
        path.write_text(json.dumps(record))
    else:
        path.write_text(change)
    code = run_cli(["table", "table1", "--profile", "two"])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert "Traceback" not in err and "750" not in out
    assert f"{path} (" in err and reason in err and "left out of the table" in err


@pytest.mark.data
def test_sweep_retrains_a_deeply_nested_record(store, capsys):
    configs = experiments.load_spec("table1").configs(experiments.load_profile("two"))
    results = experiments.Store("two")
    results.put(good_record(configs[0]))
    results.path(configs[1]).write_text("[" * 100_000 + "]" * 100_000)
    assert run_cli(["sweep", "table1", "--profile", "two", "--dry-run", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 cached, 1 to train" in out and "nested deeper than 32 levels): will be retrained" in out
    assert run_cli(["sweep", "table1", "--profile", "two", "--threads", "1", "--no-progress"]) == 0
    assert "trained 1 models" in capsys.readouterr().out
    assert experiments.Store("two").get(configs[1]) is not None


@pytest.mark.data
def test_folder_at_a_record_path_is_refused_before_training(store, capsys, monkeypatch):
    configs = experiments.load_spec("table1").configs(experiments.load_profile("two"))
    folder = experiments.Store("two").path(configs[0])
    folder.mkdir(parents=True)
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("training started"))
    assert run_cli(["sweep", "table1", "--profile", "two", "--dry-run", "--threads", "1"]) == 0
    assert f"{folder} (a folder, not a record file)" in capsys.readouterr().out
    assert run_cli(["sweep", "table1", "--profile", "two", "--threads", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{folder} is a folder where a record belongs; remove it" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert run_cli(["table", "table1", "--profile", "two"]) == 1
    assert "a folder, not a record file" in capsys.readouterr().err


def test_table_of_a_store_that_is_a_file(store, capsys, monkeypatch):
    (store / "results").write_text("not a folder")
    assert run_cli(["table", "table1", "--profile", "two"]) == 2
    err = capsys.readouterr().err
    assert f"results folder {store / 'results'} is a file, not a folder" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.data
def test_table_reports_missing_grid_points(store, capsys):
    configs = experiments.load_spec("table1").configs(experiments.load_profile("two"))
    experiments.Store("two").put(good_record(configs[0]))
    code = run_cli(["table", "table1", "--profile", "two"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "1 of 2 runs of the grid have no record (mnist: 1 of 2" in err
    assert "seed 1" in err and "hts-ep sweep table1 --profile two" in err
    experiments.Store("two").put(good_record(configs[1]))
    assert run_cli(["table", "table1", "--profile", "two"]) == 0
    assert "no record" not in capsys.readouterr().err


def test_paper_table_without_data_reports_only_real_gaps(monkeypatch, tmp_path):
    """The archive covers MNIST and Fashion-MNIST: without any data those are no gaps; KMNIST,
    which has no record, is one, with the reason."""
    env = dict(os.environ, HTS_EP_DATA=str(tmp_path / "no-data"), HTS_EP_OFFLINE="1")
    p = subprocess.run([sys.executable, "-m", "hts_ep.cli", "table", "table1", "--profile", "paper"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "gap mnist" not in p.stdout and "gap fashion-mnist" not in p.stdout
    assert "gap kmnist: 100 of 100 runs have no record; data set 'kmnist' is not available" in p.stdout
    assert "Traceback" not in p.stderr


# -- checkpoints ----------------------------------------------------------------

def checkpoint_of(configs, ens, epochs_done=1):
    records = []
    for c in configs:
        r = good_record(c)
        r["epochs"], r["complete"] = r["epochs"][:epochs_done], False
        del r["finished"]
        records.append(r)
    return {"configs": [c.to_dict() for c in configs], "records": records, "ensemble": ens.state_dict()}


def garbage_generator(state):
    state["ensemble"]["generators"][1] = torch.randint(0, 255, state["ensemble"]["generators"][1].shape,
                                                       dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def other_time_steps(state):
    state["ensemble"]["eps_hidden"] = state["ensemble"]["eps_hidden"] * 2


def nan_weights(state):
    state["ensemble"]["W1"][0, 0, 0] = float("nan")


def alive_but_diverged(state):
    state["records"][0]["diverged_epoch"] = 1
    state["records"][0]["epochs"][0].update(train_acc=None, test_acc=None, residual_free=None,
                                            residual_nudge=None)


def other_rates(state):
    state["ensemble"]["eta"] = (state["ensemble"]["eta"][0] * 3, state["ensemble"]["eta"][1])


@pytest.mark.parametrize("change, reason", [
    (garbage_generator, "random state of model 2 is not a generator state"),
    (other_time_steps, "its hidden time steps are not the ones its seeds draw"),
    (nan_weights, "tensor 'W1' holds non-finite values"),
    (alive_but_diverged, "model 1 is alive in its tensors but diverged in its record"),
    (other_rates, "its learning rates are not its models'"),
], ids=["generator", "time-steps", "nan", "alive", "rates"])
def test_checkpoint_fields_are_validated(tmp_path, caplog, change, reason):
    configs = [small(epochs=3, seed=s) for s in (0, 1)]
    ens = Ensemble(configs, device="cpu")
    state = checkpoint_of(configs, ens)
    change(state)
    ckpt = tmp_path / "c.ckpt"
    torch.save(state, ckpt)
    assert train.load_checkpoint(ckpt, configs, Ensemble(configs, device="cpu")) is None
    assert reason in caplog.text


@pytest.mark.data
def test_training_starts_over_from_a_checkpoint_with_a_garbage_generator(tmp_path):
    configs = [small(epochs=2, seed=s, train_subset=256, test_subset=500) for s in (0, 1)]
    state = checkpoint_of(configs, Ensemble(configs, device="cpu"))
    garbage_generator(state)
    ckpt = tmp_path / "c.ckpt"
    torch.save(state, ckpt)
    records = train.train(configs, progress=False, checkpoint=ckpt)
    fresh = train.train(configs, progress=False)
    assert [r["epochs"][-1]["test_acc"] for r in records] == [r["epochs"][-1]["test_acc"] for r in fresh]


# -- locks ------------------------------------------------------------------------

def test_lock_file_that_is_a_folder(tmp_path):
    store = experiments.Store("p", tmp_path)
    (store.dir / "locks" / f"{experiments.key(Config())}.lock").mkdir(parents=True)
    with pytest.raises(experiments.StoreError, match=r"lock file .*\.lock cannot be used \(Is a directory\)"):
        store.lock([Config()])


@pytest.mark.data
def test_sweep_meeting_a_lock_file_that_is_a_folder_is_one_line(store, capsys, monkeypatch):
    configs = experiments.load_spec("table1").configs(experiments.load_profile("two"))
    locks = experiments.Store("two").dir / "locks"
    (locks / f"{experiments.key(configs[0])}.lock").mkdir(parents=True)
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("training started"))
    assert run_cli(["sweep", "table1", "--profile", "two", "--threads", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot be used (Is a directory)" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("hts-ep: error:")


def test_lock_file_that_cannot_be_opened(tmp_path, monkeypatch):
    """A read-only lock file (not ours): filelock raises PermissionError for a user other than root."""
    import filelock

    def refuse(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.lock_file))
    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    with pytest.raises(experiments.StoreError, match="cannot be used \\(Permission denied\\)"):
        experiments.Store("p", tmp_path).lock([Config()])


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
                    reason="runs a second user with setpriv, as root")
def test_read_only_lock_file_of_another_user(tmp_path):
    """The real case: a lock file another user left read-only, met by a sweep of user nobody."""
    root = Path(f"/tmp/hts-ep-lock-{os.getpid()}")
    locks = root / "p" / "locks"
    locks.mkdir(parents=True)
    try:
        for d in (root, root / "p", locks):
            d.chmod(0o777)
        lock = locks / f"{experiments.key(Config())}.lock"
        lock.write_text("")
        lock.chmod(0o444)
        code = ("import sys; from hts_ep import Config, experiments\n"
                "try:\n    experiments.Store('p', sys.argv[1]).lock([Config()])\n"
                "except experiments.StoreError as e:\n    print('refused:', e)\n")
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            code, str(root)], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, HOME="/nonexistent"))
        assert "refused:" in p.stdout and "Permission denied" in p.stdout, p.stdout + p.stderr
    finally:
        subprocess.run(["rm", "-rf", str(root)])


def hold_lock(root):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hts_ep import Config, experiments; "
         f"held = experiments.Store('p', {str(root)!r}).lock([Config()]); print('held', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_lock_wait_names_the_holder_and_gives_up(tmp_path, caplog, monkeypatch):
    caplog.set_level("INFO", logger="hts_ep")
    holder = hold_lock(tmp_path)
    try:
        monkeypatch.setenv("HTS_EP_LOCK_WAIT", "1.5")
        start = time.perf_counter()
        with pytest.raises(experiments.StoreError) as error:
            experiments.Store("p", tmp_path).lock([Config()])
        waited = time.perf_counter() - start
    finally:
        holder.kill()
        holder.wait()
    assert 1.4 < waited < 10
    message = str(error.value)
    assert f"held by process {holder.pid} on {socket.gethostname()}" in message
    assert "gave up after 1.5 s (HTS_EP_LOCK_WAIT" in message
    assert f"process {holder.pid}" in caplog.text          # said while waiting, not only at the end


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "0"])
def test_lock_wait_setting_is_checked(tmp_path, monkeypatch, value):
    monkeypatch.setenv("HTS_EP_LOCK_WAIT", value)
    with pytest.raises(experiments.StoreError, match=f"HTS_EP_LOCK_WAIT={value!r} is not"):
        experiments.lock_wait_seconds()


def test_lock_owner_file_from_a_stranger_is_not_trusted(tmp_path):
    store = experiments.Store("p", tmp_path)
    owner = store.dir / "locks" / f"{experiments.key(Config())}.owner"
    owner.parent.mkdir(parents=True)
    for text in ("[" * 100_000, '{"pid": "rm -rf /"}', "x" * 10**6, '{"pid": 1, "host": "' + "h" * 5000 + '"}'):
        owner.write_text(text)
        assert store.holder(experiments.key(Config())) == "an unknown process"


@pytest.mark.data
def test_sweep_that_waits_too_long_fails_in_one_line(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "profiles.yaml").write_text(PROFILES.replace("[0, 1]", "[0]"))
    (specs / "table1.yaml").write_text(SPECS["table1"])
    results = tmp_path / "results"
    config = experiments.Spec("t", {"dataset": ["mnist"], "distribution": ["scalar"], "eps_out": [0.25]},
                              {"n_hidden": 32, "t_free": 10, "t_nudge": 3, "batch_size": 64}).configs(
        {"seeds": [0], "epochs": 1, "train_subset": 256, "test_subset": 500})[0]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, json; from hts_ep import Config, experiments; "
         f"held = experiments.Store('two', {str(results)!r}).lock([Config.from_dict(json.loads(sys.argv[1]))]); "
         "print('held', flush=True); time.sleep(300)", json.dumps(config.to_dict())],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        env = dict(os.environ, HTS_EP_SPECS=str(specs), HTS_EP_RESULTS=str(results), HTS_EP_LOCK_WAIT="2")
        p = subprocess.run([sys.executable, "-m", "hts_ep.cli", "sweep", "table1", "--profile", "two",
                            "--threads", "1", "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("hts-ep: error:") and f"held by process {holder.pid}" in last, p.stderr
    assert "Traceback" not in p.stderr


# -- what a user made is not replaced ----------------------------------------------------

TRAIN = ["train", "--n-hidden", "32", "--t-free", "10", "--t-nudge", "3", "--train-subset", "256",
         "--test-subset", "500", "--epochs", "1", "--threads", "1", "--no-progress"]


@pytest.fixture
def fake_train(monkeypatch):
    calls = []

    def fake(configs, **kw):
        calls.append(kw)
        return [good_record(c) for c in configs]
    monkeypatch.setattr(train, "train", fake)
    return calls


def test_out_that_is_not_a_record_file_is_refused(tmp_path, capsys, fake_train):
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("\\documentclass{article}")
    assert run_cli(TRAIN + ["--out", str(thesis)]) == 2
    err = capsys.readouterr().err
    assert f"--out {thesis} exists and is not a records file of hts-ep" in err
    assert len(err.strip().splitlines()) == 1
    assert thesis.read_text() == "\\documentclass{article}" and not fake_train
    # a records file of this package is replaced, as before
    ours = tmp_path / "run.json"
    train.write_json(ours, {"records": [good_record(small())]})
    assert run_cli(TRAIN + ["--out", str(ours)]) == 0
    assert len(fake_train) == 1


def test_checkpoint_of_another_run_is_refused_unless_asked(tmp_path, capsys, fake_train):
    other = [Config(n_hidden=32, t_free=10, t_nudge=3, train_subset=256, test_subset=500, epochs=2)]
    ckpt = tmp_path / "c.ckpt"
    torch.save(checkpoint_of(other, Ensemble(other, device="cpu")), ckpt)
    before = ckpt.read_bytes()
    assert run_cli(TRAIN + ["--out", str(tmp_path / "o.json"), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint {ckpt} holds another run (they differ in epochs" in err
    assert "--replace-checkpoint" in err and len(err.strip().splitlines()) == 1
    assert ckpt.read_bytes() == before and not fake_train
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("words")
    assert run_cli(TRAIN + ["--out", str(tmp_path / "o.json"), "--checkpoint", str(thesis)]) == 2
    assert "is not a checkpoint of hts-ep" in capsys.readouterr().err and thesis.read_text() == "words"
    assert run_cli(TRAIN + ["--out", str(tmp_path / "o.json"), "--checkpoint", str(ckpt),
                            "--replace-checkpoint"]) == 0
    assert len(fake_train) == 1


# -- tracebacks that are now one line -------------------------------------------------------

def test_disk_full_is_one_line(tmp_path, capsys, fake_train, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(train.os, "fsync", full)
    assert run_cli(TRAIN + ["--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'o.json'} could not be written (No space left on device)" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []          # no temporary file left behind


def test_unknown_kernel_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HTS_EP_KERNEL", "fastest")
    assert run_cli(TRAIN + ["--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "HTS_EP_KERNEL='fastest' is not one of auto, torch, triton" in err
    assert len(err.strip().splitlines()) == 1


def test_speed_cache_from_a_stranger_is_measured_again(tmp_path, monkeypatch):
    """The dry run's cached rates (~/.cache/hts-ep/speed.json) are read with the same limits."""
    from hts_ep import speed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    speed.cache_path().parent.mkdir(parents=True)
    for text in ("[" * 100_000 + "]" * 100_000, '{"k": {"train": NaN, "test": 1.0}}'):
        speed.cache_path().write_text(text)
        entries = speed._read(speed.cache_path())
        assert not any(speed._usable(e) for e in entries.values())


def within(seconds, f, *args):
    """f(*args) in a thread; fails (instead of hanging the suite) if it has not returned in time."""
    import threading
    out, errors = [], []

    def run():
        try:
            out.append(f(*args))
        except Exception as error:
            errors.append(error)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{f.__name__} blocked for {seconds} s"
    if errors:
        raise errors[0]
    return out[0] if out else None


def test_fifos_in_a_store_do_not_block(tmp_path, caplog):
    """A FIFO where a record, a lock's owner note or a checkpoint belongs blocks a reader for ever."""
    store = experiments.Store("p", tmp_path)
    c = small()
    store.dir.mkdir(parents=True)
    os.mkfifo(store.path(c))
    assert within(10, store.get, c) is None
    assert "not a regular file" in store.problems[0][1]
    (store.dir / "locks").mkdir()
    os.mkfifo(store.dir / "locks" / f"{experiments.key(c)}.owner")
    assert within(10, store.holder, experiments.key(c)) == "an unknown process"
    os.mkfifo(tmp_path / "c.ckpt")
    configs = [c]
    assert within(10, train.load_checkpoint, tmp_path / "c.ckpt", configs, Ensemble(configs, device="cpu")) is None
    assert "not a regular file" in caplog.text
    with pytest.raises(train.InputError, match="is not a checkpoint of hts-ep \\(not a regular file\\)"):
        within(10, train.check_resumable, tmp_path / "c.ckpt", configs)


def test_ensemble_larger_than_the_machine_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(train, "device_memory", lambda dev: 16 * 2**30)
    big = [Config(n_hidden=2**20, seed=s) for s in range(2)]
    with pytest.raises(train.InputError, match=r"2 models of n_hidden=1048576 need about \d+\.\d GiB, more "
                                               r"than the 16.0 GiB of cpu"):
        train.check_memory(big, torch.device("cpu"))
    train.check_memory([Config()] * 20, torch.device("cpu"))          # the paper's groups fit
