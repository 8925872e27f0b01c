"""A run scheduled by a data-version Asset event trains on that version, checked against the event's digests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_REPO, FOLDER = "mnist-data-local", "mnist/v2"
TINY = {"max_train_samples": 1000, "max_test_samples": 500, "epochs": 1, "min_accuracy": 0.1, "max_regression": 1.0}


def _load_dag():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"]
    dag.get_task("scan_model").poll_interval = 0.2
    return dag


def _publish_version() -> dict:
    """Publish the bundled MNIST files as data version v2, as mnist_data_arrival finds them; returns the event extra."""
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    from include.mnist.data import read_checksums
    from include.settings import DEFAULT_DATA_DIR

    hook = ArtifactoryHook()
    digests = read_checksums(DEFAULT_DATA_DIR)
    for name in [*digests, "SHA256SUMS"]:
        hook.deploy_artifact(DEFAULT_DATA_DIR / name, DATA_REPO, f"{FOLDER}/{name}")
    return {"data_version": "v2", "repo": DATA_REPO, "folder": FOLDER, "digests": digests}


def _triggered_by(monkeypatch: pytest.MonkeyPatch, extra: dict) -> None:
    """Make dag.test()'s run consume one mnist_training_data event, as a run the scheduler queued for it would.

    dag.test() always creates a manual run; the scheduler attaches the events an asset-triggered run consumed,
    and the task gets them as `triggering_asset_events`. This wraps the run's creation to attach the event.
    """
    import airflow.models.dagrun as dagrun
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    from include.assets import MNIST_TRAINING_DATA

    create = dagrun.get_or_create_dagrun

    def create_with_event(**kwargs):
        run, session = create(**kwargs), kwargs["session"]
        asset = session.scalar(select(AssetModel).where(AssetModel.name == MNIST_TRAINING_DATA.name))
        event = AssetEvent(asset_id=asset.id, extra=extra, source_dag_id="mnist_data_arrival")
        session.add(event)
        session.flush()
        run.consumed_asset_events.append(event)
        session.commit()
        return run

    monkeypatch.setattr(dagrun, "get_or_create_dagrun", create_with_event)


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


@pytest.mark.e2e
def test_data_version_event_is_downloaded_checked_and_recorded(
    airflow_db, mlops_home, jfrog_server, jfrog_conn, monkeypatch
):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook
    from mlflow import MlflowClient

    from include.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    extra = _publish_version()
    dag = _load_dag()

    # A digest the files do not have: validate_data fails at once, naming the file and both digests.
    messages: list[str] = []
    dag.get_task("validate_data").on_failure_callback = [lambda context: messages.append(str(context["exception"]))]
    wrong = dict(extra["digests"], **{"t10k-labels-idx1-ubyte.gz": "0" * 64})
    _triggered_by(monkeypatch, {**extra, "digests": wrong})
    refused = dag.test(run_conf=TINY)
    assert refused.state == "failed" and _states(refused)["validate_data"] == "failed"
    (message,) = messages
    assert f"{DATA_REPO}/{FOLDER}/t10k-labels-idx1-ubyte.gz" in message and "0" * 64 in message

    # The event's digests: the run downloads v2 into its own directory and records the version everywhere.
    _triggered_by(monkeypatch, extra)
    run = dag.test(run_conf=TINY)
    assert run.state == "success", _states(run)
    run_dir = settings.run_dir("mnist_training", run.run_id)
    release = json.loads((run_dir / "release.json").read_text())
    assert release["data_version"] == "v2"
    assert sorted(p.name for p in (run_dir / "data" / "v2").iterdir()) == sorted([*extra["digests"], "SHA256SUMS"])
    version = release["mlflow"]["version"]
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    tags = client.get_run(release["mlflow"]["run_id"]).data.tags
    assert tags["data.version"] == "v2" and tags["data.source"] == f"{DATA_REPO}/{FOLDER}"
    lineage = json.loads((run_dir / "evidence" / "lineage.json").read_text())
    assert lineage["data_version"] == "v2"
    assert {d["file"]: d["sha256"] for d in lineage["datasets"]} == extra["digests"]
    model = ArtifactoryHook().get_item_properties("ml-models-local", f"mnist-cnn/{version}/model.safetensors")
    assert model["dataset.version"] == ["v2"]
