"""Extra links end to end: the stand-in's pages for the JFrog UI paths, and the MLflow/Evidently links of `@task`s."""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.error
import urllib.request

import pytest
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.links import xray_scan_url
from mlops_links import (
    DriftReportLink,
    MlflowModelVersionLink,
    MlflowRunLink,
    mlflow_model_version_url,
    mlflow_run_url,
    push_link,
    with_links,
)


def _get(url: str, token: str | None) -> tuple[int, str, dict]:
    headers = {"Authorization": "Basic " + base64.b64encode(f"someone:{token}".encode()).decode()} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


# -- the local server's UI pages ----------------------------------------------------------------------


def test_artifact_and_folder_pages_show_the_stored_item(jfrog_server, jfrog_conn, tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    hook = ArtifactoryHook()
    deployed = hook.deploy_artifact(model, "ml-models-local", "mnist-cnn/3/model.safetensors",
                                    properties={"model.version": "3"})
    status, page, headers = _get(hook.ui_url("ml-models-local", "mnist-cnn/3/model.safetensors"), jfrog_server.token)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src" not in headers["Content-Security-Policy"] and "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<h1>ml-models-local/mnist-cnn/3/model.safetensors</h1>" in page
    assert deployed.sha256 in page and "<th>model.version</th><td>3</td>" in page
    assert f"{jfrog_server.url}/artifactory/ml-models-local/mnist-cnn/3/model.safetensors" in page  # download
    status, folder, _ = _get(hook.ui_url("ml-models-local", "mnist-cnn"), jfrog_server.token)
    assert status == 200 and "href='/ui/repos/tree/General/ml-models-local/mnist-cnn/3'>3/</a>" in folder


def test_ui_pages_need_the_api_credentials_and_escape_what_they_show(jfrog_server, jfrog_conn, tmp_path):
    hook = ArtifactoryHook()
    status, _, headers = _get(hook.ui_url("ml-models-local", "x"), None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")  # the browser's login prompt
    assert _get(hook.ui_url("ml-models-local", "x"), "wrong-token")[0] == 401
    evil = tmp_path / "evil.txt"
    evil.write_text("x")
    hook.deploy_artifact(evil, "ml-models-local", "a/b.txt", properties={"note": "<script>alert(1)</script>"})
    status, page, _ = _get(hook.ui_url("ml-models-local", "a/b.txt"), jfrog_server.token)
    assert status == 200 and "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert _get(hook.ui_url("ml-models-local", "no/such/file"), jfrog_server.token)[0] == 404
    assert _get(hook.ui_url("no-such-repo", "file"), jfrog_server.token)[0] == 404
    assert _get(f"{jfrog_server.url}/ui/packages", jfrog_server.token)[0] == 404


def test_scan_page_lists_the_findings_of_that_scan(jfrog_server):
    jfrog_server.plant_vulnerabilities([{"component": "pypi://torch", "severity": "Critical", "summary": "bad torch",
                                         "cves": [{"cve": "CVE-2099-0001"}]}])
    graph = {"component_id": "mnist-cnn:1", "nodes": [{"component_id": "pypi://torch:2.14.1"}]}
    request = urllib.request.Request(f"{jfrog_server.url}/xray/api/v1/scan/graph", method="POST",
                                     data=json.dumps(graph).encode(),
                                     headers={"Authorization": f"Bearer {jfrog_server.token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        scan_id = json.loads(response.read())["scan_id"]
    status, page, _ = _get(xray_scan_url(jfrog_server.url, scan_id), jfrog_server.token)
    assert status == 200 and f"Xray scan {scan_id}" in page
    assert "CVE-2099-0001" in page and "Critical" in page and "pypi://torch:2.14.1" in page
    assert _get(xray_scan_url(jfrog_server.url, "no-such-scan"), jfrog_server.token)[0] == 404


# -- links of Python tasks (plugins/mlops_links.py), resolved the way the api-server resolves them -------


def test_mlflow_ui_urls():
    ui = "http://127.0.0.1:5000/"
    assert mlflow_run_url(ui, "abc") == "http://127.0.0.1:5000/#/runs/abc"
    assert mlflow_run_url(ui, "abc", "7", "evidently/drift report.html") == (
        "http://127.0.0.1:5000/#/experiments/7/runs/abc/artifactPath/evidently/drift%20report.html")
    assert mlflow_model_version_url(ui, "mnist cnn", "3") == "http://127.0.0.1:5000/#/models/mnist%20cnn/versions/3"
    assert mlflow_run_url("", "abc") == "" and mlflow_model_version_url("", "m", "1") == ""  # no UI: no link


@pytest.mark.e2e
def test_task_links_resolve_for_plain_and_mapped_tasks(dag_test, extra_links):
    from airflow.sdk import DAG, task

    ui = "http://mlflow.example"
    with DAG("mlops_links", start_date=dt.datetime(2026, 1, 1), schedule=None) as dag:
        @task
        def register() -> None:
            push_link(MlflowRunLink, mlflow_run_url(ui, "run-1", "4"))
            push_link(MlflowModelVersionLink, mlflow_model_version_url(ui, "mnist-cnn", "1"))

        @task
        def measure(batch: str) -> None:
            push_link(DriftReportLink, mlflow_run_url(ui, f"run-{batch}", "5", "evidently/drift_report.html"))

        @task
        def no_ui() -> None:
            push_link(MlflowRunLink, mlflow_run_url("", "run-1"))

        with_links(register(), MlflowRunLink(), MlflowModelVersionLink())
        with_links(measure.expand(batch=["a", "b"]), DriftReportLink())
        with_links(no_ui(), MlflowRunLink())
    run = dag_test(dag)
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {
        "register": "success", "measure": "success", "no_ui": "success"}
    assert extra_links(dag.dag_id, run.run_id, "register") == {
        "MLflow run": f"{ui}/#/experiments/4/runs/run-1", "MLflow model version": f"{ui}/#/models/mnist-cnn/versions/1"}
    from airflow.api_fastapi.core_api.routes.public.extra_links import get_extra_links
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        mapped = [get_extra_links(dag.dag_id, run.run_id, "measure", session=session, dag_bag=DBDagBag(),
                                  map_index=i).extra_links for i in (0, 1)]
    assert mapped == [{"Evidently drift report": f"{ui}/#/experiments/5/runs/run-{b}/artifactPath/evidently/drift_report.html"}
                      for b in "ab"]
    assert extra_links(dag.dag_id, run.run_id, "no_ui") == {"MLflow run": None}  # no button without a URL
