"""The training DAG publishes a signed safetensors model, and the champion comparison loads only what verifies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.dag_runs import xcom as _xcom

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_RUN = {"max_train_samples": 3000, "max_test_samples": 500, "min_accuracy": 0.5, "epochs": 1,
             "max_regression": 1.0}


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


@pytest.mark.e2e
def test_signed_model_published_and_every_champion_load_verified(
    airflow_db, mlops_home, jfrog_server, jfrog_conn, model_signing_keys, tmp_path
):
    from airflow.dag_processing.dagbag import DagBag
    from jfrog_provider.hooks.artifactory import ArtifactoryHook
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from include.mlops.signing import key_id, verify_model
    from include.settings import PipelineSettings

    _, public = model_signing_keys
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"]
    settings = PipelineSettings.from_env()
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    hook = ArtifactoryHook()

    first = dag.test(run_conf=QUICK_RUN)
    assert first.state == "success"
    run = _xcom(first, "generate_sbom")
    trained, published = run["trained"], run["published"]
    assert published["path"].endswith("/model.safetensors")

    # Artifactory holds the signed directory and its bundle side by side; they verify with the public key.
    folder = published["path"].lstrip("/").rsplit("/", 1)[0]
    downloaded = tmp_path / "artifactory" / "model"
    for name in ("model.safetensors", "model.json"):
        hook.download_artifact(published["repo"], f"{folder}/{name}", downloaded / name)
    hook.download_artifact(published["repo"], f"{folder}/model.sig", downloaded.parent / "model.sig")
    info = verify_model(downloaded, downloaded.parent / "model.sig", public)
    assert info.files["model.safetensors"] == trained["sha256"] and info.key_id == key_id(public)
    props = hook.get_item_properties(published["repo"], f"{folder}/model.sig")
    assert props["signature.key_id"] == [info.key_id] and props["signature.sha256"] == [info.sha256]
    # MLflow: the signed directory and bundle, and the tags that name them.
    version = run["registered"]["version"]
    tags = client.get_model_version(settings.model_name, version).tags
    assert tags["signature.sha256"] == info.sha256 and tags["signature.key_id"] == info.key_id
    local = Path(download_artifacts(run_id=run["registered"]["run_id"], artifact_path="signed_model",
                                    dst_path=str(tmp_path / "mlflow"), tracking_uri=settings.mlflow_tracking_uri))
    assert verify_model(local / "model", local / "model.sig", public).sha256 == info.sha256
    # The ML-BOM and the evidence pack name the signature.
    mlbom = json.loads(Path(run["sbom"]["mlbom"]["path"]).read_text())
    model = next(c for c in mlbom["components"] if c["type"] == "machine-learning-model")
    assert {"name": "mlops:signature.sha256", "value": info.sha256} in model["properties"]
    assert any(r["type"] == "attestation" and r["url"].endswith(f"{folder}/model.sig")
               for r in model["externalReferences"])
    evidence = Path(run["sbom"]["path"]).parent / "evidence" / "model-scan.json"
    assert json.loads(evidence.read_text())["signature"]["sha256"] == info.sha256

    # Later runs are blocked by the accuracy gate, so `champion` stays on the first version.
    blocked = {**QUICK_RUN, "min_accuracy": 0.999}
    # Second run: the champion is downloaded, verified and cached under its signature digest.
    second = dag.test(run_conf=blocked)
    assert _states(second)["evaluate_model"] == "success"
    compared = _xcom(second, "evaluate_model")["evaluation"]["champion"]
    assert compared["version"] == version and compared["sha256"] == trained["sha256"]
    cache = settings.champions_dir / f"sha256-{info.sha256}"
    assert sorted(p.name for p in (cache / "model").iterdir()) == ["model.json", "model.safetensors"]

    # A tampered cache is not trusted: the champion is fetched again and verifies; same figures.
    weights = cache / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    third = dag.test(run_conf=blocked)
    assert _states(third)["evaluate_model"] == "success"
    assert _xcom(third, "evaluate_model")["evaluation"]["champion"] == compared
    assert verify_model(cache / "model", cache / "model.sig", public).sha256 == info.sha256

    # Tampered weights in MLflow's store and in the cache: evaluate_model refuses, nothing is registered.
    artifacts = Path(client.get_run(run["registered"]["run_id"]).info.artifact_uri.removeprefix("file://"))
    stored = artifacts / "signed_model" / "model" / "model.safetensors"
    stored.write_bytes(stored.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    weights.write_bytes(stored.read_bytes())
    versions_before = len(client.search_model_versions(f"name = '{settings.model_name}'"))
    fourth = dag.test(run_conf=blocked)
    assert fourth.state == "failed"
    states = _states(fourth)
    assert states["train_model"] == "success" and states["evaluate_model"] == "failed"
    assert states["register_model"] == "upstream_failed"
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == versions_before
    # ... and the reason is the signature: the same call evaluate_model makes names the mismatching file.
    from include.mlops.registry import champion_model
    from include.mlops.signing import ModelSignatureError

    with pytest.raises(ModelSignatureError, match="Hash mismatch for 'model.safetensors'"):
        champion_model(settings.mlflow_tracking_uri, settings.model_name, settings.champions_dir, public)
