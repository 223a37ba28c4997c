import functools
import os
from pathlib import Path

import pytest
import torch

# One thread: the suite runs beside other work on 2 cores, and oversubscribed
# threads make small tensor programs far slower.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ.setdefault("HTS_EP_DATA", str(SHARED_DATA))
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Triton's interpreter runs the CUDA kernel (hts_ep/gpu.py) on CPU tensors for
# tests/test_gpu.py. Read when Triton is imported, so set before hts_ep is;
# it changes nothing else (on CPU the kernel runs only with HTS_EP_KERNEL=triton).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    # `make test` runs the fast tier (-m "not slow"); `make test SLOW=1` and .ci/run run everything.
    config.addinivalue_line("markers", "slow: tens of seconds or more (book builds, wheels, subprocess kills, "
                            "Dask, concurrency, full-data passes); left out of `make test`, run by .ci/run")


# The slow tier, by test file or test name prefix (one list, so that a test's tier is seen at a
# glance): each of these took 10 s or more on the project's 2-core machine.
SLOW = (
    "test_book.py::", "test_bench.py::", "test_experiments.py::test_dask",
    "test_experiments.py::test_resume_after_sigkill", "test_hostile.py::test_two_concurrent_sweeps",
    "test_gpu.py::test_kernel_compiles_for_hopper", "test_packaging.py::test_wheel",
    "test_packaging.py::test_build_prints", "test_packaging.py::test_installed", "test_packaging.py::test_version_flag",
    "test_packaging.py::test_binder_fetches", "test_inputs.py::test_input_stats_are_the_training_images",
    "test_archive.py::test_plain_papermill", "test_records.py::test_sweep_that_waits_too_long",
    "test_data_checks.py::test_read_only_folder", "test_data_checks.py::test_mnist_files_under_fashion",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("/")[-1].startswith(SLOW):
            item.add_marker(pytest.mark.slow)


@functools.cache
def missing_mnist():
    from hts_ep import data
    return data.unavailable("mnist")


def pytest_runtest_setup(item):
    """Tests marked `data` train on real MNIST. Where it cannot be found or downloaded they
    are skipped with the reason, unless HTS_EP_REQUIRE_DATA=1 (CI), which makes that a failure."""
    if item.get_closest_marker("data") and (reason := missing_mnist()):
        if os.environ.get("HTS_EP_REQUIRE_DATA") == "1":
            pytest.fail(f"HTS_EP_REQUIRE_DATA=1 but MNIST is missing: {reason}", pytrace=False)
        pytest.skip(f"MNIST missing: {reason}")


@pytest.fixture(scope="session")
def mnist():
    """(train, test) splits of the real MNIST, loaded once."""
    from hts_ep import data
    return data.load("mnist", train=True), data.load("mnist", train=False)


def small(**changes):
    """A small network on the paper's input/output sizes, for fast tests."""
    from hts_ep import Config
    base = dict(n_hidden=64, t_free=20, t_nudge=4, batch_size=128, epochs=1)
    base.update(changes)
    return Config(**base)
