"""The poll loop of the provider's triggers: await a probe, sleep with asyncio, one payload out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def deadline_from(timeout: float, deadline: float | None) -> float:
    """Absolute wall-clock deadline, fixed once so a triggerer restart does not restart the clock."""
    return float(deadline) if deadline is not None else time.time() + float(timeout)


async def poll(probe: Callable[[], Awaitable[dict[str, Any] | None]], *, poll_interval: float, deadline: float,
               timeout_payload: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Await `probe` until it returns a payload or time runs out; the event loop is free in between.

    Never raises: any exception becomes {"status": "error", "message": ...} (fail closed downstream).
    """
    try:
        while True:
            payload = await probe()
            if payload is not None:
                return payload
            remaining = deadline - time.time()
            if remaining <= 0:
                return timeout_payload()
            await asyncio.sleep(min(float(poll_interval), remaining))
    except Exception as exc:  # noqa: BLE001 - a trigger reports errors as an event, it never dies
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
