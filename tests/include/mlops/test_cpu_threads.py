"""Thread count for CPU training: the CPU budget (affinity, cgroup quota), idle CPUs under real load, the pin."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from include.mlops import cpu_threads
from include.mlops.cpu_threads import THREADS_ENV, cpu_budget, idle_cpus, training_threads

CPUS = len(os.sched_getaffinity(0))


@pytest.fixture
def unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)


def spin(count: int) -> list[subprocess.Popen]:
    """`count` processes each keeping one CPU busy."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    time.sleep(0.3)
    return hogs


@pytest.mark.skipif(CPUS < 2, reason="needs 2 CPUs to leave one idle")
def test_busy_cpus_are_not_counted_as_idle_and_training_backs_off_to_one_thread(unpinned) -> None:
    hogs = spin(CPUS)
    try:
        busy_idle = idle_cpus(0.3)
        threads, why = training_threads(0.3)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert busy_idle is not None and busy_idle < 0.5, busy_idle
    assert threads == 1 and f"{CPUS} CPUs available" in why


def test_the_pinned_count_wins_and_a_bad_pin_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    assert training_threads() == (3, f"{THREADS_ENV}=3")
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ValueError, match=THREADS_ENV):
            training_threads()


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000\n", CPUS), ("150000 100000\n", min(CPUS, 2)), ("50000 100000\n", 1), ("garbage", CPUS),
])
def test_a_cgroup_cpu_limit_caps_the_budget(tmp_path, monkeypatch: pytest.MonkeyPatch, cpu_max, expected) -> None:
    (limit := tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(cpu_threads, "CGROUP_CPU_MAX", limit)
    assert cpu_budget() == expected


def test_without_a_cgroup_limit_the_affinity_mask_is_the_budget(tmp_path, monkeypatch, unpinned) -> None:
    monkeypatch.setattr(cpu_threads, "CGROUP_CPU_MAX", tmp_path / "absent")
    assert cpu_budget() == CPUS
    threads, why = training_threads(0.05)
    assert 1 <= threads <= CPUS and "idle over" in why or CPUS == 1


class Clock:
    """A step clock the test advances: each step takes `per_step` seconds."""

    def __init__(self) -> None:
        self.now, self.per_step = 0.0, 0.01

    def __call__(self) -> float:
        return self.now


def test_the_governor_drops_to_one_thread_when_steps_slow_down_and_goes_back_up_when_cpus_idle(monkeypatch):
    clock, applied, lines = Clock(), [], []
    monkeypatch.setattr(cpu_threads.time, "perf_counter", clock)
    idle = {"value": 0.0}

    def fake_times():  # /proc/stat as the kernel would count it: every CPU of the mask, idle as set
        ticks = int(clock.now * 1000)
        return {f"cpu{i}": (int(ticks * idle["value"]), ticks) for i in os.sched_getaffinity(0)}

    monkeypatch.setattr(cpu_threads, "_cpu_times", fake_times)
    governor = cpu_threads.ThreadGovernor(2, 2, applied.append, lines.append, window=4)

    def run(steps: int) -> None:
        for _ in range(steps):
            clock.now += clock.per_step
            governor.step()

    run(16)  # quiet: 100 steps/s, no change
    assert applied == [] and governor.threads == 2
    clock.per_step = 0.05  # a hog arrives: 20 steps/s, under half the best
    run(4)
    assert applied == [1] and governor.changes == [(20, 2, 1)] and "threads 2 -> 1 at step 20" in lines[0]
    run(8)  # still busy elsewhere: the other CPU is not idle, stay at one thread
    assert applied == [1]
    idle["value"] = 0.5  # the hog left: one of the two CPUs idle while this run uses the other
    clock.per_step = 0.012
    run(4)
    assert applied == [1, 2] and governor.threads == 2


def test_a_pinned_run_gets_no_governor(tmp_path, monkeypatch):
    from include.mnist.train import TrainConfig, train_model
    from include.settings import DEFAULT_DATA_DIR as data_dir

    monkeypatch.setenv(THREADS_ENV, "1")
    lines: list[str] = []
    result = train_model(TrainConfig(epochs=1, batch_size=32, max_train_samples=640, device="cpu"), data_dir,
                         tmp_path / "m" / "model.safetensors", log=lines.append)
    assert result.threads == 1 and not any(" -> " in line for line in lines)
