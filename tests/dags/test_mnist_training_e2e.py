"""The whole training DAG with dag.test(): real training, real MLflow, real SBOM, the local JFrog server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.dag_runs import xcom as _xcom

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_RUN = {"max_train_samples": 4000, "max_test_samples": 1000, "min_accuracy": 0.5, "epochs": 2}


def release_digests(release: dict) -> list[str]:
    """The dataset digests recorded in the run's evidence pack."""
    lineage = json.loads((Path(release["sbom"]["path"]).parent / "evidence" / "lineage.json").read_text())
    return [d["sha256"] for d in lineage["datasets"]]


def _release(home: Path, run_id: str) -> dict:
    from include.settings import safe_name

    return json.loads((home / "runs" / "mnist_training" / safe_name(run_id) / "release.json").read_text())


@pytest.mark.e2e
def test_training_dag_promotes_then_blocks_on_critical_cve(airflow_db, mlops_home, jfrog_server, jfrog_conn):
    from airflow.dag_processing.dagbag import DagBag
    from jfrog_provider.hooks.artifactory import ArtifactoryHook
    from mlflow import MlflowClient

    from include.mlops.evidence import champion_query, properties_of
    from include.mlops.sbom import validate_cyclonedx
    from include.mnist.data import sha256_file
    from include.settings import PipelineSettings

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"]
    settings = PipelineSettings.from_env()
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)

    first = dag.test(run_conf=QUICK_RUN)
    assert first.state == "success"
    release = _release(mlops_home, first.run_id)
    assert release["xray"]["passed"] is True and release["decision"]["promote"] is True
    version = release["mlflow"]["version"]
    assert str(client.get_model_version_by_alias(settings.model_name, "champion").version) == version

    published = release["artifactory"]
    model_file = Path(release["sbom"]["path"]).parent / "model" / "model.safetensors"
    stored = ArtifactoryHook().get_file_info(published["repo"], published["path"].lstrip("/"))
    assert stored["checksums"]["sha256"] == sha256_file(model_file)

    released = ArtifactoryHook().get_item_properties("ml-models-release", published["path"].lstrip("/"))
    assert released["model.version"] == [version] and released["release.status"] == ["released"]
    assert ArtifactoryHook().get_file_info("ml-models-release", published["path"].lstrip("/"))["checksums"][
        "sha256"
    ] == stored["checksums"]["sha256"]
    folder = published["path"].lstrip("/").rsplit("/", 1)[0]
    for companion in ("model.json", "model.sig"):  # the release copy can be verified on its own
        assert ArtifactoryHook().get_file_info("ml-models-release", f"{folder}/{companion}")["checksums"]["sha256"] \
            == ArtifactoryHook().get_file_info(published["repo"], f"{folder}/{companion}")["checksums"]["sha256"]

    # Evidence pack beside the model, and one AQL query from champion to its data and dependencies.
    lineage_info = ArtifactoryHook().get_file_info(published["repo"], f"{folder}/evidence/lineage.json")
    assert lineage_info["checksums"]["sha256"]
    rows = ArtifactoryHook().search_aql(champion_query("ml-models-release"))
    assert len(rows) == 1
    props = properties_of(rows[0])
    assert props["model.version"] == [version]
    assert props["sbom.serial"] == [release["sbom"]["serial_number"]]
    assert set(props["dataset.sha256"]) >= set(release_digests(release))
    assert props["dataset.version"] == ["bundled"] and release["data_version"] == "bundled"
    assert any(p.startswith("pkg:pypi/torch@") for p in props["model.dependency"])

    sbom = json.loads(Path(release["sbom"]["path"]).read_text())
    validate_cyclonedx(sbom)
    assert sbom["specVersion"] == "1.6"
    assert "torch" in {c["name"].lower() for c in sbom["components"]}

    # Plant a Critical finding for the torch that trained the model: the next release must be blocked.
    vulns = Path(jfrog_server.state_dir) / "xray" / "vulnerabilities.json"
    vulns.parent.mkdir(parents=True, exist_ok=True)
    vulns.write_text(json.dumps([{
        "component": "pypi://torch", "issue_id": "XRAY-900001", "severity": "Critical",
        "summary": "planted by the end-to-end test", "cves": [{"cve": "CVE-2099-0001", "cvss_v3_score": "9.8"}],
        "fixed_versions": ["[99.0.0]"], "fail_build": True,
    }]))

    second = dag.test(run_conf=QUICK_RUN)
    assert second.state == "failed"
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert states["publish_model"] == "success"
    assert states["scan_model"] == "failed" and states["promote_model"] == "upstream_failed"
    assert states["release_model"] == "upstream_failed" and states["set_champion"] == "upstream_failed"
    verdict = _xcom(second, "scan_model", "xray_verdict")
    assert verdict["passed"] is False
    assert "CVE-2099-0001" in json.dumps(verdict["blocking"])
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    assert len(versions) == 2
    new_version = max(str(v.version) for v in versions)
    assert str(client.get_model_version_by_alias(settings.model_name, "champion").version) == version
    assert "challenger" in client.get_model_version(settings.model_name, new_version).aliases

    # Champion vs challenger: the champion was scored again on the same images, and the comparison logged.
    assert _xcom(first, "evaluate_model", "return_value")["evaluation"]["champion"] is None
    evaluation = _xcom(second, "evaluate_model", "return_value")["evaluation"]
    assert evaluation["champion"]["version"] == version
    assert evaluation["champion"]["num_samples"] == evaluation["num_samples"]
    assert evaluation["champion"]["accuracy"] == release["test_accuracy"]  # same model, same images
    run = client.get_run(client.get_model_version(settings.model_name, new_version).run_id)
    assert run.data.metrics["test_champion_accuracy"] == release["test_accuracy"]
    assert run.data.metrics["test_accuracy_delta_vs_champion"] == pytest.approx(
        evaluation["accuracy"] - release["test_accuracy"])
    assert run.data.tags["champion.compared_version"] == version
    assert run.data.tags["training.image"] == "none (in-process)"
    assert run.data.tags["data.version"] == "bundled"


