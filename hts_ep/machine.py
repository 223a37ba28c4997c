"""The CPU this runs on, read once from /proc/cpuinfo.

Three things depend on it: the fused kernel's build (-march=native code must
not be loaded on another CPU), the speed cache's key (hts_ep.speed) and the
benchmark's choice of matrix products (bf16 only where the CPU has AMX or
AVX512-BF16). A cached build or speed measurement moved to another machine
(a shared home directory, a cluster of mixed nodes) must not be reused there,
so this is read at run time, never assumed.
"""
import functools
import hashlib
import os
import platform


@functools.lru_cache(maxsize=1)
def cpu():
    """(model name, feature flags) of the first CPU. Without /proc/cpuinfo (not
    Linux): the platform's processor string and no flags."""
    fallback = platform.processor() or platform.machine() or "cpu"
    if not os.path.exists("/proc/cpuinfo"):
        return fallback, frozenset()
    with open("/proc/cpuinfo") as f:
        lines = f.read().strip().split("\n\n")[0].splitlines()     # the first CPU's block
    # x86 names the model; Arm only numbers the core ("CPU part"), so both count
    name = " ".join(line.split(":", 1)[1].strip() for line in lines
                    if line.startswith(("model name", "CPU part"))) or fallback
    flags = next((line.split(":", 1)[1].split() for line in lines
                  if line.startswith(("flags", "Features"))), [])   # Features: Arm's name for them
    return name, frozenset(flags)


def cpu_name():
    """Model name plus a short hash of the feature flags (two CPUs of one name can differ in them)."""
    name, flags = cpu()
    return f"{name} [{hashlib.sha1(' '.join(sorted(flags)).encode()).hexdigest()[:8]}]"


def cpu_flags():
    return cpu()[1]
