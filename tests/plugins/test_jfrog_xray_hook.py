"""XrayHook graph scans and artifact summaries against the local server, and strict parsing of Xray results."""

from __future__ import annotations

import json

import pytest
from jfrog_provider.exceptions import (
    JFrogApiError,
    MalformedScanResultError,
    XrayScanError,
    XrayScanTimeoutError,
)
from jfrog_provider.hooks.xray import XrayHook
from jfrog_provider.xray_results import GraphScanResult, ImpactedComponent, Severity

TORCH_VULN = {"component": "pypi://torch", "issue_id": "XRAY-1", "severity": "Critical", "summary": "RCE in torch.load",
              "cves": [{"cve": "CVE-2099-0001", "cvss_v3_score": "9.8"}], "fixed_versions": ["[2.15.0]"],
              "fail_build": True}
DEPS = ["pypi://torch:2.14.1", "pypi://numpy:2.1.0"]


@pytest.fixture
def hook(jfrog_conn) -> XrayHook:
    return XrayHook(backoff_base=0.01, backoff_max=0.05)


def test_ping_and_version(hook):
    assert hook.test_connection() == (True, "Connection to JFrog Xray works")
    assert hook.get_version()["xray_version"]


def test_scan_returns_planted_critical_vulnerability(hook, jfrog_server):
    jfrog_server.plant_vulnerabilities([TORCH_VULN])
    result = hook.wait_for_graph_scan(hook.scan_graph(DEPS), poll_interval=0.01, timeout=5)
    [vuln] = result.vulnerabilities
    assert vuln.severity is Severity.CRITICAL and vuln.cves == ("CVE-2099-0001",)
    assert vuln.components == (ImpactedComponent(component_id="pypi://torch:2.14.1", fixed_versions=("[2.15.0]",)),)
    assert result.violations == () and result.fail_build is False
    assert result.max_severity is Severity.CRITICAL
    assert json.loads(json.dumps(result.to_dict()))["vulnerabilities"][0]["severity"] == "Critical"


def test_scan_body_is_a_flat_graph_under_root(hook, jfrog_server):
    jfrog_server.plant_vulnerabilities([{**TORCH_VULN, "component": "pypi://numpy:2.1.0"}])
    scan_id = hook.scan_graph([*DEPS, DEPS[0]], root_id="root")
    result = hook.wait_for_graph_scan(scan_id, poll_interval=0.01, timeout=5)
    assert [c.component_id for v in result.vulnerabilities for c in v.components] == ["pypi://numpy:2.1.0"]
    [(_, path, body_bytes)] = jfrog_server.requests_matching("POST", r"/scan/graph$")
    assert path == "/xray/api/v1/scan/graph" and body_bytes > 0


def test_violations_only_with_a_watch(hook, jfrog_server):
    jfrog_server.plant_vulnerabilities([TORCH_VULN])
    plain = hook.wait_for_graph_scan(hook.scan_graph(DEPS), poll_interval=0.01, timeout=5)
    watched = hook.wait_for_graph_scan(hook.scan_graph(DEPS, watches=["ml-watch"]), poll_interval=0.01, timeout=5)
    assert plain.violations == ()
    [violation] = watched.violations
    assert (violation.watch_name, violation.fail_build, violation.type) == ("ml-watch", True, "security")
    assert watched.fail_build is True


def test_one_context_at_most(hook):
    with pytest.raises(ValueError):
        hook.scan_graph(DEPS, watches=["w"], project="p")
    with pytest.raises(ValueError):
        hook.scan_graph("pypi://torch:2.14.1")


def test_result_is_none_while_running_and_timeout_fails_closed(hook, jfrog_server):
    jfrog_server.scan_polls_before_done = 1000
    scan_id = hook.scan_graph(DEPS)
    assert hook.get_graph_scan_result(scan_id) is None
    with pytest.raises(XrayScanTimeoutError):
        hook.wait_for_graph_scan(scan_id, poll_interval=0.05, timeout=0.3)


def test_polls_start_at_half_a_second_and_double_up_to_the_interval(hook, jfrog_server, monkeypatch):
    jfrog_server.scan_polls_before_done = 5
    sleeps: list[float] = []
    monkeypatch.setattr(hook, "_sleep", sleeps.append)
    hook.wait_for_graph_scan(hook.scan_graph(DEPS), poll_interval=3.0, timeout=60)
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_unknown_scan_id_raises(hook):
    with pytest.raises(JFrogApiError) as err:
        hook.get_graph_scan_result("nope")
    assert err.value.status == 404


def test_poll_survives_503(hook, jfrog_server):
    jfrog_server.scan_polls_before_done = 0
    scan_id = hook.scan_graph(DEPS)
    jfrog_server.inject_faults(r"/scan/graph/", [{"status": 503}, {"status": 429, "retry_after": "0"}])
    assert hook.get_graph_scan_result(scan_id)["scan_id"] == scan_id


def test_failed_status_raises(hook, monkeypatch):
    monkeypatch.setattr(hook, "get_graph_scan_result", lambda *a, **k: {"scan_id": "s", "status": "failed"})
    with pytest.raises(XrayScanError):
        hook.wait_for_graph_scan("s", poll_interval=0.01, timeout=1)


@pytest.mark.parametrize("purls,expected", [
    (["pkg:pypi/Torch@2.14.1"], ["pypi://torch:2.14.1"]),
    (["pkg:pypi/PyYAML@6.0.2?arch=x86_64#sub"], ["pypi://pyyaml:6.0.2"]),
    (["pkg:maven/org.apache/commons-lang3@3.14.0"], ["gav://org.apache:commons-lang3:3.14.0"]),
    (["pkg:npm/%40types/node@20.1.0"], ["npm://@types/node:20.1.0"]),
    (["pkg:golang/github.com/pkg/errors@v0.9.1"], ["go://github.com/pkg/errors:v0.9.1"]),
    (["pkg:pypi/torch@2.14.1", "pkg:pypi/TORCH@2.14.1"], ["pypi://torch:2.14.1"]),
])
def test_purls_to_component_ids(purls, expected):
    assert XrayHook.purls_to_component_ids(purls) == expected


@pytest.mark.parametrize("bad", ["torch==2.14.1", "pkg:pypi", "pkg:/x@1"])
def test_bad_purl_is_value_error(bad):
    with pytest.raises(ValueError):
        XrayHook.purls_to_component_ids([bad])


# -- GraphScanResult / Severity --------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [("Critical", Severity.CRITICAL), ("high", Severity.HIGH),
                                           ("MEDIUM", Severity.MEDIUM), ("Information", Severity.INFORMATION),
                                           ("Unknown", Severity.UNKNOWN), ("Major", Severity.HIGH),
                                           ("pending", Severity.PENDING), ("Normal", Severity.MEDIUM)])
def test_severity_parse_case_insensitive(text, expected):
    assert Severity.parse(text) is expected


def test_severity_order_and_unrated():
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFORMATION
    assert [s for s in Severity if not s.rated] == [Severity.PENDING, Severity.UNKNOWN]


GOOD = {"scan_id": "s1", "status": "completed", "vulnerabilities": [
    {"issue_id": "X-1", "severity": "low", "summary": "s", "cves": [{"cve": "CVE-1"}, {"cve": ""}],
     "components": {"pypi://a:1": {"fixed_versions": ["[2]"]}}}]}


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("scan_id"),
    lambda d: d.update(vulnerabilities={"not": "a list"}),
    lambda d: d["vulnerabilities"][0].update(severity="apocalyptic"),
    lambda d: d["vulnerabilities"][0].update(severity=3),
    lambda d: d["vulnerabilities"][0].update(issue_id=7),
    lambda d: d["vulnerabilities"][0].update(components=["pypi://a:1"]),
    lambda d: d["vulnerabilities"][0]["components"]["pypi://a:1"].update(fixed_versions=[2]),
    lambda d: d.update(violations=[{**GOOD["vulnerabilities"][0], "fail_build": "yes"}]),
])
def test_malformed_results_fail_closed(mutate):
    data = json.loads(json.dumps(GOOD))
    mutate(data)
    with pytest.raises(MalformedScanResultError, match=r"graph scan result: (scan_id|v\w+(\[0\])?)"):
        GraphScanResult.from_json(data)


def test_malformed_error_names_the_field():
    data = json.loads(json.dumps(GOOD))
    data["vulnerabilities"][0]["components"]["pypi://a:1"]["fixed_versions"] = [2]
    with pytest.raises(MalformedScanResultError, match=r"vulnerabilities\[0\]\.components\[0\]\.fixed_versions"):
        GraphScanResult.from_json(data)


@pytest.mark.parametrize("severity", [None, "Pending", "pending", "Unknown"])
def test_missing_pending_or_unknown_severity_parses_as_unrated(severity):
    data = json.loads(json.dumps(GOOD))
    data["vulnerabilities"][0]["severity"] = severity
    [vuln] = GraphScanResult.from_json(data).vulnerabilities
    assert not vuln.severity.rated
    assert GraphScanResult.from_json(data).vulnerabilities_at_least("Critical") == (vuln,)  # fail closed


def test_from_json_good_and_threshold():
    result = GraphScanResult.from_json(GOOD)
    assert result.vulnerabilities[0].cves == ("CVE-1",)
    assert result.vulnerabilities_at_least("Low") == result.vulnerabilities
    assert result.vulnerabilities_at_least(Severity.MEDIUM) == ()
    assert result.max_severity is Severity.LOW
    with pytest.raises(MalformedScanResultError):
        GraphScanResult.from_json(["not", "an", "object"])
