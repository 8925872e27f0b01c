"""Model gates: absolute accuracy and champion-vs-challenger, combined into one promotion decision.

The Xray policy gate lives with the JFrog provider (`jfrog_provider.policy`), which runs before these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


class GateFailure(ValueError):
    """A gate or consistency check failed and retrying cannot change it; the message names what and why."""


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict with a reason a person can act on."""

    name: str
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromotionDecision:
    """All gates together: promote only when every one passed."""

    promote: bool
    gates: tuple[GateResult, ...]

    @property
    def reasons(self) -> list[str]:
        """The reasons of the gates that failed."""
        return [g.reason for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "gates": [g.to_dict() for g in self.gates], "reasons": self.reasons}


def accuracy_gate(accuracy: float, min_accuracy: float) -> GateResult:
    """Absolute accuracy threshold on the held-out test set."""
    passed = accuracy >= min_accuracy
    verdict = "meets" if passed else "is below"
    return GateResult(
        "accuracy",
        passed,
        f"test accuracy {accuracy:.4f} {verdict} min_accuracy {min_accuracy:.4f}",
        {"accuracy": accuracy, "min_accuracy": min_accuracy},
    )


def champion_gate(
    candidate_accuracy: float, champion_accuracy: float | None, max_regression: float, basis: str = ""
) -> GateResult:
    """The challenger may not fall more than `max_regression` below the current champion."""
    if champion_accuracy is None:
        return GateResult("champion", True, "no current champion: the candidate is the first", {})
    floor = champion_accuracy - max_regression
    passed = candidate_accuracy >= floor
    verdict = "keeps up with" if passed else "regresses beyond"
    return GateResult(
        "champion",
        passed,
        f"candidate accuracy {candidate_accuracy:.4f} {verdict} champion {champion_accuracy:.4f} "
        f"minus max_regression {max_regression:.4f}" + (f" ({basis})" if basis else ""),
        {"candidate": candidate_accuracy, "champion": champion_accuracy, "max_regression": max_regression,
         "delta": candidate_accuracy - champion_accuracy, "basis": basis},
    )


def decide_promotion(gates: Sequence[GateResult]) -> PromotionDecision:
    """Promote only when there is at least one gate and all of them passed."""
    return PromotionDecision(promote=bool(gates) and all(g.passed for g in gates), gates=tuple(gates))

