"""MNIST, KMNIST and Fashion-MNIST as flat [0, 1] tensors, preloaded on the device.

The upstream IDX files are read here, from `<Name>/raw/` under the data root, each
extracted file or `.gz` checked against its known header, size and checksum first
(a file of another data set, or labels of the wrong length, are refused, never
trained on). Reading writes nothing, so the root may be read-only (the project's
shared copy is). Missing files are downloaded from torchvision's mirrors, into the
root where it is writable, else into the user cache.
"""
import contextlib
import functools
import gzip
import hashlib
import logging
import os
import socket
import struct
import threading
import zlib
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


# What the upstream IDX files hold, checked in every file before use (a folder may hold another
# data set's files under this one's name, or a truncated or foreign file): the header's magic
# number and count, the byte size, and the SHA-256 of the extracted file where it is known
# (the shared data's CHECKSUMS.txt; KMNIST's training images are not on this project's
# machines, so their header, size and .gz MD5 are checked, not their extracted checksum).
IDX = {  # file name (extracted) -> (magic number, count, bytes)
    "train-images-idx3-ubyte": (2051, 60000, 16 + 60000 * INPUTS),
    "train-labels-idx1-ubyte": (2049, 60000, 8 + 60000),
    "t10k-images-idx3-ubyte": (2051, 10000, 16 + 10000 * INPUTS),
    "t10k-labels-idx1-ubyte": (2049, 10000, 8 + 10000),
}
EXTRACTED_SHA256 = {
    ("mnist", "train-images-idx3-ubyte"): "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ("mnist", "train-labels-idx1-ubyte"): "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ("mnist", "t10k-images-idx3-ubyte"): "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ("mnist", "t10k-labels-idx1-ubyte"): "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ("fashion-mnist", "train-images-idx3-ubyte"): "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ("fashion-mnist", "train-labels-idx1-ubyte"): "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ("fashion-mnist", "t10k-images-idx3-ubyte"): "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ("fashion-mnist", "t10k-labels-idx1-ubyte"): "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ("kmnist", "train-images-idx3-ubyte"): None,
    ("kmnist", "train-labels-idx1-ubyte"): "2a16eeae62da984b8bd24fa32e31d47291f01dac3fe84d5594f304f71e7d374b",
    ("kmnist", "t10k-images-idx3-ubyte"): "76fbd229ce87db80dd281af5e6670de4ad0e42fb30a7bd643972994c47c1f42e",
    ("kmnist", "t10k-labels-idx1-ubyte"): "a11dc742be8e781a40a92f53d6a4957e7b7d36df2faa097659131ebfd8fd60c6",
}
log = logging.getLogger(__name__)


def expected_md5(dataset):
    """{file name: MD5 of the upstream .gz}, from torchvision's own resource lists."""
    import torchvision
    return dict(getattr(torchvision.datasets, DATASETS[dataset]).resources)


_digests = {}   # (kind, path, size, mtime, inode) -> hex digest: each file is hashed once per process


def digest(path, kind="md5"):
    st = os.stat(path)
    memo = (kind, str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo not in _digests:
        h = hashlib.new(kind)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _digests[memo] = h.hexdigest()
    return _digests[memo]


def md5(path):
    return digest(path, "md5")


def _reason(error):
    return error.strerror or str(error) if isinstance(error, OSError) else str(error)


def check_header(path, head, name):
    """None if `head` (the first bytes of extracted IDX data) is the header `name` must have, else why not."""
    magic, count, _ = IDX[name]
    kind = "images" if magic == 2051 else "labels"
    size = 16 if magic == 2051 else 8
    if len(head) < size:
        return f"it is {len(head)} bytes long, shorter than an IDX header"
    fields = struct.unpack(">" + "I" * (size // 4), head[:size])
    if fields[0] != magic:
        return f"its IDX magic number is {fields[0]}, not {magic} ({kind})"
    if fields[1] != count:
        return f"it holds {fields[1]} {kind}, expected {count}"
    if magic == 2051 and tuple(fields[2:]) != (28, 28):
        return f"its images are {fields[2]}x{fields[3]}, not 28x28"
    return None


def check_extracted(dataset, path):
    """None if `path` is the extracted upstream file of its name for `dataset`, else why not."""
    name = path.name
    _, _, size = IDX[name]
    with open(path, "rb") as f:
        head = f.read(16)
    reason = check_header(path, head, name)
    if reason is None and path.stat().st_size != size:
        reason = f"it is {path.stat().st_size} bytes long, expected {size}"
    if reason is None:
        got = digest(path, "sha256")
        want = EXTRACTED_SHA256[(dataset, name)]
        if got != want:
            same = [f"{ds}'s {n}" for (ds, n), sha in EXTRACTED_SHA256.items() if sha == got]
            if same:
                reason = f"it is {same[0]}"
            elif want is not None:
                reason = f"its SHA-256 is {got}, expected {want}"
    return None if reason is None else f"{path} is not the upstream file of {dataset!r}: {reason}"


def raw_folders(dataset, root):
    """Where a data set's files may be: the root's <Name>/raw, then the user cache's copy
    (downloads land there when the root cannot be written)."""
    folder = DATASETS[dataset]
    return [root / folder / "raw", cache_dir() / "data-mirror" / folder / "raw"]


def locate(dataset, root, names, problems):
    """{extracted name: (path, gzipped)} of the checked files of `names`; what was wrong on the
    way is appended to `problems` (absent files are not problems: missing_message lists them)."""
    want = expected_md5(dataset)
    found = {}
    for name in names:
        for raw in raw_folders(dataset, root):
            plain, gz = raw / name, raw / f"{name}.gz"
            bad = None
            try:
                for f in (plain, gz):
                    if f.exists() and not f.is_file():      # a FIFO or a device is never read to its end
                        raise OSError(0, "not a regular file", str(f))
                if plain.exists():
                    bad = check_extracted(dataset, plain)
                    if bad is None:
                        found[name] = (plain, False)
                        break
                if gz.exists():
                    got = md5(gz)
                    if got == want[gz.name]:
                        if bad is not None:
                            log.warning("%s; read from its .gz instead", bad)
                        found[name] = (gz, True)
                        break
                    problems.append(f"Corrupted: {gz} has MD5 {got}, expected {want[gz.name]} "
                                    "(truncated or not the upstream file).")
            except OSError as error:
                problems.append(f"{error.filename or plain} cannot be read ({_reason(error)}).")
            if bad is not None:
                problems.append(f"{bad}.")
    return found


# Set once a download waited DOWNLOAD_TIMEOUT for a silent network: later attempts in this
# process (the other split, the other data sets of a sweep) fail at once instead of waiting again.
_silent = []


def download(dataset, root, names):
    """Fetch the .gz of `names` from torchvision's mirrors into the first writable raw folder;
    give up at the first time-out (DataMissingError's reason says so), not once per file and mirror."""
    import torchvision
    from torchvision.datasets.utils import download_url
    if _silent:
        raise OSError(_silent[0])
    cls = getattr(torchvision.datasets, DATASETS[dataset])
    md5s = dict(cls.resources)
    target = None
    for raw in raw_folders(dataset, root):
        try:
            raw.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(raw, os.W_OK):
            target = raw
            break
    if target is None:
        raise OSError(f"neither {raw_folders(dataset, root)[0]} nor the user cache "
                      f"{raw_folders(dataset, root)[1]} can be written to download into")
    log.info("downloading %s into %s (HTS_EP_OFFLINE=1 never tries; the network gets %g s to answer)",
             DATASETS[dataset], target, DOWNLOAD_TIMEOUT)
    with network_timeout(DOWNLOAD_TIMEOUT):
        for name in names:
            gz = f"{name}.gz"
            errors = []
            for mirror in cls.mirrors:
                try:
                    download_url(f"{mirror}{gz}", root=str(target), filename=gz, md5=md5s[gz])
                    break
                except Exception as error:      # URLError, OSError, RuntimeError (bad MD5), ...
                    timeout = isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None),
                                                                            TimeoutError)
                    if timeout:
                        _silent.append(f"the network did not answer within {DOWNLOAD_TIMEOUT:g} s (timed out); "
                                       "set HTS_EP_OFFLINE=1 to skip downloads")
                        raise OSError(_silent[0]) from None
                    errors.append(f"{mirror}: {' '.join(str(error).split())[:150]}")
            else:
                raise OSError("; ".join(errors))


def missing_message(dataset, root, error, problems=()):
    raw = root / DATASETS[dataset] / "raw"
    missing = [name for name in FILES if not any((r / name).exists() or (r / name[:-3]).exists()
                                                 for r in raw_folders(dataset, root))]
    reason = " ".join(str(error).split())[:300]
    lines = [f"data set {dataset!r} is not available."]
    if missing:
        lines.append(f"Missing from {raw}: {', '.join(missing)}.")
    lines += list(dict.fromkeys(problems))
    if not missing and not problems:
        lines.append(f"Its files in {raw} could not be read.")
    lines.append(f"Loading or downloading failed ({reason}). Place the upstream files there, or point "
                 f"--data-root / HTS_EP_DATA at a folder holding {DATASETS[dataset]}/raw/.")
    return "\n".join(lines)


def files_of(dataset, root, train):
    """{extracted name: (path, gzipped)} of the split's two files, each checked, downloaded if
    need be (and allowed); DataMissingError saying what is missing or wrong otherwise."""
    names = [n[:-3] for n in FILES if n.startswith("train" if train else "t10k")]
    problems = []
    found = locate(dataset, root, names, problems)
    if len(found) < len(names):
        error = "offline (HTS_EP_OFFLINE=1), no download tried" if offline() else None
        if error is None:
            try:
                download(dataset, root, [n for n in names if n not in found])
            except OSError as failure:
                error = _reason(failure)
            else:
                problems = []
                found = locate(dataset, root, names, problems)
                if len(found) < len(names):
                    error = "the downloaded files are not the upstream ones"
        if len(found) < len(names):
            raise DataMissingError(missing_message(dataset, root, error, problems))
    return found


def unavailable(dataset, root=None):
    """None if `dataset` can be loaded (downloading it if need be), else the reason, in one line."""
    try:
        for train in (True, False):
            files_of(dataset, data_root(root), train)
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


def read_idx(path, gzipped, name):
    """The payload of one checked IDX file (its header already matched IDX[name])."""
    _, count, size = IDX[name]
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        blob = f.read(size + 1)         # never more than the file should hold
    reason = check_header(path, blob[:16], name) or (
        None if len(blob) == size else f"it holds {len(blob)} bytes once extracted, expected {size}")
    if reason:
        raise DataMissingError(f"{path} is not the upstream file: {reason}")
    return blob[16:] if IDX[name][0] == 2051 else blob[8:]


def load_uncached(dataset, root=None, train=True):
    """The train or test split of `dataset` as a CPU Split, read from checked files (downloaded
    if need be). Nothing is written where the files are valid: a read-only folder and a
    read-only HOME work, offline or not."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    root = data_root(root)
    found = files_of(dataset, root, train)
    (images, (ipath, igz)), (labels, (lpath, lgz)) = sorted(found.items(), key=lambda kv: "labels" in kv[0])
    try:
        pixels = read_idx(ipath, igz, images)
        classes = read_idx(lpath, lgz, labels)
    except (OSError, EOFError, zlib.error) as error:
        raise DataMissingError(missing_message(dataset, root, _reason(error),
                                               [f"{ipath} or {lpath} cannot be read ({_reason(error)})."])) from None
    x = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(-1, INPUTS)
    y = torch.frombuffer(bytearray(classes), dtype=torch.uint8).to(torch.int64)
    if len(x) != len(y):        # both counts are checked against IDX: a guard, not a case
        raise DataMissingError(f"{ipath} holds {len(x)} images but {lpath} {len(y)} labels")
    if int(y.max()) >= CLASSES:
        raise DataMissingError(f"{lpath} is not the upstream file: it holds label {int(y.max())}, "
                               f"the data set has {CLASSES} classes")
    return Split(x.to(torch.float32).div_(255), y)


def subset(split, n, name="subset"):
    """The first n samples (n = 0: all); more than the split holds is an error, not a silent cap."""
    if n > len(split.y):
        raise DataMismatchError(f"{name}={n} is larger than the data set's {len(split.y)} samples")
    if n <= 0 or n == len(split.y):
        return split
    return Split(split.x[:n], split.y[:n])
