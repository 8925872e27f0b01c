"""Human approval before `champion` moves: real dag.test() runs answered through Airflow's own HITL REST API.

dag.test() parks approve_champion in AWAITING_INPUT like the scheduler does; a thread answers it the way a person
in the Required Actions view would (PATCH .../hitlDetails on the API app, logged in through SimpleAuthManager), or
lets the deadline pass and runs the scheduler's own timeout sweep (SchedulerJobRunner.check_awaiting_input_timeouts).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from support.dag_runs import signing_connection, states

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = {"max_train_samples": 512, "max_test_samples": 256, "epochs": 1, "min_accuracy": 0.1, "max_regression": 1.0}
TASK = "approve_champion"


@pytest.fixture
def api(airflow_db, tmp_path, monkeypatch):
    """Airflow's API app with SimpleAuthManager: `alice` (admin) answers approvals; a bearer token for her."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    password = secrets.token_urlsafe(12)
    (tmp_path / "passwords.json").write_text(json.dumps({"alice": password}))
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER",
                       "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:admin")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "passwords.json"))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
    purge_cached_app()
    with TestClient(create_app()) as client:
        resp = client.post("/auth/token", json={"username": "alice", "password": password})
        assert resp.status_code == 201, resp.text
        client.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
        yield client
    purge_cached_app()


def _parked_approval(deadline: float):
    """The approve_champion task instance once it waits for input."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    while time.monotonic() < deadline:
        with create_session() as session:
            ti = session.scalar(select(TaskInstance).where(
                TaskInstance.dag_id == "mnist_training", TaskInstance.task_id == TASK,
                TaskInstance.state == TaskInstanceState.AWAITING_INPUT))
            if ti is not None:
                session.expunge(ti)
                return ti
        time.sleep(0.5)
    raise TimeoutError(f"{TASK} never waited for input")


def _respond(api, answer: str | None, errors: list) -> threading.Thread:
    """In the background: answer the approval (Approve/Reject) through the REST API, or let it time out."""

    def run() -> None:
        try:
            ti = _parked_approval(time.monotonic() + 600)
            if answer is None:
                from airflow.jobs.job import Job
                from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
                from airflow.sdk import timezone

                while timezone.utcnow() <= ti.trigger_timeout + timedelta(seconds=0.5):
                    time.sleep(0.2)
                SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()
                return
            resp = api.patch(f"/api/v2/dags/mnist_training/dagRuns/{ti.run_id}/taskInstances/{TASK}/-1/hitlDetails",
                             json={"chosen_options": [answer], "params_input": {}})
            assert resp.status_code == 200, resp.text
        except Exception as exc:  # reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _run(dag, api, answer: str | None, seed: int, **conf):
    errors: list = []
    thread = _respond(api, answer, errors)
    run = dag.test(run_conf={**TINY, "seed": seed, "require_approval": True, **conf})
    thread.join(timeout=60)
    assert not errors, errors
    return run


def _champion() -> str | None:
    from include.mlops import registry
    from include.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    current = registry.champion(settings.mlflow_tracking_uri, settings.model_name)
    return current[0] if current else None


def _events(version: str) -> list[tuple[str, str, str]]:
    from include.mlops import audit
    from include.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    return [(e["event"], e["outcome"], e["by"])
            for e in audit.history(settings.mlflow_tracking_uri, settings.model_name, version)]


@pytest.mark.e2e
def test_champion_moves_only_on_approval(api, mlops_home, jfrog_server, jfrog_conn, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    signing_connection(monkeypatch)
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"]
    dag.get_task("scan_model").poll_interval = 0.2

    approved = _run(dag, api, "Approve", seed=1)
    assert approved.state == "success", states(approved)
    version = _champion()
    assert version is not None
    assert _events(version)[-2:] == [("approval", "approved", "alice"), ("champion.set", "champion", "dag_test")]
    assert "approved by alice" in _trail_reason(version, "champion.set")

    rejected = _run(dag, api, "Reject", seed=2)
    assert states(rejected)[TASK] == "success" and states(rejected)["set_champion"] == "skipped"
    assert _champion() == version
    assert _events(str(int(version) + 1))[-1] == ("approval", "rejected", "alice")

    timed_out = _run(dag, api, None, seed=3, approval_timeout_hours=2 / 3600)
    assert timed_out.state == "failed" and states(timed_out)[TASK] == "failed"
    assert states(timed_out)["set_champion"] == "upstream_failed" and _champion() == version
    assert _events(str(int(version) + 2))[-1] == ("approval", "timeout", "nobody")


def _trail_reason(version: str, event: str) -> str:
    from include.mlops import audit
    from include.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    return next(e["reason"] for e in audit.history(settings.mlflow_tracking_uri, settings.model_name, version)
                if e["event"] == event)


def test_approval_is_off_unless_asked_and_bad_settings_are_named():
    from mlops_champion import approval_policy

    variables: dict[str, str] = {}
    assert approval_policy({}, variables.get) == (False, timedelta(hours=24))
    variables.update(mnist_require_approval="true", mnist_approval_timeout_hours="2")
    assert approval_policy({"require_approval": None}, variables.get) == (True, timedelta(hours=2))
    assert approval_policy({"require_approval": False, "approval_timeout_hours": 0.5}, variables.get) == (
        False, timedelta(minutes=30))
    with pytest.raises(ValueError, match="Variable mnist_require_approval must be true or false, not 'yes'"):
        approval_policy({}, {"mnist_require_approval": "yes"}.get)
    with pytest.raises(ValueError, match="Variable mnist_approval_timeout_hours must be a number of hours"):
        approval_policy({}, {"mnist_approval_timeout_hours": "a day"}.get)
    with pytest.raises(ValueError, match="Param approval_timeout_hours must be more than 0 hours"):
        approval_policy({"approval_timeout_hours": 0}, {}.get)
