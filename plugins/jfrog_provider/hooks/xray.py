"""XrayHook: graph scans of a dependency list and artifact summaries (contract X1, X2, X5, X7, X9, X10)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, unquote

from jfrog_provider.exceptions import (
    MalformedScanResultError,
    XrayScanError,
    XrayScanTimeoutError,
    XraySummaryError,
)
from jfrog_provider.hooks.base import JFrogHook
from jfrog_provider.xray_results import GraphScanResult, Violation

# contract X9 recipe (cli-security techutils CdxPackageTypeToXrayPackageType): purl type → Xray type
_PURL_TO_XRAY_TYPE = {"maven": "gav", "golang": "go", "gem": "rubygems", "apk": "alpine", "cargo": "cargo"}


class XrayHook(JFrogHook):
    """Xray REST operations."""

    hook_name = "JFrog Xray"

    def test_connection(self) -> tuple[bool, str]:
        """Ping Xray (requires a valid user, contract X1)."""
        try:
            self.ping("xray")
        except Exception as exc:  # noqa: BLE001 - the UI wants (False, reason), not a traceback
            return False, str(exc)
        return True, "Connection to JFrog Xray works"

    def get_version(self) -> dict[str, Any]:
        """Xray version (contract X2)."""
        return self._request("GET", "/api/v1/system/version", service="xray").json()

    def scan_graph(self, component_ids: Sequence[str], *, watches: Sequence[str] | None = None,
                   project: str | None = None, repo_path: str | None = None, root_id: str = "root") -> str:
        """Start a graph scan of a flat dependency list; return its scan_id (contract X7)."""
        if isinstance(component_ids, str):
            raise ValueError("component_ids must be a sequence of component ids, not one string")
        if sum(bool(x) for x in (watches, project, repo_path)) > 1:
            raise ValueError("give at most one context: watches, project or repo_path (contract X7)")
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
        resp = self._request("POST", "/api/v1/scan/graph", service="xray", params=params, json=body,
                             idempotent=True)
        try:
            scan_id = resp.json()["scan_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedScanResultError(resp.status_code, "graph scan answer has no scan_id",
                                           method="POST", url_path="/api/v1/scan/graph") from exc
        if not isinstance(scan_id, str) or not scan_id:
            raise MalformedScanResultError(resp.status_code, f"invalid scan_id {scan_id!r}")
        return scan_id

    def get_graph_scan_result(self, scan_id: str, include_vulnerabilities: bool = True,
                              include_licenses: bool = True) -> dict[str, Any] | None:
        """The final result as a dict, or None while Xray still answers 202 (contract X7)."""
        url_path = f"/api/v1/scan/graph/{quote(scan_id, safe='')}"
        params = {"include_vulnerabilities": str(include_vulnerabilities).lower(),
                  "include_licenses": str(include_licenses).lower()}
        resp = self._request("GET", url_path, service="xray", params=params)
        if resp.status_code == 202:
            return None
        if resp.status_code != 200:
            raise MalformedScanResultError(resp.status_code, "unexpected success status for a graph scan poll",
                                           method="GET", url_path=url_path)
        try:
            body = resp.json()
        except ValueError as exc:
            raise MalformedScanResultError(200, "graph scan result is not JSON", method="GET",
                                           url_path=url_path) from exc
        if not isinstance(body, dict):
            raise MalformedScanResultError(200, "graph scan result is not an object", method="GET",
                                           url_path=url_path)
        return body

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
                result = GraphScanResult.from_json(body)
                if result.status.lower() == "failed":
                    # contract X7: a 200 with status "failed" is an Xray-side failure
                    raise XrayScanError(200, f"Xray graph scan {scan_id} failed")
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XrayScanTimeoutError(None, f"graph scan {scan_id} not done after {timeout:.0f}s")
            self._sleep(min(delay, remaining))
            delay = min(2 * delay, poll_interval)

    def get_artifact_summary(self, paths: Sequence[str] | None = None, checksums: Sequence[str] | None = None, *,
                             artifactory_id: str | None = "default") -> dict[str, Any]:
        """Artifact summary via the v2 path (contract X5); `paths` are `<repo>/<path>`; raise on any `errors`."""
        if isinstance(paths, str) or isinstance(checksums, str):
            raise ValueError("paths and checksums must be sequences, not one string")
        if not paths and not checksums:
            raise ValueError("give paths or checksums (contract X5)")
        body: dict[str, list[str]] = {}
        if paths:
            # contract X5: paths carry the Artifactory id prefix (`default` on Xray 3.x)
            prefix = f"{artifactory_id.strip('/')}/" if artifactory_id else ""
            body["paths"] = [prefix + p.strip("/") for p in paths]
        if checksums:
            body["checksums"] = [c.strip().lower() for c in checksums]
        # a summary only reads: safe to resend (contract §1.3 "documented-idempotent")
        url_path = "/api/v2/summary/artifact"
        resp = self._request("POST", url_path, service="xray", json=body, idempotent=True)
        try:
            answer = resp.json()
        except ValueError as exc:
            raise MalformedScanResultError(resp.status_code, "artifact summary is not JSON", method="POST",
                                           url_path=url_path) from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("artifacts", []), list):
            raise MalformedScanResultError(resp.status_code, "artifact summary has no artifacts list",
                                           method="POST", url_path=url_path)
        errors = answer.get("errors") or []
        if errors:
            # contract X5: unknown ids come back in `errors` with 200; client-go raises, so do we
            detail = "; ".join(f"{e.get('identifier')}: {e.get('error')}" if isinstance(e, dict) else str(e)
                               for e in errors)
            raise XraySummaryError(resp.status_code, f"Xray summary errors: {detail}", method="POST",
                                   url_path=url_path)
        return answer

    def get_violations(self, component_ids: Sequence[str], *, watches: Sequence[str] | None = None,
                       project: str | None = None, repo_path: str | None = None, poll_interval: float = 5.0,
                       timeout: float = 600.0) -> tuple[Violation, ...]:
        """Policy violations of a dependency list under exactly one context (graph scan, contract X7/X12)."""
        # The contract documents no standalone violations endpoint; X7 returns violations only when a context
        # (project, repo_path or watch) is given, and X12 bases "fail the build" on them, so a violation query
        # is a context-scoped graph scan.
        if sum(bool(x) for x in (watches, project, repo_path)) != 1:
            raise ValueError("get_violations needs exactly one context: watches, project or repo_path (X7)")
        scan_id = self.scan_graph(component_ids, watches=watches, project=project, repo_path=repo_path)
        result = self.wait_for_graph_scan(scan_id, poll_interval=poll_interval, timeout=timeout,
                                          include_vulnerabilities=False, include_licenses=False)
        return result.violations

    @staticmethod
    def purls_to_component_ids(purls: Iterable[str]) -> list[str]:
        """Map package URLs to Xray component ids per contract X9 (`pkg:pypi/Name@1.0` → `pypi://name:1.0`)."""
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
        name = name.lower()  # contract X7/X9: Python nodes are pypi://<lower-cased name>:<version>
    if xray_type == "gav":
        # contract X10: gav://group:artifact:version (':' separates the namespace)
        ident = f"{namespace}:{name}" if namespace else name
    else:
        ident = f"{namespace}/{name}" if namespace else name
    return f"{xray_type}://{ident}:{version}" if version else f"{xray_type}://{ident}"
