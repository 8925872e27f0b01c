"""XrayScanGateOperator: graph-scan a dependency list (or a CycloneDX SBOM) and judge it, like `jf audit --fail`."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from jfrog_provider.exceptions import XrayScanTimeoutError
from jfrog_provider.links import XRAY_URL_KEY, XrayScanLink, push_link_url, xray_scan_url
from jfrog_provider.policy import XrayPolicyViolation, check_severity, judge_scan, parse_allowlist

if TYPE_CHECKING:
    from airflow.sdk import Context

    from jfrog_provider.hooks.xray import XrayHook
    from jfrog_provider.xray_results import ArtifactSummary, GraphScanResult

VERDICT_XCOM_KEY = "xray_verdict"
# CycloneDX component types worth scanning as dependencies (jfrog-cli-security `BomToFlatTree`: libraries)
_SBOM_TYPES = {"library", "framework"}


def _templated(value: Any) -> bool:
    return (isinstance(value, str) and "{{" in value) or hasattr(value, "resolve")


def sbom_purls(sbom: Any, where: str) -> list[str]:
    """Package URLs of the library components of a CycloneDX JSON document (nested components included)."""
    if not isinstance(sbom, Mapping) or sbom.get("bomFormat") != "CycloneDX":
        raise AirflowFailException(f"{where} is not a CycloneDX JSON SBOM (bomFormat != 'CycloneDX')")
    purls: list[str] = []
    stack = list(sbom.get("components") or [])
    while stack:
        comp = stack.pop(0)
        if not isinstance(comp, Mapping):
            raise AirflowFailException(f"{where}: a component is not an object: {comp!r}")
        if comp.get("type", "library") in _SBOM_TYPES and isinstance(comp.get("purl"), str):
            purls.append(comp["purl"])
        stack.extend(comp.get("components") or [])
    return purls


class XrayScanGateOperator(BaseOperator):
    """Run an Xray graph scan and fail the task when the release must not go out.

    Fails (XrayPolicyViolation, no retry) on any violation with ``fail_build`` (needs a watch, project or
    repo_path context), on any finding whose severity Xray has not rated (missing, Unknown, Pending), or on
    any vulnerability at or above ``severity_threshold`` that is not allowlisted. With ``artifact_paths`` it
    also waits for Xray to index those published files and judges what Xray found in them. Fails closed on
    timeouts, Xray errors and malformed results: nothing but a parsed, finished, clean result passes.
    XCom: the verdict {scan_id, passed, severity_threshold, blocking, allowlisted, expired_allowlist, counts,
    xray_url}, as the return value when it passes and under key ``xray_verdict`` either way.

    :param component_ids: Xray component ids, e.g. ``["pypi://torch:2.5.1"]`` (templated / XComArg).
    :param sbom_path: a CycloneDX JSON SBOM whose library purls are scanned instead (templated).
    :param artifact_paths: Artifactory ``<repo>/<path>`` files whose Xray artifact summary must also pass
        (templated); the gate waits for Xray to index them, within ``timeout``.
    :param watches: Xray watch names; violations are only reported with a context (templated).
    :param project: JFrog project key as the context (templated).
    :param repo_path: Artifactory ``repo/path/`` as the context (templated).
    :param severity_threshold: lowest blocking severity: Critical, High, Medium, Low, Information (templated).
    :param allowlist: [{"cve": "CVE-…", "expires": "YYYY-MM-DD", "reason": "…"}]; an entry waives a
        vulnerability through its expiry day; expired entries are logged and ignored.
    :param fail_on_fail_build_violations: block on violations with ``fail_build`` (``jf audit --fail``).
    :param poll_interval: seconds between polls.
    :param timeout: seconds to wait for the scan (and the indexing) before failing.
    :param deferrable: wait in the triggerer instead of a worker slot (``[operators] default_deferrable``).
    :param defer_after: with ``deferrable``, seconds to poll in the worker before deferring: a scan that is done
        by then is judged at once, without the round trip through the triggerer and a second task start
        (0: defer at once).
    :param jfrog_conn_id: Airflow connection of type ``jfrog``.
    """

    template_fields: Sequence[str] = ("component_ids", "sbom_path", "artifact_paths", "watches", "project",
                                      "repo_path", "severity_threshold", "jfrog_conn_id")
    operator_extra_links = (XrayScanLink(),)
    ui_color = "#43b02a"

    def __init__(self, *, component_ids: Sequence[str] | None = None, sbom_path: str | None = None,
                 artifact_paths: Sequence[str] | None = None, watches: Sequence[str] | None = None,
                 project: str | None = None, repo_path: str | None = None, severity_threshold: str = "High",
                 allowlist: Sequence[Mapping[str, Any]] | None = None, fail_on_fail_build_violations: bool = True,
                 poll_interval: float = 5.0, timeout: float = 600.0,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 defer_after: float = 0.0, jfrog_conn_id: str = "jfrog_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if (component_ids is None) == (sbom_path is None):
            raise ValueError("give exactly one of component_ids or sbom_path")
        for name, value in (("component_ids", component_ids), ("artifact_paths", artifact_paths)):
            if isinstance(value, str) and not _templated(value):
                raise ValueError(f"{name} must be a list, not one string")
        if sum(bool(x) for x in (watches, project, repo_path)) > 1:
            # jfrog-client-go `createScanGraphQueryParams` sends one: project, else repo_path, else watches
            raise ValueError("give at most one context: watches, project or repo_path")
        if not _templated(severity_threshold):
            check_severity(severity_threshold)
        if poll_interval <= 0 or timeout <= 0:
            raise ValueError(f"poll_interval and timeout must be positive, got {poll_interval}, {timeout}")
        if not 0 <= defer_after <= timeout:
            raise ValueError(f"defer_after must be between 0 and timeout ({timeout}), got {defer_after}")
        parse_allowlist(allowlist)  # malformed entries fail at parse time
        self.component_ids = component_ids
        self.sbom_path = sbom_path
        self.artifact_paths = artifact_paths
        self.watches = watches
        self.project = project
        self.repo_path = repo_path
        self.severity_threshold = severity_threshold
        self.allowlist = allowlist
        self.fail_on_fail_build_violations = fail_on_fail_build_violations
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = deferrable
        self.defer_after = defer_after
        self.jfrog_conn_id = jfrog_conn_id

    @cached_property
    def hook(self) -> XrayHook:
        """The Xray hook for `jfrog_conn_id`."""
        from jfrog_provider.hooks.xray import XrayHook

        return XrayHook(self.jfrog_conn_id)

    # -- inputs -------------------------------------------------------------------------------------
    def _component_ids(self) -> list[str]:
        if self.sbom_path is not None:
            try:
                with open(self.sbom_path, encoding="utf-8") as fh:
                    sbom = json.load(fh)
            except (OSError, ValueError) as exc:
                raise AirflowFailException(f"cannot read SBOM {self.sbom_path!r}: {exc}") from exc
            try:
                ids = self.hook.purls_to_component_ids(sbom_purls(sbom, self.sbom_path))
            except ValueError as exc:
                raise AirflowFailException(f"SBOM {self.sbom_path!r}: {exc}") from exc
        else:
            ids = list(dict.fromkeys(str(c) for c in _rendered_list(self.component_ids, "component_ids")))
        if not ids:
            # scanning nothing would pass vacuously: fail closed
            raise AirflowFailException(f"nothing to scan: no components in {self.sbom_path or 'component_ids'}")
        return ids

    def _artifact_paths(self) -> list[str]:
        return [str(p).strip("/") for p in _rendered_list(self.artifact_paths or [], "artifact_paths") if p]

    def _watches(self) -> list[str] | None:
        w = self.watches
        if not w:
            return None
        if isinstance(w, str):  # a rendered template such as "{{ params.watch }}" or "a,b"
            w = [p.strip() for p in w.split(",")]
        return [str(x) for x in w if x] or None

    # -- run ----------------------------------------------------------------------------------------
    def execute(self, context: Context) -> dict[str, Any]:
        check_severity(self.severity_threshold)
        ids, paths = self._component_ids(), self._artifact_paths()
        scan_id = self.hook.scan_graph(ids, watches=self._watches(), project=self.project or None,
                                       repo_path=self.repo_path or None)
        push_link_url(context, XRAY_URL_KEY, xray_scan_url(self.hook.config.platform_url, scan_id))
        self.log.info("Xray graph scan %s started for %d components", scan_id, len(ids))
        if not self.deferrable:
            deadline = time.monotonic() + self.timeout
            result = self.hook.wait_for_graph_scan(scan_id, poll_interval=self.poll_interval, timeout=self.timeout)
            summary = self.hook.wait_for_artifact_summary(
                paths, poll_interval=self.poll_interval, timeout=max(deadline - time.monotonic(), 0.0)
            ) if paths else None
            return self._judge(context, result, summary)
        done = self._done_within(scan_id, paths, self.defer_after) if self.defer_after else None
        if done is not None:
            return self._judge(context, *done)
        from jfrog_provider.triggers.xray import XrayScanTrigger

        self.log.info("Xray scan %s not done after %.1fs: deferring to the triggerer", scan_id, self.defer_after)
        self.defer(trigger=XrayScanTrigger(scan_id=scan_id, jfrog_conn_id=self.jfrog_conn_id,
                                           poll_interval=self.poll_interval, timeout=self.timeout,
                                           deadline=time.time() + self.timeout - self.defer_after,
                                           artifact_paths=paths),
                   method_name="execute_complete",
                   # backstop only: the trigger's own timeout event fires first and names what it waited for
                   timeout=timedelta(seconds=self.timeout + max(60.0, 2 * self.poll_interval)))

    def _done_within(self, scan_id: str, paths: list[str],
                     seconds: float) -> tuple[GraphScanResult, ArtifactSummary | None] | None:
        """The finished scan (and indexed summary) if Xray has both within `seconds`, else None."""
        from jfrog_provider.xray_results import final_graph_result  # pydantic models: not at DAG parse
        deadline = time.monotonic() + seconds
        delay = min(0.25, self.poll_interval)  # small graph scans finish in a second or two
        result = summary = None
        while True:
            if result is None:
                body = self.hook.get_graph_scan_result(scan_id)
                result = final_graph_result(body) if body is not None else None
            if result is not None and paths:
                summary = self.hook.indexed_summary(paths)
            if result is not None and (summary is not None or not paths):
                return result, summary
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(2 * delay, self.poll_interval)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Judge the result the trigger delivered; a timeout or error event fails the task (fail closed)."""
        from jfrog_provider.xray_results import ArtifactSummary, final_graph_result
        event = event if isinstance(event, dict) else {}
        scan_id = str(event.get("scan_id") or "?")
        status = event.get("status")
        if status == "success":
            body = event.get("result")
            summary = ArtifactSummary.from_json(event.get("summary")) if self._artifact_paths() else None
            return self._judge(context, final_graph_result(body), summary, body)
        if status == "timeout":
            raise XrayScanTimeoutError(None, event.get("message") or f"graph scan {scan_id} timed out")
        raise AirflowException(f"Xray scan {scan_id} could not be read: {event.get('message') or event!r}")

    def _judge(self, context: Context, result: GraphScanResult, summary: ArtifactSummary | None,
               body: Any = None) -> dict[str, Any]:
        if summary is not None:
            result = result.with_findings(summary.findings())
        verdict = judge_scan(result, severity_threshold=self.severity_threshold,
                             allowlist=parse_allowlist(self.allowlist),
                             fail_on_fail_build_violations=self.fail_on_fail_build_violations)
        for entry in verdict.expired_allowlist:
            self.log.warning("Allowlist entry %s expired on %s and no longer applies (%s)", entry["cve"],
                             entry["expires"], entry["reason"])
        url = xray_scan_url(self.hook.config.platform_url, result.scan_id, body)
        push_link_url(context, XRAY_URL_KEY, url)
        out = {**verdict.to_dict(), "xray_url": url}
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is not None:
            ti.xcom_push(key=VERDICT_XCOM_KEY, value=out)  # the why, also for tasks that run after a block
        if not verdict.passed:
            raise XrayPolicyViolation(verdict.message(), out)
        self.log.info(verdict.message())
        return out


def _rendered_list(value: Any, name: str) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise AirflowFailException(f"{name} must render to a list, got {value!r}")
    return list(value)
