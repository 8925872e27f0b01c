"""XrayScanTrigger: wait in the triggerer for a graph scan to finish (contract X7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from jfrog_provider.triggers._polling import deadline_from, poll


class XrayScanTrigger(BaseTrigger):
    """Poll `GET /xray/api/v1/scan/graph/{scan_id}` until it answers 200, then fire one event.

    Events: {"status": "success", "scan_id", "result": <the X7 body>}, {"status": "timeout", ...} or
    {"status": "error", "scan_id", "message"}. The result is judged by the task, not here.
    """

    def __init__(self, scan_id: str, jfrog_conn_id: str = "jfrog_default", poll_interval: float = 5.0,
                 timeout: float = 600.0, deadline: float | None = None) -> None:
        super().__init__()
        self.scan_id = scan_id
        self.jfrog_conn_id = jfrog_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.deadline = deadline_from(timeout, deadline)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("jfrog_provider.triggers.xray.XrayScanTrigger", {
            "scan_id": self.scan_id, "jfrog_conn_id": self.jfrog_conn_id, "poll_interval": self.poll_interval,
            "timeout": self.timeout, "deadline": self.deadline})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from jfrog_provider.hooks.xray import XrayHook

        hook = XrayHook(self.jfrog_conn_id)

        def probe() -> dict[str, Any] | None:
            body = hook.get_graph_scan_result(self.scan_id)
            return None if body is None else {"status": "success", "scan_id": self.scan_id, "result": body}

        payload = await poll(
            probe, poll_interval=self.poll_interval, deadline=self.deadline, close=hook.close,
            timeout_payload=lambda: {"status": "timeout", "scan_id": self.scan_id,
                                     "message": f"Xray graph scan {self.scan_id} not done after {self.timeout:.0f}s"})
        payload.setdefault("scan_id", self.scan_id)
        yield TriggerEvent(payload)
