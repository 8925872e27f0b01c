"""Promotion gates: thresholds, champion comparison, and the Xray verdict failing closed."""

from __future__ import annotations

import pytest

from include.mlops import gates


def _scan(vulns=(), violations=(), status="completed"):
    return {"scan_id": "s-1", "status": status, "vulnerabilities": list(vulns), "violations": list(violations)}


def _vuln(severity, cve="CVE-2099-1", component="pypi://torch:2.14.1"):
    return {"issue_id": "XRAY-1", "severity": severity, "cves": [cve], "components": [{"component_id": component}]}


@pytest.mark.parametrize(
    ("accuracy", "minimum", "passed"), [(0.99, 0.985, True), (0.985, 0.985, True), (0.9849, 0.985, False)]
)
def test_accuracy_gate(accuracy, minimum, passed):
    result = gates.accuracy_gate(accuracy, minimum)
    assert result.passed is passed
    assert f"{minimum:.4f}" in result.reason


@pytest.mark.parametrize(
    ("candidate", "champion", "margin", "passed"),
    [(0.99, None, 0.0, True), (0.99, 0.991, 0.002, True), (0.988, 0.991, 0.002, False), (0.995, 0.99, 0.0, True)],
)
def test_champion_gate(candidate, champion, margin, passed):
    assert gates.champion_gate(candidate, champion, margin).passed is passed


@pytest.mark.parametrize(
    ("severity", "threshold", "passed"),
    [
        ("Critical", "High", False),
        ("high", "High", False),
        ("Medium", "High", True),
        ("Medium", "Medium", False),
        ("Low", "Critical", True),
        ("Bogus", "Unknown", False),  # an unreadable severity ranks as Unknown, never as harmless
        ("Bogus", "Low", True),
    ],
)
def test_xray_gate_threshold(severity, threshold, passed):
    result = gates.xray_gate(_scan([_vuln(severity)]), threshold)
    assert result.passed is passed
    if not passed:
        assert "CVE-2099-1" in result.reason and "pypi://torch:2.14.1" in result.reason


def test_xray_gate_blocks_fail_build_violation_whatever_its_severity():
    violation = {**_vuln("Low"), "type": "security", "watch_name": "prod", "fail_build": True}
    result = gates.xray_gate(_scan(violations=[violation]), "Critical")
    assert not result.passed
    assert "watch prod" in result.reason


@pytest.mark.parametrize(
    "scan",
    [None, {}, {"vulnerabilities": []}, {"vulnerabilities": "none", "violations": []}, _scan(status="failed")],
)
def test_xray_gate_fails_closed(scan):
    assert gates.xray_gate(scan).passed is False


def test_bad_threshold_is_a_value_error():
    with pytest.raises(ValueError, match="severity_threshold"):
        gates.xray_gate(_scan(), "Severe")


def test_decision_needs_every_gate():
    ok, blocked = gates.GateResult("a", True, "fine"), gates.GateResult("b", False, "CVE-1 blocks")
    assert gates.decide_promotion([ok]).promote is True
    decision = gates.decide_promotion([ok, blocked])
    assert decision.promote is False and decision.reasons == ["CVE-1 blocks"]
    assert gates.decide_promotion([]).promote is False
