"""Triggers: serialize() round trip, and run() against the local server yields exactly one event."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.sdk.module_loading import import_string
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.hooks.xray import XrayHook
from jfrog_provider.triggers.artifactory import ArtifactoryArtifactTrigger
from jfrog_provider.triggers.xray import XrayScanTrigger

REPO = "ml-models-local"


def events(trigger) -> list:
    """Every event the trigger yields until its generator ends."""
    async def go():
        return [e async for e in trigger.run()]

    return asyncio.run(asyncio.wait_for(go(), timeout=20))


@pytest.mark.parametrize("trigger", [
    XrayScanTrigger("scan-1", "jfrog_other", poll_interval=2.5, timeout=90),
    ArtifactoryArtifactTrigger(REPO, "batches", "*.gz", "2026-05-01T00:00:00.000Z", "jfrog_other", 30, 600,
                               skip_if_property="batch.seen"),
], ids=["xray", "artifactory"])
def test_serialize_round_trip(trigger):
    classpath, kwargs = trigger.serialize()
    assert classpath == f"{type(trigger).__module__}.{type(trigger).__name__}"
    assert classpath.startswith("jfrog_provider.triggers.")
    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    # serialize mirrors __init__ key for key (json-able: it is stored in the triggers table)
    import inspect

    assert list(kwargs) == [p for p in inspect.signature(type(trigger).__init__).parameters if p != "self"]
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_deadline_survives_a_triggerer_restart():
    first = XrayScanTrigger("s", timeout=60)
    time.sleep(0.01)
    assert XrayScanTrigger(**first.serialize()[1]).deadline == first.deadline


def test_xray_trigger_done(conn, jfrog_server):
    jfrog_server.scan_polls_before_done = 2
    scan_id = XrayHook().scan_graph(["pypi://torch:2.14.1"])
    [event] = events(XrayScanTrigger(scan_id, poll_interval=0.01, timeout=10))
    assert event.payload["status"] == "success" and event.payload["scan_id"] == scan_id
    assert event.payload["result"]["scan_id"] == scan_id
    assert len(jfrog_server.requests_matching("GET", r"/scan/graph/")) == 3


def test_xray_trigger_timeout(conn, jfrog_server):
    jfrog_server.scan_polls_before_done = 10_000
    scan_id = XrayHook().scan_graph(["pypi://torch:2.14.1"])
    started = time.monotonic()
    [event] = events(XrayScanTrigger(scan_id, poll_interval=0.02, timeout=0.2))
    assert event.payload["status"] == "timeout" and scan_id in event.payload["message"]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 404}, {"status": 503}])
def test_xray_trigger_error_becomes_one_error_event(conn, jfrog_server, fault):
    jfrog_server.inject_faults(r"/scan/graph/", [fault] * 5, method="GET")
    [event] = events(XrayScanTrigger("scan-x", poll_interval=0.01, timeout=10))
    assert event.payload["status"] == "error" and event.payload["scan_id"] == "scan-x"
    assert "JFrogApiError" in event.payload["message"]


def test_xray_trigger_unknown_connection_is_an_error_event(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_JFROG_MISSING", raising=False)
    [event] = events(XrayScanTrigger("s", "jfrog_missing", poll_interval=0.01, timeout=1))
    assert event.payload["status"] == "error"


def test_artifact_trigger_done_timeout_error(conn, jfrog_server, tmp_path):
    f = tmp_path / "b.gz"
    f.write_bytes(b"batch")
    ArtifactoryHook().deploy_artifact(f, REPO, "batches/1/b.gz")
    [done] = events(ArtifactoryArtifactTrigger(REPO, "batches", "*.gz", poll_interval=0.01, timeout=5))
    assert done.payload["status"] == "success" and [i["path"] for i in done.payload["items"]] == ["batches/1/b.gz"]
    [late] = events(ArtifactoryArtifactTrigger(REPO, "batches", "*.gz", "2999-01-01T00:00:00.000Z",
                                               poll_interval=0.01, timeout=0.1))
    assert late.payload["status"] == "timeout"
    jfrog_server.inject_faults(r"/api/search/aql$", [{"status": 400, "body": "Failed to parse query"}])
    [error] = events(ArtifactoryArtifactTrigger(REPO, "batches", poll_interval=0.01, timeout=5))
    assert error.payload == {"status": "error", "message": error.payload["message"]}
    assert "Failed to parse query" in error.payload["message"]


def test_artifact_trigger_sees_a_file_that_arrives_while_it_waits(conn, jfrog_server, tmp_path):
    f = tmp_path / "b.gz"
    f.write_bytes(b"batch")

    async def go():
        trigger = ArtifactoryArtifactTrigger(REPO, "batches", poll_interval=0.05, timeout=10)
        task = asyncio.ensure_future(_collect(trigger))
        await asyncio.sleep(0.2)
        assert not task.done()  # still waiting, and the loop is free (httpx.AsyncClient, asyncio.sleep)
        await asyncio.to_thread(ArtifactoryHook().deploy_artifact, f, REPO, "batches/late/b.gz")
        return await asyncio.wait_for(task, 10)

    [event] = asyncio.run(go())
    assert [i["path"] for i in event.payload["items"]] == ["batches/late/b.gz"]


def test_artifact_trigger_polls_without_aql_sort_and_skips_stamped_files(conn, jfrog_server, tmp_path):
    jfrog_server.edition = "oss"  # any AQL sort would be a 400 here
    (f := tmp_path / "SHA256SUMS").write_bytes(b"sums")
    hook = ArtifactoryHook()
    for version in ("v1", "v2"):
        hook.deploy_artifact(f, REPO, f"data/{version}/SHA256SUMS")
    hook.set_item_properties(REPO, "data/v1", {"data.announced": "true"}, recursive=True)
    [event] = events(ArtifactoryArtifactTrigger(REPO, "data", "SHA256SUMS", poll_interval=0.01, timeout=5,
                                                skip_if_property="data.announced"))
    assert event.payload["status"] == "success"
    assert [i["path"] for i in event.payload["items"]] == ["data/v2/SHA256SUMS"]


def test_artifact_trigger_retries_a_throttled_search(conn, jfrog_server, tmp_path):
    (f := tmp_path / "b.gz").write_bytes(b"batch")
    ArtifactoryHook().deploy_artifact(f, REPO, "batches/1/b.gz")
    jfrog_server.inject_faults(r"/api/search/aql$", [{"status": 429, "retry_after": "0"}, {"status": 503}])
    [event] = events(ArtifactoryArtifactTrigger(REPO, "batches", poll_interval=0.01, timeout=5))
    assert event.payload["status"] == "success" and jfrog_server.pending_faults() == 0
    assert len(jfrog_server.requests_matching("POST", r"/api/search/aql$")) == 3


async def _collect(trigger) -> list:
    return [e async for e in trigger.run()]
