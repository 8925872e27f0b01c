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
    # Where people open MLflow (the UI beside Airflow); the tasks' MLflow links start with it, none when unset.
    mlflow_ui_url: str = ""

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
            mlflow_ui_url=env.get("MLOPS_MLFLOW_UI_URL", "").rstrip("/"),
        )

    @property
    def mlflow_artifact_root(self) -> Path:
        """Artifact store of MLflow runs created by this pipeline."""
        return self.home / "mlflow" / "artifacts"

    @property
    def sbom_cache_dir(self) -> Path:
        """Validated SBOM inventories by environment fingerprint (include/mlops/sbom.py), reused while unchanged."""
        return self.home / "cache" / "sbom"

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


@dataclass(frozen=True)
class InputLimits:
    """Bounds on untrusted inputs (data files, drift batches); every field has an MLOPS_* override."""

    # A drift batch: the file as landed, the rows its arrays declare and the bytes they inflate to.
    batch_max_file_bytes: int = 64 << 20
    batch_max_rows: int = 100_000
    batch_max_bytes: int = 256 << 20
    # A training-data file: the gzip as stored and the IDX content it declares (MNIST train images: 47 MB).
    data_max_file_bytes: int = 64 << 20
    data_max_idx_bytes: int = 128 << 20
    # Content sanity of a data set: each class's share of a split, and an image with fewer ink pixels is blank
    # (the thinnest real MNIST digit has 34 pixels above 0).
    data_min_class_share: float = 0.05
    data_max_class_share: float = 0.2
    data_min_ink_pixels: int = 10
    # A nearest-class-mean classifier fit on train must agree with this share of test labels (MNIST: 0.82),
    # so shuffled labels or a split paired with another's labels are refused.
    data_min_label_agreement: float = 0.5

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InputLimits:
        """Read MLOPS_<FIELD> overrides (e.g. MLOPS_BATCH_MAX_ROWS); ValueError names a bad value."""
        env = os.environ if env is None else env
        values: dict[str, int | float] = {}
        for name, field in cls.__dataclass_fields__.items():
            key = f"MLOPS_{name.upper()}"
            if key not in env:
                continue
            kind = type(field.default)
            try:
                value = kind(env[key])
            except ValueError:
                raise ValueError(f"{key}={env[key]!r} is not a {kind.__name__}") from None
            if value <= 0:
                raise ValueError(f"{key}={env[key]!r} must be > 0")
            values[name] = value
        return cls(**values)


def safe_name(value: str) -> str:
    """Turn an Airflow run id into a file-system-safe name, stable for the same input."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("_") or "run"
