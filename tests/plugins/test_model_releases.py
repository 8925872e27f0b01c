"""The Model releases view in the real Airflow API app: real MLflow store, local JFrog server, SimpleAuthManager."""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from pathlib import Path

import pytest

MODEL = "mnist-cnn"
REPO = "ml-models-local"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16  # the bytes are served as they are; no image decoder is involved


def _tag_version(client, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(MODEL, version, key, value)


@pytest.fixture
def registry(mlops_home: Path, jfrog_conn: str) -> dict[str, str]:
    """Two versions as the training DAG leaves them: v1 champion, v2 a challenger the champion gate blocked."""
    from jfrog_provider.hooks.artifactory import ArtifactoryHook
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{mlops_home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("mnist-training", (mlops_home / "mlflow" / "artifacts").as_uri())
    client.create_registered_model(MODEL)
    hook, now = ArtifactoryHook(), int(time.time() * 1000)
    runs = {
        "1": ({"test_accuracy": 0.9912}, {"champion.compared_version": "none", "gate.decision": "promote",
                                            "promoted": "true", "signature.status": "verified",
                                            "audit.champion_set": "2026-11-30 by <script>alert(1)</script>"},
              [{"name": "accuracy", "passed": True, "reason": "test accuracy 0.9912 meets min_accuracy 0.9850"},
               {"name": "champion", "passed": True, "reason": "no current champion: the candidate is the first"}]),
        "2": ({"test_accuracy": 0.9850, "test_accuracy_delta_vs_champion": -0.0062, "test_champion_accuracy": 0.9912},
              {"champion.compared_version": "1", "gate.decision": "blocked"},
              [{"name": "accuracy", "passed": True, "reason": "test accuracy 0.9850 meets min_accuracy 0.9850"},
               {"name": "champion", "passed": False, "reason": "candidate accuracy 0.9850 regresses beyond champion"}]),
    }
    for version, (metrics, tags, gates) in runs.items():
        run = client.create_run(experiment, tags={"airflow.run_id": f"manual__v{version}"}).info.run_id
        client.log_batch(run, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
        client.create_model_version(MODEL, f"runs:/{run}/model", run, tags={"airflow.run_id": f"manual__v{version}"})
        folder = f"{MODEL}/{version}"
        _tag_version(client, version, {**tags, "xray.scan_id": f"scan-{version}",
                                       "artifactory.path": f"{REPO}/{folder}/model.pt",
                                       "evidence.path": f"{REPO}/{folder}/evidence/"})
        files = {"sbom.cdx.json": {"bomFormat": "CycloneDX"}, "mlbom.cdx.json": {"bomFormat": "CycloneDX"},
                 "evidence/gate-decision.json": {"promote": tags["gate.decision"] == "promote", "gates": gates},
                 "evidence/xray-verdict.json": {"scan_id": f"scan-{version}", "passed": True, "blocking": [],
                                                "severity_threshold": "High",
                                                "counts": {"vulnerabilities": 3, "violations": 0}}}
        for name, body in files.items():
            local = mlops_home / "upload" / folder / name
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(json.dumps(body))
            hook.deploy_artifact(local, REPO, f"{folder}/{name}")
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return {"uri": uri}


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    """Local mode's users (scripts/local_env.sh): an admin and a viewer with generated passwords."""
    return {"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}


@pytest.fixture
def api(airflow_db, passwords, tmp_path, monkeypatch):
    """Airflow's own API app (plugins, auth manager, middlewares) with SimpleAuthManager login and roles."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    (tmp_path / "passwords.json").write_text(json.dumps(passwords))
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER",
                       "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "passwords.json"))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
    purge_cached_app()  # a fresh auth manager that reads the users above
    with TestClient(create_app()) as client:
        yield client
    purge_cached_app()


def _token(api, passwords, user: str) -> str:
    resp = api.post("/auth/token", json={"username": user, "password": passwords[user]})
    assert resp.status_code == 201, resp.text
    return resp.json()["access_token"]


def _row(html: str, version: str) -> str:
    match = re.search(rf'<tr id="v{version}">(.*?)</tr>', html, re.S)
    assert match, f"no row for version {version} in:\n{html}"
    return match.group(1)


def test_viewer_sees_both_versions_with_aliases_gates_and_links(api, passwords, registry, mlops_home):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    (mlops_home / "reports" / "drift").mkdir(parents=True)
    (mlops_home / "reports" / "drift" / "history.png").write_bytes(PNG)
    viewer = {"Authorization": f"Bearer {_token(api, passwords, 'viewer')}"}
    resp = api.get("/model-releases/", headers=viewer)
    assert resp.status_code == 200, resp.text
    assert "script-src" not in resp.headers["content-security-policy"]  # default-src 'none': no script runs
    html, hook = resp.text, ArtifactoryHook()

    champion, challenger = _row(html, "1"), _row(html, "2")
    assert 'class="label champion">champion<' in champion and "challenger" not in champion
    assert "0.9912" in champion and "no champion to compare" in champion
    assert ">promote<" in champion and "accuracy: pass" in champion and "champion: pass" in champion
    assert "passed at High: 3 vulnerabilities, 0 violations, 0 blocking (scan scan-1)" in champion
    assert "status: verified" in champion
    for label, path in (("SBOM", f"{MODEL}/1/sbom.cdx.json"), ("ML-BOM", f"{MODEL}/1/mlbom.cdx.json"),
                        ("Evidence", f"{MODEL}/1/evidence/")):
        assert f'<a href="{hook.ui_url(REPO, path)}" title="{REPO}/{path}">{label}</a>' in champion

    assert 'class="label challenger">challenger<' in challenger and "champion<" not in challenger.split("</td>")[1]
    assert "0.9850" in challenger and "-0.0062 vs v1" in challenger
    assert ">blocked<" in challenger and "champion: block" in challenger and "accuracy: pass" in challenger
    assert '<span class="muted">candidate accuracy 0.9850 regresses beyond champion</span>' in challenger
    assert "not signed" in challenger

    # The audit trail shows the audit.* tags, escaped like every value from MLflow.
    assert "champion_set" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert '<img src="drift-history.png"' in html
    plot = api.get("/model-releases/drift-history.png", headers=viewer)
    assert plot.status_code == 200 and plot.content == PNG and plot.headers["content-type"] == "image/png"


def test_the_ui_frame_reads_the_page_with_the_login_cookie(api, passwords, registry):
    api.cookies.set("_token", _token(api, passwords, "viewer"))
    resp = api.get("/model-releases/")
    assert resp.status_code == 200 and 'id="v1"' in resp.text


def test_anonymous_and_forged_requests_are_refused(api, registry, mlops_home):
    (mlops_home / "reports" / "drift").mkdir(parents=True)
    (mlops_home / "reports" / "drift" / "history.png").write_bytes(PNG)
    for path in ("/model-releases/", "/model-releases/drift-history.png"):
        assert api.get(path).status_code == 401
        assert api.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403
    # FastAPI's own docs would answer outside the app's dependencies: they are off, not public.
    assert [api.get(f"/model-releases/{doc}").status_code for doc in ("docs", "openapi.json")] == [404, 404]


def test_plugin_registers_the_nav_view_and_the_app(api, passwords):
    admin = {"Authorization": f"Bearer {_token(api, passwords, 'admin')}"}
    plugins = api.get("/api/v2/plugins", headers=admin).json()["plugins"]
    plugin = next(p for p in plugins if p["name"] == "model_releases")
    assert plugin["external_views"] == [{"name": "Model releases", "href": "model-releases/",
                                         "url_route": "model-releases", "destination": "nav",
                                         "nav_top_level": True, "icon": None, "icon_dark_mode": None,
                                         "category": None}]
    assert [(a["url_prefix"], a["name"]) for a in plugin["fastapi_apps"]] == [("/model-releases", "Model releases")]
    errors = api.get("/api/v2/plugins/importErrors", headers=admin).json()["import_errors"]
    assert not [e for e in errors if "model_releases" in e["source"]], errors
    # The package's .airflowignore keeps Airflow from importing its files as top-level modules (`web`, ...).
    package = str(Path(__file__).parents[2] / "plugins" / "model_releases") + "/"
    loaded = {name for name, module in sys.modules.items() if str(getattr(module, "__file__", "")).startswith(package)}
    assert loaded <= {"model_releases", "model_releases.web", "model_releases.releases"}, loaded


def test_demoted_version_and_an_unreachable_artifactory(api, passwords, registry, jfrog_server):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry["uri"], registry_uri=registry["uri"])
    # What mnist_security_rescan's decide_demotion leaves: champion alias gone, promoted=false, the reason.
    client.delete_registered_model_alias(MODEL, "champion")
    _tag_version(client, "1", {"promoted": "false", "security.demotion": "demoted: CVE-2026-0001 (Critical)",
                               "security.rescan.status": "blocked", "security.rescan.date": "2026-11-30",
                               "security.blocking": "CVE-2026-0001"})
    jfrog_server.stop()
    resp = api.get("/model-releases/", headers={"Authorization": f"Bearer {_token(api, passwords, 'viewer')}"})
    assert resp.status_code == 200, resp.text
    row = _row(resp.text, "1")
    assert 'class="label demoted">demoted<' in row and "demoted: CVE-2026-0001 (Critical)" in row
    assert "re-scan 2026-11-30: blocked (CVE-2026-0001)" in row
    assert "Artifactory: " in row and "0.9912" in row  # MLflow's half still shows
