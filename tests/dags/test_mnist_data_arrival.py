"""The data-arrival DAG with dag.test() against the local JFrog server: publish a version, see it announced once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = REPO_ROOT / "include" / "data" / "mnist"
DATA_REPO = "mnist-data-local"
IDX_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]


def publish(version: str) -> None:
    """Publish the bundled MNIST files as a data version, SHA256SUMS last (what a data team's upload does)."""
    from devtools.jfrog_compat.publish_data import publish_data_version

    publish_data_version(BUNDLED, version)


def bundled_digests() -> dict[str, str]:
    lines = (BUNDLED / "SHA256SUMS").read_text().split("\n")
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def data_events() -> list[dict]:
    """Extras of the mnist_training_data events in the metadata DB, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.name == "mnist_training_data").order_by(AssetEvent.id))
        return [dict(row.extra) for row in rows]


@pytest.fixture
def dag(airflow_db, mlops_home, jfrog_conn):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_data_arrival.py"))
    assert bag.import_errors == {}
    dag = bag.dags["mnist_data_arrival"]
    sensor = dag.get_task("wait_for_data_version")
    sensor.poke_interval, sensor.timeout = 0.2, 3.0  # the test waits seconds, not hours
    return dag


def states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.mark.e2e
def test_a_published_version_is_announced_once_and_stamped(dag, jfrog_server, mlops_home, extra_links):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    before = len(data_events())
    publish("2026-11-30")
    run = dag.test()
    assert run.state == "success", states(run)
    expected = {"data_version": "2026-11-30", "repo": DATA_REPO, "folder": "mnist/2026-11-30",
                "digests": bundled_digests()}
    assert data_events()[before:] == [expected]  # exactly what mnist_training's validate_data consumes
    hook = ArtifactoryHook()
    for path in ("mnist/2026-11-30", "mnist/2026-11-30/SHA256SUMS", "mnist/2026-11-30/train-images-idx3-ubyte.gz"):
        props = hook.get_item_properties(DATA_REPO, path)
        assert props["mnist.data.status"] == ["announced"]
        assert props["mnist.data.announced_by"] == [f"mnist_data_arrival/{run.run_id}"]
    assert extra_links(dag.dag_id, run.run_id, "mark_announced") == {
        "Artifactory": f"{jfrog_server.url}/ui/repos/tree/General/{DATA_REPO}/mnist/2026-11-30"}
    # the files were downloaded checksum-verified into the run's directory
    downloaded = mlops_home / "runs" / dag.dag_id
    assert sorted(p.name for p in downloaded.rglob("*.gz")) == sorted(IDX_FILES)

    # nothing new: the sensor defers, its trigger finds nothing, the run is skipped and announces nothing
    quiet = dag.test()
    assert states(quiet)["wait_for_data_version"] == "skipped" and len(data_events()) == before + 1


@pytest.mark.e2e
def test_a_version_published_while_the_sensor_waits_is_noticed_by_the_trigger(dag, jfrog_server):
    publish("v1")
    assert dag.test().state == "success"
    before = len(data_events())
    aql_before = len(jfrog_server.requests_matching("POST", r"/api/search/aql$"))

    def publish_once_the_trigger_polls() -> None:
        # the sensor's own poke sends two AQL queries; more mean the deferred trigger is polling
        deadline = time.monotonic() + 60
        while len(jfrog_server.requests_matching("POST", r"/api/search/aql$")) < aql_before + 4:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        publish("v2")

    dag.get_task("wait_for_data_version").timeout = 60.0
    publisher = threading.Thread(target=publish_once_the_trigger_polls)
    publisher.start()
    run = dag.test()
    publisher.join()
    assert run.state == "success", states(run)
    assert [e["data_version"] for e in data_events()[before:]] == ["v2"]


@pytest.mark.e2e
def test_a_version_announced_but_not_stamped_is_stamped_not_announced_again(dag):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    publish("v1")
    assert dag.test().state == "success"
    before = len(data_events())
    # as if mark_announced had failed after the event: the stamp is missing, the event is in the history
    ArtifactoryHook().delete_item_properties(DATA_REPO, "mnist/v1", ["mnist.data.status"], recursive=True)
    run = dag.test()
    assert states(run)["announce_data_version"] == "skipped" and states(run)["mark_announced"] == "success"
    assert len(data_events()) == before
    assert ArtifactoryHook().get_item_properties(DATA_REPO, "mnist/v1/SHA256SUMS")["mnist.data.status"] == [
        "announced"]


@pytest.mark.e2e
def test_a_corrupt_version_fails_validation_and_is_not_announced(dag, tmp_path):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    hook = ArtifactoryHook()
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes((BUNDLED / "t10k-labels-idx1-ubyte.gz").read_bytes())  # the test labels in train's place
    for name in IDX_FILES:
        source = labels if name == labels.name else BUNDLED / name
        hook.deploy_artifact(source, DATA_REPO, f"mnist/bad/{name}")
    hook.deploy_artifact(BUNDLED / "SHA256SUMS", DATA_REPO, "mnist/bad/SHA256SUMS")
    before = len(data_events())
    run = dag.test()
    assert run.state == "failed"
    assert states(run)["validate_data_version"] == "failed" and states(run)["announce_data_version"] == "upstream_failed"
    assert len(data_events()) == before
    props = hook.get_item_properties(DATA_REPO, "mnist/bad/SHA256SUMS")
    assert props["mnist.data.status"] == ["rejected"]
    assert "mnist/bad/train-labels-idx1-ubyte.gz" in props["mnist.data.rejected"][0]  # names the file
    # a rejected version does not block the next one
    publish("good")
    assert dag.test().state == "success" and [e["data_version"] for e in data_events()[before:]] == ["good"]


@pytest.mark.e2e
def test_a_sha256sums_outside_a_version_folder_is_rejected(dag):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    ArtifactoryHook().deploy_artifact(BUNDLED / "SHA256SUMS", DATA_REPO, "mnist/SHA256SUMS")
    run = dag.test()
    assert states(run)["download_data_version"] == "failed"
    props = ArtifactoryHook().get_item_properties(DATA_REPO, "mnist/SHA256SUMS")
    assert props["mnist.data.status"] == ["rejected"] and "one folder" in props["mnist.data.rejected"][0]
