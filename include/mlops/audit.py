"""The registry's audit trail, append-only: who moved an alias, decided a gate, approved or demoted a version, and why.

Each event is one MLflow model-version tag `audit.<UTC time>.<event>` whose value is the event as JSON (a new key
per event; an existing key is never written again) and, when a store is given, one new file next to the evidence
pack: `<repo>/<model>/<version>/audit/<UTC time>-<event>.json`. A retried step finds the event it recorded before
(same event, outcome and Airflow run) and adds nothing; it only restores an Artifactory copy a crash left out.
`history` reads the trail back, oldest first.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from include.mlops import registry

TAG_PREFIX = "audit."
SCHEMA = "mnist-mlops/audit-event/1"
# Run types a person starts (Airflow's DagRunType values); every other run is started by the scheduler.
HUMAN_RUN_TYPES = ("manual", "backfill")


class AuditStore(Protocol):
    """The Artifactory calls the audit trail makes (jfrog_provider's ArtifactoryHook has them)."""

    def deploy_artifact(self, local_path: Any, repo: str, target_path: str, properties: Any = None) -> Any: ...

    def search_aql(self, query: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Actor:
    """Who acts and from where: the user who triggered a manual run, else "scheduler"; the DAG, run and task."""

    by: str
    dag_id: str
    run_id: str
    task_id: str

    @classmethod
    def of_run(cls, *, run_type: Any, triggering_user: str | None, dag_id: str, run_id: str, task_id: str) -> Actor:
        """The actor of a task in an Airflow run of `run_type` (a DagRunType or its value)."""
        human = str(getattr(run_type, "value", run_type)) in HUMAN_RUN_TYPES and triggering_user
        return cls(by=str(triggering_user) if human else "scheduler", dag_id=dag_id, run_id=run_id, task_id=task_id)

    def to_dict(self) -> dict[str, str]:
        """A JSON-able copy."""
        return asdict(self)


def record(
    tracking_uri: str, model_name: str, version: str, *, event: str, outcome: str, actor: Actor | Mapping[str, str],
    reason: str, evidence_sha256: str | None = None, details: Mapping[str, Any] | None = None,
    store: AuditStore | None = None, repo: str | None = None,
) -> dict[str, Any]:
    """Append one event to the version's trail (and its Artifactory folder); a retry of the same step adds nothing."""
    actor = actor if isinstance(actor, Actor) else Actor(**actor)
    tags = registry.version_tags(tracking_uri, model_name, version)
    earlier = [(key, entry) for key, entry in _entries(tags)
               if (entry.get("event"), entry.get("outcome"), entry.get("dag_id"), entry.get("run_id"))
               == (event, outcome, actor.dag_id, actor.run_id)]
    if earlier:
        key, entry = earlier[0]
    else:
        at = datetime.now(UTC)
        key = f"{TAG_PREFIX}{at:%Y%m%dT%H%M%S.%fZ}.{event}"
        entry = {"schema": SCHEMA, "event": event, "outcome": outcome, "model": model_name, "version": str(version),
                 "at": at.isoformat(), **actor.to_dict(), "reason": reason, "evidence_sha256": evidence_sha256,
                 **dict(details or {})}
        registry.add_version_tag(tracking_uri, model_name, version, key, json.dumps(entry, sort_keys=True))
    if store is not None:
        if not repo:
            raise ValueError("audit.record: a store needs the repository to write the audit record to")
        _mirror(store, repo, key, entry)
    return entry


def record_challenger(registered: Mapping[str, Any], *, actor: Actor | Mapping[str, str], store: AuditStore | None,
                      repo: str | None) -> dict[str, Any]:
    """Record that a training run registered its version as `challenger` (register_training_run's result)."""
    return record(registered["tracking_uri"], registered["model_name"], registered["version"],
                  event="challenger.set", outcome=registry.CHALLENGER, actor=actor,
                  reason=f"registered from MLflow run {registered['run_id']}", store=store, repo=repo,
                  details={"alias": registry.CHALLENGER, "mlflow_run_id": registered["run_id"]})


def history(tracking_uri: str, model_name: str, version: str | None = None) -> list[dict[str, Any]]:
    """Every audit event of the model (or one version), oldest first, with the tag it is stored under."""
    versions = registry.model_versions(tracking_uri, model_name)
    events = [{**entry, "tag": key} for v in versions if version in (None, v["version"])
              for key, entry in _entries(v["tags"])]
    return sorted(events, key=lambda e: (e["tag"].split(".", 1)[1], e["version"]))


def artifactory_name(tag: str, event: str) -> str:
    """The file name of an event's Artifactory record: `<UTC time>-<event>.json`."""
    stamp = tag.removeprefix(TAG_PREFIX).removesuffix(f".{event}")
    return f"{stamp}-{event}.json"


def audit_folder(model_name: str, version: str) -> str:
    """The version's audit folder in its repository, next to `evidence/`."""
    return f"{model_name}/{version}/audit"


def _entries(tags: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key, value in sorted(tags.items()):
        if key.startswith(TAG_PREFIX):
            try:
                found.append((key, json.loads(value)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"model-version tag {key} is not an audit event (JSON): {exc}") from exc
    return found


def _mirror(store: AuditStore, repo: str, key: str, entry: Mapping[str, Any]) -> None:
    """Write the event as a new file unless it is there: names are unique per event, so nothing is overwritten."""
    folder, name = audit_folder(entry["model"], entry["version"]), artifactory_name(key, entry["event"])
    query = f'items.find({json.dumps({"repo": repo, "path": folder, "name": name})}).include("name")'
    if store.search_aql(query):
        return
    with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
        local = Path(tmp) / name
        local.write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n")
        store.deploy_artifact(local, repo, f"{folder}/{name}",
                              properties={"audit.event": entry["event"], "model.version": entry["version"]})
