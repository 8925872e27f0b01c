"""XrayScanGateOperator against the local server: the table of gate outcomes, fail-closed paths, deferral."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred
from jfrog_provider.exceptions import JFrogApiError, MalformedScanResultError, XrayScanTimeoutError
from jfrog_provider.links import XRAY_URL_KEY
from jfrog_provider.operators.xray import VERDICT_XCOM_KEY, XrayScanGateOperator
from jfrog_provider.policy import AllowlistEntry, XrayPolicyViolation, parse_allowlist
from jfrog_provider.triggers.xray import XrayScanTrigger

DEPS = ["pypi://torch:2.14.1", "pypi://numpy:2.1.0"]
CVE = "CVE-2099-0001"


def finding(severity="Critical", *, fail_build=False, cve=CVE, component="pypi://torch") -> dict:
    return {"component": component, "issue_id": "XRAY-1", "severity": severity, "summary": "RCE in torch.load",
            "cves": [{"cve": cve, "cvss_v3_score": "9.8"}], "fixed_versions": ["[2.15.0]"], "fail_build": fail_build}


VALID = {"cve": CVE, "expires": "2999-12-31", "reason": "torch.load is never called on untrusted files"}
EXPIRED = {**VALID, "expires": "2001-01-01"}


class RecordingTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value



def gate(**kw) -> XrayScanGateOperator:
    kw.setdefault("component_ids", DEPS)
    kw.setdefault("deferrable", False)
    return XrayScanGateOperator(task_id="scan_gate", poll_interval=0.01, timeout=5, **kw)


# the gate's table: what Xray found, how the gate is configured → passed, or the failure it names
@pytest.mark.parametrize(("planted", "kwargs", "passes"), [
    pytest.param([finding("Critical")], {}, False, id="critical-vuln-fails"),
    pytest.param([finding("High")], {}, False, id="at-threshold-fails"),
    pytest.param([finding("Medium")], {}, True, id="below-threshold-passes"),
    pytest.param([finding("Medium")], {"severity_threshold": "Medium"}, False, id="lower-threshold-fails"),
    pytest.param([finding("Low", fail_build=True)], {"watches": ["ml-watch"]}, False, id="fail-build-violation"),
    pytest.param([finding("Low", fail_build=False)], {"watches": ["ml-watch"]}, True, id="non-blocking-violation"),
    pytest.param([finding("Low", fail_build=True)], {"watches": ["ml-watch"], "fail_on_fail_build_violations": False},
                 True, id="fail-build-reported-not-blocking"),
    pytest.param([finding("Critical")], {"allowlist": [VALID]}, True, id="allowlisted-passes"),
    pytest.param([finding("Critical")], {"allowlist": [EXPIRED]}, False, id="expired-allowlist-fails"),
    pytest.param([finding("Critical", fail_build=True)], {"watches": ["ml-watch"], "allowlist": [VALID]}, False,
                 id="allowlist-does-not-waive-xray-policy"),
    pytest.param([finding("Critical", component="pypi://pillow")], {}, True, id="finding-not-in-graph"),
    pytest.param([], {}, True, id="clean"),
])
def test_gate_outcomes(conn, jfrog_server, planted, kwargs, passes):
    jfrog_server.plant_vulnerabilities(planted)
    ti = RecordingTI()
    op = gate(**kwargs)
    if passes:
        verdict = op.execute({"ti": ti})
        assert verdict["passed"] is True and verdict["blocking"] == []
        assert json.loads(json.dumps(verdict)) == verdict == ti.xcoms[VERDICT_XCOM_KEY]
    else:
        with pytest.raises(XrayPolicyViolation) as err:
            op.execute({"ti": ti})
        assert isinstance(err.value, AirflowFailException)  # retrying the same scan cannot help
        message = str(err.value)
        assert CVE in message and "pypi://torch:2.14.1" in message
        assert f"threshold {op.severity_threshold}" in message
        verdict = ti.xcoms[VERDICT_XCOM_KEY]
        assert verdict["passed"] is False and verdict["blocking"][0]["cves"] == [CVE]
    assert verdict["scan_id"] and ti.xcoms[XRAY_URL_KEY].endswith(f"/ui/scans-list/graph/{verdict['scan_id']}")


def test_verdict_shape_lists_allowlisted_and_expired(conn, jfrog_server):
    jfrog_server.plant_vulnerabilities([finding("Critical"), finding("Low", cve="CVE-2099-0002")])
    verdict = gate(allowlist=[VALID, {**EXPIRED, "cve": "CVE-2099-0003"}]).execute({})
    assert set(verdict) == {"scan_id", "passed", "severity_threshold", "blocking", "allowlisted",
                            "expired_allowlist", "counts", "xray_url"}
    assert verdict["passed"] is True and verdict["severity_threshold"] == "High"
    assert [a["cves"] for a in verdict["allowlisted"]] == [[CVE]]
    assert verdict["expired_allowlist"] == [{"cve": "CVE-2099-0003", "expires": "2001-01-01",
                                             "reason": VALID["reason"]}]
    assert verdict["counts"] == {"vulnerabilities": 2, "violations": 0, "fail_build_violations": 0, "blocking": 0,
                                 "allowlisted": 1, "by_severity": {"Critical": 1, "Low": 1}}


def test_allowlist_expiry_day_is_inclusive():
    [entry] = parse_allowlist([{**VALID, "expires": "2026-05-01"}])
    assert entry == AllowlistEntry(CVE, dt.date(2026, 5, 1), VALID["reason"])
    assert entry.active_on(dt.date(2026, 5, 1)) and not entry.active_on(dt.date(2026, 5, 2))


@pytest.mark.parametrize("bad", [
    {"cve": "CVE-1", "expires": "2999-01-01", "reason": "r"},
    {"cve": CVE, "expires": "31/12/2999", "reason": "r"},
    {"cve": CVE, "expires": "2999-12-31", "reason": " "},
    {"cve": CVE, "expires": "2999-12-31"},
    {**VALID, "owner": "me"},
    "CVE-2099-0001",
])
def test_malformed_allowlist_is_a_value_error_at_parse_time(bad):
    with pytest.raises(ValueError, match="allowlist"):
        gate(allowlist=[bad])


@pytest.mark.parametrize("kwargs", [
    {"component_ids": None},
    {"sbom_path": "/tmp/sbom.json"},
    {"component_ids": "pypi://torch:2.14.1"},
    {"artifact_paths": "ml-models-local/m/model.pt"},
    {"watches": ["w"], "project": "p"},
    {"severity_threshold": "Catastrophic"},
    {"severity_threshold": "Pending"},
    {"severity_threshold": "Unknown"},
])
def test_bad_gate_arguments(kwargs):
    with pytest.raises(ValueError):
        gate(**kwargs)


# -- fail closed: nothing but a parsed, finished, clean result passes --------------------------------------------
def test_5xx_until_retries_are_exhausted_fails(conn, jfrog_server):
    jfrog_server.inject_faults(r"/xray/api/v1/scan/graph/", [{"status": 503}] * 10, method="GET")
    with pytest.raises(JFrogApiError) as err:
        gate().execute({})
    assert err.value.status == 503 and not isinstance(err.value, AirflowFailException)  # normal retries apply


def test_malformed_result_fails(conn, jfrog_server):
    jfrog_server.scan_polls_before_done = 0
    # a 200 whose body is not a scan result (an injected fault answers {"error": body})
    jfrog_server.inject_faults(r"/xray/api/v1/scan/graph/", [{"status": 200, "body": "half a result"}],
                               method="GET")
    with pytest.raises(MalformedScanResultError):
        gate().execute({})


def test_unparsable_severity_fails(conn, jfrog_server):
    jfrog_server.plant_vulnerabilities([finding("Apocalyptic")])
    with pytest.raises(MalformedScanResultError, match="severity"):
        gate().execute({})


def test_scan_timeout_fails(conn, jfrog_server):
    jfrog_server.scan_polls_before_done = 1000
    with pytest.raises(XrayScanTimeoutError):
        XrayScanGateOperator(task_id="g", component_ids=DEPS, poll_interval=0.02, timeout=0.2,
                             deferrable=False).execute({})


def test_empty_component_list_fails_instead_of_passing(conn, jfrog_server):
    with pytest.raises(AirflowFailException, match="nothing to scan"):
        gate(component_ids=[]).execute({})
    assert jfrog_server.requests_matching("POST", r"/scan/graph") == []


def test_gate_from_an_sbom(conn, jfrog_server, tmp_path):
    jfrog_server.plant_vulnerabilities([finding("Critical")])
    sbom = tmp_path / "sbom.cdx.json"
    sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [
        {"type": "library", "name": "torch", "version": "2.14.1", "purl": "pkg:pypi/Torch@2.14.1"},
        {"type": "library", "name": "numpy", "version": "2.1.0", "purl": "pkg:pypi/numpy@2.1.0"}]}))
    with pytest.raises(XrayPolicyViolation, match="pypi://torch:2.14.1"):
        gate(component_ids=None, sbom_path=str(sbom)).execute({})
    sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "components": []}))
    with pytest.raises(AirflowFailException, match="nothing to scan"):
        gate(component_ids=None, sbom_path=str(sbom)).execute({})
    sbom.write_text("{not json")
    with pytest.raises(AirflowFailException, match="cannot read SBOM"):
        gate(component_ids=None, sbom_path=str(sbom)).execute({})


# -- deferrable ------------------------------------------------------------------------------------------------
def collect(trigger) -> list:
    async def go():
        return [event async for event in trigger.run()]

    return asyncio.run(go())


def test_deferrable_follows_operators_default_deferrable():
    """Like Airflow's providers: `[operators] default_deferrable`, read when the module is imported."""
    import os
    import subprocess
    import sys

    assert XrayScanGateOperator(task_id="g", component_ids=DEPS).deferrable is False  # the test config's default
    code = ("from jfrog_provider.operators.xray import XrayScanGateOperator as G; "
            "print(G(task_id='g', component_ids=['pypi://a:1']).deferrable)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "true",
                              "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    assert out.stdout.strip() == "True"


def test_deferrable_gate_submits_the_scan_defers_and_judges_the_event(conn, jfrog_server):
    jfrog_server.plant_vulnerabilities([finding("Critical")])
    op = gate(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    assert jfrog_server.requests_matching("GET", r"/scan/graph/") == []  # the triggerer polls, not the worker
    trigger = deferred.value.trigger
    assert isinstance(trigger, XrayScanTrigger) and deferred.value.method_name == "execute_complete"
    classpath, kwargs = trigger.serialize()
    assert classpath == "jfrog_provider.triggers.xray.XrayScanTrigger"
    assert kwargs["poll_interval"] == 0.01 and kwargs["timeout"] == 5 and kwargs["artifact_paths"] == []
    assert jfrog_server.token not in json.dumps(kwargs)
    [event] = collect(trigger)
    assert event.payload["status"] == "success"
    with pytest.raises(XrayPolicyViolation, match=CVE):
        op.execute_complete({}, event=event.payload)
    jfrog_server.plant_vulnerabilities([])
    with pytest.raises(TaskDeferred) as clean:
        gate(deferrable=True).execute({})
    [event] = collect(clean.value.trigger)
    assert gate(deferrable=True).execute_complete({}, event=event.payload)["passed"] is True


@pytest.mark.parametrize(("event", "error"), [
    ({"status": "timeout", "scan_id": "s", "message": "graph scan s not done after 5s"}, XrayScanTimeoutError),
    ({"status": "error", "scan_id": "s", "message": "JFrogApiError: boom"}, AirflowException),
    ({"status": "success", "scan_id": "s", "result": {"no": "scan_id"}}, MalformedScanResultError),
    ({"status": "success", "scan_id": "s", "result": {"scan_id": "s", "status": "failed"}}, JFrogApiError),
    ({"status": "surprise"}, AirflowException),
    (None, AirflowException),
])
def test_execute_complete_never_passes_a_bad_event(conn, event, error):
    with pytest.raises(error):
        gate(deferrable=True).execute_complete({}, event=event)


def test_execute_complete_needs_the_summary_it_waited_for(conn):
    event = {"status": "success", "scan_id": "s", "result": {"scan_id": "s", "status": "completed"}}
    with pytest.raises(MalformedScanResultError, match="artifact summary"):
        gate(deferrable=True, artifact_paths=["r/m.pt"]).execute_complete({}, event=event)
