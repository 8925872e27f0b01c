"""The one poll loop both triggers share: probe in a thread, sleep with asyncio, one payload out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def deadline_from(timeout: float, deadline: float | None) -> float:
    """Absolute wall-clock deadline, fixed once so a triggerer restart does not restart the clock."""
    return float(deadline) if deadline is not None else time.time() + float(timeout)


async def poll(probe: Callable[[], dict[str, Any] | None], *, poll_interval: float, deadline: float,
               timeout_payload: Callable[[], dict[str, Any]], close: Callable[[], None] | None = None
               ) -> dict[str, Any]:
    """Call the blocking `probe` in a worker thread until it returns a payload or time runs out.

    Never raises: any exception becomes {"status": "error", "message": ...} (fail closed downstream).
    The sync hook runs in a thread (asyncio.to_thread) so its token and retry handling stay in one place.
    """
    try:
        while True:
            payload = await asyncio.to_thread(probe)
            if payload is not None:
                return payload
            remaining = deadline - time.time()
            if remaining <= 0:
                return timeout_payload()
            await asyncio.sleep(min(float(poll_interval), remaining))
    except Exception as exc:  # noqa: BLE001 - a trigger reports errors as an event, it never dies
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
    finally:
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001, S110 - closing a pooled session must not mask the result
                pass
