"""How many threads a CPU training run should use: the CPUs it may run on, less those other processes keep busy.

OpenMP's wait policy stays libgomp's default (spin briefly, then sleep): OMP_WAIT_POLICY=PASSIVE cost 37 % of the
quiet throughput on 2 cores, and with a CPU hog on one core it still ran at 28 % of it with 2 threads, against
62 % with the 1 thread chosen here (bench/bench_training.py measures the last figure).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

# /proc/stat columns after the cpu name: user nice system idle iowait irq softirq steal (guest time is in user).
_IDLE_COLUMNS = (3, 4)
_COUNTED_COLUMNS = 8
# A CPU counts as free when at least this share of it was idle: with one thread of an OpenMP team on a core that
# another process keeps busy, every step waits for that thread at each barrier (a 2-thread step on 2 cores ran
# 10x slower beside a second training than 1 thread did).
_FREE_SHARE = 0.7
# cgroup v2's CPU limit of this process's cgroup ("max 100000" when unlimited), as a container runtime sets it.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cpu_budget() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a container's CPU limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 CPU controller here: the affinity mask is the budget
    return max(1, cpus)


def _cpu_times() -> dict[str, tuple[int, int]]:
    """Per CPU (cpu0, cpu1, ...): (idle ticks, all ticks) since boot."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in fields[:_COUNTED_COLUMNS]]
            times[name] = (sum(ticks[i] for i in _IDLE_COLUMNS), sum(ticks))
    return times


def idle_cpus(window: float = 0.1) -> float | None:
    """How many of this process's CPUs other processes left idle over `window` seconds; None without /proc/stat."""
    try:
        allowed = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        before = _cpu_times()
        time.sleep(window)
        after = _cpu_times()
    except (AttributeError, OSError, ValueError):
        return None
    idle = 0.0
    for name in allowed & before.keys() & after.keys():
        total = after[name][1] - before[name][1]
        if total > 0:
            idle += (after[name][0] - before[name][0]) / total
    return idle


# A fixed thread count: oneDNN's reductions can split differently with another count, so bit-for-bit reruns
# on a machine whose load varies pin it.
THREADS_ENV = "MLOPS_TRAIN_THREADS"


def pinned_threads() -> int | None:
    """MLOPS_TRAIN_THREADS as a number, None when unset; a bad value raises naming the variable."""
    pinned = os.environ.get(THREADS_ENV, "").strip()
    if not pinned:
        return None
    if not pinned.isdigit() or int(pinned) < 1:
        raise ValueError(f"{THREADS_ENV} must be a whole number >= 1, got {pinned!r}")
    return int(pinned)


def training_threads(window: float = 0.1) -> tuple[int, str]:
    """Threads for a CPU run and why: MLOPS_TRAIN_THREADS, else one per CPU that other processes leave mostly idle."""
    pinned = pinned_threads()
    if pinned is not None:
        return pinned, f"{THREADS_ENV}={pinned}"
    budget = cpu_budget()
    if budget == 1:
        return 1, "1 CPU available"
    idle = idle_cpus(window)
    if idle is None:
        return budget, f"{budget} CPUs available (load not readable)"
    threads = max(1, min(budget, math.floor(idle + (1 - _FREE_SHARE))))
    return threads, f"{budget} CPUs available, {idle:.1f} idle over {window:.1f}s"


class ThreadGovernor:
    """Re-decides the thread count during a CPU run, every `window` steps, from step times and idle CPUs.

    The count chosen at the start holds only while the load does: a process that starts spinning on one of 2
    cores mid-run leaves a 2-thread step waiting at every OpenMP barrier for the thread that shares its core
    (14 % of the quiet speed, bench/bench_training.py). A window at under half the best speed seen with this
    many threads drops to one thread; at one thread, a window in which the other CPUs sat idle goes back up.
    """

    def __init__(self, threads: int, budget: int, set_threads, log=None, window: int = 16) -> None:
        self.threads, self.budget, self.window = threads, budget, window
        self._set, self._log = set_threads, log or (lambda _msg: None)
        self._best: dict[int, float] = {}
        try:
            self._allowed = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        except AttributeError:  # not Linux: no /proc/stat either, so never back up
            self._allowed = set()
        self._steps = 0
        self._start = time.perf_counter()
        self._cpu = self._snapshot()
        self.changes: list[tuple[int, int, int]] = []  # (step, from, to)

    @staticmethod
    def _snapshot() -> dict[str, tuple[int, int]] | None:
        try:
            return _cpu_times()
        except (OSError, ValueError):
            return None

    def step(self) -> None:
        """Count one training step; at each window's end, keep or change the thread count."""
        self._steps += 1
        if self._steps % self.window:
            return
        now, cpu = time.perf_counter(), self._snapshot()
        rate = self.window / max(now - self._start, 1e-9)
        best = self._best[self.threads] = max(self._best.get(self.threads, 0.0), rate)
        target = self.threads
        if self.threads > 1 and rate < 0.5 * best:
            target = 1
        elif self.threads < self.budget and self._others_idle(cpu):
            target = self.budget
        if target != self.threads:
            self._log(f"threads {self.threads} -> {target} at step {self._steps} "
                      f"({rate:.0f} steps/s, best {best:.0f} with {self.threads})")
            self.changes.append((self._steps, self.threads, target))
            self.threads = target
            self._set(target)
            cpu = self._snapshot()
            now = time.perf_counter()
        self._start, self._cpu = now, cpu

    def _others_idle(self, cpu: dict[str, tuple[int, int]] | None) -> bool:
        """True when, over the last window, the CPUs this run did not use were mostly idle."""
        if cpu is None or self._cpu is None:
            return False
        idle = 0.0
        for name in self._allowed & cpu.keys() & self._cpu.keys():
            total = cpu[name][1] - self._cpu[name][1]
            if total > 0:
                idle += (cpu[name][0] - self._cpu[name][0]) / total
        return idle >= (self.budget - self.threads) * _FREE_SHARE
