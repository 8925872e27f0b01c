"""Driving DAG runs in tests: clear some tasks of a finished run and run them again in the same DagRun."""

from __future__ import annotations

from collections.abc import Collection


def rerun(dag, run_id: str, *, only_failed: bool = True, task_ids: Collection[str] | None = None):
    """Clear the run's failed and upstream-failed tasks (or all, or `task_ids`) and run them again, in the same DagRun.

    `dag.test()` cannot do this: for an existing logical date it deletes the run and starts a new one
    (airflow.models.dagrun.get_or_create_dagrun). This is the loop `dag.test()` runs, on the cleared run.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    scheduler_dag.clear(run_id=run_id, only_failed=only_failed, task_ids=task_ids, dag_run_state=DagRunState.RUNNING)
    session = settings.Session()
    dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id))
    dr.dag = scheduler_dag
    while dr.state == DagRunState.RUNNING:
        session.expire_all()
        schedulable, _ = dr.update_state(session=session)
        for ti in schedulable:
            ti.try_number += 1
            # Clearing grants the DAG file's retries again; a rerun that needs one has not completed cleanly.
            ti.max_tries = ti.try_number - 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        for ti in dr.get_task_instances(state=[TaskInstanceState.SCHEDULED], session=session):
            _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
    return dr


def states(dag_run) -> dict[str, str]:
    """Task id → state of one DagRun."""
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def signing_connection(monkeypatch) -> None:
    """The training DAG's model-signing connection, with a fresh key pair (mnist_model_signing)."""
    import json

    from include.mlops.signing import generate_key_pair

    private, public = generate_key_pair()
    monkeypatch.setenv("AIRFLOW_CONN_MNIST_MODEL_SIGNING", json.dumps(
        {"conn_type": "generic", "password": private.decode(), "extra": {"public_key": public.decode()}}))


def xcom(dag_run, task_id: str, key: str = "return_value"):
    """The value a task of a finished run pushed under `key`, read from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalar(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id,
                                                key=key))
    return XComModel.deserialize_value(row)
