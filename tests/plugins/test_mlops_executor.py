"""PreloadingLocalExecutor: the modules it imports before forking its workers, and that Airflow loads it by path."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlops_executor import DEFAULT_PRELOAD, PRELOAD_ENV, PreloadingLocalExecutor, preload_modules


def test_the_preload_list_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(PRELOAD_ENV, raising=False)
    assert preload_modules() == DEFAULT_PRELOAD and "torch" in DEFAULT_PRELOAD
    monkeypatch.setenv(PRELOAD_ENV, " colorsys, ,wave ")
    assert preload_modules() == ("colorsys", "wave")
    monkeypatch.setenv(PRELOAD_ENV, "")
    assert preload_modules() == ()


def test_start_imports_the_modules_before_it_forks_its_workers(monkeypatch, capsys):
    monkeypatch.setenv(PRELOAD_ENV, "colorsys,no_such_module_xyz")
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    executor = PreloadingLocalExecutor(parallelism=1)
    executor.start()
    try:
        assert "colorsys" in sys.modules and len(executor.workers) == 1
        [worker] = executor.workers.values()
        # a speed-up only: a module that is not there is logged (structlog, to stdout) and never stops the scheduler
        assert "not preloading no_such_module_xyz" in capsys.readouterr().out
    finally:
        executor.end()
    with pytest.raises(ValueError, match="closed"):  # end() joined and closed the worker it had forked
        worker.is_alive()


def test_airflow_resolves_the_executor_by_its_module_path(monkeypatch):
    from airflow.executors.executor_loader import ExecutorLoader, ExecutorName

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "mlops_executor.PreloadingLocalExecutor")
    from airflow.executors.local_executor import LocalExecutor

    cls, _ = ExecutorLoader.import_executor_cls(ExecutorName("mlops_executor.PreloadingLocalExecutor"))
    # by name: other tests reload the plugins folder, so the class object may come from another module instance
    assert (cls.__module__, cls.__qualname__) == ("mlops_executor", "PreloadingLocalExecutor")
    assert issubclass(cls, LocalExecutor) and "start" in vars(cls)


def test_local_mode_runs_it():
    from pathlib import Path

    line = "export AIRFLOW__CORE__EXECUTOR=mlops_executor.PreloadingLocalExecutor"
    assert line in (Path(__file__).resolve().parents[2] / "scripts" / "local_env.sh").read_text()


def test_every_default_module_imports_without_starting_a_thread():
    # the scheduler forks its workers after these imports: a thread started by one would not exist in the children
    code = ("import importlib, json, sys, threading\n"
            f"for name in {DEFAULT_PRELOAD!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps([threading.active_count(), [n for n in sys.argv[1:] if n not in sys.modules]]))\n")
    out = subprocess.run([sys.executable, "-c", code, *DEFAULT_PRELOAD], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[1, []]"
