"""The training DAG's Kubernetes path: the pod train_model would create, built from the DAG's own Params and task code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import kubernetes_validate
import pytest
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import ApiClient
from mnist_training_kubernetes import KubernetesTraining

from include.mnist.train import TrainConfig, train_in_process
from include.settings import PipelineSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def training_module():
    spec = importlib.util.spec_from_file_location("mnist_training_dag", REPO_ROOT / "dags" / "mnist_training.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _params(module, **overrides) -> dict:
    dag = module.mnist_training()
    return {**dag.params.dump(), **overrides}


def _backend(module, monkeypatch, params: dict, variables: dict | None = None):
    import mlops_tasks

    # The DAG's train_model picks its backend with mlops_tasks.trainer, which reads the task's context and
    # Variables; outside a task run, supply both.
    monkeypatch.setattr(mlops_tasks, "get_current_context", lambda: {"params": params})
    for key, value in (variables or {}).items():
        monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", value)
    return module.step.trainer(params)


def test_train_on_kubernetes_builds_a_valid_locked_down_pod(training_module, monkeypatch):
    params = _params(training_module, train_on_kubernetes=True)
    trainer = _backend(training_module, monkeypatch, params)
    backend = trainer.func.__self__
    # By name: Airflow's plugin manager may load plugins/ modules a second time, as other module objects.
    assert type(backend).__name__ == KubernetesTraining.__name__
    # Where the DAG's tasks put a run: validate_data downloads an announced data version into it.
    run_dir = PipelineSettings.from_env().run_dir("mnist_training", "asset_triggered__1")
    pod = backend.pod(None, config=TrainConfig.from_params(params).to_dict(), output=run_dir / "model.pt",
                      data_dir=run_dir / "data")
    manifest = ApiClient().sanitize_for_serialization(pod)
    assert kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    assert manifest["spec"]["automountServiceAccountToken"] is False
    assert manifest["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_variable_switches_kubernetes_on_and_the_default_stays_in_process(training_module, monkeypatch):
    params = _params(training_module)
    assert _backend(training_module, monkeypatch, params) is train_in_process
    trainer = _backend(training_module, monkeypatch, params, {"mnist_train_on_kubernetes": "true"})
    assert type(trainer.func.__self__).__name__ == KubernetesTraining.__name__


def test_two_backends_at_once_are_refused(training_module, monkeypatch):
    params = _params(training_module, train_on_kubernetes=True, train_in_container=True)
    with pytest.raises(AirflowFailException, match="choose one backend"):
        _backend(training_module, monkeypatch, params)
