"""Every DAG file imports cleanly, fast, without heavy libraries, and carries owner, retries and tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO_ROOT / "dags").glob("*.py"))
# third-party libraries a DAG file must not import, and our pydantic Xray answer models (built when a scan is judged)
HEAVY_MODULES = ("torch", "torchvision", "mlflow", "evidently", "pandas", "sklearn", "scipy", "cyclonedx",
                 "jfrog_provider.xray_results", "requests", "urllib3")
EXPECTED_DAGS = {"mnist_training", "mnist_drift", "mnist_security_rescan", "mnist_data_arrival"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_expected_dags_present(dagbag):
    assert EXPECTED_DAGS <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_dag_has_owner_retries_tags_and_docs(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.tags, f"{dag_id} has no tags"
    assert dag.doc_md, f"{dag_id} has no doc_md"
    assert dag.catchup is False
    for task in dag.tasks:
        assert task.owner not in ("", "airflow"), f"{dag_id}.{task.task_id} has the default owner"
        assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_training_params_form_is_typed(dagbag):
    params = dagbag.dags["mnist_training"].params
    for name in ("epochs", "batch_size", "learning_rate", "seed", "min_accuracy", "max_train_samples"):
        schema = params.get_param(name).schema
        assert schema.get("type") in {"integer", "number"}, f"param {name} is untyped: {schema}"
    with pytest.raises(Exception, match="less than the minimum of 0"):
        params.get_param("epochs").resolve(value=-1, suppress_exception=False)
    assert params.get_param("preset").schema["enum"] == ["fast", "quality"]


def test_training_graph_is_the_chain(dagbag):
    """The drawn edges are the order the tasks run in, nothing more: each task has only its predecessor upstream."""
    dag = dagbag.dags["mnist_training"]
    order = [
        "validate_data", "train_model", "evaluate_model", "register_model",
        "publish_model", "generate_sbom", "scan_model", "promote_model", "release_model", "approve_champion",
        "set_champion",
    ]
    assert set(order) == set(dag.task_ids)
    assert dag.get_task(order[0]).upstream_task_ids == set()
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}, f"{downstream} must follow only {upstream}"


@pytest.mark.parametrize("dag_file", ["mnist_training.py", "mnist_drift.py"])
def test_tasks_state_multiple_outputs_and_pull_no_xcom_in_templates(dag_file):
    """No `multiple_outputs` inferred from a `-> dict` annotation, and no xcom_pull hidden in a template string."""
    import ast
    import re

    source = (REPO_ROOT / "dags" / dag_file).read_text()
    assert not re.search(r"\{\{[^}]*xcom_pull", source), "pass an XComArg reference instead of a template pull"
    decorated = 0
    for node in ast.walk(ast.parse(source)):
        for deco in getattr(node, "decorator_list", []):
            target = deco.func if isinstance(deco, ast.Call) else deco
            if isinstance(target, ast.Name) and target.id == "task":
                decorated += 1
                keywords = {k.arg for k in deco.keywords} if isinstance(deco, ast.Call) else set()
                assert "multiple_outputs" in keywords, f"{dag_file}: @task {node.name} leaves multiple_outputs implicit"
    assert decorated >= 5


def test_champion_moves_last_and_only_after_every_task(dagbag):
    """The alias task is the sink, downstream of every other task, all-success, and the only champion producer."""
    from include.assets import MNIST_CHAMPION

    dag = dagbag.dags["mnist_training"]
    commit = dag.get_task("set_champion")
    assert commit.get_flat_relative_ids(upstream=True) == set(dag.task_ids) - {"set_champion"}
    assert not commit.downstream_task_ids and commit.trigger_rule == "all_success"
    producers = [t.task_id for t in dag.tasks if any(o.name == MNIST_CHAMPION.name for o in t.outlets)]
    assert producers == ["set_champion"]


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_leaves_heavy_modules_unimported(dag_file):
    code = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]);"
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'plugins'}"}
    proc = subprocess.run([sys.executable, "-c", code, str(dag_file)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
