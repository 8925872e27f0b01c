"""Xray answers as pydantic models, parsed strictly: anything malformed raises MalformedScanResultError.

Shapes follow the graph scan that `jf audit` uses (jfrog-client-go `xray/services/scan.go`, `ScanResponse`)
and Xray REST "Artifact Summary" (https://docs.jfrog.com/security/reference/artifact-summary_artifacts-v2-openapi).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    model_validator,
)

from jfrog_provider.exceptions import MalformedScanResultError, XrayScanError
from jfrog_provider.severity import Severity

# Xray's summary says "Artifact doesn't exist or not indexed/cached in Xray" until indexing ends (the same
# words for a path Xray never saw); "pending" and "in progress" cover the scan-status wording
# (https://jfrog.com/help/r/xray-rest-apis/scan-status)
_NOT_YET = re.compile(r"not (yet )?indexed|pending|in progress", re.IGNORECASE)
# issue types a watch judges as policy, not as a vulnerability of the file (Artifact Summary `issue_type`)
_POLICY_ISSUE_TYPES = {"license", "operational risk", "operational_risk"}


def _severity(value: Any) -> Severity:
    # an absent severity is as unrated as an "Unknown" one: both block (fail closed)
    return Severity.UNKNOWN if value is None else Severity.parse(value)


def _cve_ids(value: Any) -> Any:
    # the graph scan (jfrog-client-go `xray/services/scan.go`) and the artifact summary both send cves as
    # [{"cve": "CVE-…", …}]; entries without an id carry no CVE
    if not isinstance(value, list):
        return value
    out = []
    for i, cve in enumerate(value):
        if not isinstance(cve, Mapping) or not isinstance(cve.get("cve", ""), str):
            raise ValueError(f"cves[{i}] must be an object with a string 'cve', got {cve!r}")
        if cve.get("cve"):
            out.append(cve["cve"])
    return out


def _graph_components(value: Any) -> Any:
    # the graph scan keys components by id: {"pypi://torch:2.5.1": {"fixed_versions": [...]}, ...}
    if value is None:
        return []
    if isinstance(value, tuple) and all(isinstance(c, ImpactedComponent) for c in value):
        return value  # built here (artifact-summary findings), not parsed from Xray
    if not isinstance(value, Mapping):
        raise ValueError(f"components must be an object keyed by component id, got {type(value).__name__}")
    return [{"component_id": cid, **(detail or {})} if isinstance(detail, Mapping | None) else detail
            for cid, detail in value.items()]


def _policy_names(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return [p.get("policy", "") if isinstance(p, Mapping) else p for p in value]


class _Model(BaseModel):
    """Frozen, unknown fields ignored (Xray adds fields), null read as absent (client-go `omitempty`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ImpactedComponent(_Model):
    """A component hit by an issue and the versions that fix it."""

    component_id: StrictStr
    fixed_versions: tuple[StrictStr, ...] = ()


SeverityField = Annotated[Severity, BeforeValidator(_severity)]


class Vulnerability(_Model):
    """One Xray security issue."""

    issue_id: StrictStr
    severity: SeverityField = Severity.UNKNOWN
    summary: StrictStr = ""
    cves: Annotated[tuple[StrictStr, ...], BeforeValidator(_cve_ids)] = ()
    components: Annotated[tuple[ImpactedComponent, ...], BeforeValidator(_graph_components)] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"issue_id": self.issue_id, "severity": self.severity.label, "summary": self.summary,
                "cves": list(self.cves),
                "components": [{"component_id": c.component_id, "fixed_versions": list(c.fixed_versions)}
                               for c in self.components]}


class Violation(Vulnerability):
    """A policy violation, reported only when the scan had a context (watch, project or repo_path)."""

    type: StrictStr = "security"
    watch_name: StrictStr = ""
    fail_build: StrictBool = False
    policies: Annotated[tuple[StrictStr, ...], BeforeValidator(_policy_names)] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {**super().to_dict(), "type": self.type, "watch_name": self.watch_name,
                "fail_build": self.fail_build, "policies": list(self.policies)}


class GraphScanResult(_Model):
    """The final answer of a graph scan, optionally with Xray's summaries of published files."""

    scan_id: StrictStr
    status: StrictStr = ""
    vulnerabilities: tuple[Vulnerability, ...] = ()
    violations: tuple[Violation, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> GraphScanResult:
        """Parse the final 200 body of `GET /api/v1/scan/graph/{scan_id}`."""
        return _validate(cls, data, "graph scan result")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for XCom."""
        return {"scan_id": self.scan_id, "status": self.status,
                "vulnerabilities": [v.to_dict() for v in self.vulnerabilities],
                "violations": [v.to_dict() for v in self.violations]}

    def with_findings(self, extra: tuple[Vulnerability, ...]) -> GraphScanResult:
        """The same result with more vulnerabilities (those Xray found in the published files)."""
        return self.model_copy(update={"vulnerabilities": (*self.vulnerabilities, *extra)})

    @property
    def max_severity(self) -> Severity | None:
        """Highest rated severity among vulnerabilities and violations, None when there is none."""
        levels = [v.severity for v in (*self.vulnerabilities, *self.violations) if v.severity.rated]
        return max(levels) if levels else None

    @property
    def fail_build(self) -> bool:
        """True if any violation asks to fail the build."""
        return any(v.fail_build for v in self.violations)

    def vulnerabilities_at_least(self, severity: Severity | str) -> tuple[Vulnerability, ...]:
        """Vulnerabilities at or above the threshold, plus every unrated one (fail closed)."""
        threshold = Severity.parse(severity)
        return tuple(v for v in self.vulnerabilities if v.severity >= threshold or not v.severity.rated)


def final_graph_result(body: Any) -> GraphScanResult:
    """Parse the final graph scan body; one whose status says the scan failed raises XrayScanError (fail closed)."""
    result = GraphScanResult.from_json(body)
    if result.status.strip().lower() in {"failed", "error"}:
        raise XrayScanError(200, f"Xray graph scan {result.scan_id} ended with status {result.status!r}")
    return result


# -- Artifact Summary (POST /api/v2/summary/artifact) -------------------------------------------------------


class SummaryComponent(_Model):
    """A component an artifact-summary issue names (v2 only)."""

    component_id: StrictStr = ""
    fixed_versions: tuple[StrictStr, ...] = ()


class SummaryIssue(_Model):
    """One issue Xray found in an indexed artifact."""

    issue_id: StrictStr
    severity: SeverityField = Severity.UNKNOWN
    summary: StrictStr = ""
    issue_type: StrictStr = "security"
    cves: Annotated[tuple[StrictStr, ...], BeforeValidator(_cve_ids)] = ()
    components: tuple[SummaryComponent, ...] = ()


class SummaryGeneral(_Model):
    """What the artifact is: Xray's component id and its path `default/<repo>/<path>`."""

    component_id: StrictStr = ""
    name: StrictStr = ""
    path: StrictStr = ""
    sha256: StrictStr = ""


class SummaryArtifact(_Model):
    """One indexed artifact and its issues."""

    general: SummaryGeneral = Field(default_factory=SummaryGeneral)
    issues: tuple[SummaryIssue, ...] = ()

    def findings(self) -> tuple[Vulnerability, ...]:
        """The artifact's issues as vulnerabilities of the file itself (license/operational risk are watch policy)."""
        own = ImpactedComponent(component_id=self.general.component_id or self.general.path)
        return tuple(
            Vulnerability(issue_id=i.issue_id, severity=i.severity, summary=i.summary, cves=i.cves,
                          components=tuple(ImpactedComponent(component_id=c.component_id or own.component_id,
                                                             fixed_versions=c.fixed_versions)
                                           for c in i.components) or (own,))
            for i in self.issues if i.issue_type.strip().lower() not in _POLICY_ISSUE_TYPES)


class SummaryError(_Model):
    """An identifier Xray could not summarise, and why."""

    identifier: StrictStr = ""
    error: StrictStr = ""

    @property
    def not_yet(self) -> bool:
        """True when Xray may still be indexing the artifact (worth asking again, within a bound)."""
        return bool(_NOT_YET.search(self.error))


class ArtifactSummary(_Model):
    """The answer of `POST /api/v2/summary/artifact`: artifacts, and identifiers it could not summarise."""

    artifacts: tuple[SummaryArtifact, ...] = ()
    errors: tuple[SummaryError, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> ArtifactSummary:
        """Parse a summary body."""
        return _validate(cls, data, "artifact summary")

    @property
    def pending(self) -> tuple[SummaryError, ...]:
        """Errors that say the artifact is not indexed yet."""
        return tuple(e for e in self.errors if e.not_yet)

    def findings(self) -> tuple[Vulnerability, ...]:
        """Every artifact's findings."""
        return tuple(f for a in self.artifacts for f in a.findings())


_M = TypeVar("_M", bound=_Model)


def _validate(model: type[_M], data: Any, what: str) -> _M:
    if not isinstance(data, Mapping):
        raise MalformedScanResultError(None, f"{what}: expected an object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        raise MalformedScanResultError(None, f"{what}: {where or 'body'}: {first['msg']}") from None
