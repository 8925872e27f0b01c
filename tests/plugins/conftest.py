"""Provider tests run against the project's local JFrog-compatible server (contract-following, not JFrog)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def conn(monkeypatch, jfrog_server) -> str:
    """jfrog_default with fast retries, so fault tests take milliseconds."""
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps({
        "conn_type": "jfrog", "host": jfrog_server.url, "password": jfrog_server.token,
        "extra": {"backoff_base": 0.01, "backoff_max": 0.02, "max_retries": 2}}))
    return "jfrog_default"


@pytest.fixture
def dag_test(airflow_db, tmp_path) -> Callable[[Any], Any]:
    """Run a DAG defined in a test with dag.test(): register it in the metadata DB first, as parsing would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    def run(dag: Any, **kwargs: Any) -> Any:
        # dag.test() only runs DAGs it finds serialized; a test DAG lives in no bundle file, so write it the way
        # the DAG processor writes a parsed file (into the existing dags-folder bundle)
        DagBundlesManager().sync_bundles_to_db()
        (empty := tmp_path / "no-dag-files").mkdir(exist_ok=True)
        bag = DagBag(dag_folder=str(empty))
        bag.bag_dag(dag)
        sync_bag_to_db(bag, "dags-folder", None)
        return dag.test(**kwargs)

    return run
