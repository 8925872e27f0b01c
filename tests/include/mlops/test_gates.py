"""Model gates: the accuracy threshold, the champion comparison, and all-or-nothing promotion."""

from __future__ import annotations

import pytest

from include.mlops import gates


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


def test_decision_needs_every_gate():
    ok, blocked = gates.GateResult("a", True, "fine"), gates.GateResult("b", False, "CVE-1 blocks")
    assert gates.decide_promotion([ok]).promote is True
    decision = gates.decide_promotion([ok, blocked])
    assert decision.promote is False and decision.reasons == ["CVE-1 blocks"]
    assert gates.decide_promotion([]).promote is False


def test_champion_gate_records_the_comparison_and_its_basis():
    gate = gates.champion_gate(0.9890, 0.9905, 0.002, "both on the same 10000 test images")
    assert gate.passed is True and gate.reason.endswith("(both on the same 10000 test images)")
    assert gate.details["delta"] == pytest.approx(-0.0015) and gate.details["basis"].startswith("both")
    assert gates.champion_gate(0.9880, 0.9905, 0.002).passed is False
