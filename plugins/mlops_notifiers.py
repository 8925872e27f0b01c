"""The one alert notifier of the DAGs: a WARNING in the task log plus a JSON line in `<MLOPS_HOME>/alerts/<channel>.jsonl`."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import BaseNotifier


class AlertNotifier(BaseNotifier):
    """Append one alert per call to an append-only JSON-lines file; swap for a Slack or e-mail notifier in production."""

    template_fields = ("message",)

    def __init__(self, message: str, *, channel: str, kind: str = "failure") -> None:
        super().__init__()
        self.message = message
        self.channel = channel
        self.kind = kind

    def notify(self, context) -> None:
        from include.mlops.files import append_json_line
        from include.settings import PipelineSettings

        ti = context.get("ti")
        alert = {
            "kind": self.kind,
            "message": self.message,
            "dag_id": context["dag"].dag_id if context.get("dag") else None,
            "run_id": context.get("run_id"),
            "task_id": getattr(ti, "task_id", None),
            "at": datetime.now().astimezone().isoformat(),
        }
        self.log.warning("%s ALERT [%s] %s", self.channel.upper(), self.kind, self.message)
        append_json_line(PipelineSettings.from_env().home / "alerts" / f"{self.channel}.jsonl", alert)
