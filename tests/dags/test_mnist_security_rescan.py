"""The daily re-scan DAG with dag.test(): a real MLflow champion, its SBOM in the local JFrog server, planted CVEs.

The Xray gate defers; dag.test() runs its trigger in line, as the triggerer would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CRITICAL_TORCH = {
    "component": "pypi://torch", "issue_id": "XRAY-990001", "severity": "Critical",
    "summary": "planted by the re-scan test", "cves": [{"cve": "CVE-2099-4242", "cvss_v3_score": "9.8"}],
    "fixed_versions": ["[99.0.0]"],
}


def _sbom(path: Path) -> Path:
    """A small valid CycloneDX 1.6 SBOM with torch and numpy (the real one is tested in test_sbom.py)."""
    doc = {
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "components": [
            {"type": "library", "bom-ref": "torch==2.14.1", "name": "torch", "version": "2.14.1",
             "purl": "pkg:pypi/torch@2.14.1"},
            {"type": "library", "bom-ref": "numpy==2.4.6", "name": "numpy", "version": "2.4.6",
             "purl": "pkg:pypi/numpy@2.4.6"},
        ],
        "dependencies": [{"ref": "torch==2.14.1", "dependsOn": []}, {"ref": "numpy==2.4.6", "dependsOn": []}],
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def champion(mlops_home, jfrog_conn, tmp_path):
    """Version 1 of the pipeline's model is champion; its model file and SBOM are in both Artifactory repos."""
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    from include.mlops import registry
    from include.mnist.model import build_model
    from include.mnist.spec import MNIST
    from include.mnist.train import MODEL_FILE, save_model
    from include.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    model_file = tmp_path / "model" / MODEL_FILE
    model_file.parent.mkdir()
    save_model(build_model(), model_file, "fast")
    registered = registry.register_training_run(
        tracking_uri=settings.mlflow_tracking_uri, experiment_name=settings.experiment_name,
        artifact_root=settings.mlflow_artifact_root, model_name=settings.model_name, run_key="test/run-1",
        model_path=model_file.parent, load_model=MNIST.load, input_example=MNIST.example_input(),
        params={"epochs": 1}, epoch_metrics=[{"epoch": 1, "loss": 0.5}],
        eval_metrics={"accuracy": 0.99}, datasets=[registry.DatasetRef("mnist-train", "file:///d", "ab" * 32)],
        tags={}, pip_requirements=registry.pinned_requirements("torch"),
    )
    registry.promote(settings.mlflow_tracking_uri, settings.model_name, registered.version)
    hook = ArtifactoryHook()
    folder = f"{settings.model_name}/{registered.version}"
    for repo in (settings.artifactory_repo, settings.artifactory_release_repo):
        hook.deploy_artifact(model_file, repo, f"{folder}/{MODEL_FILE}", properties={"model.version": registered.version})
    hook.set_item_properties(settings.artifactory_release_repo, f"{folder}/{MODEL_FILE}", {"mlflow.alias": "champion"})
    registry.set_version_tags(settings.mlflow_tracking_uri, settings.model_name, registered.version,
                              {"artifactory.path": f"{settings.artifactory_repo}/{folder}/{MODEL_FILE}"})
    hook.deploy_artifact(_sbom(tmp_path / "sbom.cdx.json"), settings.artifactory_repo, f"{folder}/sbom.cdx.json")
    return settings, registered.version


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_security_rescan.py"))
    assert bag.import_errors == {}
    return bag.dags["mnist_security_rescan"]


def _alerts(settings) -> list[dict]:
    path = settings.home / "alerts" / "security.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.e2e
def test_rescan_records_alerts_and_demotes_only_when_asked(airflow_db, champion, jfrog_server):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook
    from mlflow import MlflowClient

    from include.mlops import registry

    settings, version = champion
    dag = _dag()
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    model_path = f"{settings.model_name}/{version}/model.safetensors"

    clean = dag.test()
    assert clean.state == "success"
    assert ArtifactoryHook().get_item_properties(settings.artifactory_repo, model_path)[
        "security.rescan.status"] == ["clean"]
    assert _alerts(settings) == []

    jfrog_server.plant_vulnerabilities([CRITICAL_TORCH])
    kept = dag.test(run_conf={"demote_on_finding": False})
    assert kept.state == "failed"  # a blocking finding is never silent
    states = {ti.task_id: ti.state for ti in kept.get_task_instances()}
    assert states["alert_security_team"] == "success" and states["report_finding"] == "failed"
    props = ArtifactoryHook().get_item_properties(settings.artifactory_repo, model_path)
    assert props["security.rescan.status"] == ["blocked"] and props["security.blocking"] == ["CVE-2099-4242"]
    release = ArtifactoryHook().get_item_properties(settings.artifactory_release_repo, model_path)
    assert release["security.blocking"] == ["CVE-2099-4242"] and release["mlflow.alias"] == ["champion"]
    tags = client.get_model_version(settings.model_name, version).tags
    assert tags["security.rescan.status"] == "blocked" and tags["security.blocking"] == "CVE-2099-4242"
    assert tags["security.demotion"] == "kept: demote_on_finding=false"
    alerts = _alerts(settings)
    assert len(alerts) == 1 and "CVE-2099-4242" in alerts[0]["message"]
    assert registry.champion(settings.mlflow_tracking_uri, settings.model_name)[0] == version

    demoted = dag.test(run_conf={"demote_on_finding": True})
    assert demoted.state == "failed"
    assert len(_alerts(settings)) == 1  # the same CVE again: recorded, not re-alerted
    assert registry.champion(settings.mlflow_tracking_uri, settings.model_name) is None
    assert client.get_model_version(settings.model_name, version).tags["security.demotion"].startswith("demoted")
    release = ArtifactoryHook().get_item_properties(settings.artifactory_release_repo, model_path)
    assert "mlflow.alias" not in release and release["release.status"] == ["demoted"]

    # Both choices are in the version's audit trail, by whoever ran the re-scan, with the SBOM's digest.
    from include.mlops import audit

    trail = audit.history(settings.mlflow_tracking_uri, settings.model_name, version)
    assert [(e["event"], e["by"], e["dag_id"]) for e in trail] == [
        ("champion.kept", "dag_test", "mnist_security_rescan"), ("champion.demoted", "dag_test", "mnist_security_rescan")]
    assert all("CVE-2099-4242" in e["reason"] and len(e["evidence_sha256"]) == 64 for e in trail)
    with pytest.raises(Exception, match="it was demoted"):
        registry.promote(settings.mlflow_tracking_uri, settings.model_name, version)


@pytest.mark.e2e
def test_rescan_judges_the_model_file_once_xray_has_indexed_it(airflow_db, champion, jfrog_server):
    """A finding Xray reports on the model file itself, with a severity not rated yet, blocks like any other."""
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    settings, version = champion
    model_path = f"{settings.model_name}/{version}/model.safetensors"
    sha256 = ArtifactoryHook().get_file_info(settings.artifactory_repo, model_path)["checksums"]["sha256"]
    jfrog_server.summary_polls_before_indexed = 2  # Xray is still indexing when the gate first asks
    jfrog_server.plant_vulnerabilities([{"sha256": sha256, "issue_id": "XRAY-990002", "severity": "Pending",
                                         "summary": "new pickle gadget", "cves": [{"cve": "CVE-2099-4343"}]}])
    run = _dag().test()
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["rescan_sbom"] == "failed" and states["record_finding"] == "success"
    props = ArtifactoryHook().get_item_properties(settings.artifactory_repo, model_path)
    assert props["security.blocking"] == ["CVE-2099-4343"]
    assert len(jfrog_server.requests_matching("POST", r"/summary/artifact$")) == 3


def test_allowlisted_cve_passes_the_rescan_policy():
    """The shipped policy file parses with the gate's own allowlist parser."""
    from jfrog_provider.policy import check_severity, parse_allowlist

    from include.security import load_xray_policy

    policy = load_xray_policy()
    check_severity(policy["severity_threshold"])
    entries = parse_allowlist(policy["allowlist"])
    assert entries and all(e.reason for e in entries)


GOOD_POLICY = {"schema": "mnist-mlops/xray-policy/1", "severity_threshold": "High",
               "fail_on_fail_build_violations": True, "allowlist": []}


@pytest.mark.parametrize(("change", "match"), [
    ({"severity_threshold": "Severe"}, r"severity_threshold must be one of"),
    ({"severity_threshold": "Pending"}, r"severity_threshold must be one of"),
    ({"fail_on_fail_build_violations": "yes"}, r"fail_on_fail_build_violations must be true or false"),
    ({"allowlist": [{"cve": "CVE-2024-1"}]}, r"allowlist\[0\] must have exactly the keys"),
    ({"schema": "other/1"}, r"schema must be"),
    ({"fail_on_fail_builds": True}, r"unknown \['fail_on_fail_builds'\]"),
])
def test_policy_file_errors_name_the_file_and_field(tmp_path, change, match):
    from include.security import load_xray_policy

    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps({**GOOD_POLICY, **change}))
    with pytest.raises(ValueError, match=match) as err:
        load_xray_policy(bad)
    assert str(bad) in str(err.value)
    bad.write_text(json.dumps(GOOD_POLICY))
    assert load_xray_policy(bad) == GOOD_POLICY


def test_the_rescan_gate_takes_every_setting_from_the_policy_file():
    from include.security import load_xray_policy

    policy, gate = load_xray_policy(), _dag().get_task("rescan_sbom")
    assert gate.deferrable is True and gate.allowlist == policy["allowlist"]
    assert gate.fail_on_fail_build_violations is policy["fail_on_fail_build_violations"]
    assert _dag().params["severity_threshold"] == policy["severity_threshold"]


def test_rescan_record_marks_only_unrecorded_findings_new():
    from include.security.findings import rescan_record

    verdict = {"scan_id": "s-1", "severity_threshold": "High", "blocking": [
        {"cves": ["CVE-2099-2", "CVE-2099-1"], "issue_id": "XRAY-1"}, {"cves": [], "issue_id": "XRAY-9"}]}
    record = rescan_record(verdict, ["CVE-2099-1", "CVE-2000-7"], model_name="m", version="3",
                           sbom_path="repo/m/3/sbom.cdx.json", day="2026-05-01")
    assert record["finding"]["blocking"] == ["CVE-2099-1", "CVE-2099-2", "XRAY-9"]
    assert record["finding"]["new"] == ["CVE-2099-2", "XRAY-9"] and record["finding"]["status"] == "blocked"
    assert record["properties"]["security.blocking"] == ["CVE-2000-7", "CVE-2099-1", "CVE-2099-2", "XRAY-9"]
    assert record["tags"]["security.blocking"] == "CVE-2000-7,CVE-2099-1,CVE-2099-2,XRAY-9"
    clean = rescan_record({**verdict, "blocking": []}, ["CVE-2000-7"], model_name="m", version="3",
                          sbom_path="p", day="2026-05-01")
    assert clean["finding"]["status"] == "clean" and "security.blocking" not in clean["properties"]
