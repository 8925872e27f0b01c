"""The machine a bench ran on, printed first by every bench: CPU model, cores, the flags that decide the kernels, load."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction sets oneDNN and MKL pick kernels by: bf16 runs natively only with AVX512-BF16 or AMX.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform reports."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The relevant instruction-set flags this CPU reports."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in RELEVANT_FLAGS if f in flags]


def cores() -> int:
    """CPUs this process may run on (affinity), which is what the benches use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load() -> str:
    """The 1/5/15-minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}/{fifteen:.2f}"


def describe() -> str:
    """One line: CPU model, cores, flags, memory, load."""
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = 0.0
    return (f"machine: {cpu_model()} ({platform.machine()}), {cores()} cores, {mem_gib:.0f} GiB, "
            f"flags {' '.join(cpu_flags()) or 'none of ' + ' '.join(RELEVANT_FLAGS)}, "
            f"Python {platform.python_version()}, {load()}")
