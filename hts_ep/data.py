"""MNIST, KMNIST and Fashion-MNIST as flat [0, 1] tensors, preloaded on the device.

Loading goes through torchvision. The data root may be read-only (the
project's shared copy is): the upstream `.gz` files are then linked into a
writable cache where torchvision can extract them, without any network.
"""
import contextlib
import functools
import hashlib
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

# name -> (torchvision class, folder torchvision uses under the root)
DATASETS = {"mnist": "MNIST", "kmnist": "KMNIST", "fashion-mnist": "FashionMNIST"}
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# What the three data sets share (upstream facts): 28x28 images, ten classes,
# 60,000 training and 10,000 test images. Configurations are checked against
# these before any work; `train` checks the loaded tensors again.
INPUTS, CLASSES = 784, 10
SIZES = {"train_subset": 60000, "test_subset": 10000}


# Seconds a download may wait for the network at any one step (a connection, a read);
# chosen. torchvision sets none, so on a node whose firewall drops packets each file
# of each mirror hangs for minutes (or for ever) before the missing-data message.
DOWNLOAD_TIMEOUT = 30


class DataMissingError(RuntimeError):
    """A data set is neither on disk nor downloadable (or its files are corrupted)."""


class DataMismatchError(ValueError):
    """A configuration that does not fit its data set (shapes, subset sizes)."""


def check_config(config):
    """Raise DataMismatchError unless `config`'s shapes and subsets fit its data set."""
    for name, want in (("n_in", INPUTS), ("n_out", CLASSES)):
        if getattr(config, name) != want:
            raise DataMismatchError(f"{name}={getattr(config, name)} does not fit {config.dataset!r}, "
                                    f"which has {want} {'pixels' if name == 'n_in' else 'classes'}")
    for name, size in SIZES.items():
        if getattr(config, name) > size:
            kind = "training" if name == "train_subset" else "test"
            raise DataMismatchError(f"{name}={getattr(config, name)} is larger than the {size} {kind} "
                                    f"images of {config.dataset!r} (0: all of them)")


@dataclass
class Split:
    x: torch.Tensor   # [N, 784] float32 in [0, 1] (unit inputs; see scaled)
    y: torch.Tensor   # [N] int64


@dataclass(frozen=True)
class InputStats:
    mean: float       # of pixel / 255 over the data set's training images
    std: float
    # lambda_max(E[x x^T]) with unit inputs over that with standardised inputs: the factor
    # that keeps eta1 lambda_max, the W1 update's step against its largest curvature, the
    # same under both scalings (chosen; Config.inputs, Ensemble.eta1)
    eta1_gain: float


# Computed in float64 over all 60,000 training images (tests/test_data.py recomputes them
# where the data are present). KMNIST: the training images are not on this project's
# machines; mean and std are the published values the first author's code uses, the gain
# is computed from the 10,000 test images with them.
INPUT_STATS = {
    "mnist": InputStats(mean=0.130660, std=0.308108, eta1_gain=0.1529),
    "fashion-mnist": InputStats(mean=0.286041, std=0.353024, eta1_gain=0.3672),
    "kmnist": InputStats(mean=0.1918, std=0.3483, eta1_gain=0.3618),
}


def input_stats(x, mean=None, std=None):
    """InputStats of unit inputs x [N, 784] (mean and std given: the gain with those), in float64."""
    x = x.double()
    mean = x.mean().item() if mean is None else mean
    std = x.std(unbiased=False).item() if std is None else std

    def top(z):
        return torch.linalg.eigvalsh(z.T @ z / len(z))[-1].item()
    return InputStats(mean, std, top(x) / top((x - mean) / std))


def scaled(split, config):
    """`split` as the network of `config` sees it: unit inputs, or standardised with the
    data set's training statistics (INPUT_STATS)."""
    if config.inputs == "unit":
        return split
    stats = INPUT_STATS[config.dataset]
    return Split((split.x - stats.mean) / stats.std, split.y)


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hts-ep"


def data_root(root=None):
    """--data-root, else $HTS_EP_DATA, else a folder in the user cache."""
    return Path(root or os.environ.get("HTS_EP_DATA") or cache_dir() / "data")


def _writable_root(root, folder):
    """A root where torchvision may write `<folder>/raw/`: the root itself, or a cache mirror."""
    raw = root / folder / "raw"
    if os.access(root, os.W_OK) and (not raw.exists() or os.access(raw, os.W_OK)):
        return root
    mirror = cache_dir() / "data-mirror"
    (mirror / folder / "raw").mkdir(parents=True, exist_ok=True)
    for name in FILES:
        src, dst = raw / name, mirror / folder / "raw" / name
        # Copied again when the source changed (a corrupted file replaced by a good one).
        if src.exists() and (not dst.exists() or dst.stat().st_size != src.stat().st_size):
            shutil.copyfile(src, dst)
    return mirror


def expected_md5(dataset):
    """{file name: MD5 of the upstream .gz}, from torchvision's own resource lists."""
    import torchvision
    return dict(getattr(torchvision.datasets, DATASETS[dataset]).resources)


def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corrupted(dataset, root):
    """[(path, md5 found, md5 expected)] for the .gz files under root that are not the upstream ones."""
    raw = root / DATASETS[dataset] / "raw"
    out = []
    for name, want in expected_md5(dataset).items():
        if (raw / name).exists() and (got := md5(raw / name)) != want:
            out.append((raw / name, got, want))
    return out


def missing_message(dataset, root, error):
    raw = root / DATASETS[dataset] / "raw"
    missing = [name for name in FILES if not (raw / name).exists()]
    bad = corrupted(dataset, root)
    reason = " ".join(str(error).split())[:300]
    lines = [f"data set {dataset!r} is not available."]
    if missing:
        lines.append(f"Missing from {raw}: {', '.join(missing)}.")
    for path, got, want in bad:
        lines.append(f"Corrupted: {path} has MD5 {got}, expected {want} (truncated or not the upstream file).")
    if not missing and not bad:
        lines.append(f"Its files in {raw} could not be read.")
    lines.append(f"Loading or downloading failed ({reason}). Place the upstream files there, or point "
                 f"--data-root / HTS_EP_DATA at a folder holding {DATASETS[dataset]}/raw/.")
    return "\n".join(lines)


def unavailable(dataset, root=None):
    """None if `dataset` can be loaded (downloading it if need be), else the reason, in one line."""
    raw = data_root(root) / DATASETS[dataset] / "raw"
    want = expected_md5(dataset)
    # Fast path: every file extracted, or its .gz is the upstream one (an MD5 of
    # ~60 MB at most). A present but corrupted .gz goes the slow way, whose
    # message names it, instead of counting as available.
    if all((raw / name[:-3]).exists() or ((raw / name).exists() and md5(raw / name) == want[name])
           for name in FILES):
        return None
    try:
        load(dataset, root, train=True)
        load(dataset, root, train=False)
    except DataMissingError as error:
        return " ".join(str(error).split())
    return None


@functools.lru_cache(maxsize=8)
def _load_cached(dataset, root, train):
    return load_uncached(dataset, root, train)


def load(dataset, root=None, train=True, device="cpu"):
    """The train or test split of `dataset` as a Split on `device` (read once per process)."""
    split = _load_cached(dataset, str(data_root(root)), train)
    return Split(split.x.to(device), split.y.to(device))


def offline():
    """HTS_EP_OFFLINE=1: never try to download (tests, air-gapped clusters); a missing data set is
    then reported at once instead of after the download's time-out."""
    return os.environ.get("HTS_EP_OFFLINE") == "1"


_downloading = threading.RLock()


@contextlib.contextmanager
def network_timeout(seconds):
    """Sockets opened inside time out after `seconds` of silence, unless the program set
    its own default (which is kept). The default is process-wide, so downloads in other
    threads wait for this one rather than restore it under its feet."""
    with _downloading:
        before = socket.getdefaulttimeout()
        if before is None:
            socket.setdefaulttimeout(seconds)
        try:
            yield
        finally:
            socket.setdefaulttimeout(before)


def load_uncached(dataset, root=None, train=True):
    """The train or test split of `dataset` as a CPU Split, downloaded if need be."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    import torchvision  # heavy import, only when data is needed

    folder = DATASETS[dataset]
    root = data_root(root)
    try:
        with network_timeout(DOWNLOAD_TIMEOUT):
            ds = getattr(torchvision.datasets, folder)(
                str(_writable_root(root, folder)), train=train, download=not offline())
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ...
        raise DataMissingError(missing_message(dataset, root, error)) from error
    x = ds.data.reshape(len(ds.data), -1).to(torch.float32).div_(255)
    return Split(x, ds.targets.to(torch.int64))


def subset(split, n, name="subset"):
    """The first n samples (n = 0: all); more than the split holds is an error, not a silent cap."""
    if n > len(split.y):
        raise DataMismatchError(f"{name}={n} is larger than the data set's {len(split.y)} samples")
    if n <= 0 or n == len(split.y):
        return split
    return Split(split.x[:n], split.y[:n])
