"""hts_ep.machine: the one reader of /proc/cpuinfo (kernel build tag, speed cache key, benchmark)."""
import os
import platform

import pytest

from hts_ep import machine


@pytest.fixture(autouse=True)
def fresh():
    machine.cpu.cache_clear()
    yield
    machine.cpu.cache_clear()


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="Linux only")
def test_reads_name_and_flags():
    name, flags = machine.cpu()
    assert name and name != "cpu"
    if platform.machine() == "x86_64":
        assert "sse2" in flags                      # every x86-64 CPU has it
    assert machine.cpu_name().startswith(name + " [")


def test_without_cpuinfo(monkeypatch):
    monkeypatch.setattr(machine.os.path, "exists", lambda p: False)
    name, flags = machine.cpu()
    assert name and flags == frozenset()


def test_feature_flags_change_the_name(monkeypatch, tmp_path):
    """Two CPUs of one model name with different flags (a VM hiding AVX-512) are different machines."""
    names, real_open = [], open
    info = tmp_path / "cpuinfo"
    for flags in ("fpu sse2 avx2", "fpu sse2 avx2 avx512f"):
        info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
        monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k))
        monkeypatch.setattr(machine.os.path, "exists", lambda p: True)
        machine.cpu.cache_clear()
        assert machine.cpu() == ("Some CPU", frozenset(flags.split()))
        names.append(machine.cpu_name())
    assert names[0] != names[1]


def test_arm_cpuinfo_and_only_the_first_block(monkeypatch, tmp_path):
    """Arm lists "Features" and numbers the core ("CPU part") instead of naming it; only CPU 0 counts."""
    info = tmp_path / "cpuinfo"
    block = "processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\nCPU part\t: 0xd4f\n"
    info.write_text("\n".join(block.format(i=i) for i in range(4)) + "\nHardware\t: some board\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k))
    monkeypatch.setattr(machine.os.path, "exists", lambda p: True)
    assert machine.cpu() == ("0xd4f", frozenset({"fp", "asimd", "sve"}))
