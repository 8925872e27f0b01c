"""XrayScanTrigger on a real event loop against the local server, and the deferrable gate in a dag.test() run."""

from __future__ import annotations

import asyncio
import json

import pytest
from airflow.sdk.module_loading import import_string
from jfrog_provider.hooks.xray import XrayHook
from jfrog_provider.triggers.xray import XrayScanTrigger

DEPS = ["pypi://torch:2.14.1"]
CRITICAL = {"component": "pypi://torch", "issue_id": "XRAY-1", "severity": "Critical",
            "cves": [{"cve": "CVE-2099-0001"}]}


def first_event(trigger: XrayScanTrigger) -> dict:
    """The payload of the one event, from a trigger rebuilt from its serialised form (as the triggerer does)."""
    classpath, kwargs = trigger.serialize()
    rebuilt = import_string(classpath)(**kwargs)

    async def go():
        events = [e async for e in rebuilt.run()]
        assert len(events) == 1
        return events[0].payload

    return asyncio.run(asyncio.wait_for(go(), timeout=20))


def test_serialised_kwargs_mirror_init_and_carry_no_secret(conn, jfrog_server):
    trigger = XrayScanTrigger("scan-1", "jfrog_default", poll_interval=2.5, timeout=90, artifact_paths=["r/a.pt"])
    classpath, kwargs = trigger.serialize()
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    import inspect

    assert list(kwargs) == [p for p in inspect.signature(XrayScanTrigger.__init__).parameters if p != "self"]
    assert jfrog_server.token not in json.dumps(kwargs)


def test_done_after_the_scan_answers_200(conn, jfrog_server):
    jfrog_server.scan_polls_before_done = 2
    jfrog_server.plant_vulnerabilities([CRITICAL])
    scan_id = XrayHook().scan_graph(DEPS)
    event = first_event(XrayScanTrigger(scan_id, poll_interval=0.01, timeout=10))
    assert event["status"] == "success" and event["scan_id"] == scan_id and "summary" not in event
    assert event["result"]["vulnerabilities"][0]["cves"][0]["cve"] == "CVE-2099-0001"
    assert len(jfrog_server.requests_matching("GET", r"/scan/graph/")) == 3


def test_timeout_event_names_the_scan(conn, jfrog_server):
    jfrog_server.scan_polls_before_done = 10_000
    scan_id = XrayHook().scan_graph(DEPS)
    event = first_event(XrayScanTrigger(scan_id, poll_interval=0.02, timeout=0.2))
    assert event["status"] == "timeout" and f"Xray graph scan {scan_id} not done after 0s" == event["message"]


def test_transient_answers_are_retried_with_retry_after(conn, jfrog_server):
    jfrog_server.scan_polls_before_done = 0
    scan_id = XrayHook().scan_graph(DEPS)
    jfrog_server.inject_faults(r"/scan/graph/", [{"status": 503}, {"status": 429, "retry_after": "0"}], method="GET")
    assert first_event(XrayScanTrigger(scan_id, poll_interval=0.01, timeout=10))["status"] == "success"
    assert jfrog_server.pending_faults() == 0


@pytest.mark.parametrize(("fault", "calls"), [({"status": 503}, 3), ({"status": 500}, 1), ({"status": 404}, 1)])
def test_errors_become_one_error_event(conn, jfrog_server, fault, calls):
    jfrog_server.inject_faults(r"/scan/graph/", [fault] * 5, method="GET")
    event = first_event(XrayScanTrigger("scan-x", poll_interval=0.01, timeout=10))
    assert event["status"] == "error" and event["scan_id"] == "scan-x"
    assert f"HTTP {fault['status']}" in event["message"]
    assert len(jfrog_server.requests_matching("GET", r"/scan/graph/")) == calls  # conn allows 2 retries


def test_a_token_echoed_by_the_server_is_scrubbed(conn, jfrog_server):
    jfrog_server.inject_faults(r"/scan/graph/", [{"status": 400, "body": f"bad token {jfrog_server.token}"}])
    event = first_event(XrayScanTrigger("scan-x", poll_interval=0.01, timeout=10))
    assert event["status"] == "error" and jfrog_server.token not in event["message"] and "***" in event["message"]


def test_unknown_connection_is_an_error_event(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_JFROG_MISSING", raising=False)
    event = first_event(XrayScanTrigger("s", "jfrog_missing", poll_interval=0.01, timeout=1))
    assert event["status"] == "error" and "jfrog_missing" in event["message"]


def test_waits_for_indexing_of_the_artifacts(conn, jfrog_server, tmp_path):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    ArtifactoryHook().deploy_artifact(model, "ml-models-local", "m/model.pt")
    jfrog_server.scan_polls_before_done = 0
    jfrog_server.summary_polls_before_indexed = 3
    scan_id = XrayHook().scan_graph(DEPS)
    event = first_event(XrayScanTrigger(scan_id, poll_interval=0.01, timeout=10,
                                        artifact_paths=["ml-models-local/m/model.pt"]))
    assert event["status"] == "success" and event["summary"]["artifacts"][0]["general"]["name"] == "model.pt"
    assert len(jfrog_server.requests_matching("POST", r"/summary/artifact$")) == 4
    jfrog_server.summary_polls_before_indexed = 10**6
    late = first_event(XrayScanTrigger(scan_id, poll_interval=0.01, timeout=0.1,
                                       artifact_paths=["ml-models-local/m/model.pt"]))
    assert late["status"] == "timeout" and "has not indexed ml-models-local/m/model.pt" in late["message"]


def test_the_loop_stays_free_while_the_trigger_waits(conn, jfrog_server):
    jfrog_server.scan_polls_before_done = 10_000
    scan_id = XrayHook().scan_graph(DEPS)

    async def go():
        trigger = asyncio.ensure_future(anext(XrayScanTrigger(scan_id, poll_interval=0.05, timeout=0.5).run()))
        ticks = 0
        while not trigger.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return ticks, (await trigger).payload

    ticks, payload = asyncio.run(go())
    assert payload["status"] == "timeout" and ticks > 5  # other coroutines ran while it polled


GATE_DAG = """
from airflow.sdk import DAG
from jfrog_provider.operators.xray import XrayScanGateOperator

with DAG("xray_gate_deferred", schedule=None, catchup=False):
    XrayScanGateOperator(task_id="scan", component_ids=["pypi://torch:2.14.1"], poll_interval=0.05, timeout=30,
                         deferrable=True)
"""


@pytest.mark.e2e
@pytest.mark.parametrize(("planted", "state"), [([], "success"), ([CRITICAL], "failed")], ids=["clean", "critical"])
def test_deferrable_gate_in_a_dag_run(airflow_db, conn, jfrog_server, tmp_path, monkeypatch, planted, state):
    """dag.test() defers the gate, runs the rebuilt trigger as the triggerer would, and resumes the task."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from jfrog_provider.operators.xray import VERDICT_XCOM_KEY

    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "xray_gate_dag.py").write_text(GATE_DAG)
    # dag.test() runs the DAG as serialised from its bundle: a bundle of its own for this test's DAG file
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([{
        "name": "xray-gate-test", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(tmp_path / "dags")}}]))
    bag = DagBag(dag_folder=str(tmp_path / "dags"))
    assert bag.import_errors == {}
    jfrog_server.scan_polls_before_done = 2
    jfrog_server.plant_vulnerabilities(planted)
    run = bag.dags["xray_gate_deferred"].test()
    assert run.state == state
    [ti] = run.get_task_instances()
    assert ti.state == state and ti.next_method is None
    with create_session() as session:
        [verdict] = session.scalars(XComModel.get_many(run_id=run.run_id, key=VERDICT_XCOM_KEY,
                                                       dag_ids=run.dag_id)).all()
        assert XComModel.deserialize_value(verdict)["passed"] is (state == "success")
    assert len(jfrog_server.requests_matching("GET", r"/scan/graph/")) == 3  # polled by the trigger only
