"""MNIST, KMNIST and Fashion-MNIST as flat [0, 1] tensors, preloaded on the device.

Loading goes through torchvision. The data root may be read-only (the
project's shared copy is): the upstream `.gz` files are then linked into a
writable cache where torchvision can extract them, without any network.
"""
import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

# name -> (torchvision class, folder torchvision uses under the root)
DATASETS = {"mnist": "MNIST", "kmnist": "KMNIST", "fashion-mnist": "FashionMNIST"}
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class DataMissingError(RuntimeError):
    """A data set is neither on disk nor downloadable."""


@dataclass
class Split:
    x: torch.Tensor   # [N, 784] float32 in [0, 1]
    y: torch.Tensor   # [N] int64


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
        if src.exists() and not dst.exists():
            shutil.copyfile(src, dst)
    return mirror


def missing_message(dataset, root, error):
    raw = root / DATASETS[dataset] / "raw"
    missing = [name for name in FILES if not (raw / name).exists()]
    reason = " ".join(str(error).split())[:300]
    return (f"data set {dataset!r} is not available. Missing from {raw}:\n  " + "\n  ".join(missing)
            + f"\nDownloading them failed ({reason}). Place the upstream files there, or point "
            f"--data-root / HTS_EP_DATA at a folder holding {DATASETS[dataset]}/raw/.")


def unavailable(dataset, root=None):
    """None if `dataset` can be loaded (downloading it if need be), else the reason, in one line."""
    raw = data_root(root) / DATASETS[dataset] / "raw"
    if all((raw / name).exists() or (raw / name[:-3]).exists() for name in FILES):
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


def load_uncached(dataset, root=None, train=True):
    """The train or test split of `dataset` as a CPU Split, downloaded if need be."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    import torchvision  # heavy import, only when data is needed

    folder = DATASETS[dataset]
    root = data_root(root)
    try:
        ds = getattr(torchvision.datasets, folder)(
            str(_writable_root(root, folder)), train=train, download=True)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ...
        raise DataMissingError(missing_message(dataset, root, error)) from error
    x = ds.data.reshape(len(ds.data), -1).to(torch.float32).div_(255)
    return Split(x, ds.targets.to(torch.int64))


def subset(split, n):
    """The first n samples (n = 0: all)."""
    if n <= 0 or n >= len(split.y):
        return split
    return Split(split.x[:n], split.y[:n])
