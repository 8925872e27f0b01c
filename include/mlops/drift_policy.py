"""When a drift verdict may schedule a retrain (cooldown, no doubling), and the alert record it leaves."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to emit the drift Asset event, and a reason a person can read."""

    action: str  # "emit", "cooldown", "pending" or "none"
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
    last_request_at: datetime | None,
    last_start_at: datetime | None,
) -> RetrainDecision:
    """One request for any number of drifted batches; none while one is pending or inside the cooldown.

    `last_request_at` is the newest drift Asset event, `last_start_at` the newest training-input Asset event
    (a training run validated its data): the DAGs learn about each other only through Assets.
    """
    if not drifted_batches:
        return RetrainDecision("none", "no drifted batch awaits a retrain decision")
    names = ", ".join(drifted_batches)
    # Pending: the newest request is newer than the newest training start, so Airflow still holds it queued.
    if last_request_at is not None and (last_start_at is None or last_start_at < last_request_at):
        return RetrainDecision(
            "pending", f"drift in {names}; the retrain requested at {last_request_at.isoformat(timespec='seconds')} "
            "has not started yet (no training run has validated its data since)"
        )
    if last_request_at is not None and now - last_request_at < cooldown:
        until = (last_request_at + cooldown).isoformat(timespec="seconds")
        return RetrainDecision(
            "cooldown", f"drift in {names}; last retrain request at {last_request_at.isoformat(timespec='seconds')}, "
            f"cooldown until {until}"
        )
    return RetrainDecision("emit", f"drift in {names}; retrain scheduled")
