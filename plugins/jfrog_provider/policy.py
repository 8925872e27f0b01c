"""The Xray gate policy: which findings of a graph scan block a release, and the allowlist.

It mirrors `jf audit --fail` (jfrog-cli-security `policy/handler.go` `CheckPolicyFailBuildError`): a violation
with `fail_build` fails; then the gate applies its own severity threshold to the vulnerabilities.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from jfrog_provider.severity import Severity

if TYPE_CHECKING:  # the answer models are pydantic classes, built only when a scan is judged
    from jfrog_provider.xray_results import GraphScanResult, Violation, Vulnerability

# an allowlist names a CVE, or an Xray issue id for findings that have no CVE
_ALLOWLIST_ID = re.compile(r"^(CVE-\d{4}-\d{4,}|XRAY-\d+)$")
_ALLOWLIST_KEYS = {"cve", "expires", "reason"}


class XrayPolicyViolation(AirflowFailException):  # noqa: N818 - it is a verdict, named like one
    """The Xray gate blocked the release; retrying the same scan cannot change the verdict."""

    def __init__(self, message: str, verdict: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.verdict = dict(verdict or {})


def check_severity(value: str, name: str = "severity_threshold") -> Severity:
    """Parse a rated severity name (Critical, High, Medium, Low, Information) or raise ValueError."""
    rated = [s.label for s in reversed(Severity) if s.rated]
    try:
        level = Severity.parse(value)
    except ValueError:
        level = None
    if level is None or not level.rated:
        raise ValueError(f"{name} must be one of {rated}, got {value!r}")
    return level


@dataclass(frozen=True)
class AllowlistEntry:
    """A CVE (or Xray issue id) accepted until `expires` (inclusive) for a stated reason."""

    cve: str
    expires: dt.date
    reason: str

    @classmethod
    def parse(cls, raw: Any, where: str = "allowlist entry") -> AllowlistEntry:
        """Validate one {"cve", "expires": "YYYY-MM-DD", "reason"} mapping; raise ValueError if malformed."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where} must be a mapping with keys {sorted(_ALLOWLIST_KEYS)}, got {raw!r}")
        missing, unknown = _ALLOWLIST_KEYS - set(raw), set(raw) - _ALLOWLIST_KEYS
        if missing or unknown:
            raise ValueError(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
        cve, expires, reason = raw["cve"], raw["expires"], raw["reason"]
        if not isinstance(cve, str) or not _ALLOWLIST_ID.match(cve.strip().upper()):
            raise ValueError(f"{where}: cve must look like CVE-2024-12345 (or XRAY-123456), got {cve!r}")
        if isinstance(expires, dt.datetime):
            expires = expires.date()
        elif isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires.strip())
            except ValueError:
                raise ValueError(f"{where} ({cve}): expires must be YYYY-MM-DD, got {expires!r}") from None
        elif not isinstance(expires, dt.date):
            raise ValueError(f"{where} ({cve}): expires must be YYYY-MM-DD, got {expires!r}")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"{where} ({cve}): reason must be a non-empty string")
        return cls(cve.strip().upper(), expires, reason.strip())

    def active_on(self, day: dt.date) -> bool:
        """True through the expiry day itself."""
        return day <= self.expires

    def to_dict(self) -> dict[str, str]:
        """JSON-able dict."""
        return {"cve": self.cve, "expires": self.expires.isoformat(), "reason": self.reason}


def parse_allowlist(entries: Sequence[Any] | None) -> tuple[AllowlistEntry, ...]:
    """Validate a whole allowlist; ValueError names the first bad entry."""
    if entries is None:
        return ()
    if isinstance(entries, str | bytes | Mapping) or not isinstance(entries, Iterable):
        raise ValueError(f"allowlist must be a list of {{cve, expires, reason}} mappings, got {entries!r}")
    return tuple(AllowlistEntry.parse(e, f"allowlist[{i}]") for i, e in enumerate(entries))


@dataclass(frozen=True)
class GateVerdict:
    """What the gate decided and why; `to_dict()` is the operator's XCom value."""

    scan_id: str
    passed: bool
    severity_threshold: str
    blocking: tuple[dict[str, Any], ...]
    allowlisted: tuple[dict[str, Any], ...]
    expired_allowlist: tuple[dict[str, str], ...]
    counts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for XCom."""
        return {"scan_id": self.scan_id, "passed": self.passed, "severity_threshold": self.severity_threshold,
                "blocking": list(self.blocking), "allowlisted": list(self.allowlisted),
                "expired_allowlist": list(self.expired_allowlist), "counts": dict(self.counts)}

    def message(self) -> str:
        """One line a person can act on: the CVEs, the components and the threshold."""
        if self.passed:
            return (f"Xray scan {self.scan_id} passed the gate (threshold {self.severity_threshold}): "
                    f"{self.counts.get('vulnerabilities', 0)} vulnerabilities, "
                    f"{self.counts.get('violations', 0)} violations, {len(self.allowlisted)} allowlisted")
        parts = []
        for b in self.blocking:
            ids = ", ".join(b["cves"]) or b["issue_id"]
            comps = ", ".join(c["component_id"] for c in b["components"]) or "unknown component"
            parts.append(f"{ids} ({b['severity']}) in {comps}: {b['reason']}")
        return (f"Xray scan {self.scan_id} blocked the release at threshold {self.severity_threshold}: "
                f"{len(self.blocking)} blocking finding(s): " + "; ".join(parts))


def _finding(v: Vulnerability, reason: str) -> dict[str, Any]:
    d = v.to_dict()
    d["reason"] = reason
    return d


def judge_scan(result: GraphScanResult, *, severity_threshold: str | Severity = "High",
               allowlist: Sequence[AllowlistEntry] = (), today: dt.date | None = None,
               fail_on_fail_build_violations: bool = True) -> GateVerdict:
    """Block on a `fail_build` violation, on an unrated finding, or on one at/above the threshold not allowlisted.

    The allowlist waives local-threshold findings only: a `fail_build` violation is Xray's own policy
    verdict and is waived in Xray (ignore rules), not here. A vulnerability is waived only when every one
    of its CVEs (or its issue id, when it has none) has an active entry. A Pending, Unknown or missing
    severity blocks at any threshold: Xray has not said how bad it is yet (fail closed).
    `fail_on_fail_build_violations=False` is `jf audit --fail=false`: violations are reported, not blocking.
    """
    threshold = check_severity(severity_threshold) if not isinstance(severity_threshold, Severity) \
        else severity_threshold
    day = today or dt.datetime.now(dt.UTC).date()
    active = {e.cve: e for e in allowlist if e.active_on(day)}
    expired = tuple(e.to_dict() for e in allowlist if not e.active_on(day))
    blocking: list[dict[str, Any]] = []
    waived: list[dict[str, Any]] = []
    if result.status.strip().lower() in {"failed", "error"}:  # fail closed even if a caller forgot to check
        blocking.append({"issue_id": "-", "severity": "Unknown", "summary": "", "cves": [], "components": [],
                         "reason": f"scan ended with status {result.status!r}"})
    for violation in result.violations:
        if violation.fail_build and fail_on_fail_build_violations:
            blocking.append(_finding(violation, _violation_reason(violation)))
    for vuln in result.vulnerabilities:
        if vuln.severity.rated and vuln.severity < threshold:
            continue
        ids = vuln.cves or (vuln.issue_id.upper(),)
        entries = [active.get(i.upper()) for i in ids]
        if all(entries):
            d = _finding(vuln, "allowlisted: " + "; ".join(f"{e.cve} until {e.expires} ({e.reason})"
                                                          for e in entries if e))
            waived.append(d)
        else:
            blocking.append(_finding(vuln, _severity_reason(vuln, threshold)))
    by_severity = Counter(v.severity.label for v in (*result.vulnerabilities, *result.violations))
    counts = {"vulnerabilities": len(result.vulnerabilities), "violations": len(result.violations),
              "fail_build_violations": sum(v.fail_build for v in result.violations),
              "blocking": len(blocking), "allowlisted": len(waived),
              "by_severity": {s.label: by_severity[s.label] for s in reversed(Severity) if by_severity[s.label]}}
    return GateVerdict(scan_id=result.scan_id, passed=not blocking, severity_threshold=threshold.label,
                       blocking=tuple(blocking), allowlisted=tuple(waived), expired_allowlist=expired,
                       counts=counts)


def _violation_reason(v: Violation) -> str:
    policies = f", policy {', '.join(v.policies)}" if v.policies else ""
    return f"{v.type} violation with fail_build (watch {v.watch_name or '-'}{policies})"


def _severity_reason(v: Vulnerability, threshold: Severity) -> str:
    if v.severity.rated:
        return f"severity {v.severity.label} >= {threshold.label}"
    return (f"severity {v.severity.label}: Xray has not rated it yet (missing, Unknown or Pending), and an "
            "unrated finding blocks at any threshold")
