"""What the view shows per model version, read from the MLflow registry and the evidence pack in Artifactory."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowException

log = logging.getLogger(__name__)

MAX_VERSIONS = 25  # newest first; each version costs two small Artifactory downloads
ALIAS_ORDER = ("champion", "challenger")
# Written by the training DAG (include/mlops/training_run.py: eval metrics are logged as `test_<name>`).
ACCURACY_METRIC = "test_accuracy"
DELTA_METRIC = "test_accuracy_delta_vs_champion"


@dataclass(frozen=True)
class Gate:
    """One gate's verdict as the evidence pack recorded it."""

    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class Link:
    """An Artifactory object: its repo path and, with a JFrog connection, its UI URL."""

    label: str
    path: str
    url: str | None


@dataclass
class AuditEntry:
    """One audit.* tag: when, what, the outcome, who and why (include/mlops/audit.py writes them as JSON)."""

    at: str
    event: str
    outcome: str
    by: str
    reason: str


@dataclass
class Release:
    """One model version with everything the view shows about it."""

    version: str
    created: str
    airflow_run: str
    labels: list[str]
    demotion: str
    accuracy: float | None
    delta: float | None
    compared_version: str
    decision: str
    gates: list[Gate] = field(default_factory=list)
    xray: str = ""
    rescan: str = ""
    signature: dict[str, str] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Registry:
    """The model's versions (newest first, at most MAX_VERSIONS) and how many there are in all."""

    model_name: str
    releases: list[Release]
    total: int
    note: str = ""


def load_registry(tracking_uri: str, model_name: str, artifactory: Callable[[], Any]) -> Registry:
    """The newest MAX_VERSIONS versions of `model_name`; `artifactory()` gives the hook that fetches the evidence."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        # MlflowClient would create an empty store as a side effect of a page view.
        return Registry(model_name, [], 0, "No MLflow store yet: no model has been trained.")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        versions = sorted(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: -int(v.version))
        # Search results carry no aliases; the registered model has them all, {alias: version}.
        aliases = client.get_registered_model(model_name).aliases if versions else {}
    except MlflowException:
        # The message may carry the tracking URI with credentials: it goes to the log, not to every viewer.
        log.exception("model releases: reading %s from MLflow failed", model_name)
        return Registry(model_name, [], 0, "MLflow cannot be read: the api-server log has the error.")
    hook = None
    releases = []
    for version in versions[:MAX_VERSIONS]:
        metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        release = _release(version, [a for a, v in aliases.items() if str(v) == str(version.version)], metrics)
        if version.tags.get("evidence.path") or version.tags.get("artifactory.path"):
            try:
                hook = hook or artifactory()
                _add_artifactory(release, version.tags, hook)
            except (AirflowException, ValueError, OSError) as exc:
                # The MLflow half of the row stays useful when Artifactory cannot be read; the reason is shown.
                release.problems.append(f"Artifactory: {exc}")
        releases.append(release)
    return Registry(model_name, releases, len(versions))


def _release(version: Any, aliases: list[str], metrics: Mapping[str, float]) -> Release:
    tags = dict(version.tags)
    labels = sorted(aliases, key=lambda a: (ALIAS_ORDER + (a,)).index(a))
    demotion = tags.get("security.demotion", "")
    # registry.demote() sets promoted=false when it takes `champion` away.
    if tags.get("promoted") == "false":
        labels.append("demoted")
    compared = tags.get("champion.compared_version", "none")
    return Release(
        version=str(version.version),
        created=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        airflow_run=tags.get("airflow.run_id", ""),
        labels=labels,
        demotion=demotion if demotion.startswith("demoted") else "",
        accuracy=metrics.get(ACCURACY_METRIC),
        delta=metrics.get(DELTA_METRIC),
        compared_version="" if compared == "none" else compared,
        decision=tags.get("gate.decision", "not gated"),
        rescan=_rescan(tags),
        signature={k.removeprefix("signature."): v for k, v in sorted(tags.items()) if k.startswith("signature.")},
        audit=[_audit_entry(k.removeprefix("audit."), v) for k, v in sorted(tags.items()) if k.startswith("audit.")],
    )


def _audit_entry(key: str, value: str) -> AuditEntry:
    """An audit tag's JSON as a row; a tag that is not such JSON shows its key and raw value."""
    try:
        entry = json.loads(value)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        return AuditEntry(at="", event=key, outcome="", by="", reason=value)
    at = str(entry.get("at", ""))
    with contextlib.suppress(ValueError):
        at = datetime.fromisoformat(at).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return AuditEntry(at=at, event=str(entry.get("event", key)), outcome=str(entry.get("outcome", "")),
                      by=str(entry.get("by", "")), reason=str(entry.get("reason", "")))


def _rescan(tags: Mapping[str, str]) -> str:
    """The daily security re-scan's last result (include/security/findings.py writes these tags)."""
    status = tags.get("security.rescan.status")
    if not status:
        return ""
    blocking = tags.get("security.blocking")
    return f"re-scan {tags.get('security.rescan.date', '?')}: {status}" + (f" ({blocking})" if blocking else "")


def _add_artifactory(release: Release, tags: Mapping[str, str], hook: Any) -> None:
    """Links to SBOM, ML-BOM and evidence; the gates and the Xray verdict from the evidence pack."""
    model_path = tags.get("artifactory.path", "")
    evidence = tags.get("evidence.path") or (model_path.rsplit("/", 1)[0] + "/evidence/")
    # Beside the model, as include/mlops/training_run.py (generate_boms) and promotion.py (record_evidence) upload.
    folder = evidence.rstrip("/").rsplit("/", 1)[0]
    for label, path in (("SBOM", f"{folder}/sbom.cdx.json"), ("ML-BOM", f"{folder}/mlbom.cdx.json"),
                        ("Evidence", evidence)):
        repo, _, rel = path.partition("/")
        release.links.append(Link(label, path, hook.ui_url(repo, rel)))
    if not tags.get("evidence.path"):
        return  # promote_model did not get as far as the evidence pack
    repo, _, rel = evidence.partition("/")
    with tempfile.TemporaryDirectory(prefix="model-releases-") as tmp:
        decision = _download_json(hook, repo, f"{rel.rstrip('/')}/gate-decision.json", Path(tmp))
        verdict = _download_json(hook, repo, f"{rel.rstrip('/')}/xray-verdict.json", Path(tmp))
    release.gates = [Gate(g["name"], bool(g["passed"]), g.get("reason", "")) for g in decision.get("gates", [])]
    counts = verdict.get("counts") or {}
    release.xray = (f"{'passed' if verdict.get('passed') else 'blocked'} at {verdict.get('severity_threshold', '?')}: "
                    f"{counts.get('vulnerabilities', 0)} vulnerabilities, {counts.get('violations', 0)} violations, "
                    f"{len(verdict.get('blocking', []))} blocking (scan {verdict.get('scan_id', '?')})")


def _download_json(hook: Any, repo: str, path: str, tmp: Path) -> dict[str, Any]:
    target = tmp / Path(path).name
    hook.download_artifact(repo, path, target)  # verifies the sha256 Artifactory stored
    try:
        return json.loads(target.read_text())
    except ValueError as exc:
        raise ValueError(f"{repo}/{path} is not JSON: {exc}") from exc
