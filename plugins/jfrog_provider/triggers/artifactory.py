"""ArtifactoryArtifactTrigger: wait in the triggerer for new files under a repository folder.

The search is AQL (JFrog "Artifactory Query Language") over the async HTTP client: no sort (Artifactory OSS
and JCR refuse it, devopshq/artifactory-cleanup issue 59), no limit (without a sort it would cut an arbitrary
set), no properties in include() (an `@key` include drops every item without that key, JFrog "Filtering
Properties by Key"). Items are ordered here, by `created`.
"""

from __future__ import annotations

import contextlib
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


def new_items_criteria(repo: str, path: str, pattern: str = "*", min_created: str | None = None) -> dict[str, Any]:
    """AQL find() criteria: files named like `pattern` in `path` (and below), created after `min_created`."""
    folder = path.strip("/")
    criteria: dict[str, Any] = {"repo": repo, "type": "file", "name": {"$match": pattern or "*"}}
    if folder:
        criteria["$or"] = [{"path": {"$eq": folder}}, {"path": {"$match": f"{folder}/*"}}]
    if min_created:
        criteria["created"] = {"$gt": min_created}
    return criteria


def new_items_queries(repo: str, path: str, pattern: str = "*", min_created: str | None = None,
                      skip_if_property: str | None = None) -> list[str]:
    """The AQL queries of one poll: the candidates, then (with skip_if_property) those that carry the property."""
    criteria = new_items_criteria(repo, path, pattern, min_created)
    include = ",".join(f'"{f}"' for f in ITEM_FIELDS)
    queries = [f"items.find({json.dumps(criteria)}).include({include})"]
    if skip_if_property:
        # a property criterion in find() matches items that carry the key; "$match": "*" means any value
        marked = {**criteria, f"@{skip_if_property}": {"$match": "*"}}
        queries.append(f'items.find({json.dumps(marked)}).include("repo","path","name")')
    return queries


def new_items(results: list[list[dict[str, Any]]], repo: str) -> list[dict[str, Any]]:
    """Rows of the queries' answers as [{repo, path (full), name, created, size, sha256}], oldest first."""
    def full(row: dict[str, Any]) -> str:
        folder = "" if row.get("path") in (None, ".") else str(row["path"])
        return f"{folder}/{row.get('name', '')}" if folder else str(row.get("name", ""))

    candidates, *marked = results
    skip = {(str(r.get("repo", repo)), full(r)) for rows in marked for r in rows}
    items = [{"repo": str(r.get("repo", repo)), "path": full(r), "name": str(r.get("name", "")),
              "created": r.get("created"), "size": r.get("size"), "sha256": r.get("sha256")}
             for r in candidates]
    fresh = [i for i in items if (i["repo"], i["path"]) not in skip]
    return sorted(fresh, key=lambda i: (normalize_created(i["created"]) or "", i["path"]))


def find_new_items(hook: ArtifactoryHook, repo: str, path: str, pattern: str = "*", min_created: str | None = None,
                   skip_if_property: str | None = None) -> list[dict[str, Any]]:
    """New files, oldest first (the sensor's poke)."""
    queries = new_items_queries(repo, path, pattern, min_created, skip_if_property)
    return new_items([hook.search_aql(q) for q in queries], repo)


async def afind_new_items(hook: ArtifactoryHook, repo: str, path: str, pattern: str = "*",
                          min_created: str | None = None, skip_if_property: str | None = None
                          ) -> list[dict[str, Any]]:
    """`find_new_items` on the async client (the trigger's poll)."""
    queries = new_items_queries(repo, path, pattern, min_created, skip_if_property)
    return new_items([await hook.asearch_aql(q) for q in queries], repo)


class ArtifactoryArtifactTrigger(BaseTrigger):
    """Poll AQL until at least one new file matches, then fire one event with the items.

    Only the connection id is serialised; the token is read from the connection in the triggerer.
    """

    def __init__(self, repo: str, path: str, pattern: str = "*", min_created: str | None = None,
                 jfrog_conn_id: str = "jfrog_default", poll_interval: float = 60.0, timeout: float = 3600.0,
                 deadline: float | None = None, skip_if_property: str | None = None) -> None:
        super().__init__()
        self.repo = repo
        self.path = path
        self.pattern = pattern
        self.min_created = min_created
        self.jfrog_conn_id = jfrog_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.deadline = deadline_from(timeout, deadline)
        self.skip_if_property = skip_if_property

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("jfrog_provider.triggers.artifactory.ArtifactoryArtifactTrigger", {
            "repo": self.repo, "path": self.path, "pattern": self.pattern, "min_created": self.min_created,
            "jfrog_conn_id": self.jfrog_conn_id, "poll_interval": self.poll_interval, "timeout": self.timeout,
            "deadline": self.deadline, "skip_if_property": self.skip_if_property})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        hook = ArtifactoryHook(self.jfrog_conn_id)

        async def probe() -> dict[str, Any] | None:
            items = await afind_new_items(hook, self.repo, self.path, self.pattern, self.min_created,
                                          self.skip_if_property)
            return {"status": "success", "items": items} if items else None

        def timed_out() -> dict[str, Any]:
            where = f"{self.repo}/{self.path.strip('/')}/{self.pattern}"
            return {"status": "timeout", "message": f"no new file matching {where} after {self.timeout:.0f}s"}

        try:
            payload = await poll(probe, poll_interval=self.poll_interval, deadline=self.deadline,
                                 timeout_payload=timed_out)
        finally:
            with contextlib.suppress(Exception):  # closing pooled connections must not mask the event
                await hook.aclose()
        yield TriggerEvent(payload)
