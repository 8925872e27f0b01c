"""LocalExecutor whose worker processes start with the training libraries imported, so no task imports them again."""

from __future__ import annotations

import importlib
import os

from airflow.executors.local_executor import LocalExecutor

# On Linux each task runs in a bare os.fork() of a LocalExecutor worker (Airflow's task supervisor), and the
# workers fork from the scheduler when the executor starts: what the scheduler imported before that, every task
# has for free. torch and mlflow cost about 2 s each per task process, and five of the eleven training tasks need
# them (bench/bench_nightly_dag.py). MLflow imports its SQL stores (SQLAlchemy, alembic) on the first call to a
# database-backed tracking URI, and `mlflow.pytorch.log_model` imports torch._dynamo for torch.export: preloaded,
# the nightly register_model task took 2.9-3.3 s instead of 5.4-5.8 s on 2 AMD EPYC cores (bench/bench_nightly_dag.py).
# Neither import starts a thread.
# Only third-party libraries: a project module imported here would be served stale to tasks after an edit,
# until the scheduler restarts.
PRELOAD_ENV = "MLOPS_EXECUTOR_PRELOAD"
DEFAULT_PRELOAD = ("torch", "mlflow", "mlflow.pytorch", "safetensors.torch", "mlflow.store.tracking.sqlalchemy_store",
                   "mlflow.store.model_registry.sqlalchemy_store", "torch._dynamo")


def preload_modules() -> tuple[str, ...]:
    """Module names from MLOPS_EXECUTOR_PRELOAD (comma-separated; empty: none), else the defaults."""
    value = os.environ.get(PRELOAD_ENV)
    if value is None:
        return DEFAULT_PRELOAD
    return tuple(name.strip() for name in value.split(",") if name.strip())


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor that imports `preload_modules()` before it forks its workers (Airflow's custom executor path)."""

    def start(self) -> None:
        for name in preload_modules():
            try:
                importlib.import_module(name)
            except ImportError as exc:  # a speed-up only: the task imports (and reports) it itself
                self.log.warning("not preloading %s: %s", name, exc)
        super().start()
