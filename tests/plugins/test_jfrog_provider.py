"""Provider registration (ProvidersManager): one connection form, one link registration, links resolved for real."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from jfrog_provider.get_provider_info import get_provider_info
from jfrog_provider.hooks.base import JFrogHook
from jfrog_provider.links import ArtifactoryLink, XrayScanLink
from jfrog_provider.operators.artifactory import ArtifactoryUploadOperator
from jfrog_provider.operators.xray import XrayScanGateOperator

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL = ".venv/bin/pip install -e . --no-deps --no-build-isolation"


def installed_provider_dist() -> metadata.Distribution:
    """The installed distribution that advertises our provider entry point; a clear failure if none."""
    for ep in metadata.entry_points(group="apache_airflow_provider"):
        if ep.value == "jfrog_provider.get_provider_info:get_provider_info":
            return ep.dist
    pytest.fail(f"the JFrog provider is not installed, so Airflow cannot discover it; run `{INSTALL}` "
                f"in {REPO_ROOT}")


def test_provider_info_matches_the_runtime_schema_and_the_package():
    import jsonschema
    from airflow import providers_manager

    schema = json.loads((Path(providers_manager.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    # ProvidersManager rejects a provider whose package-name differs from its distribution's name
    assert info["package-name"] == project["name"]
    entry = project["entry-points"]["apache_airflow_provider"]["provider_info"]
    assert entry == "jfrog_provider.get_provider_info:get_provider_info"
    from airflow.sdk.module_loading import import_string

    for section in ("hooks", "operators", "sensors", "triggers"):
        for module in info[section][0]["python-modules"]:
            importlib.import_module(module)
    assert all(import_string(c["hook-class-name"]) for c in info["connection-types"])


def test_the_connection_form_is_declared_once_and_matches_the_hook_defaults():
    [conn] = get_provider_info()["connection-types"]
    # the hook no longer carries a second, drifting copy (Airflow >= 3.2 reads the provider info)
    assert "get_ui_field_behaviour" not in JFrogHook.__dict__
    assert "get_connection_form_widgets" not in JFrogHook.__dict__
    fields = conn["conn-fields"]
    defaults = {name: f["schema"].get("default") for name, f in fields.items() if "default" in f["schema"]}
    assert defaults == {"timeout": JFrogHook.DEFAULT_TIMEOUT, "verify": True,
                        "max_retries": JFrogHook.DEFAULT_MAX_RETRIES,
                        "max_total_wait": JFrogHook.DEFAULT_MAX_TOTAL_WAIT}


def test_every_form_field_is_read_by_the_hook(monkeypatch):
    extra = {"timeout": 7, "verify": False, "max_retries": 1, "max_total_wait": 9,
             "artifactory_url": "http://art.example/artifactory", "xray_url": "http://xray.example/xray"}
    assert set(extra) == set(get_provider_info()["connection-types"][0]["conn-fields"])
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps(
        {"conn_type": "jfrog", "host": "http://h.example", "password": "tok12345", "extra": extra}))
    cfg = JFrogHook().config
    assert (cfg.timeout, cfg.verify, cfg.max_retries, cfg.max_total_wait, cfg.artifactory_url, cfg.xray_url) == (
        7.0, False, 1, 9.0, "http://art.example/artifactory", "http://xray.example/xray")


def test_providers_manager_discovers_the_jfrog_connection_type():
    dist = installed_provider_dist()
    assert dist.metadata["Name"] == get_provider_info()["package-name"]
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert "mnist-mlops-airflow" in pm.providers, f"installed but not discovered; reinstall with `{INSTALL}`"
    # The Providers page's link: a page that exists (JFrog's REST documentation), not a guessed Airflow docs URL.
    assert pm.providers["mnist-mlops-airflow"].data["documentation-url"] == "https://jfrog.com/help/r/jfrog-rest-apis"
    hook = pm.hooks["jfrog"]
    assert hook is not None and hook.hook_class_name == "jfrog_provider.hooks.base.JFrogHook"
    assert hook.connection_id_attribute_name == "jfrog_conn_id" and hook.package_name == "mnist-mlops-airflow"
    behaviour = pm.field_behaviours["jfrog"]
    assert behaviour["relabeling"]["password"] == "Access token" and "port" in behaviour["hidden_fields"]
    widgets = {f"extra__jfrog__{name}" for name in get_provider_info()["connection-types"][0]["conn-fields"]}
    assert widgets <= set(pm.connection_form_widgets)


def test_links_are_registered_by_the_operators_only():
    from airflow import plugins_manager

    assert not any(isinstance(link, ArtifactoryLink | XrayScanLink)
                   for link in plugins_manager.get_operator_extra_links())
    assert "extra-links" not in get_provider_info()
    assert [link.name for link in ArtifactoryUploadOperator.operator_extra_links] == ["Artifactory"]
    assert [link.name for link in XrayScanGateOperator.operator_extra_links] == ["Xray scan"]


# -- links after a real run, resolved the way the API server resolves them ----------------------------


@pytest.mark.e2e
def test_links_resolve_from_the_xcom_table_after_real_runs(dag_test, jfrog_conn, jfrog_server, tmp_path,
                                                          extra_links):
    from airflow.sdk import DAG

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    jfrog_server.plant_vulnerabilities([{"component": "pypi://torch", "severity": "Critical",
                                         "cves": [{"cve": "CVE-2099-0001"}]}])
    with DAG("jfrog_links", start_date=dt.datetime(2026, 1, 1), schedule=None) as dag:
        upload = ArtifactoryUploadOperator(task_id="upload", local_path=str(model), repo="ml-models-local",
                                           target_path="mnist/links/model.pt")
        XrayScanGateOperator(task_id="gate", component_ids=["pypi://torch:2.14.1"], poll_interval=0.01,
                             deferrable=False)
        upload >> dag.get_task("gate")
    run = dag_test(dag)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"upload": "success", "gate": "failed"}  # the gate blocks on the planted CVE
    assert extra_links(dag.dag_id, run.run_id, "upload") == {
        "Artifactory": f"{jfrog_server.url}/ui/repos/tree/General/ml-models-local/mnist/links/model.pt"}
    [(_, path, _)] = jfrog_server.requests_matching("GET", r"/scan/graph/")[-1:]
    scan_id = path.rsplit("/", 1)[-1]
    # a failed gate still shows the scan that failed it
    assert extra_links(dag.dag_id, run.run_id, "gate") == {
        "Xray scan": f"{jfrog_server.url}/ui/scans-list/graph/{scan_id}"}


def test_operators_serialize_with_their_links():
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("jfrog_links", start_date=dt.datetime(2026, 1, 1), schedule=None) as dag:
        ArtifactoryUploadOperator(task_id="up", local_path="/m.pt", repo="r", target_path="{{ run_id }}/m.pt")
        XrayScanGateOperator(task_id="gate", component_ids=["pypi://torch:2.14.1"], deferrable=True,
                             severity_threshold="{{ params.severity_threshold }}")
    tasks = {t.task_id: t for t in DagSerialization.from_dict(DagSerialization.to_dict(dag)).tasks}
    links = {tid: [(link.name, link.xcom_key) for link in t.operator_extra_links] for tid, t in tasks.items()}
    assert links == {"up": [("Artifactory", "_link_ArtifactoryLink")], "gate": [("Xray scan", "_link_XrayScanLink")]}
