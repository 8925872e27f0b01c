"""ArtifactoryArtifactSensor: have new files arrived under a repository folder? (JFrog AQL, no sort)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from jfrog_provider.properties import check_property_key
from jfrog_provider.triggers.artifactory import find_new_items, normalize_created

if TYPE_CHECKING:
    from airflow.sdk import Context

    from jfrog_provider.hooks.artifactory import ArtifactoryHook


class ArtifactoryArtifactSensor(BaseSensorOperator):
    """Wait until files named like ``pattern`` exist under ``repo/path`` that are new to the caller.

    "New" means created after ``min_created`` and, with ``skip_if_property``, not (yet) carrying that
    property: a DAG that stamps what it has handled sees each file once, whatever its clocks say.
    XCom: the new items, oldest first: [{repo, path, name, created, size, sha256}].

    :param repo: repository key (templated).
    :param path: folder inside the repository; files below it count too (templated).
    :param pattern: AQL name wildcard (``*``, ``?``), e.g. ``SHA256SUMS`` or ``*.idx.gz`` (templated).
    :param min_created: only files created strictly after this ISO-8601 time, e.g.
        ``{{ data_interval_start }}``; None = any file (templated).
    :param skip_if_property: a property key; files that carry it (any value) are not new.
    :param poll_interval: seconds between AQL searches.
    :param timeout: seconds before the sensor times out (AirflowSensorTimeout; skip with soft_fail).
    :param deferrable: after one poke, wait in the triggerer instead of a worker slot.
    :param jfrog_conn_id: Airflow connection of type ``jfrog``.
    """

    template_fields: Sequence[str] = ("repo", "path", "pattern", "min_created")

    def __init__(self, *, repo: str, path: str, pattern: str = "*", min_created: str | None = None,
                 skip_if_property: str | None = None, poll_interval: float = 60.0, timeout: float = 3600.0,
                 deferrable: bool = True, jfrog_conn_id: str = "jfrog_default", **kwargs: Any) -> None:
        super().__init__(poke_interval=poll_interval, timeout=timeout, **kwargs)
        if not isinstance(repo, str) or not repo or ("/" in repo and "{{" not in repo):
            raise ValueError(f"repo must be a repository key without '/', got {repo!r}")
        if not isinstance(path, str) or not isinstance(pattern, str) or not pattern:
            raise ValueError(f"path and pattern must be strings (pattern non-empty), got {path!r}, {pattern!r}")
        if isinstance(min_created, str) and "{{" not in min_created:
            normalize_created(min_created)  # ValueError at parse time for a malformed literal
        if skip_if_property is not None:
            check_property_key(skip_if_property)
        self.repo = repo
        self.path = path
        self.pattern = pattern
        self.min_created = min_created
        self.skip_if_property = skip_if_property
        self.deferrable = deferrable
        self.jfrog_conn_id = jfrog_conn_id

    @cached_property
    def hook(self) -> ArtifactoryHook:
        """The Artifactory hook for `jfrog_conn_id`."""
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        return ArtifactoryHook(self.jfrog_conn_id)

    def _since(self) -> str | None:
        try:
            return normalize_created(self.min_created)
        except ValueError as exc:
            raise AirflowException(f"min_created rendered to something that is not a time: {exc}") from exc

    def poke(self, context: Context) -> bool | PokeReturnValue:
        items = find_new_items(self.hook, self.repo, self.path, self.pattern, self._since(), self.skip_if_property)
        if not items:
            return False
        self.log.info("%d new file(s) under %s/%s, oldest %s", len(items), self.repo, self.path.strip("/"),
                      items[0]["path"])
        return PokeReturnValue(is_done=True, xcom_value=items)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        poked = self.poke(context)
        if poked:
            return poked.xcom_value if isinstance(poked, PokeReturnValue) else None
        from jfrog_provider.triggers.artifactory import ArtifactoryArtifactTrigger

        self.defer(trigger=ArtifactoryArtifactTrigger(
            repo=self.repo, path=self.path, pattern=self.pattern, min_created=self._since(),
            jfrog_conn_id=self.jfrog_conn_id, poll_interval=self.poke_interval, timeout=self.timeout,
            skip_if_property=self.skip_if_property),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + max(60.0, 2 * self.poke_interval)))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Return the new items, or raise the trigger's timeout / error."""
        event = event if isinstance(event, dict) else {}
        if event.get("status") == "success" and isinstance(event.get("items"), list) and event["items"]:
            return event["items"]
        if event.get("status") == "timeout":
            raise AirflowSensorTimeout(event.get("message") or "no new files")
        raise AirflowException(f"Artifactory search failed: {event.get('message') or event!r}")
