"""The champion gate as promote applies it: compared on the same images, or blocked when the champion moved."""

from __future__ import annotations

import pytest

from include.mlops.promotion import champion_gate

EVALUATION = {"accuracy": 0.99, "champion": {"version": "3", "accuracy": 0.995, "num_samples": 10000}}


@pytest.mark.parametrize(
    ("current", "max_regression", "passed", "reason"),
    [
        (None, 0.002, True, "no current champion"),
        ("7", 0.002, True, "no current champion"),  # a rerun after its own commit: it is the champion
        ("3", 0.01, True, "keeps up with champion 0.9950 minus max_regression 0.0100 (both on the same 10000"),
        ("3", 0.002, False, "regresses beyond champion 0.9950 minus max_regression 0.0020"),
        ("4", 1.0, False, "champion is version 4 but evaluate_model compared against 3"),
    ],
)
def test_champion_gate(current, max_regression, passed, reason):
    gate = champion_gate(current, "7", EVALUATION, max_regression)
    assert gate.name == "champion" and gate.passed is passed
    assert reason in gate.reason


def test_a_champion_that_appeared_after_evaluation_blocks():
    gate = champion_gate("2", "7", {"accuracy": 0.99, "champion": None}, 1.0)
    assert gate.passed is False and "compared against none" in gate.reason
