"""Airflow glue of the registry's audit trail and champion approval: who acts, and an optional human approval.

`audit_actor` names who a task acts for: the user who triggered a manual run, else "scheduler".

`ChampionApprovalOperator`: Airflow's HITL ApprovalOperator before `champion` moves, asked only when required.

Required when the run's Param `require_approval` is true, or when it is null and the Variable
`mnist_require_approval` is "true"; otherwise the task returns at once ("not required") and set_champion runs.
When required, the task waits for an Approve or Reject in the Required Actions view (or the HITL REST API) without
holding a worker slot (https://airflow.apache.org/docs/apache-airflow-providers-standard/stable/operators/hitl.html).
Approve lets set_champion run; Reject skips it; no answer within `approval_timeout_hours` (Param, else the
Variable `mnist_approval_timeout_hours`, else 24) fails the task, so the champion stays and the run fails. Each
answer, the timeout included, goes to the version's audit trail with the responder's name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

REQUIRE_VARIABLE = "mnist_require_approval"
TIMEOUT_VARIABLE = "mnist_approval_timeout_hours"
DEFAULT_TIMEOUT_HOURS = 24.0


def audit_actor(context: Any):
    """The audit trail's actor of the running task (include/mlops/audit.py Actor)."""
    from include.mlops.audit import Actor

    run = context["dag_run"]
    return Actor.of_run(run_type=run.run_type, triggering_user=run.triggering_user_name, dag_id=run.dag_id,
                        run_id=run.run_id, task_id=context["ti"].task_id)


def approval_policy(params: dict[str, Any], variable: Callable[[str], str | None]) -> tuple[bool, timedelta]:
    """Whether this run needs an approval and how long to wait: Params first, then Variables, then off / 24 h."""
    required = params.get("require_approval")
    if required is None:
        raw = (variable(REQUIRE_VARIABLE) or "false").strip().lower()
        if raw not in ("true", "false"):
            raise ValueError(f"Variable {REQUIRE_VARIABLE} must be true or false, not {raw!r}")
        required = raw == "true"
    hours = params.get("approval_timeout_hours")
    source = "Param approval_timeout_hours"
    if hours is None:
        hours, source = variable(TIMEOUT_VARIABLE) or DEFAULT_TIMEOUT_HOURS, f"Variable {TIMEOUT_VARIABLE}"
    try:
        hours = float(hours)
    except ValueError as exc:
        raise ValueError(f"{source} must be a number of hours, not {hours!r}") from exc
    if not hours > 0:
        raise ValueError(f"{source} must be more than 0 hours, got {hours}")
    return bool(required), timedelta(hours=hours)


class ChampionApprovalOperator(ApprovalOperator):
    """Ask a person to approve the champion move when the run requires it; record the answer in the audit trail."""

    def __init__(self, *, summary_task_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Make this model version champion?")
        super().__init__(**kwargs)
        self.summary_task_id = summary_task_id

    def execute(self, context: Any) -> Any:
        from airflow.sdk import Variable

        required, timeout = approval_policy(dict(context["params"]), lambda key: Variable.get(key, default=None))
        if not required:
            self.log.info("no approval required (Param require_approval / Variable %s)", REQUIRE_VARIABLE)
            return {"required": False, "approved": True, "approved_by": None, "outcome": "not required"}
        run = self._summary(context)
        registered, promotion = run["registered"], run["promotion"]
        self.subject = f"Make {registered['model_name']} version {registered['version']} champion?"
        self.body = (f"Every gate passed: {', '.join(g['reason'] for g in promotion['decision']['gates'])}.\n\n"
                     f"Evidence pack sha256 {promotion.get('evidence_sha256')}; previous champion "
                     f"{promotion['previous_champion'] or 'none'}. No answer within {timeout} means no promotion.")
        self.response_timeout = timeout
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" in event:
            from airflow.sdk.exceptions import AirflowFailException

            reason = event.get("error") or "no answer"
            self._record(context, event.get("error_type") or "timeout", "nobody", reason)
            # Fails without retry: a retry would ask again, and no answer in time must mean no promotion.
            raise AirflowFailException(f"{reason}: no promotion, champion unchanged")
        # Recorded before the operator acts on it: on Reject the operator ends this task by skipping set_champion.
        chosen, user = list(event.get("chosen_options") or []), event.get("responded_by_user") or {}
        approved, by = chosen == [self.APPROVE], user.get("name") or user.get("id") or "unknown"
        outcome = "approved" if approved else "rejected"
        self._record(context, outcome, by, f"{', '.join(chosen) or 'no option'} in Airflow's Required Actions")
        answer = super().execute_complete(context, event)
        return {"required": True, "approved": approved, "approved_by": by if approved else None, "outcome": outcome,
                "responded_by": by, "responded_at": str(answer.get("responded_at"))}

    def _summary(self, context: Any) -> dict[str, Any]:
        return context["ti"].xcom_pull(task_ids=self.summary_task_id)

    def _record(self, context: Any, outcome: str, by: str, reason: str) -> None:
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops import audit

        run, ti = self._summary(context), context["ti"]
        registered = run["registered"]
        audit.record(registered["tracking_uri"], registered["model_name"], registered["version"], event="approval",
                     outcome=outcome, actor=audit.Actor(by, ti.dag_id, ti.run_id, ti.task_id), reason=reason,
                     evidence_sha256=run["promotion"].get("evidence_sha256"), store=ArtifactoryHook(),
                     repo=run["published"]["repo"])
