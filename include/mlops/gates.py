"""Release gates: accuracy, champion-vs-challenger and the Xray verdict, combined into one promotion decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Xray severities, most severe first (contract X11); "Normal"/"Pending" are legacy policy values.
SEVERITY_ORDER = ("critical", "high", "medium", "low", "information", "unknown")


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


def severity_rank(severity: str) -> int:
    """Rank of a severity (0 = Critical); an unknown word ranks as 'unknown', never as harmless."""
    value = (severity or "unknown").strip().lower()
    return SEVERITY_ORDER.index(value) if value in SEVERITY_ORDER else SEVERITY_ORDER.index("unknown")


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


def champion_gate(candidate_accuracy: float, champion_accuracy: float | None, max_regression: float) -> GateResult:
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
        f"minus max_regression {max_regression:.4f}",
        {"candidate": candidate_accuracy, "champion": champion_accuracy, "max_regression": max_regression},
    )


def xray_gate(scan: Mapping[str, Any] | None, severity_threshold: str = "High") -> GateResult:
    """Block on any `fail_build` violation or any vulnerability at or above the threshold; fail closed."""
    if severity_threshold.strip().lower() not in SEVERITY_ORDER:
        raise ValueError(f"severity_threshold {severity_threshold!r} is not one of {SEVERITY_ORDER}")
    if not scan or not isinstance(scan.get("vulnerabilities"), list) or not isinstance(scan.get("violations"), list):
        return GateResult("xray", False, "Xray result missing or malformed: failing closed", {})
    status = str(scan.get("status", "")).lower()
    if status in {"failed", "error"}:
        return GateResult("xray", False, f"Xray scan {scan.get('scan_id')} ended with status {status!r}", {})

    limit = severity_rank(severity_threshold)
    blocking: list[str] = []
    for violation in scan["violations"]:
        if violation.get("fail_build"):
            blocking.append(f"violation {_describe(violation)} (watch {violation.get('watch_name')}, fail_build)")
    for vuln in scan["vulnerabilities"]:
        if severity_rank(str(vuln.get("severity", ""))) <= limit:
            blocking.append(f"vulnerability {_describe(vuln)}")
    if blocking:
        return GateResult(
            "xray",
            False,
            f"Xray scan {scan.get('scan_id')} found {len(blocking)} finding(s) at or above "
            f"{severity_threshold}: " + "; ".join(blocking),
            {"scan_id": scan.get("scan_id"), "blocking": blocking, "severity_threshold": severity_threshold},
        )
    return GateResult(
        "xray",
        True,
        f"Xray scan {scan.get('scan_id')}: no fail_build violation and no vulnerability at or above "
        f"{severity_threshold} ({len(scan['vulnerabilities'])} below it)",
        {"scan_id": scan.get("scan_id"), "severity_threshold": severity_threshold},
    )


def decide_promotion(gates: Sequence[GateResult]) -> PromotionDecision:
    """Promote only when there is at least one gate and all of them passed."""
    return PromotionDecision(promote=bool(gates) and all(g.passed for g in gates), gates=tuple(gates))


def _describe(finding: Mapping[str, Any]) -> str:
    cves = ",".join(str(c) for c in finding.get("cves") or []) or "no CVE"
    components = ",".join(
        str(c.get("component_id") if isinstance(c, Mapping) else c) for c in finding.get("components") or []
    )
    return f"{finding.get('issue_id')} {finding.get('severity')} [{cves}] in {components or 'unknown component'}"
