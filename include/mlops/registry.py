"""MLflow tracking and model registry: the only module that imports mlflow."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CHAMPION = "champion"
SIGNED_MODEL = "signed_model"  # run artifact folder: <model dir>/ and its signature bundle
CHALLENGER = "challenger"
RUN_KEY_TAG = "airflow.run_key"

log = logging.getLogger(__name__)


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

    _route_mlflow_logs()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _route_mlflow_logs() -> None:
    """Send MLflow's log records through the host's logging, each at its own level, instead of to stderr.

    `import mlflow` gives its `mlflow` logger a stderr handler and turns propagation off; Airflow's task supervisor
    logs everything a task writes to stderr as ERROR, so MLflow's INFO lines read as errors in the task log.
    """
    logger = logging.getLogger("mlflow")
    logger.handlers = []
    logger.propagate = True


@contextmanager
def _notices_on_stdout() -> Iterator[None]:
    """MLflow prints notices such as "Successfully registered model" to stderr (its `eprint`): they are INFO."""
    import sys
    from contextlib import redirect_stderr

    with redirect_stderr(sys.stdout):
        yield


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
    runs = _runs_of_key(_client(tracking_uri), experiment_id, run_key)
    return runs[0] if runs else None


def find_version(tracking_uri: str, model_name: str, run_key: str):
    """The model version an Airflow run registered (found by its run-key tag), or None."""
    return _version_of_key(_client(tracking_uri), model_name, run_key)


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
    signature_path: Path | None = None,
) -> RegisteredModel:
    """Log one training run and register its model; a retry of the same `run_key` returns the same version.

    `model_path` is the verified model directory (safetensors weights and JSON config) and `signature_path` its
    Sigstore bundle: both go to the run under `signed_model/`, the only copy the pipeline loads again.

    One version per `run_key`, also against a server that commits a create and then fails: the version is looked
    up by its run-key tag before creating one and after any error. A try that died after creating the version
    but before the `challenger` alias or the run's `registered_version` tag is completed by the retry.
    `load_model` rebuilds the torch module from `model_path`; `input_example` is a batch it accepts (give at
    least two rows: torch.export specialises a batch dimension of 0 or 1, which would freeze the served model
    to batch size 1).
    """
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = _client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, experiment_name, artifact_root)
    existing = _version_of_key(client, model_name, run_key)
    if existing is not None:
        return _finish_registration(client, existing, experiment_id, tracking_uri)
    # Runs of this key without a version are half-logged tries: start clean rather than append to one.
    for stale in _runs_of_key(client, experiment_id, run_key):
        client.delete_run(stale.info.run_id)

    run_tags = {RUN_KEY_TAG: run_key, **tags}
    run = _create_once(lambda: client.create_run(experiment_id, tags=run_tags),
                       lambda: (_runs_of_key(client, experiment_id, run_key) or [None])[0])
    with mlflow.start_run(run_id=run.info.run_id):
        run_id = run.info.run_id
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

        # MLflow's PyTorch flavour saves the module for serving (mlflow.pytorch.load_model): MLflow 3 writes a
        # torch.export archive, whose load unpickles the weights. The pipeline never loads that copy: every load
        # reads signed_model/ (safetensors + JSON) after verifying its signature.
        info = mlflow.pytorch.log_model(
            load_model(model_path),
            name="model",
            input_example=input_example,
            pip_requirements=list(pip_requirements),
        )
        client.log_artifacts(run_id, str(model_path), artifact_path=f"{SIGNED_MODEL}/{Path(model_path).name}")
        if signature_path is not None:
            client.log_artifact(run_id, str(signature_path), artifact_path=SIGNED_MODEL)

    with _notices_on_stdout():
        version = _create_once(lambda: mlflow.register_model(info.model_uri, model_name, tags=run_tags),
                               lambda: _version_of_key(client, model_name, run_key))
    return _finish_registration(client, version, experiment_id, tracking_uri)


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


def promote(tracking_uri: str, model_name: str, version: str) -> bool:
    """Move `champion` to this version unless it is barred; False when it is champion already (nothing moved).

    The alias move is one registry call, so it is all or nothing. A version that was demoted or carries a
    blocking security finding never becomes champion again (GateFailure names the tag).
    """
    from include.mlops.gates import GateFailure

    current = champion(tracking_uri, model_name)
    if current is not None and current[0] == str(version):
        return False
    reason = promotion_bar(version_tags(tracking_uri, model_name, version))
    if reason:
        raise GateFailure(f"{model_name} version {version} may not become '{CHAMPION}': {reason}")
    client = _client(tracking_uri)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_model_version_tag(model_name, version, "promoted", "true")
    return True


def promotion_bar(tags: Mapping[str, str]) -> str | None:
    """Why a version with these tags may never become champion (a demotion, a blocking finding), or None."""
    if tags.get("promoted") == "false":
        return f"it was demoted ({tags.get('security.demotion') or 'promoted=false'})"
    if tags.get("security.blocking"):
        return f"the security re-scan recorded blocking findings {tags['security.blocking']} (tag security.blocking)"
    return None


def version_tags(tracking_uri: str, model_name: str, version: str) -> dict[str, str]:
    """All tags of a model version."""
    return dict(_client(tracking_uri).get_model_version(model_name, version).tags)


def add_version_tag(tracking_uri: str, model_name: str, version: str, key: str, value: str) -> None:
    """Set a tag that must not exist yet (audit entries are never overwritten); ValueError if it does."""
    if key in version_tags(tracking_uri, model_name, version):
        raise ValueError(f"{model_name} version {version} already has tag {key}: audit entries are append-only")
    _client(tracking_uri).set_model_version_tag(model_name, version, key, value)


def model_versions(tracking_uri: str, model_name: str) -> list[dict[str, Any]]:
    """Every version of a registered model: number, aliases and tags, oldest first."""
    versions = _client(tracking_uri).search_model_versions(f"name = '{model_name}'")
    return [{"version": str(v.version), "aliases": list(v.aliases), "tags": dict(v.tags)}
            for v in sorted(versions, key=lambda v: int(v.version))]


def pinned_requirements(*packages: str) -> list[str]:
    """Exact pins of installed packages: explicit requirements spare log_model a 3 s inference subprocess."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in packages]


def demote(tracking_uri: str, model_name: str, version: str) -> bool:
    """Remove `champion` if it still points at `version` (a newer champion is left alone); True if removed.

    The version is marked demoted (promoted=false) before the alias goes, so no clear or retry of its training
    run can make it champion again, even if this call dies in between.
    """
    current = champion(tracking_uri, model_name)
    if current is None or current[0] != str(version):
        return False
    client = _client(tracking_uri)
    client.set_model_version_tag(model_name, version, "promoted", "false")
    client.delete_registered_model_alias(model_name, CHAMPION)
    return True


def _runs_of_key(client, experiment_id: str, run_key: str) -> list:
    return client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=100)


def _version_of_key(client, model_name: str, run_key: str):
    versions = client.search_model_versions(f"name = '{model_name}' and tag.`{RUN_KEY_TAG}` = '{run_key}'")
    # Two versions for one key only come from a server older than this lookup; the first is the one.
    return min(versions, key=lambda v: int(v.version)) if versions else None


@contextmanager
def _single_attempt() -> Iterator[None]:
    """MLflow's REST client retries every method, POST included (urllib3 Retry with allowed_methods=None).

    A create the server committed before answering 504 would be sent again and make a second run or version,
    so creates go out once and the caller looks up what exists. MLFLOW_HTTP_REQUEST_MAX_RETRIES is read per
    request (https://mlflow.org/docs/latest/api_reference/python_api/mlflow.environment_variables.html); a task
    process runs one task at a time, so setting it around one call changes no other caller's requests.
    """
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES

    name, previous = MLFLOW_HTTP_REQUEST_MAX_RETRIES.name, os.environ.get(MLFLOW_HTTP_REQUEST_MAX_RETRIES.name)
    os.environ[name] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _create_once(create: Callable[[], Any], lookup: Callable[[], Any], attempts: int = 4) -> Any:
    """Create something exactly once: look it up after any error, since the server may have committed first."""
    from mlflow.exceptions import MlflowException
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    for attempt in Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5, max=8),
                            retry=retry_if_exception_type((MlflowException, OSError)), reraise=True):
        with attempt:
            found = lookup() if attempt.retry_state.attempt_number > 1 else None
            if found is not None:
                return found
            try:
                with _single_attempt():
                    return create()
            except (MlflowException, OSError) as exc:
                found = lookup()  # committed and then failed: what the server holds is the result
                if found is not None:
                    log.warning("create failed (%s) but the server had committed it: using it", exc)
                    return found
                raise
    raise AssertionError("unreachable: tenacity re-raises the last error")


def _finish_registration(client, version, experiment_id: str, tracking_uri: str) -> RegisteredModel:
    """Set `challenger` and the run's `registered_version` tag unless an earlier try completed both."""
    from mlflow.exceptions import MlflowException

    run = client.get_run(version.run_id)
    if run.data.tags.get("registered_version") != str(version.version):
        try:
            newer = int(client.get_model_version_by_alias(version.name, CHALLENGER).version) > int(version.version)
        except MlflowException:
            newer = False  # no challenger yet
        if not newer:  # a later run's challenger stays where it is
            client.set_registered_model_alias(version.name, CHALLENGER, version.version)
        client.set_tag(version.run_id, "registered_version", str(version.version))
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
    """The `champion` version and its verified signed model in the local cache."""

    version: str
    run_id: str
    model_dir: str  # weights and config, verified against the signature when cached
    signature: str  # the Sigstore bundle beside model_dir
    sha256: str  # of the weights file
    signature_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy for XCom."""
        return asdict(self)


def champion_model(tracking_uri: str, model_name: str, download_dir: Path, public_key: bytes) -> Champion | None:
    """The `champion` version and its signed model, verified; None when there is none.

    The cache under `download_dir` is keyed by the signature's digest (the version's `signature.sha256` tag),
    never by version number (a reset registry reuses numbers): an entry is used only when it verifies against
    `public_key` and its bundle has that digest; anything else is downloaded again and verified before use.
    """
    import logging
    import os
    import shutil
    import tempfile

    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from include.mlops.signing import SIGNATURE_FILE, ModelSignatureError, copy_verified, verified_model

    client = _client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    label = f"{model_name} v{version.version} (run {version.run_id})"
    expected = (version.tags or {}).get("signature.sha256")
    if not expected or not all(c in "0123456789abcdef" for c in expected) or len(expected) != 64:
        raise ModelSignatureError(f"{label} has no signature.sha256 tag: it was registered unsigned and is not loaded")
    entry = Path(download_dir) / f"sha256-{expected}"

    def champion(info: Any) -> Champion:
        weights = sorted(n for n in info.files if n.endswith(".safetensors"))
        return Champion(version=str(version.version), run_id=str(version.run_id), model_dir=str(entry / "model"),
                        signature=str(entry / SIGNATURE_FILE), sha256=info.files[weights[0]] if weights else "",
                        signature_sha256=info.sha256)

    if (entry / SIGNATURE_FILE).is_file():
        try:
            with verified_model(entry / "model", entry / SIGNATURE_FILE, public_key) as cached:
                if cached.signature.sha256 == expected:
                    return champion(cached.signature)
        except ModelSignatureError as exc:
            logging.getLogger(__name__).warning("cached %s does not verify, downloading again: %s", label, exc)
    Path(download_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=download_dir))
    try:
        try:
            local = Path(download_artifacts(run_id=version.run_id, artifact_path=SIGNED_MODEL, dst_path=str(staging),
                                            tracking_uri=tracking_uri))
        except MlflowException as exc:
            raise ModelSignatureError(f"{label} has no {SIGNED_MODEL}/ artifact to load ({exc})") from None
        folders = [p for p in local.iterdir() if p.is_dir()] if local.is_dir() else []
        if len(folders) != 1:
            raise ModelSignatureError(f"{label}: {SIGNED_MODEL}/ must hold one model directory, found {len(folders)}")
        with verified_model(folders[0], local / SIGNATURE_FILE, public_key) as fresh:
            if fresh.signature.sha256 != expected:
                raise ModelSignatureError(f"{label}: signature sha256 {fresh.signature.sha256} is not the "
                                          f"registered {expected}")
            ready = staging / "entry"
            copy_verified(fresh, ready / "model", ready / SIGNATURE_FILE)
            shutil.rmtree(entry, ignore_errors=True)
            os.replace(ready, entry)  # the entry appears whole or not at all
            return champion(fresh.signature)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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

