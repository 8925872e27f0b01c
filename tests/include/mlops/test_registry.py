"""MLflow registry against a real SQLite store: retries of one Airflow run never add versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.mlops import registry
from include.mnist.model import build_model
from include.mnist.spec import MNIST
from include.mnist.train import save_state_dict


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    save_state_dict(build_model(), path)
    return path


def _register(mlops_home: Path, model_file: Path, run_key: str) -> registry.RegisteredModel:
    return registry.register_training_run(
        tracking_uri=f"sqlite:///{mlops_home / 'mlflow' / 'mlflow.db'}",
        experiment_name="test-exp",
        artifact_root=mlops_home / "mlflow" / "artifacts",
        model_name="mnist-test",
        run_key=run_key,
        model_path=model_file,
        load_model=MNIST.load,
        input_example=MNIST.example_input(),
        params={"epochs": 1, "seed": 1},
        epoch_metrics=[{"epoch": 1, "loss": 0.5, "train_accuracy": 0.8}],
        eval_metrics={"accuracy": 0.9, "loss": 0.3},
        datasets=[registry.DatasetRef("mnist-train", "file:///data/train.gz", "ab" * 32)],
        tags={"airflow.dag_id": "t"},
        pip_requirements=registry.pinned_requirements("torch"),
    )


def test_retry_of_same_run_returns_same_version(mlops_home, model_file):
    from mlflow import MlflowClient

    first = _register(mlops_home, model_file, "mnist_training/run-1")
    again = _register(mlops_home, model_file, "mnist_training/run-1")
    assert again == first
    client = MlflowClient(first.tracking_uri, registry_uri=first.tracking_uri)
    assert len(client.search_model_versions("name = 'mnist-test'")) == 1
    assert registry.aliases(first.tracking_uri, "mnist-test", first.version) == ["challenger"]
    run = client.get_run(first.run_id)
    assert run.data.metrics["test_accuracy"] == 0.9
    assert run.data.tags["dataset.mnist-train.sha256"] == "ab" * 32
    history = client.get_metric_history(first.run_id, "train_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.8)]


def test_half_logged_run_is_replaced_not_duplicated(mlops_home, model_file):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{mlops_home / 'mlflow' / 'mlflow.db'}"
    experiment_id = registry.ensure_experiment(uri, "test-exp", mlops_home / "mlflow" / "artifacts")
    with mlflow.start_run(experiment_id=experiment_id, tags={registry.RUN_KEY_TAG: "mnist_training/run-2"}):
        mlflow.log_param("epochs", 1)  # an earlier try died here, before registering

    registered = _register(mlops_home, model_file, "mnist_training/run-2")
    client = MlflowClient(uri, registry_uri=uri)
    live = client.search_runs([experiment_id], filter_string=f"tags.`{registry.RUN_KEY_TAG}` = 'mnist_training/run-2'")
    assert [r.info.run_id for r in live] == [registered.run_id]
    assert registered.version == "1"


def test_registered_model_serves_any_batch_size(mlops_home, model_file):
    import mlflow
    import numpy as np

    first = _register(mlops_home, model_file, "mnist_training/run-4")
    mlflow.set_tracking_uri(first.tracking_uri)
    served = mlflow.pyfunc.load_model(first.model_uri)
    assert np.asarray(served.predict(np.zeros((3, 1, 28, 28), dtype=np.float32))).shape == (3, 10)


def test_champion_and_promotion(mlops_home, model_file):
    first = _register(mlops_home, model_file, "mnist_training/run-3")
    assert registry.champion(first.tracking_uri, "mnist-test") is None
    registry.promote(first.tracking_uri, "mnist-test", first.version)
    assert registry.champion(first.tracking_uri, "mnist-test") == (first.version, 0.9)
