"""Typed, strictly parsed Xray graph-scan results (contract X7, X11); malformed input fails closed."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jfrog_provider.exceptions import MalformedScanResultError


class Severity(enum.IntEnum):
    """Xray severities, ordered so that comparisons work (Critical > High > ... > Unknown)."""

    UNKNOWN = 0
    INFORMATION = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5

    @classmethod
    def parse(cls, value: Any) -> Severity:
        """Parse case-insensitively (contract X11), mapping legacy names; raise on anything else."""
        if isinstance(value, Severity):
            return value
        if not isinstance(value, str):
            raise MalformedScanResultError(None, f"severity must be a string, got {value!r}")
        key = value.strip().lower()
        # contract X11: legacy Major/Minor (v1 build scan), Normal/Pending (policies), Info shorthand
        key = {"info": "information", "major": "high", "minor": "low", "normal": "medium",
               "pending": "unknown"}.get(key, key)
        try:
            return cls[key.upper()]
        except KeyError:
            raise MalformedScanResultError(None, f"unknown Xray severity {value!r}") from None

    @property
    def label(self) -> str:
        """Xray's spelling, e.g. "Critical"."""
        return self.name.capitalize()


@dataclass(frozen=True)
class ImpactedComponent:
    """A component hit by an issue and the versions that fix it."""

    component_id: str
    fixed_versions: tuple[str, ...]


@dataclass(frozen=True)
class Vulnerability:
    """One Xray security issue."""

    issue_id: str
    severity: Severity
    summary: str
    cves: tuple[str, ...]
    components: tuple[ImpactedComponent, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"issue_id": self.issue_id, "severity": self.severity.label, "summary": self.summary,
                "cves": list(self.cves),
                "components": [{"component_id": c.component_id, "fixed_versions": list(c.fixed_versions)}
                               for c in self.components]}


@dataclass(frozen=True)
class Violation(Vulnerability):
    """A policy violation found because a context (watch / project / repo_path) was given."""

    type: str
    watch_name: str
    fail_build: bool
    policies: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {**super().to_dict(), "type": self.type, "watch_name": self.watch_name,
                "fail_build": self.fail_build, "policies": list(self.policies)}


@dataclass(frozen=True)
class GraphScanResult:
    """The final answer of a graph scan."""

    scan_id: str
    status: str
    vulnerabilities: tuple[Vulnerability, ...]
    violations: tuple[Violation, ...]

    @classmethod
    def from_json(cls, data: Any) -> GraphScanResult:
        """Parse the X7 200 body; raise MalformedScanResultError on anything unexpected."""
        obj = _mapping(data, "graph scan result")
        scan_id = _str(obj, "scan_id", required=True)
        status = _str(obj, "status")
        vulns = tuple(_parse_issue(v, f"vulnerabilities[{i}]") for i, v in enumerate(_list(obj, "vulnerabilities")))
        violations = tuple(_parse_violation(v, f"violations[{i}]") for i, v in enumerate(_list(obj, "violations")))
        return cls(scan_id=scan_id, status=status, vulnerabilities=vulns, violations=violations)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for XCom."""
        return {"scan_id": self.scan_id, "status": self.status,
                "vulnerabilities": [v.to_dict() for v in self.vulnerabilities],
                "violations": [v.to_dict() for v in self.violations]}

    @property
    def max_severity(self) -> Severity | None:
        """Highest severity among vulnerabilities and violations, None when clean."""
        levels = [v.severity for v in (*self.vulnerabilities, *self.violations)]
        return max(levels) if levels else None

    @property
    def fail_build(self) -> bool:
        """True if any violation asks to fail the build (contract X12)."""
        return any(v.fail_build for v in self.violations)

    def vulnerabilities_at_least(self, severity: Severity | str) -> tuple[Vulnerability, ...]:
        """Vulnerabilities with severity at or above the threshold."""
        threshold = Severity.parse(severity)
        return tuple(v for v in self.vulnerabilities if v.severity >= threshold)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedScanResultError(None, f"{where}: expected an object, got {type(value).__name__}")
    return value


def _str(obj: Mapping[str, Any], key: str, *, required: bool = False, where: str = "") -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise MalformedScanResultError(None, f"{where or 'result'}: missing {key!r}")
        return ""
    if not isinstance(value, str):
        raise MalformedScanResultError(None, f"{where or 'result'}.{key}: expected a string, got {value!r}")
    return value


def _list(obj: Mapping[str, Any], key: str, where: str = "result") -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []  # contract X7: absent when not requested or empty (client-go omitempty)
    if not isinstance(value, list):
        raise MalformedScanResultError(None, f"{where}.{key}: expected a list, got {type(value).__name__}")
    return value


def _issue_fields(raw: Any, where: str) -> dict[str, Any]:
    obj = _mapping(raw, where)
    cves = []
    for i, cve in enumerate(_list(obj, "cves", where)):
        cve_id = _str(_mapping(cve, f"{where}.cves[{i}]"), "cve", where=f"{where}.cves[{i}]")
        if cve_id:
            cves.append(cve_id)
    comps_raw = obj.get("components") or {}
    comps = []
    for cid, detail in _mapping(comps_raw, f"{where}.components").items():
        detail = _mapping(detail or {}, f"{where}.components[{cid}]")
        fixed = _list(detail, "fixed_versions", f"{where}.components[{cid}]")
        if not all(isinstance(f, str) for f in fixed):
            raise MalformedScanResultError(None, f"{where}.components[{cid}].fixed_versions must be strings")
        comps.append(ImpactedComponent(str(cid), tuple(fixed)))
    if "severity" not in obj:
        raise MalformedScanResultError(None, f"{where}: missing 'severity'")
    return {"issue_id": _str(obj, "issue_id", required=True, where=where),
            "severity": Severity.parse(obj["severity"]), "summary": _str(obj, "summary", where=where),
            "cves": tuple(cves), "components": tuple(comps)}


def _parse_issue(raw: Any, where: str) -> Vulnerability:
    return Vulnerability(**_issue_fields(raw, where))


def _parse_violation(raw: Any, where: str) -> Violation:
    fields = _issue_fields(raw, where)
    obj = _mapping(raw, where)
    fail_build = obj.get("fail_build", False)
    if not isinstance(fail_build, bool):
        raise MalformedScanResultError(None, f"{where}.fail_build: expected a boolean, got {fail_build!r}")
    policies = []
    for i, pol in enumerate(_list(obj, "policies", where)):
        policies.append(_str(_mapping(pol, f"{where}.policies[{i}]"), "policy", where=f"{where}.policies[{i}]"))
    return Violation(**fields, type=_str(obj, "type", where=where) or "security",
                     watch_name=_str(obj, "watch_name", where=where), fail_build=fail_build,
                     policies=tuple(policies))
