"""XrayScanTrigger: wait in the triggerer for a graph scan to finish, and for Xray to index published files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from jfrog_provider.triggers._polling import deadline_from

if TYPE_CHECKING:
    from jfrog_provider.hooks.xray import XrayHook


class XrayScanTrigger(BaseTrigger):
    """Poll `GET /xray/api/v1/scan/graph/{scan_id}` until 200, then the artifact summary until indexed; one event.

    The polls are async (the hook's httpx client) on the triggerer's event loop. Only the connection id is
    serialised: the token is read from the connection in the triggerer. Events: {"status": "success", "scan_id", "result":
    <graph scan body>, "summary": <summary body, only with artifact_paths>}, {"status": "timeout", ...} or
    {"status": "error", "scan_id", "message"}. The task judges the result, not the trigger.
    """

    def __init__(self, scan_id: str, jfrog_conn_id: str = "jfrog_default", poll_interval: float = 5.0,
                 timeout: float = 600.0, deadline: float | None = None,
                 artifact_paths: Sequence[str] = ()) -> None:
        super().__init__()
        self.scan_id = scan_id
        self.jfrog_conn_id = jfrog_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.deadline = deadline_from(timeout, deadline)
        self.artifact_paths = list(artifact_paths)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("jfrog_provider.triggers.xray.XrayScanTrigger", {
            "scan_id": self.scan_id, "jfrog_conn_id": self.jfrog_conn_id, "poll_interval": self.poll_interval,
            "timeout": self.timeout, "deadline": self.deadline, "artifact_paths": self.artifact_paths})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from jfrog_provider.hooks.xray import XrayHook

        hook = XrayHook(self.jfrog_conn_id)
        try:
            payload = await self._wait(hook)
        except Exception as exc:  # noqa: BLE001 - a trigger reports errors as an event (fail closed in the task)
            payload = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
        yield TriggerEvent({**payload, "scan_id": self.scan_id})

    async def _wait(self, hook: XrayHook) -> dict[str, Any]:
        try:
            result = await self._poll(lambda: hook.aget_graph_scan_result(self.scan_id))
            if result is None:
                return self._timeout(f"Xray graph scan {self.scan_id} not done")
            if not self.artifact_paths:
                return {"status": "success", "result": result}
            summary = await self._poll(lambda: hook.aget_indexed_summary(self.artifact_paths))
            if summary is None:
                return self._timeout(f"Xray has not indexed {', '.join(self.artifact_paths)}")
            return {"status": "success", "result": result, "summary": summary}
        finally:
            await hook.aclose()

    async def _poll(self, probe: Callable[[], Awaitable[dict[str, Any] | None]]) -> dict[str, Any] | None:
        """The probe's first answer, or None once the deadline has passed."""
        # Small graph scans and indexing finish within seconds: start at 0.5 s, double up to poll_interval.
        delay = min(0.5, self.poll_interval)
        while True:
            answer = await probe()
            if answer is not None:
                return answer
            remaining = self.deadline - time.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))
            delay = min(2 * delay, self.poll_interval)

    def _timeout(self, what: str) -> dict[str, Any]:
        return {"status": "timeout", "message": f"{what} after {self.timeout:.0f}s"}
