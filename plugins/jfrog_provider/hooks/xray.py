"""XrayHook: graph scans of a dependency list and artifact summaries, sync for tasks and async for triggers.

Endpoints: Xray REST "Ping" (https://jfrog.com/help/r/xray-rest-apis/ping-request), "System Version", the
graph scan `jf audit` uses (jfrog-client-go `xray/services/scan.go`) and "Artifact Summary"
(https://docs.jfrog.com/security/reference/artifact-summary_artifacts-v2-openapi).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, unquote

from jfrog_provider.exceptions import (
    MalformedScanResultError,
    XrayScanTimeoutError,
    XraySummaryError,
)
from jfrog_provider.hooks.base import JFrogHook
from jfrog_provider.xray_results import ArtifactSummary, GraphScanResult, Violation, final_graph_result

GRAPH_SCAN_PATH = "/api/v1/scan/graph"
SUMMARY_PATH = "/api/v2/summary/artifact"  # jfrog-client-go `xray/services/summary.go` calls v2
# purl type → Xray package type (jfrog-cli-security `utils/techutils/techutils.go`
# `CdxPackageTypeToXrayPackageType`)
_PURL_TO_XRAY_TYPE = {"maven": "gav", "golang": "go", "gem": "rubygems", "apk": "alpine", "cargo": "cargo"}


class XrayHook(JFrogHook):
    """Xray REST operations."""

    hook_name = "JFrog Xray"

    def test_connection(self) -> tuple[bool, str]:
        """Ping Xray (Xray's ping requires a valid user)."""
        try:
            self.ping("xray")
        except Exception as exc:  # noqa: BLE001 - the UI wants (False, reason), not a traceback
            return False, str(exc)
        return True, "Connection to JFrog Xray works"

    def get_version(self) -> dict[str, Any]:
        """Xray version: {"xray_version", "xray_revision"}."""
        return self._request("GET", "/api/v1/system/version", service="xray").json()

    def scan_graph(self, component_ids: Sequence[str], *, watches: Sequence[str] | None = None,
                   project: str | None = None, repo_path: str | None = None, root_id: str = "root") -> str:
        """Start a graph scan of a flat dependency list under one root, as `jf audit` does; return its scan_id."""
        if isinstance(component_ids, str):
            raise ValueError("component_ids must be a sequence of component ids, not one string")
        if sum(bool(x) for x in (watches, project, repo_path)) > 1:
            # jfrog-client-go `createScanGraphQueryParams` sends one: project, else repo_path, else watches
            raise ValueError("give at most one context: watches, project or repo_path")
        params: list[tuple[str, str]] = []
        if project:
            params.append(("project", project))
        elif repo_path:
            params.append(("repo_path", repo_path))
        elif watches:
            params.extend(("watch", w) for w in watches)
        unique = list(dict.fromkeys(component_ids))
        body = {"component_id": root_id, "nodes": [{"component_id": c} for c in unique]}
        # re-posting the same graph only starts a second identical scan: safe to retry
        resp = self._request("POST", GRAPH_SCAN_PATH, service="xray", params=params, json=body, idempotent=True)
        try:
            scan_id = resp.json()["scan_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedScanResultError(resp.status_code, "graph scan answer has no scan_id",
                                           method="POST", url_path=GRAPH_SCAN_PATH) from exc
        if not isinstance(scan_id, str) or not scan_id:
            raise MalformedScanResultError(resp.status_code, f"invalid scan_id {scan_id!r}")
        return scan_id

    def get_graph_scan_result(self, scan_id: str, include_vulnerabilities: bool = True,
                              include_licenses: bool = True) -> dict[str, Any] | None:
        """The final result as a dict, or None while Xray still answers 202 (still scanning)."""
        url_path, params = _graph_poll(scan_id, include_vulnerabilities, include_licenses)
        resp = self._request("GET", url_path, service="xray", params=params)
        return _graph_body(resp.status_code, resp.content, url_path)

    def wait_for_graph_scan(self, scan_id: str, poll_interval: float = 5.0, timeout: float = 600.0, *,
                            include_vulnerabilities: bool = True,
                            include_licenses: bool = True) -> GraphScanResult:
        """Poll until the scan is done; raise on timeout or failure (fail closed)."""
        deadline = time.monotonic() + timeout
        # Small graph scans finish in a second or two: poll after 0.5 s, then double up to poll_interval.
        delay = min(0.5, poll_interval)
        while True:
            body = self.get_graph_scan_result(scan_id, include_vulnerabilities, include_licenses)
            if body is not None:
                return final_graph_result(body)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XrayScanTimeoutError(None, f"graph scan {scan_id} not done after {timeout:.0f}s")
            self._sleep(min(delay, remaining))
            delay = min(2 * delay, poll_interval)

    def get_artifact_summary(self, paths: Sequence[str] | None = None, checksums: Sequence[str] | None = None, *,
                             artifactory_id: str | None = "default") -> dict[str, Any]:
        """Artifact summary; `paths` are `<repo>/<path>`; raise XraySummaryError on any `errors` entry."""
        body, summary = self._post_summary(paths, checksums, artifactory_id)
        if summary.errors:
            # an unknown or not yet indexed id comes back in `errors` with a 200; jfrog-client-go raises, so do we
            raise XraySummaryError(200, _summary_errors(summary), method="POST", url_path=SUMMARY_PATH)
        _all_indexed(summary, len(paths or checksums or ()))
        return body

    def wait_for_artifact_summary(self, paths: Sequence[str] | None = None,
                                  checksums: Sequence[str] | None = None, *, poll_interval: float = 5.0,
                                  timeout: float = 600.0, artifactory_id: str | None = "default") -> ArtifactSummary:
        """Ask until Xray has indexed every artifact; raise XraySummaryError after `timeout` (fail closed).

        Xray indexes a deployed file asynchronously and answers "not indexed" until it is done; a gate that
        reads the summary before then would see no issues (jfrog-cli issue 606). Other errors raise at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            _, summary = self._post_summary(paths, checksums, artifactory_id)
            if _all_indexed(summary, len(paths or checksums or ())):
                return summary
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XraySummaryError(200, f"not indexed by Xray after {timeout:.0f}s: {_summary_errors(summary)}",
                                       method="POST", url_path=SUMMARY_PATH)
            self._sleep(min(poll_interval, remaining))

    def indexed_summary(self, paths: Sequence[str]) -> ArtifactSummary | None:
        """The artifact summary once Xray has indexed every path; None while some are not indexed yet."""
        _, summary = self._post_summary(paths, None, "default")
        return summary if _all_indexed(summary, len(paths)) else None

    def _post_summary(self, paths: Sequence[str] | None, checksums: Sequence[str] | None,
                      artifactory_id: str | None) -> tuple[dict[str, Any], ArtifactSummary]:
        # a summary only reads: safe to resend
        resp = self._request("POST", SUMMARY_PATH, service="xray", idempotent=True,
                             json=summary_request(paths, checksums, artifactory_id))
        return _summary_body(resp.content)

    def get_violations(self, component_ids: Sequence[str], *, watches: Sequence[str] | None = None,
                       project: str | None = None, repo_path: str | None = None, poll_interval: float = 5.0,
                       timeout: float = 600.0) -> tuple[Violation, ...]:
        """Policy violations of a dependency list under exactly one context (a context-scoped graph scan)."""
        # a graph scan reports violations only when a context (project, repo_path or watch) is given
        # (jfrog-cli-security `commands/audit/audit.go`), and `jf audit --fail` bases its verdict on them
        if sum(bool(x) for x in (watches, project, repo_path)) != 1:
            raise ValueError("get_violations needs exactly one context: watches, project or repo_path")
        scan_id = self.scan_graph(component_ids, watches=watches, project=project, repo_path=repo_path)
        result = self.wait_for_graph_scan(scan_id, poll_interval=poll_interval, timeout=timeout,
                                          include_vulnerabilities=False, include_licenses=False)
        return result.violations

    # -- async, for triggers (the base hook's httpx client and retry policy) --------------------------
    async def aget_graph_scan_result(self, scan_id: str) -> dict[str, Any] | None:
        """Async get_graph_scan_result: the final body, or None while Xray still answers 202."""
        url_path, params = _graph_poll(scan_id, True, True)
        resp = await self._arequest("GET", url_path, service="xray", params=params)
        return _graph_body(resp.status_code, resp.content, url_path)

    async def aget_indexed_summary(self, paths: Sequence[str]) -> dict[str, Any] | None:
        """The artifact summary once Xray has indexed every path; None while some are not indexed yet."""
        resp = await self._arequest("POST", SUMMARY_PATH, service="xray", idempotent=True,
                                    json=summary_request(paths, None, "default"))
        body, summary = _summary_body(resp.content)
        return body if _all_indexed(summary, len(paths)) else None

    @staticmethod
    def purls_to_component_ids(purls: Iterable[str]) -> list[str]:
        """Map package URLs to Xray component ids (`pkg:pypi/Name@1.0` → `pypi://name:1.0`), as `jf audit` does."""
        out: list[str] = []
        for purl in purls:
            cid = _purl_to_component_id(purl)
            if cid not in out:
                out.append(cid)
        return out


def _purl_to_component_id(purl: str) -> str:
    if not isinstance(purl, str) or not purl.startswith("pkg:"):
        raise ValueError(f"not a package URL: {purl!r}")
    body = purl[4:].lstrip("/").split("#", 1)[0].split("?", 1)[0]
    body, _, version = body.partition("@")
    ptype, _, rest = body.partition("/")
    segments = [unquote(s) for s in rest.split("/") if s]
    if not ptype or not segments:
        raise ValueError(f"package URL without type or name: {purl!r}")
    ptype = ptype.lower()
    version = unquote(version)
    name = segments[-1]
    namespace = "/".join(segments[:-1])
    xray_type = _PURL_TO_XRAY_TYPE.get(ptype, ptype)
    if ptype == "pypi":
        # jfrog-cli-security `technologies/python/python.go`: pypi://<lower-cased name>:<version>
        name = name.lower()
    if xray_type == "gav":
        # Xray component identifiers: gav://group:artifact:version (':' separates the namespace)
        ident = f"{namespace}:{name}" if namespace else name
    else:
        ident = f"{namespace}/{name}" if namespace else name
    return f"{xray_type}://{ident}:{version}" if version else f"{xray_type}://{ident}"


# -- shared by the sync and the async calls ----------------------------------------------------------------
def _graph_poll(scan_id: str, include_vulnerabilities: bool, include_licenses: bool) -> tuple[str, dict[str, str]]:
    return (f"{GRAPH_SCAN_PATH}/{quote(scan_id, safe='')}",
            {"include_vulnerabilities": str(include_vulnerabilities).lower(),
             "include_licenses": str(include_licenses).lower()})


def _graph_body(status: int, content: bytes, url_path: str) -> dict[str, Any] | None:
    # 202 = still scanning, 200 = final; any other success status is not a result (jfrog-client-go
    # `xray/services/utils/pollingaction.go`)
    if status == 202:
        return None
    if status != 200:
        raise MalformedScanResultError(status, "unexpected success status for a graph scan poll", method="GET",
                                       url_path=url_path)
    body = _json(content, "graph scan result", url_path)
    if not isinstance(body, dict):
        raise MalformedScanResultError(200, "graph scan result is not an object", method="GET", url_path=url_path)
    return body


def summary_request(paths: Sequence[str] | None, checksums: Sequence[str] | None,
                    artifactory_id: str | None) -> dict[str, list[str]]:
    """The summary body: paths prefixed with the Artifactory id (`default` on Xray 3.x), or checksums."""
    if isinstance(paths, str) or isinstance(checksums, str):
        raise ValueError("paths and checksums must be sequences, not one string")
    if not paths and not checksums:
        raise ValueError("give paths or checksums")
    body: dict[str, list[str]] = {}
    if paths:
        prefix = f"{artifactory_id.strip('/')}/" if artifactory_id else ""
        body["paths"] = [prefix + p.strip("/") for p in paths]
    if checksums:
        body["checksums"] = [c.strip().lower() for c in checksums]
    return body


def _summary_body(content: bytes) -> tuple[dict[str, Any], ArtifactSummary]:
    body = _json(content, "artifact summary", SUMMARY_PATH)
    return body, ArtifactSummary.from_json(body)


def _all_indexed(summary: ArtifactSummary, requested: int) -> bool:
    """True when every requested artifact is summarised, False while some are not indexed yet; else raise."""
    if summary.errors and len(summary.pending) < len(summary.errors):
        raise XraySummaryError(200, _summary_errors(summary), method="POST", url_path=SUMMARY_PATH)
    if summary.errors:
        return False
    if len(summary.artifacts) < requested:  # an answer that forgets a file must not read as "no issues"
        raise MalformedScanResultError(200, f"artifact summary lists {len(summary.artifacts)} artifacts for "
                                            f"{requested} requested", method="POST", url_path=SUMMARY_PATH)
    return True


def _summary_errors(summary: ArtifactSummary) -> str:
    return "Xray summary errors: " + "; ".join(f"{e.identifier}: {e.error}" for e in summary.errors)


def _json(content: bytes, what: str, url_path: str) -> Any:
    try:
        return json.loads(content)
    except ValueError as exc:
        raise MalformedScanResultError(200, f"{what} is not JSON", url_path=url_path) from exc
