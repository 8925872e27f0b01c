"""Where the pipeline keeps its state: one frozen settings object read from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "include" / "data" / "mnist"


@dataclass(frozen=True)
class PipelineSettings:
    """Locations and names shared by the DAGs; every field has an environment override."""

    home: Path
    data_dir: Path
    mlflow_tracking_uri: str
    model_name: str = "mnist-cnn"
    experiment_name: str = "mnist-training"
    artifactory_repo: str = "ml-models-local"
    artifactory_release_repo: str = "ml-models-release"
    sbom_tool: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, data_dir: str | None = None) -> PipelineSettings:
        """Build settings from MLOPS_* variables; `data_dir` (an Airflow Variable) wins over the environment."""
        env = os.environ if env is None else env
        home = Path(env.get("MLOPS_HOME") or REPO_ROOT / ".local").resolve()
        return cls(
            home=home,
            data_dir=Path(data_dir or env.get("MNIST_DATA_DIR") or DEFAULT_DATA_DIR).resolve(),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
            model_name=env.get("MLOPS_MODEL_NAME", cls.model_name),
            experiment_name=env.get("MLOPS_EXPERIMENT", cls.experiment_name),
            artifactory_repo=env.get("MLOPS_ARTIFACTORY_REPO", cls.artifactory_repo),
            artifactory_release_repo=env.get("MLOPS_ARTIFACTORY_RELEASE_REPO", cls.artifactory_release_repo),
            sbom_tool=env.get("MLOPS_SBOM_TOOL") or str(REPO_ROOT / ".venv-sbom" / "bin" / "cyclonedx-py"),
        )

    @property
    def mlflow_artifact_root(self) -> Path:
        """Artifact store of MLflow runs created by this pipeline."""
        return self.home / "mlflow" / "artifacts"

    @property
    def landing_dir(self) -> Path:
        """Where production batches arrive for drift monitoring."""
        return self.home / "landing"

    @property
    def reports_dir(self) -> Path:
        """Where drift reports are kept."""
        return self.home / "reports"

    @property
    def champions_dir(self) -> Path:
        """Champion weights downloaded from MLflow, one folder per version, shared by the DAGs that score them."""
        return self.home / "champions"

    def run_dir(self, dag_id: str, run_id: str) -> Path:
        """A run-scoped working directory: a retried task overwrites its own files instead of adding new ones."""
        return self.home / "runs" / dag_id / safe_name(run_id)


def safe_name(value: str) -> str:
    """Turn an Airflow run id into a file-system-safe name, stable for the same input."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("_") or "run"
