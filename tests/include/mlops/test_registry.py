"""MLflow registry against a real SQLite store and a real `mlflow server`: retries of one Airflow run never add versions.

The remote cases put a fault-injecting proxy (tests/support/mlflow_proxy.py) in front of the server: a create
committed and then answered 504, a 504 before the commit, a client killed between the create and the alias.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from include.mlops import registry
from include.mnist.model import build_model
from include.mnist.spec import MNIST
from include.mnist.train import MODEL_FILE, save_model


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """The model directory register_training_run takes: safetensors weights and their JSON config."""
    path = tmp_path / "model" / MODEL_FILE
    path.parent.mkdir()
    save_model(build_model(), path, "fast")
    return path.parent


def _register(mlops_home: Path, model_file: Path, run_key: str, *, tracking_uri: str | None = None,
              model_name: str = "mnist-test") -> registry.RegisteredModel:
    return registry.register_training_run(
        tracking_uri=tracking_uri or f"sqlite:///{mlops_home / 'mlflow' / 'mlflow.db'}",
        experiment_name="test-exp",
        artifact_root=mlops_home / "mlflow" / "artifacts",
        model_name=model_name,
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


def test_a_demoted_or_blocked_version_never_becomes_champion_again(mlops_home, model_file):
    from include.mlops.gates import GateFailure

    first = _register(mlops_home, model_file, "mnist_training/run-5")
    uri = first.tracking_uri
    assert registry.promote(uri, "mnist-test", first.version) is True
    assert registry.promote(uri, "mnist-test", first.version) is False  # already champion: nothing moves
    assert registry.demote(uri, "mnist-test", first.version) is True
    with pytest.raises(GateFailure, match=r"version 1 may not become 'champion': it was demoted"):
        registry.promote(uri, "mnist-test", first.version)
    second = _register(mlops_home, model_file, "mnist_training/run-6")
    registry.set_version_tags(uri, "mnist-test", second.version, {"security.blocking": "CVE-2099-1"})
    with pytest.raises(GateFailure, match=r"blocking findings CVE-2099-1 \(tag security.blocking\)"):
        registry.promote(uri, "mnist-test", second.version)
    assert registry.champion(uri, "mnist-test") is None


# -- a remote MLflow server behind a fault-injecting proxy --

CREATE_VERSION = r"/model-versions/create$"
CREATE_RUN = r"/runs/create$"
SET_ALIAS = r"/registered-models/alias$"


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """A real `mlflow server` (SQLite, proxied artifacts) and the proxy the client talks to."""
    from support.mlflow_proxy import FaultProxy, mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as upstream, FaultProxy(upstream).running() as proxy:
        yield proxy


@pytest.fixture
def proxy(remote, monkeypatch):
    remote.clear()
    remote.release.clear()
    remote.held.clear()
    remote.seen.clear()
    # MLflow's client backs off 2 s, 4 s, ... between retries; the retries, not their pacing, are under test.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    yield remote
    remote.clear()


def _versions_of(uri: str, model_name: str, run_key: str) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    found = client.search_model_versions(f"name = '{model_name}' and tag.`{registry.RUN_KEY_TAG}` = '{run_key}'")
    return sorted(str(v.version) for v in found)


def _live_runs(uri: str, run_key: str) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("test-exp")
    return len(client.search_runs([experiment.experiment_id], f"tags.`{registry.RUN_KEY_TAG}` = '{run_key}'"))


def _completed(uri: str, model_name: str, registered: registry.RegisteredModel) -> bool:
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    run_tag = client.get_run(registered.run_id).data.tags.get("registered_version")
    return registry.aliases(uri, model_name, registered.version) == ["challenger"] and run_tag == registered.version


def test_mlflow_client_alone_makes_two_versions_when_a_create_commits_then_504s(proxy, mlops_home, model_file):
    """The fault is real: MLflow's client retries the POST and the server commits it twice."""
    import mlflow

    base = _register(mlops_home, model_file, "remote/base", tracking_uri=proxy.url, model_name="remote-base")
    mlflow.set_registry_uri(proxy.url)
    proxy.inject("POST", CREATE_VERSION, "commit_then_504")
    mlflow.register_model(base.model_uri, "remote-plain", tags={registry.RUN_KEY_TAG: "remote/plain"})
    assert _versions_of(proxy.url, "remote-plain", "remote/plain") == ["1", "2"]


@pytest.mark.parametrize(("path", "fault", "creates"), [
    (CREATE_VERSION, "commit_then_504", 1),  # one create: the lookup after the error finds what it committed
    (CREATE_VERSION, "504_before_commit", 2),  # nothing committed: created again, once
    (CREATE_RUN, "commit_then_504", 1),
    (CREATE_RUN, "504_before_commit", 2),
], ids=["version-committed-then-504", "version-504-before-commit", "run-committed-then-504", "run-504-before-commit"])
def test_one_version_per_run_when_a_create_fails(proxy, mlops_home, model_file, path, fault, creates):
    model_name, run_key = f"remote-{fault}-{path.split('/')[1]}", f"remote/{fault}/{path}"
    proxy.inject("POST", path, fault)
    registered = _register(mlops_home, model_file, run_key, tracking_uri=proxy.url, model_name=model_name)
    again = _register(mlops_home, model_file, run_key, tracking_uri=proxy.url, model_name=model_name)
    assert again == registered
    assert _versions_of(proxy.url, model_name, run_key) == [registered.version] == ["1"]
    assert _live_runs(proxy.url, run_key) == 1
    assert proxy.count("POST", path) == creates  # no create sent twice by MLflow's own retries
    assert _completed(proxy.url, model_name, registered)


def test_a_crash_between_version_and_alias_is_completed_by_the_retry(proxy, mlops_home, model_file, tmp_path):
    model_name, run_key = "remote-crash", "remote/crash"
    proxy.inject("POST", SET_ALIAS, "hold")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]), os.environ.get(
        "PYTHONPATH", "")]), "MLFLOW_TRACKING_URI": proxy.url}
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        child = subprocess.Popen([sys.executable, __file__, str(mlops_home), str(model_file), run_key, model_name],
                                 stdout=out, stderr=subprocess.STDOUT, env=env)
        held = proxy.held.wait(timeout=300)
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert held, f"the child never reached the alias:\n{log.read_text()[-3000:]}"
    proxy.clear()
    time.sleep(0.2)  # the held request answers 504 to a dead client; let it finish before counting
    assert _versions_of(proxy.url, model_name, run_key) == ["1"]
    assert registry.aliases(proxy.url, model_name, "1") == []  # the crash came after the create, before the alias

    registered = _register(mlops_home, model_file, run_key, tracking_uri=proxy.url, model_name=model_name)
    assert registered.version == "1" and _versions_of(proxy.url, model_name, run_key) == ["1"]
    assert _completed(proxy.url, model_name, registered)


def test_a_retry_leaves_a_later_runs_challenger_alone(mlops_home, model_file):
    from mlflow import MlflowClient

    first = _register(mlops_home, model_file, "mnist_training/run-7")
    second = _register(mlops_home, model_file, "mnist_training/run-8")
    client = MlflowClient(first.tracking_uri, registry_uri=first.tracking_uri)
    client.delete_tag(first.run_id, "registered_version")  # as if run-7 died before its last step
    assert _register(mlops_home, model_file, "mnist_training/run-7") == first
    assert registry.aliases(first.tracking_uri, "mnist-test", second.version) == ["challenger"]
    assert client.get_run(first.run_id).data.tags["registered_version"] == first.version


if __name__ == "__main__":
    # The child of the crash test: one registration through the proxy, SIGKILLed while its alias call is held.
    home, model, key, name = sys.argv[1:5]
    _register(Path(home), Path(model), key, tracking_uri=os.environ["MLFLOW_TRACKING_URI"], model_name=name)
