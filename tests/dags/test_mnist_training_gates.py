"""The model gates at DAG level: a run blocked by the accuracy gate, and one whose champion moved after evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGING = "ml-models-local"
# Small and permissive: each run trains in a few seconds; only the gate under test can block.
TINY = {"max_train_samples": 1000, "max_test_samples": 500, "epochs": 1, "min_accuracy": 0.1, "max_regression": 1.0}


def _load_dag():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"]
    dag.get_task("scan_model").poll_interval = 0.2  # the local Xray answers at once: no 5 s poll waits
    return dag


def _failures(dag, task_id: str) -> list[str]:
    """Collect the messages `task_id` fails with (its failure callback, as Airflow runs it)."""
    seen: list[str] = []
    dag.get_task(task_id).on_failure_callback = [lambda context: seen.append(str(context["exception"]))]
    return seen


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def _tries(dag_run, task_id: str) -> int:
    return next(ti.try_number for ti in dag_run.get_task_instances() if ti.task_id == task_id)


def _evidence(version: str, name: str) -> dict:
    """An evidence file as stored in the local JFrog server (downloaded, sha256-checked)."""
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    from include.settings import PipelineSettings

    local = PipelineSettings.from_env().home / "downloaded" / version / name
    ArtifactoryHook().download_artifact(STAGING, f"mnist-cnn/{version}/evidence/{name}", local)
    return json.loads(local.read_text())


@pytest.mark.e2e
def test_accuracy_gate_blocks_and_a_moved_champion_blocks(airflow_db, mlops_home, jfrog_server, jfrog_conn):
    from mlflow import MlflowClient

    from include.mlops import registry
    from include.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    uri, name = settings.mlflow_tracking_uri, settings.model_name
    client = MlflowClient(uri, registry_uri=uri)
    dag = _load_dag()

    first = dag.test(run_conf={**TINY, "seed": 1})
    assert first.state == "success", _states(first)
    assert registry.champion(uri, name)[0] == "1"

    # (a) The accuracy gate blocks: the run fails at once (no retry), version 2 keeps `challenger`, the champion
    # stays, and the evidence pack records the decision in Artifactory all the same.
    blocked_messages = _failures(dag, "promote_model")
    blocked = dag.test(run_conf={**TINY, "seed": 2, "min_accuracy": 0.9999})
    states = _states(blocked)
    assert blocked.state == "failed" and states["promote_model"] == "failed", states
    assert states["release_model"] == "upstream_failed" and states["set_champion"] == "upstream_failed"
    assert _tries(blocked, "promote_model") == 1  # AirflowFailException: the DAG's retries do not apply
    (message,) = blocked_messages
    assert "mnist-cnn version 2 stays 'challenger', champion unchanged (1)" in message
    assert "is below min_accuracy 0.9999" in message
    assert registry.champion(uri, name)[0] == "1"
    assert registry.aliases(uri, name, "2") == ["challenger"]
    assert client.get_model_version(name, "2").tags["gate.decision"] == "blocked"
    decision = _evidence("2", "gate-decision.json")
    assert decision["promote"] is False
    assert [g["name"] for g in decision["gates"] if not g["passed"]] == ["accuracy"]
    assert _evidence("2", "lineage.json")["decision"]["promote"] is False
    assert set(_evidence("2", "manifest.json")["files"]) >= {"lineage.json", "gate-decision.json", "xray-verdict.json"}

    # (b) Another run moves `champion` (to version 2) after this run's evaluate_model compared against version 1:
    # the champion gate blocks rather than judge on a comparison with a model that is no longer champion.
    dag.get_task("promote_model").on_execute_callback = [lambda context: registry.promote(uri, name, "2")]
    moved_messages = _failures(dag, "promote_model")
    moved = dag.test(run_conf={**TINY, "seed": 3})
    assert _evidence("3", "metrics.json")["champion"]["version"] == "1"  # what evaluate_model compared against
    assert moved.state == "failed" and _states(moved)["promote_model"] == "failed"
    (message,) = moved_messages
    assert "champion is version 2 but evaluate_model compared against 1" in message
    assert "rerun the DAG to compare on the same images" in message
    assert registry.champion(uri, name)[0] == "2" and registry.aliases(uri, name, "3") == ["challenger"]
    assert [g["name"] for g in _evidence("3", "gate-decision.json")["gates"] if not g["passed"]] == ["champion"]

