"""The training DAG's container branch with dag.test(): train_model runs the training image through the
Docker provider against the Docker-Engine-API stub (tests/docker_engine_stub.py); later tasks are marked
successful without running, so only validate_data and train_model do work."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
from docker_engine_stub import DockerEngineStub, image_from_dockerfile
from support.dag_runs import xcom as _xcom

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.parametrize("in_container", [False, True], ids=["in-process-by-default", "variable-on"])
def test_train_model_runs_in_the_training_image_only_when_the_variable_says_so(
    airflow_db, mlops_home: Path, monkeypatch: pytest.MonkeyPatch, in_container: bool
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from mnist_training_container import DEFAULT_IMAGE

    from include.mlops.model_scan import assert_safe_model_file

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"]
    image = image_from_dockerfile(REPO_ROOT / "docker" / "training.Dockerfile", "/opt/mlops", REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix="dk") as folder:
        with DockerEngineStub(Path(folder) / "docker.sock", {DEFAULT_IMAGE: image}) as engine:
            # The engine is reachable either way: only the Variable decides.
            monkeypatch.setenv("AIRFLOW_VAR_MNIST_TRAINING_DOCKER", json.dumps({"docker_url": engine.url}))
            if in_container:
                monkeypatch.setenv("AIRFLOW_VAR_MNIST_TRAIN_IN_CONTAINER", "true")
            run = dag.test(
                run_conf={"max_train_samples": 256, "epochs": 1, "seed": 5},
                mark_success_pattern=r"(?!validate_data$|train_model$).*",
            )
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["validate_data"] == states["train_model"] == "success", states
    trained = _xcom(run, "train_model")["trained"]
    assert trained["num_train_samples"] == 256 and trained["config"]["seed"] == 5
    assert trained["python"] == sys.executable
    assert trained["model_scan"]["sha256"] == trained["sha256"] == assert_safe_model_file(trained["model_path"]).sha256
    assert Path(trained["model_path"]).is_relative_to(mlops_home)
    if not in_container:
        assert trained["container"] is None and engine.created == []
        return
    assert trained["container"]["image"] == DEFAULT_IMAGE
    (created,) = engine.created
    assert created["Cmd"][created["Cmd"].index("--output") + 1] == trained["model_path"]
    assert created["HostConfig"]["NetworkMode"] == "none" and len(engine.removed) == 1


def test_container_params_default_to_the_deployments_setting() -> None:
    from airflow.dag_processing.dagbag import DagBag

    params = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"].params
    for name in ("train_in_container", "training_image", "gpus"):
        assert params.get_param(name).resolve(suppress_exception=False) is None, name
    assert params.get_param("train_in_container").resolve(value=True) is True
    assert params.get_param("gpus").resolve(value=2) == 2
    with pytest.raises(Exception, match="less than the minimum of 0"):
        params.get_param("gpus").resolve(value=-1, suppress_exception=False)
    with pytest.raises(Exception, match="is not of type"):
        params.get_param("train_in_container").resolve(value="yes", suppress_exception=False)
