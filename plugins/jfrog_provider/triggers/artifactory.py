"""ArtifactoryArtifactTrigger: wait in the triggerer for new files under a repository folder (contract A10)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from jfrog_provider.triggers._polling import deadline_from, poll

if TYPE_CHECKING:
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

ITEM_FIELDS = ("repo", "path", "name", "created", "size", "sha256")


def normalize_created(value: Any) -> str | None:
    """An ISO-8601 time (or datetime) as AQL's `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC; None/""/"None" → None."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ValueError(f"min_created must be an ISO-8601 time, got {value!r}") from None
    if not isinstance(value, dt.datetime):
        raise ValueError(f"min_created must be an ISO-8601 time, got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_items_query(repo: str, path: str, pattern: str = "*", min_created: str | None = None,
                    limit: int = 1000) -> str:
    """AQL for files named like `pattern` in `path` (and below), created after `min_created`, oldest first."""
    folder = path.strip("/")
    criteria: dict[str, Any] = {"repo": repo, "type": "file", "name": {"$match": pattern or "*"}}
    if folder:
        criteria["$or"] = [{"path": {"$eq": folder}}, {"path": {"$match": f"{folder}/*"}}]
    if min_created:
        criteria["created"] = {"$gt": min_created}
    include = ",".join(f'"{f}"' for f in ITEM_FIELDS)
    # contract A10: sort/limit are safe because include() stays inside the items domain
    return f'items.find({json.dumps(criteria)}).include({include}).sort({{"$asc":["created"]}}).limit({int(limit)})'


def find_new_items(hook: ArtifactoryHook, repo: str, path: str, pattern: str = "*",
                   min_created: str | None = None) -> list[dict[str, Any]]:
    """New files as [{repo, path (full), name, created, size, sha256}], oldest first."""
    items = []
    for row in hook.search_aql(new_items_query(repo, path, pattern, min_created)):
        folder = "" if row.get("path") in (None, ".") else str(row["path"])
        name = str(row.get("name", ""))
        items.append({"repo": str(row.get("repo", repo)), "path": f"{folder}/{name}" if folder else name,
                      "name": name, "created": row.get("created"), "size": row.get("size"),
                      "sha256": row.get("sha256")})
    return items


class ArtifactoryArtifactTrigger(BaseTrigger):
    """Poll AQL until at least one new file matches, then fire one event with the items."""

    def __init__(self, repo: str, path: str, pattern: str = "*", min_created: str | None = None,
                 jfrog_conn_id: str = "jfrog_default", poll_interval: float = 60.0, timeout: float = 3600.0,
                 deadline: float | None = None) -> None:
        super().__init__()
        self.repo = repo
        self.path = path
        self.pattern = pattern
        self.min_created = min_created
        self.jfrog_conn_id = jfrog_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.deadline = deadline_from(timeout, deadline)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("jfrog_provider.triggers.artifactory.ArtifactoryArtifactTrigger", {
            "repo": self.repo, "path": self.path, "pattern": self.pattern, "min_created": self.min_created,
            "jfrog_conn_id": self.jfrog_conn_id, "poll_interval": self.poll_interval, "timeout": self.timeout,
            "deadline": self.deadline})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        hook = ArtifactoryHook(self.jfrog_conn_id)

        def probe() -> dict[str, Any] | None:
            items = find_new_items(hook, self.repo, self.path, self.pattern, self.min_created)
            return {"status": "success", "items": items} if items else None

        where = f"{self.repo}/{self.path.strip('/')}/{self.pattern}"
        payload = await poll(
            probe, poll_interval=self.poll_interval, deadline=self.deadline, close=hook.close,
            timeout_payload=lambda: {"status": "timeout",
                                     "message": f"no new file matching {where} after {self.timeout:.0f}s"})
        yield TriggerEvent(payload)
