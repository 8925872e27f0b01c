"""With MLOPS_JFROG_EVIDENCE on, promote_model attests the evidence pack as JFrog Evidence on the model file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from support.dag_runs import xcom as _xcom

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_RUN = {"max_train_samples": 3000, "max_test_samples": 500, "min_accuracy": 0.5, "epochs": 1,
             "max_regression": 1.0}


@pytest.mark.e2e
def test_promote_model_deploys_evidence_that_verifies_with_the_public_key(
    airflow_db, mlops_home, jfrog_server, jfrog_conn, model_signing_keys, monkeypatch, tmp_path
):
    from airflow.dag_processing.dagbag import DagBag
    from jfrog_provider.hooks.artifactory import ArtifactoryHook
    from jfrog_provider.hooks.evidence import EvidenceHook
    from mlflow import MlflowClient

    from include.mlops import jfrog_evidence as ev
    from include.mlops.signing import generate_key_pair
    from include.settings import PipelineSettings

    private, public = model_signing_keys
    monkeypatch.setenv("MLOPS_JFROG_EVIDENCE", "true")
    evidence = EvidenceHook()
    # the platform admin's step: the model-signing public key becomes a trusted key under the pipeline's alias
    evidence.upload_trusted_key(ev.DEFAULT_KEY_ALIAS, public)
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"]

    dag_run = dag.test(run_conf=QUICK_RUN)
    assert dag_run.state == "success"
    promoted = _xcom(dag_run, "promote_model")
    published, promotion = promoted["published"], promoted["promotion"]
    repo, path = published["repo"], published["path"].lstrip("/")

    # JFrog lists one verified record for the model file, signed under the trusted alias
    records = evidence.search_evidence(repo, path, sha256=published["sha256"])
    assert len(records) == 1
    record = records[0]
    assert record["verified"] is True and record["signing_key"] == {"alias": ev.DEFAULT_KEY_ALIAS}
    assert record["predicate_type"] == ev.PREDICATE_TYPE
    assert promotion["jfrog_evidence"]["uri"] == record["uri"]
    settings = PipelineSettings.from_env()
    tags = MlflowClient(settings.mlflow_tracking_uri).get_model_version(
        settings.model_name, promoted["registered"]["version"]).tags
    assert tags["jfrog.evidence.uri"] == record["uri"]

    # the stored envelope verifies with the public key and says what the run did
    envelope = evidence.get_evidence_file(record["uri"])
    statement = ev.verify_envelope(envelope, public, ev.DEFAULT_KEY_ALIAS)
    assert statement["subject"] == [{"name": f"{repo}/{path}", "digest": {"sha256": published["sha256"]}}]
    predicate = statement["predicate"]
    folder = path.rsplit("/", 1)[0]
    manifest = tmp_path / "manifest.json"
    ArtifactoryHook().download_artifact(repo, f"{folder}/evidence/manifest.json", manifest)
    assert predicate["evidence_pack"] == {"path": f"{repo}/{folder}/evidence/",
                                          "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    assert predicate["evidence_pack"]["manifest_sha256"] == promotion["evidence_sha256"]
    assert predicate["gate_decision"]["promote"] is True
    assert predicate["xray"]["scan_id"] == str(promoted["scan"]["scan_id"]) and predicate["xray"]["passed"] is True
    assert predicate["model_signature"]["sha256"] == promoted["sbom"]["signature"]["sha256"]
    assert predicate["model_signature"]["path"] == promoted["sbom"]["signature"]["artifactory_path"]
    # another key does not verify it, and no key material reached XCom
    with pytest.raises(ev.EvidenceError):
        ev.verify_envelope(envelope, generate_key_pair()[1])
    assert private.decode().splitlines()[1] not in repr(promoted)
