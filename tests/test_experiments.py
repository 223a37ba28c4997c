import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from hts_ep import Config, data, experiments
from hts_ep.experiments import SpecError, key

PROFILES = """
tiny:
  description: for tests
  seeds: [0, 1]
  epochs: 1
  train_subset: 256
  test_subset: 500
long:
  description: for interrupt tests (several epochs)
  seeds: [0]
  epochs: 4
  train_subset: 6000
  test_subset: 500
dupes:
  seeds: [0, 0]
  epochs: 1
  train_subset: 256
  test_subset: 500
"""

SPEC = """
name: {name}
grid:
  dataset: [mnist]
  distribution: {dists}
  eps_out: {eps}
fixed:
  n_hidden: 32
  t_free: 10
  t_nudge: 3
  batch_size: 64
"""


@pytest.fixture
def specs(tmp_path, monkeypatch):
    """A spec folder of small specs, and an empty results folder."""
    d = tmp_path / "specs"
    d.mkdir()
    (d / "profiles.yaml").write_text(PROFILES)
    (d / "small.yaml").write_text(SPEC.format(name="small", dists="[scalar, gamma]", eps="[0.2, 0.3]"))
    (d / "reordered.yaml").write_text(
        "fixed: {t_nudge: 3, t_free: 10, batch_size: 64, n_hidden: 32}\n"
        "grid:\n  eps_out: [0.3, 0.2]\n  distribution: [gamma, scalar]\n  dataset: [mnist]\nname: reordered\n")
    monkeypatch.setattr(experiments, "SPEC_DIR", d)
    results = tmp_path / "results"
    monkeypatch.setattr(experiments, "RESULTS", results)
    return d, results


def test_key_changes_with_every_parameter(monkeypatch):
    import dataclasses

    from hts_ep.config import INPUT_SCALINGS, NUDGE_SCHEMES
    base = Config()
    # a value other than the default's, whatever the defaults are
    other = {"dataset": "kmnist", "distribution": "gamma",
             "nudge_from": next(s for s in NUDGE_SCHEMES if s != base.nudge_from),
             "inputs": next(s for s in INPUT_SCALINGS if s != base.inputs),
             "h_bound": 2.0 if base.h_bound is None else None}
    keys = {key(base)}
    for f in dataclasses.fields(Config):
        value = other.get(f.name, "nearby")
        if value == "nearby":             # a nearby valid number of the field's type
            v = getattr(base, f.name)
            value = v + 1 if isinstance(v, int) else round(v * 1.1, 6) if v else 0.1
        keys.add(key(base.replace(**{f.name: value})))
    assert len(keys) == len(dataclasses.fields(Config)) + 1       # every field moves the key
    assert key(Config()) == key(Config())
    from hts_ep import train
    monkeypatch.setattr(train, "NUMERICS_VERSION", train.NUMERICS_VERSION + 1)
    assert key(base) not in keys                               # and so does the numerics version


def test_a_whole_number_in_a_float_field_is_the_same_model_and_key():
    # eta1=1 from a script or a spec and eta1=1.0 from the defaults are one model: one record.
    assert Config(eta1=1, beta=1, h_bound=2) == Config(eta1=1.0, beta=1.0, h_bound=2.0)
    assert key(Config(eta1=1, h_bound=2)) == key(Config(eta1=1.0, h_bound=2.0))
    assert type(Config(eps_out=1).eps_out) is float and type(Config(h_bound=2).h_bound) is float
    assert type(Config(epochs=3).epochs) is int                  # integer fields stay integers


def test_fields_added_later_keep_the_keys_of_earlier_records():
    # A record archived before h_bound and inputs existed (results/paper/), its config as written
    # then, key as its file is named: the same configuration made today has that key.
    import json

    from hts_ep.config import LATER_FIELDS
    path = sorted((experiments.REPO / "results" / "paper").glob("*.json"))[0]
    record = json.loads(path.read_text())
    assert not set(LATER_FIELDS) & set(record["config"])
    config = Config.from_dict(record["config"])
    assert key(config) == path.stem == record["key"]
    assert config.to_dict() == record["config"]
    assert key(config.replace(h_bound=1.2)) != path.stem and key(config.replace(inputs="standardised")) != path.stem


def test_reordering_a_spec_keeps_its_keys(specs):
    prof = experiments.load_profile("tiny")
    a = {key(c) for c in experiments.load_spec("small").configs(prof)}
    b = {key(c) for c in experiments.load_spec("reordered").configs(prof)}
    assert a == b and len(a) == 8


@pytest.mark.data
def test_sweep_trains_only_missing_and_recovers_corruption(specs):
    _, results = specs
    p = experiments.sweep("small", "tiny", progress=False)
    assert len(p.missing) == 8
    files = sorted((results / "tiny").glob("*.json"))
    assert len(files) == 8
    again = experiments.sweep("small", "tiny", progress=False)
    assert len(again.missing) == 0 and len(again.cached) == 8
    # corrupt one record (truncated) and mark another incomplete
    files[0].write_text(files[0].read_text()[:100])
    r = json.loads(files[1].read_text())
    r["complete"] = False
    files[1].write_text(json.dumps(r))
    p = experiments.plan("small", "tiny")
    assert len(p.missing) == 2 and len(p.problems) == 2
    assert "corrupted record" in experiments.describe(p)
    experiments.sweep("small", "tiny", progress=False)
    assert len(experiments.records("small", "tiny")) == 8
    assert json.loads(files[0].read_text())["complete"] is True


@pytest.mark.data
def test_missing_dataset_is_skipped_with_reason(specs, tmp_path, monkeypatch):
    d, _ = specs
    # Hermetic: MNIST from the shared data, KMNIST absent, no download.
    root = tmp_path / "data"
    root.mkdir()
    (root / "MNIST").symlink_to(data.data_root() / "MNIST")
    monkeypatch.setenv("HTS_EP_DATA", str(root))
    monkeypatch.setenv("HTS_EP_OFFLINE", "1")
    (d / "two.yaml").write_text(SPEC.format(name="two", dists="[scalar]", eps="[0.2]").replace(
        "dataset: [mnist]", "dataset: [mnist, kmnist]"))
    p = experiments.sweep("two", "tiny", progress=False)
    assert "kmnist" in p.skipped and "train-images-idx3-ubyte.gz" in p.skipped["kmnist"]
    assert {c.dataset for c in p.missing} == {"mnist"} and len(p.missing) == 2


@pytest.mark.parametrize("text, message", [
    ("grid: {}\n", "empty grid"),
    ("grid:\n  speed: [1]\n", "unknown axis 'speed'"),
    ("grid:\n  seed: [1]\n", "unknown axis 'seed'"),
    ("grid:\n  eps_out: []\n", "non-empty list"),
    ("grid:\n  eps_out: [0.2, 0.2]\n", "duplicate values"),
    ("grid:\n  eps_out: [0.2]\nfixed:\n  colour: 1\n", "unknown parameter 'colour'"),
    ("grid:\n  mu,sigma_eps: [[0.2]]\n", "takes lists of 2 values"),
])
def test_bad_specs(specs, text, message):
    d, _ = specs
    (d / "bad.yaml").write_text(text)
    with pytest.raises(SpecError, match=message):
        experiments.load_spec("bad")


def test_bad_names_and_profiles(specs):
    with pytest.raises(SpecError, match="unknown spec 'nope'; allowed: .*small"):
        experiments.load_spec("nope")
    with pytest.raises(SpecError, match="unknown profile 'huge'; allowed: tiny, long, dupes"):
        experiments.load_profile("huge")
    with pytest.raises(SpecError, match="profile 'dupes', key 'seeds': \\[0, 0\\] is not allowed; "
                                         "allowed: a non-empty list of distinct integers"):
        experiments.load_profile("dupes")
    with pytest.raises(SpecError, match="seeds have duplicates"):
        experiments.load_spec("small").configs({"seeds": [0, 0], "epochs": 1, "train_subset": 0,
                                                "test_subset": 0})
    with pytest.raises(ValueError, match="eps_out=-1"):
        Config(eps_out=-1)


@pytest.mark.data
def test_scheduler_that_does_not_answer(specs):
    from hts_ep.distributed import SchedulerError
    _, results = specs
    start = time.time()
    with pytest.raises(SchedulerError, match="no Dask scheduler answered at tcp://127.0.0.1:9"):
        experiments.sweep("small", "tiny", scheduler="tcp://127.0.0.1:9", progress=False, connect_timeout=3)
    assert time.time() - start < 30
    assert not list((results / "tiny").glob("*.json"))


def sweep_cmd(spec_dir, results, spec, profile):
    env = dict(os.environ, HTS_EP_SPECS=str(spec_dir), HTS_EP_RESULTS=str(results))
    return [sys.executable, "-m", "hts_ep.cli", "sweep", spec, "--profile", profile, "--threads", "1",
            "--no-progress"], env


@pytest.mark.data
def test_resume_after_sigkill_mid_epoch(specs):
    d, results = specs
    # full-size network: epochs of about a second, so the kill lands inside one
    (d / "one.yaml").write_text("grid:\n  distribution: [lognormal]\n")
    cmd, env = sweep_cmd(d, results, "one", "long")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpts = results / "long" / "checkpoints"
    deadline = time.time() + 120
    while not list(ckpts.glob("*.ckpt")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(ckpts.glob("*.ckpt")), "no checkpoint appeared"
    time.sleep(0.3)             # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((results / "long").glob("*.json"))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resuming 1 models from checkpoint" in out.stderr        # logged
    rec = experiments.records("one", "long")
    assert len(rec) == 1 and len(rec[0]["epochs"]) == 4
    # identical to a run that was never interrupted
    from hts_ep.train import train
    fresh = train(experiments.load_spec("one").configs(experiments.load_profile("long")), progress=False)
    assert [e["test_acc"] for e in rec[0]["epochs"]] == [e["test_acc"] for e in fresh[0]["epochs"]]
    assert not list(ckpts.glob("*.ckpt"))


@pytest.mark.data
def test_dask_local_cluster_survives_a_killed_worker(specs):
    from distributed import Client, LocalCluster
    d, results = specs
    (d / "four.yaml").write_text("grid:\n  distribution: [scalar, normal]\n  eps_out: [0.2, 0.3]\n")
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    killed, done = [], threading.Event()

    def kill_a_busy_worker():
        ckpts = results / "long" / "checkpoints"
        while not done.is_set() and not killed:
            if list(ckpts.glob("*.ckpt")):
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_a_busy_worker)
    watcher.start()
    try:
        p = experiments.sweep("four", "long", scheduler=cluster.scheduler_address, max_group=2,
                              progress=False)
    finally:
        done.set()
        watcher.join()
        client.close()
        cluster.close()
    assert killed, "no worker was killed mid-group"
    files = list((results / "long").glob("*.json"))
    assert len(p.missing) == 4 and len(files) == 4
    assert sorted(f.stem for f in files) == sorted(key(c) for c in p.missing)
    assert all(json.loads(f.read_text())["complete"] for f in files)


def test_groups_share_shapes_and_fit_memory():
    from hts_ep.experiments import group, per_model_bytes
    configs = [Config(seed=s, eps_out=e) for s in range(3) for e in (0.2, 0.3)] + \
              [Config(dataset="fashion-mnist", seed=s) for s in range(3)]
    groups = group(configs, max_group=4, budget=10**12)
    assert sorted(len(g) for g in groups) == [2, 3, 4]
    assert all(len({c.dataset for c in g}) == 1 for g in groups)
    # a budget for two models' footprint makes groups of two
    two = 2 * per_model_bytes(Config(), 1000)
    assert max(len(g) for g in group(configs, max_group=20, budget=two)) == 2


@pytest.mark.data
def test_sweep_restricted_to_datasets_and_seeds(specs):
    p = experiments.sweep("small", "tiny", datasets=["mnist"], seeds=[5], progress=False)
    assert len(p.missing) == 4 and {c.seed for c in p.missing} == {5}
    assert len(experiments.records("small", "tiny", seeds=[5])) == 4
    assert experiments.records("small", "tiny") == []            # the profile's seeds 0, 1: not run
    assert experiments.plan("small", "tiny", datasets=["fashion-mnist"]).missing == []


def test_per_model_bytes_covers_weights_and_batch():
    c = Config()
    weights = 4 * (1024 * 784 + 10 * 1024 + 2 * 1024 + 10)
    b256, b1000 = experiments.per_model_bytes(c, 256), experiments.per_model_bytes(c, 1000)
    assert weights + 5 * 256 * 1024 * 4 < b256 < b1000 < 40 * 2**20


@pytest.mark.data
def test_dry_run_counts_checkpointed_models(specs, monkeypatch):
    """A group's checkpoint (an interrupted sweep): the plan says which models the sweep
    would resume and from which epoch, and the estimate leaves out the epochs they have.
    Only a checkpoint training would resume counts: of a group the sweep forms (not
    other --max-group, other groups), with well-formed records at one epoch."""
    import torch

    from hts_ep import speed, train

    class Stop(Exception):
        pass

    def stop(records):
        raise Stop

    configs = experiments.grid_configs(experiments.load_spec("small"), "tiny")
    group = [c.replace(epochs=3) for c in configs[:2]]           # a bucket of its own (other epochs)
    monkeypatch.setattr(experiments, "grid_configs", lambda *a, **k: group + configs[2:])
    path = experiments.Store("tiny").checkpoint(group)
    with pytest.raises(Stop):                                    # interrupted after epoch 1
        train.train(group, checkpoint=path, progress=False, on_epoch=stop)
    p = experiments.plan("small", "tiny", max_group=2)
    assert group in p.groups and p.started == {key(c): 1 for c in group}
    monkeypatch.setattr(speed, "rates", lambda c, device=None, threads=None: {"train": 1e-3, "test": 0.0})
    # 256 training images an epoch: 6 models x 1 epoch, and 2 models x (3 - 1) epochs
    assert p.estimate_seconds("cpu", 1) == pytest.approx((6 + 2 * 2) * 0.256)
    assert "8 to train, 2 of them checkpointed at epoch 1 of 3 (the sweep resumes" in experiments.describe(p, "cpu", 1)
    assert experiments.plan("small", "tiny", max_group=1).started == {}    # groups of one: not this checkpoint
    assert experiments.plan("small", "tiny").started == {}                 # no grouping asked for
    state = torch.load(path, weights_only=True)

    def started_with(**changes):
        torch.save({**state, **changes}, path)
        return experiments.plan("small", "tiny", max_group=2).started

    first, second = state["records"]
    assert started_with(records=[first, {**second, "epochs": []}]) == {}     # models at different epochs
    # a record training would reject: an epoch without a test accuracy, yet not diverged
    broken = {**second, "epochs": [{**second["epochs"][0], "test_acc": None}]}
    assert started_with(records=[first, broken]) == {}
    assert started_with() == {key(c): 1 for c in group}                  # restored: counted again
    path.write_bytes(b"not a checkpoint")                                  # unreadable
    assert experiments.plan("small", "tiny", max_group=2).started == {}
