"""The Artifactory sensor against the local server: answers "done yet?", pokes once before deferring."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, TaskDeferred
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.sensors.artifactory import ArtifactoryArtifactSensor
from jfrog_provider.triggers.artifactory import ArtifactoryArtifactTrigger, normalize_created

REPO = "ml-models-local"


@pytest.fixture
def batch(tmp_path):
    path = tmp_path / "batch.idx.gz"
    path.write_bytes(b"new drift batch")
    return path


def test_artifact_sensor_returns_new_files(conn, jfrog_server, batch):
    hook = ArtifactoryHook()
    hook.deploy_artifact(batch, REPO, "batches/2026-05-01/batch.idx.gz")
    hook.deploy_artifact(batch, REPO, "batches/readme.txt")
    hook.deploy_artifact(batch, REPO, "other/batch.idx.gz")
    out = ArtifactoryArtifactSensor(task_id="wait_for_batch", repo=REPO, path="batches",
                                    pattern="*.idx.gz").execute({})
    assert [(i["repo"], i["path"], i["name"]) for i in out] == [(REPO, "batches/2026-05-01/batch.idx.gz",
                                                                 "batch.idx.gz")]
    assert out[0]["sha256"] and out[0]["created"]


def test_artifact_sensor_min_created_hides_seen_files_and_defers(conn, jfrog_server, batch):
    hook = ArtifactoryHook()
    hook.deploy_artifact(batch, REPO, "batches/1/batch.idx.gz")
    [seen] = ArtifactoryArtifactSensor(task_id="w", repo=REPO, path="batches").execute({})
    sensor = ArtifactoryArtifactSensor(task_id="w", repo=REPO, path="/batches/", min_created=seen["created"],
                                       poll_interval=0.01, timeout=5)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert len(jfrog_server.requests_matching("POST", r"/api/search/aql")) == 2  # one poke here, one above
    trigger = deferred.value.trigger
    assert isinstance(trigger, ArtifactoryArtifactTrigger) and trigger.min_created == seen["created"]
    assert jfrog_server.token not in json.dumps(trigger.serialize())  # only the connection id travels
    assert sensor.execute_complete({}, event={"status": "success", "items": [seen]}) == [seen]


def test_artifact_sensor_skips_files_that_carry_the_property(conn, jfrog_server, batch):
    hook = ArtifactoryHook()
    for version in ("1", "2", "3"):
        hook.deploy_artifact(batch, REPO, f"data/{version}/SHA256SUMS")
    hook.set_item_properties(REPO, "data/1", {"data.announced": "true"}, recursive=True)
    sensor = ArtifactoryArtifactSensor(task_id="w", repo=REPO, path="data", pattern="SHA256SUMS",
                                       skip_if_property="data.announced")
    assert [i["path"] for i in sensor.execute({})] == ["data/2/SHA256SUMS", "data/3/SHA256SUMS"]  # oldest first
    hook.set_item_properties(REPO, "data", {"data.announced": "true"}, recursive=True)
    sensor = ArtifactoryArtifactSensor(task_id="w", repo=REPO, path="data", pattern="SHA256SUMS",
                                       skip_if_property="data.announced", poll_interval=0.01, timeout=5)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert deferred.value.trigger.skip_if_property == "data.announced"


def test_artifact_sensor_works_where_aql_cannot_sort(conn, jfrog_server, batch):
    jfrog_server.edition = "oss"
    hook = ArtifactoryHook()
    for name in ("b1", "b2"):
        hook.deploy_artifact(batch, REPO, f"batches/{name}/batch.idx.gz")
    out = ArtifactoryArtifactSensor(task_id="w", repo=REPO, path="batches").execute({})
    assert [i["path"] for i in out] == ["batches/b1/batch.idx.gz", "batches/b2/batch.idx.gz"]


@pytest.mark.parametrize(("event", "error"), [
    ({"status": "timeout", "message": "nothing"}, AirflowSensorTimeout),
    ({"status": "error", "message": "boom"}, AirflowException),
    ({"status": "success", "items": []}, AirflowException),
])
def test_artifact_sensor_bad_events_fail(event, error):
    with pytest.raises(error):
        ArtifactoryArtifactSensor(task_id="w", repo=REPO, path="b").execute_complete({}, event=event)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"repo": "a/b", "path": "x"}, "repo"),
    ({"repo": REPO, "path": "x", "pattern": ""}, "pattern"),
    ({"repo": REPO, "path": "x", "min_created": "yesterday"}, "ISO-8601"),
    ({"repo": REPO, "path": "x", "skip_if_property": "a b"}, "property key"),
])
def test_artifact_sensor_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ArtifactoryArtifactSensor(task_id="w", **kwargs)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("None", None),
    ("2026-05-01T12:00:00.123Z", "2026-05-01T12:00:00.123Z"),
    ("2026-05-01 14:00:00+02:00", "2026-05-01T12:00:00.000Z"),
    ("2026-05-01T12:00:00", "2026-05-01T12:00:00.000Z"),
    (dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC), "2026-05-01T12:00:00.000Z"),
])
def test_min_created_is_normalised_to_aql_time(value, expected):
    assert normalize_created(value) == expected


def test_templated_min_created_renders_then_normalises(conn, jfrog_server, batch):
    ArtifactoryHook().deploy_artifact(batch, REPO, "batches/1/batch.idx.gz")
    sensor = ArtifactoryArtifactSensor(task_id="w", repo=REPO, path="batches", min_created="{{ since }}",
                                       deferrable=False, poll_interval=0.01, timeout=0.05)
    sensor.render_template_fields({"since": "2000-01-01 00:00:00+00:00"})
    assert len(sensor.execute({})) == 1
    sensor = ArtifactoryArtifactSensor(task_id="w", repo=REPO, path="batches", min_created="2999-01-01T00:00:00Z",
                                       deferrable=False, poll_interval=0.01, timeout=0.05)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute({})
