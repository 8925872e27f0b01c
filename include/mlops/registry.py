"""MLflow tracking and model registry: the only module that imports mlflow."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
RUN_KEY_TAG = "airflow.run_key"


@dataclass(frozen=True)
class RegisteredModel:
    """The MLflow run and model version made from one training run."""

    run_id: str
    experiment_id: str
    model_name: str
    version: str
    model_uri: str
    tracking_uri: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetRef:
    """A dataset file known by its location and SHA-256 digest."""

    name: str
    source: str
    sha256: str


def _client(tracking_uri: str):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path) -> str:
    """Return the experiment id, creating it with an artifact store under `artifact_root` if missing."""
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
        artifact_root.mkdir(parents=True, exist_ok=True)
        return client.create_experiment(name, artifact_location=artifact_root.resolve().as_uri())
    return client.create_experiment(name)


def find_run(tracking_uri: str, experiment_id: str, run_key: str):
    """The run an earlier try of the same Airflow run created, or None."""
    client = _client(tracking_uri)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=2)
    return runs[0] if runs else None


def register_training_run(
    *,
    tracking_uri: str,
    experiment_name: str,
    artifact_root: Path,
    model_name: str,
    run_key: str,
    model_path: Path,
    load_model: Callable[[Path], Any],
    input_example: Any,
    params: Mapping[str, Any],
    epoch_metrics: Sequence[Mapping[str, float]],
    eval_metrics: Mapping[str, float],
    datasets: Sequence[DatasetRef],
    tags: Mapping[str, str],
    pip_requirements: Sequence[str],
) -> RegisteredModel:
    """Log one training run and register its model; a retry of the same `run_key` returns the same version.

    `load_model` rebuilds the torch module from `model_path`; `input_example` is a batch it accepts (give at
    least two rows: torch.export specialises a batch dimension of 0 or 1, which would freeze the served model
    to batch size 1).
    """
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = _client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, experiment_name, artifact_root)
    run = find_run(tracking_uri, experiment_id, run_key)
    if run is not None:
        existing = _version_of_run(client, model_name, run.info.run_id)
        if existing is not None:
            return _registered(existing, experiment_id, tracking_uri)
        # An earlier try died before registering: start clean rather than append to a half-logged run.
        client.delete_run(run.info.run_id)

    with mlflow.start_run(experiment_id=experiment_id, tags={RUN_KEY_TAG: run_key, **tags}) as active:
        run_id = active.info.run_id
        # One log_batch per kind instead of one call per value: ~46x cheaper on the SQLite store.
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
        now = _now_ms()
        metrics = [
            Metric(key, float(value), now, int(row["epoch"]))
            for row in epoch_metrics
            for key, value in row.items()
            if key != "epoch"
        ]
        metrics += [Metric(f"test_{k}", float(v), now, 0) for k, v in eval_metrics.items()]
        client.log_batch(run_id, metrics=metrics)
        for ref in datasets:
            mlflow.log_input(_meta_dataset(ref), context=ref.name.rsplit("-", 1)[-1])
        client.log_batch(run_id, tags=[RunTag(f"dataset.{ref.name}.sha256", ref.sha256) for ref in datasets])

        info = mlflow.pytorch.log_model(
            load_model(model_path),
            name="model",
            input_example=input_example,
            pip_requirements=list(pip_requirements),
        )
        mlflow.log_artifact(str(model_path), artifact_path="state_dict")

    version = mlflow.register_model(info.model_uri, model_name, tags={RUN_KEY_TAG: run_key, **tags})
    client.set_registered_model_alias(model_name, CHALLENGER, version.version)
    client.set_tag(run_id, "registered_version", version.version)
    return RegisteredModel(
        run_id=run_id,
        experiment_id=experiment_id,
        model_name=model_name,
        version=str(version.version),
        model_uri=f"models:/{model_name}/{version.version}",
        tracking_uri=tracking_uri,
    )


def log_artifact(tracking_uri: str, run_id: str, path: Path, artifact_path: str | None = None) -> str:
    """Attach a file to a finished run; returns its artifact URI."""
    client = _client(tracking_uri)
    client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    base = client.get_run(run_id).info.artifact_uri
    return f"{base}/{artifact_path + '/' if artifact_path else ''}{path.name}"


def set_version_tags(tracking_uri: str, model_name: str, version: str, tags: Mapping[str, Any]) -> None:
    """Tag a model version (gate results, Artifactory location, scan id)."""
    client = _client(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))


def champion(tracking_uri: str, model_name: str) -> tuple[str, float | None] | None:
    """The champion's version and its logged test accuracy, or None when there is none."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    accuracy = client.get_run(version.run_id).data.metrics.get("test_accuracy") if version.run_id else None
    return str(version.version), accuracy


def aliases(tracking_uri: str, model_name: str, version: str) -> list[str]:
    """Aliases that point at a model version."""
    return list(_client(tracking_uri).get_model_version(model_name, version).aliases)


def promote(tracking_uri: str, model_name: str, version: str) -> None:
    """Move `champion` to this version; the alias move is one registry call, so it is all or nothing."""
    client = _client(tracking_uri)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_model_version_tag(model_name, version, "promoted", "true")


def pinned_requirements(*packages: str) -> list[str]:
    """Exact pins of installed packages: explicit requirements spare log_model a 3 s inference subprocess."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in packages]


def demote(tracking_uri: str, model_name: str, version: str) -> bool:
    """Remove `champion` if it still points at `version` (a newer champion is left alone); True if removed."""
    current = champion(tracking_uri, model_name)
    if current is None or current[0] != str(version):
        return False
    client = _client(tracking_uri)
    client.delete_registered_model_alias(model_name, CHAMPION)
    client.set_model_version_tag(model_name, version, "promoted", "false")
    return True


def _version_of_run(client, model_name: str, run_id: str):
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def _registered(version, experiment_id: str, tracking_uri: str) -> RegisteredModel:
    return RegisteredModel(
        run_id=version.run_id,
        experiment_id=experiment_id,
        model_name=version.name,
        version=str(version.version),
        model_uri=f"models:/{version.name}/{version.version}",
        tracking_uri=tracking_uri,
    )


def _meta_dataset(ref: DatasetRef):
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    # MetaDataset records name, source and digest without loading the data a second time.
    return MetaDataset(source=HTTPDatasetSource(ref.source), name=ref.name, digest=ref.sha256[:32])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


# -- drift monitoring: the champion it measures against, its reference profile, one run per batch --

BATCH_TAG = "drift.batch_sha256"


@dataclass(frozen=True)
class Champion:
    """The model version drift is measured against, and its weights on local disk."""

    version: str
    run_id: str
    state_dict: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy for XCom."""
        return asdict(self)


def champion_model(tracking_uri: str, model_name: str, download_dir: Path) -> Champion | None:
    """The `champion` version and its state dict (downloaded once per version); None when there is none."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    target = download_dir / f"v{version.version}"
    files = sorted(target.rglob("*.pt")) if target.exists() else []
    if not files:
        local = download_artifacts(run_id=version.run_id, artifact_path="state_dict", dst_path=str(target), tracking_uri=tracking_uri)
        files = sorted(Path(local).rglob("*.pt"))
    if not files:
        raise FileNotFoundError(f"run {version.run_id} of {model_name} v{version.version} has no state_dict/*.pt artifact")
    return Champion(version=str(version.version), run_id=str(version.run_id), state_dict=str(files[0]))


def log_reference(tracking_uri: str, run_id: str, directory: Path) -> str:
    """Store the reference profile with the model version's run, under `drift_reference/`."""
    client = _client(tracking_uri)
    client.log_artifacts(run_id, str(directory), artifact_path="drift_reference")
    return f"{client.get_run(run_id).info.artifact_uri}/drift_reference"


def log_batch_run(
    *,
    tracking_uri: str,
    experiment_name: str,
    artifact_root: Path,
    batch_sha256: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    files: Sequence[Path],
) -> str:
    """One MLflow run per batch, found again by its sha256 tag, so a retry updates the same run."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, experiment_name, artifact_root)
    found = client.search_runs([experiment_id], filter_string=f"tags.`{BATCH_TAG}` = '{batch_sha256}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = client.create_run(experiment_id, run_name=run_name, tags={BATCH_TAG: batch_sha256}).info.run_id
    # Params are immutable in MLflow: a retry logs only those the first try did not.
    existing = client.get_run(run_id).data.params
    new_params = [Param(k, str(v)) for k, v in sorted(params.items()) if k not in existing]
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in sorted(metrics.items())],
        params=new_params,
        tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())],
    )
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="evidently")
    client.set_terminated(run_id)
    return run_id

