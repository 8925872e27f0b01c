"""A champion demoted by the security re-scan never returns: not by clearing set_champion or retrying its whole run.

Real dag.test() runs of mnist_training and mnist_security_rescan against MLflow and the local JFrog server; the
audit trail records each step with who, why and the evidence digest.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from support.dag_runs import rerun, signing_connection, states

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = {"max_train_samples": 512, "max_test_samples": 256, "epochs": 1, "min_accuracy": 0.1, "max_regression": 1.0}
CRITICAL_TORCH = {
    "component": "pypi://torch", "issue_id": "XRAY-990001", "severity": "Critical",
    "summary": "planted by the registry integrity test", "cves": [{"cve": "CVE-2099-4242", "cvss_v3_score": "9.8"}],
}


def _dag(file_name: str, dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / file_name))
    assert bag.import_errors == {}
    dag = bag.dags[dag_id]
    for task in dag.tasks:
        task.retries = 0  # each refusal must show as a failed task, not be retried away
    return dag


def _champion() -> str | None:
    from include.mlops import registry
    from include.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    current = registry.champion(settings.mlflow_tracking_uri, settings.model_name)
    return current[0] if current else None


@pytest.mark.e2e
def test_a_demoted_champion_never_becomes_champion_again(airflow_db, mlops_home, jfrog_server, jfrog_conn,
                                                         monkeypatch):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    from include.mlops import audit, registry
    from include.settings import PipelineSettings

    signing_connection(monkeypatch)
    settings = PipelineSettings.from_env()
    training = _dag("mnist_training.py", "mnist_training")
    training.get_task("scan_model").poll_interval = 0.2
    first = training.test(run_conf=TINY)
    assert first.state == "success", states(first)
    version = _champion()
    assert version is not None

    jfrog_server.plant_vulnerabilities([CRITICAL_TORCH])
    rescan = _dag("mnist_security_rescan.py", "mnist_security_rescan").test(run_conf={"demote_on_finding": True})
    assert rescan.state == "failed" and _champion() is None
    jfrog_server.plant_vulnerabilities([])  # Xray is clean again: only the registry guard stands in the way

    cleared = rerun(training, first.run_id, only_failed=False, task_ids=["set_champion"])
    assert states(cleared)["set_champion"] == "failed" and _champion() is None

    retried = rerun(training, first.run_id, only_failed=False)
    assert states(retried)["promote_model"] == "failed" and _champion() is None
    key = f"mnist_training/{first.run_id}"
    assert str(registry.find_version(settings.mlflow_tracking_uri, settings.model_name, key).version) == version

    # A new run registers a new version, which may become champion; the demoted one stays out.
    fresh = training.test(run_conf={**TINY, "seed": 7})
    assert fresh.state == "success", states(fresh)
    assert _champion() not in (None, version)
    tags = registry.version_tags(settings.mlflow_tracking_uri, settings.model_name, version)
    assert tags["gate.decision"] == "blocked" and tags["promoted"] == "false"

    trail = audit.history(settings.mlflow_tracking_uri, settings.model_name, version)
    events = [(e["event"], e["outcome"], e["by"], e["dag_id"]) for e in trail]
    assert events == [
        ("challenger.set", "challenger", "dag_test", "mnist_training"),
        ("gate.decision", "promote", "dag_test", "mnist_training"),
        ("champion.set", "champion", "dag_test", "mnist_training"),
        ("champion.demoted", "demoted", "dag_test", "mnist_security_rescan"),
        ("champion.refused", "refused", "dag_test", "mnist_training"),
        ("gate.decision", "blocked", "dag_test", "mnist_training"),
    ], events
    refused, blocked = trail[4], trail[5]
    assert "it was demoted" in refused["reason"] and "it was demoted" in blocked["reason"]
    assert "CVE-2099-4242" in trail[3]["reason"] and trail[3]["evidence_sha256"]
    assert trail[2]["evidence_sha256"] == trail[1]["evidence_sha256"] and len(trail[1]["evidence_sha256"]) == 64
    assert all(e["task_id"] and e["run_id"] and e["at"] for e in trail)

    # Each event also lies in Artifactory as its own file next to the evidence pack, with the same content.
    folder = {"repo": settings.artifactory_repo, "path": audit.audit_folder(settings.model_name, version)}
    names = sorted(row["name"] for row in ArtifactoryHook().search_aql(f'items.find({json.dumps(folder)}).include("name")'))
    assert names == sorted(audit.artifactory_name(e["tag"], e["event"]) for e in trail)
    stored = mlops_home / "audit-check.json"
    ArtifactoryHook().download_artifact(settings.artifactory_repo,
                                        f"{audit.audit_folder(settings.model_name, version)}/{names[0]}", stored)
    assert json.loads(stored.read_text()) == {k: v for k, v in trail[0].items() if k != "tag"}


def test_only_set_champion_moves_the_champion_alias():
    """In the DAGs and include/, `champion` moves only through registry.promote, called only by commit_champion."""
    callers: dict[str, list[str]] = {}
    for path in [*(REPO_ROOT / "dags").glob("*.py"), *(REPO_ROOT / "include").rglob("*.py"),
                 *(REPO_ROOT / "plugins").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
                target = call.func
                name = getattr(target, "attr", getattr(target, "id", ""))
                is_registry_promote = name == "promote" and getattr(getattr(target, "value", None), "id", "") == "registry"
                if is_registry_promote or name == "set_registered_model_alias":
                    callers.setdefault(name, []).append(f"{path.relative_to(REPO_ROOT)}:{func.name}")
    assert callers["promote"] == ["include/mlops/promotion.py:commit_champion"]
    # The registry sets `champion` in promote only (and `challenger` at registration).
    assert sorted(callers["set_registered_model_alias"]) == [
        "include/mlops/registry.py:_finish_registration", "include/mlops/registry.py:promote"]
