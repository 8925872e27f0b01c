"""Sensors against the local server: answer "done yet?", poke once before deferring, turn events into XCom."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, TaskDeferred
from jfrog_provider.exceptions import MalformedScanResultError, XrayScanError
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.hooks.xray import XrayHook
from jfrog_provider.links import XRAY_URL_KEY
from jfrog_provider.sensors.artifactory import ArtifactoryArtifactSensor
from jfrog_provider.sensors.xray import XrayScanSensor
from jfrog_provider.triggers.artifactory import ArtifactoryArtifactTrigger, normalize_created

DEPS = ["pypi://torch:2.14.1"]
REPO = "ml-models-local"
CRITICAL = {"component": "pypi://torch", "issue_id": "XRAY-1", "severity": "Critical",
            "cves": [{"cve": "CVE-2099-0001"}]}


class RecordingTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value



def test_xray_sensor_pokes_once_then_defers(conn, jfrog_server):
    scan_id = XrayHook().scan_graph(DEPS)
    sensor = XrayScanSensor(task_id="wait_for_scan", scan_id=scan_id, poll_interval=0.01, timeout=5)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert len(jfrog_server.requests_matching("GET", r"/scan/graph/")) == 1
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.trigger.serialize() == ("jfrog_provider.triggers.xray.XrayScanTrigger", {
        "scan_id": scan_id, "jfrog_conn_id": "jfrog_default", "poll_interval": 0.01, "timeout": 5.0,
        "deadline": deferred.value.trigger.deadline})


def test_xray_sensor_returns_the_result_without_judging_it(conn, jfrog_server):
    jfrog_server.plant_vulnerabilities([CRITICAL])
    jfrog_server.scan_polls_before_done = 0
    scan_id = XrayHook().scan_graph(DEPS)
    ti = RecordingTI()
    out = XrayScanSensor(task_id="wait_for_scan", scan_id=scan_id).execute({"ti": ti})
    assert out["scan_id"] == scan_id and out["vulnerabilities"][0]["severity"] == "Critical"  # done, not judged
    assert ti.xcoms[XRAY_URL_KEY] == out["xray_data_url"] == f"{jfrog_server.url}/ui/scans-list/graph/{scan_id}"
    assert json.loads(json.dumps(out)) == out


def test_xray_sensor_in_poke_mode(conn, jfrog_server):
    jfrog_server.scan_polls_before_done = 2
    scan_id = XrayHook().scan_graph(DEPS)
    out = XrayScanSensor(task_id="w", scan_id=scan_id, poll_interval=0.01, timeout=5, deferrable=False).execute({})
    assert out["status"] == "completed"
    assert len(jfrog_server.requests_matching("GET", r"/scan/graph/")) == 3


@pytest.mark.parametrize(("event", "error"), [
    ({"status": "timeout", "message": "late"}, AirflowSensorTimeout),
    ({"status": "error", "message": "JFrogApiError: 500"}, AirflowException),
    ({"status": "success", "result": {"scan_id": "s", "status": "failed"}}, XrayScanError),
    ({"status": "success", "result": []}, MalformedScanResultError),
])
def test_xray_sensor_events_that_are_not_a_result_fail(conn, event, error):
    with pytest.raises(error):
        XrayScanSensor(task_id="w", scan_id="s").execute_complete({}, event=event)


def test_xray_sensor_scan_id_must_be_a_string():
    with pytest.raises(ValueError):
        XrayScanSensor(task_id="w", scan_id=42)  # type: ignore[arg-type]


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
    assert sensor.execute_complete({}, event={"status": "success", "items": [seen]}) == [seen]


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
