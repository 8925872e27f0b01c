"""Where real Xray is less kind than a simple stand-in: unrated severities and files not indexed yet fail closed.

Each test drives the local server into the behaviour JFrog documents (a `Pending` severity, a summary that
answers "not indexed" until indexing ends) and checks the gate never passes on it.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.module_loading import import_string
from jfrog_provider.exceptions import MalformedScanResultError, XrayScanTimeoutError, XraySummaryError
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.hooks.xray import XrayHook
from jfrog_provider.operators.xray import XrayScanGateOperator
from jfrog_provider.policy import XrayPolicyViolation
from jfrog_provider.xray_results import Severity

DEPS = ["pypi://torch:2.14.1"]
REPO = "ml-models-local"
NOT_INDEXED = "Artifact doesn't exist or not indexed/cached in Xray"


def finding(severity, **extra) -> dict:
    return {"component": "pypi://torch", "issue_id": "XRAY-7", "severity": severity, "summary": "new CVE",
            "cves": [{"cve": "CVE-2099-0007"}], **extra}


def gate(**kw) -> XrayScanGateOperator:
    kw.setdefault("component_ids", DEPS)
    kw.setdefault("deferrable", False)
    return XrayScanGateOperator(task_id="scan_gate", poll_interval=0.01, timeout=5, **kw)


def run_deferred(op: XrayScanGateOperator):
    """The triggerer's path: execute() defers, the rebuilt trigger runs on an event loop, the task judges."""
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    classpath, kwargs = deferred.value.trigger.serialize()
    event = asyncio.run(anext(import_string(classpath)(**kwargs).run()))
    return getattr(op, deferred.value.method_name)({}, event=event.payload)


@pytest.fixture
def model(conn, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    return ArtifactoryHook().deploy_artifact(path, REPO, "m/1/model.pt")


@pytest.mark.parametrize("severity", ["Pending", "pending", "Unknown", None])
def test_unrated_severity_blocks_at_the_highest_threshold(conn, jfrog_server, severity):
    jfrog_server.plant_vulnerabilities([finding(severity)])
    with pytest.raises(XrayPolicyViolation, match=r"not rated it yet \(missing, Unknown or Pending\)") as err:
        gate(severity_threshold="Critical").execute({})
    assert "CVE-2099-0007" in str(err.value) and err.value.verdict["passed"] is False


def test_lower_case_severity_from_xray_is_judged_by_its_rank(conn, jfrog_server):
    jfrog_server.plant_vulnerabilities([finding("high")])
    with pytest.raises(XrayPolicyViolation, match=r"severity High >= High"):
        gate().execute({})
    assert gate(severity_threshold="Critical").execute({})["passed"] is True


def test_an_allowlisted_pending_cve_is_waived_like_any_other(conn, jfrog_server):
    jfrog_server.plant_vulnerabilities([finding("Pending")])
    entry = {"cve": "CVE-2099-0007", "expires": "2999-12-31", "reason": "not reachable from the model code"}
    verdict = gate(allowlist=[entry]).execute({})
    assert verdict["passed"] is True and verdict["allowlisted"][0]["severity"] == "Pending"


def test_summary_waits_until_xray_has_indexed_the_file(conn, jfrog_server, model):
    jfrog_server.summary_polls_before_indexed = 2
    jfrog_server.plant_vulnerabilities([finding("Critical", sha256=model.sha256)])
    hook = XrayHook()
    with pytest.raises(XraySummaryError, match="not indexed"):
        hook.get_artifact_summary(paths=[f"{REPO}/m/1/model.pt"])  # the first answer: not indexed yet
    summary = hook.wait_for_artifact_summary([f"{REPO}/m/1/model.pt"], poll_interval=0.01, timeout=5)
    [vuln] = summary.findings()
    assert vuln.severity is Severity.CRITICAL and vuln.components[0].component_id.endswith("/model.pt")
    assert len(jfrog_server.requests_matching("POST", r"/summary/artifact$")) == 3


def test_summary_never_indexed_fails_closed_after_the_timeout(conn, jfrog_server, model):
    jfrog_server.summary_polls_before_indexed = 10**6
    with pytest.raises(XraySummaryError, match=r"not indexed by Xray after 0s:.*not indexed/cached"):
        XrayHook().wait_for_artifact_summary([f"{REPO}/m/1/model.pt"], poll_interval=0.01, timeout=0.1)


def test_summary_error_that_is_not_about_indexing_raises_at_once(conn, jfrog_server, model):
    jfrog_server.inject_faults(r"/summary/artifact$", [{"status": 200, "body": "x"}])  # {"error": "x"}: no artifacts
    with pytest.raises(MalformedScanResultError, match="0 artifacts for 1 requested"):
        XrayHook().wait_for_artifact_summary([f"{REPO}/m/1/model.pt"], poll_interval=0.01, timeout=5)


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "triggerer"])
def test_gate_waits_for_indexing_then_judges_the_published_file(conn, jfrog_server, model, deferrable):
    jfrog_server.summary_polls_before_indexed = 2
    jfrog_server.plant_vulnerabilities([finding("Critical", component="generic://model.pt", sha256=model.sha256)])
    op = gate(artifact_paths=[f"{REPO}/m/1/model.pt"], deferrable=deferrable)
    with pytest.raises(XrayPolicyViolation, match=r"CVE-2099-0007 \(Critical\) in generic://sha256:"):
        run_deferred(op) if deferrable else op.execute({})
    assert len(jfrog_server.requests_matching("POST", r"/summary/artifact$")) == 3


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "triggerer"])
def test_gate_never_passes_on_not_yet_indexed(conn, jfrog_server, model, deferrable):
    jfrog_server.summary_polls_before_indexed = 10**6
    op = XrayScanGateOperator(task_id="g", component_ids=DEPS, artifact_paths=[f"{REPO}/m/1/model.pt"],
                              poll_interval=0.02, timeout=0.3, deferrable=deferrable)
    with pytest.raises(XrayScanTimeoutError if deferrable else XraySummaryError, match="not indexed"):
        run_deferred(op) if deferrable else op.execute({})


def test_a_scan_done_within_defer_after_is_judged_without_deferring(conn, jfrog_server, model):
    jfrog_server.scan_polls_before_done, jfrog_server.summary_polls_before_indexed = 2, 2
    jfrog_server.plant_vulnerabilities([finding("Critical", sha256=model.sha256)])
    op = gate(deferrable=True, defer_after=5.0, artifact_paths=[f"{REPO}/m/1/model.pt"])
    with pytest.raises(XrayPolicyViolation, match="CVE-2099-0007"):  # the summary's finding still blocks
        op.execute({})
    assert len(jfrog_server.requests_matching("GET", r"/scan/graph/")) == 3  # 202, 202, then the result
    jfrog_server.plant_vulnerabilities([])
    assert gate(deferrable=True, defer_after=5.0, artifact_paths=[f"{REPO}/m/1/model.pt"]).execute({})["passed"]


@pytest.mark.parametrize("slow", ["scan_polls_before_done", "summary_polls_before_indexed"])
def test_a_scan_not_done_within_defer_after_defers_with_what_is_left_of_the_timeout(conn, jfrog_server, model, slow):
    setattr(jfrog_server, slow, 10**6)
    op = gate(deferrable=True, defer_after=0.2, artifact_paths=[f"{REPO}/m/1/model.pt"])
    start = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    assert 0.2 <= time.time() - start < 2
    trigger = deferred.value.trigger
    assert trigger.artifact_paths == [f"{REPO}/m/1/model.pt"]
    assert start + 5 - 0.2 <= trigger.deadline <= time.time() + 5 - 0.2  # the window counts against the timeout


@pytest.mark.parametrize("defer_after", [-1, 6])
def test_defer_after_must_lie_within_the_timeout(defer_after):
    with pytest.raises(ValueError, match="defer_after"):
        gate(deferrable=True, defer_after=defer_after)
