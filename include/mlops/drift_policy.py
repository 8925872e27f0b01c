"""When a drift verdict may schedule a retrain (cooldown, no doubling), and the alert record it leaves."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to emit the drift Asset event, and a reason a person can read."""

    action: str  # "emit", "cooldown", "already_running" or "none"
    reason: str

    @property
    def emit(self) -> bool:
        """True when the drift event should be emitted."""
        return self.action == "emit"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy."""
        return asdict(self)


def retrain_decision(
    drifted_batches: list[str],
    now: datetime,
    cooldown: timedelta,
    last_event_at: datetime | None,
    active_retrains: int,
) -> RetrainDecision:
    """One event for any number of drifted batches; none inside the cooldown or while a retrain is active."""
    if not drifted_batches:
        return RetrainDecision("none", "no drifted batch awaits a retrain decision")
    names = ", ".join(drifted_batches)
    if active_retrains > 0:
        # The queued or running retrain already answers this drift: a second one would train the same data.
        return RetrainDecision("already_running", f"drift in {names}; a retrain is already queued or running")
    if last_event_at is not None and now - last_event_at < cooldown:
        until = (last_event_at + cooldown).isoformat(timespec="seconds")
        return RetrainDecision(
            "cooldown", f"drift in {names}; last retrain request at {last_event_at.isoformat(timespec='seconds')}, "
            f"cooldown until {until}"
        )
    return RetrainDecision("emit", f"drift in {names}; retrain scheduled")


