"""Test session setup: a throw-away AIRFLOW_HOME before Airflow is imported, and shared fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Airflow reads its configuration at first import: point it at a private home before any test imports it.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "1"
# Tests never read the developer's local pipeline state.
os.environ["MLOPS_HOME"] = tempfile.mkdtemp(prefix="mlops-home-")
# Training picks its thread count from the CPUs other processes leave idle, and the bytes it writes depend on that
# count: tests that compare two trainings' bytes pin it (tests/include/mlops/test_cpu_threads.py covers the choice).
os.environ.setdefault("MLOPS_TRAIN_THREADS", str(min(2, len(os.sched_getaffinity(0)))))

pytest_plugins = ["devtools.jfrog_compat.pytest_fixtures"]


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite metadata database for tests that run DAGs."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture
def mlops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh pipeline home with its own MLflow SQLite store."""
    home = tmp_path / "mlops"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    (home / "mlflow").mkdir(parents=True)
    return home
