"""Provider registration (ProvidersManager), the AirflowPlugin, and the extra links' URLs."""

from __future__ import annotations

import importlib
import json
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from jfrog_provider.get_provider_info import get_provider_info
from jfrog_provider.links import ARTIFACTORY_URL_KEY, XRAY_URL_KEY, ArtifactoryLink, XrayScanLink
from jfrog_provider.operators.artifactory import ArtifactoryUploadOperator
from jfrog_provider.operators.xray import XrayScanGateOperator
from jfrog_provider.sensors.xray import XrayScanSensor

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
    for cls in info["extra-links"] + [c["hook-class-name"] for c in info["connection-types"]]:
        assert import_string(cls)


def test_providers_manager_discovers_the_jfrog_connection_type():
    dist = installed_provider_dist()
    assert dist.metadata["Name"] == get_provider_info()["package-name"]
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert "mnist-mlops-airflow" in pm.providers, f"installed but not discovered; reinstall with `{INSTALL}`"
    hook = pm.hooks["jfrog"]
    assert hook is not None and hook.hook_class_name == "jfrog_provider.hooks.base.JFrogHook"
    assert hook.connection_id_attribute_name == "jfrog_conn_id" and hook.package_name == "mnist-mlops-airflow"
    behaviour = pm.field_behaviours["jfrog"]
    assert behaviour["relabeling"]["password"] == "Access token" and "port" in behaviour["hidden_fields"]
    assert {"extra__jfrog__timeout", "extra__jfrog__verify"} <= set(pm.connection_form_widgets)
    assert {"jfrog_provider.links.ArtifactoryLink", "jfrog_provider.links.XrayScanLink"} <= set(pm.extra_links_class_names)


def test_plugin_registers_the_links_for_the_operators():
    import jfrog_plugin
    from airflow import plugins_manager

    assert plugins_manager.is_valid_plugin(jfrog_plugin.JFrogPlugin)
    links = {type(link) for link in plugins_manager.get_operator_extra_links()}
    assert {ArtifactoryLink, XrayScanLink} <= links, "plugins/jfrog_plugin.py was not loaded from the plugins folder"
    assert ArtifactoryUploadOperator in ArtifactoryLink().operators
    assert {XrayScanGateOperator, XrayScanSensor} <= set(XrayScanLink().operators)
    assert [link.name for link in ArtifactoryUploadOperator.operator_extra_links] == ["Artifactory"]
    assert [link.name for link in XrayScanGateOperator.operator_extra_links] == ["Xray scan"]


class RecordingTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}
        self.dag_id, self.task_id, self.run_id, self.map_index = "d", "t", "r", -1

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


@pytest.fixture
def xcom_from(monkeypatch):
    """Serve XCom.get_value from what the operator pushed (the worker does this through the API server)."""
    from airflow.sdk.execution_time.xcom import XCom

    def use(ti: RecordingTI) -> None:
        monkeypatch.setattr(XCom, "get_value", classmethod(lambda cls, *, ti_key, key: ti.xcoms.get(key)))

    return use


def test_artifactory_link_resolves_to_the_uploaded_artifact(jfrog_conn, jfrog_server, tmp_path, xcom_from):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    op = ArtifactoryUploadOperator(task_id="t", local_path=str(model), repo="ml-models-local",
                                   target_path="mnist/3/model.pt")
    ti = RecordingTI()
    op.execute({"ti": ti})
    xcom_from(ti)
    [link] = op.operator_extra_links
    assert link.get_link(op, ti_key=ti) == (
        f"{jfrog_server.url}/ui/repos/tree/General/ml-models-local/mnist/3/model.pt")
    assert link.xcom_key == "_link_ArtifactoryLink"


def test_xray_link_resolves_to_the_scan_even_when_the_gate_fails(jfrog_conn, jfrog_server, xcom_from):
    jfrog_server.plant_vulnerabilities([{"component": "pypi://torch", "severity": "Critical",
                                         "cves": [{"cve": "CVE-2099-0001"}]}])
    op = XrayScanGateOperator(task_id="t", component_ids=["pypi://torch:2.14.1"], poll_interval=0.01)
    ti = RecordingTI()
    with pytest.raises(Exception, match="CVE-2099-0001"):
        op.execute({"ti": ti})
    xcom_from(ti)
    [link] = op.operator_extra_links
    [(_, path, _)] = jfrog_server.requests_matching("GET", r"/scan/graph/")[-1:]
    scan_id = path.rsplit("/", 1)[-1]
    assert link.get_link(op, ti_key=ti) == f"{jfrog_server.url}/ui/scans-list/graph/{scan_id}"


def test_links_are_empty_without_an_xcom(xcom_from):
    xcom_from(RecordingTI())
    assert ArtifactoryLink().get_link(None, ti_key=RecordingTI()) == ""  # type: ignore[arg-type]
    assert XrayScanLink().get_link(None, ti_key=RecordingTI()) == ""  # type: ignore[arg-type]
    assert (ARTIFACTORY_URL_KEY, XRAY_URL_KEY) == ("jfrog_artifactory_url", "jfrog_xray_scan_url")


def test_operators_serialize_with_their_links():
    import datetime as dt

    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("jfrog_links", start_date=dt.datetime(2026, 1, 1), schedule=None) as dag:
        ArtifactoryUploadOperator(task_id="up", local_path="/m.pt", repo="r", target_path="{{ run_id }}/m.pt")
        XrayScanGateOperator(task_id="gate", component_ids=["pypi://torch:2.14.1"], deferrable=True,
                             severity_threshold="{{ params.severity_threshold }}")
        XrayScanSensor(task_id="wait", scan_id="{{ ti.xcom_pull('gate') }}")
    tasks = {t.task_id: t for t in DagSerialization.from_dict(DagSerialization.to_dict(dag)).tasks}
    links = {tid: [(link.name, link.xcom_key) for link in t.operator_extra_links] for tid, t in tasks.items()}
    assert links == {"up": [("Artifactory", "_link_ArtifactoryLink")], "gate": [("Xray scan", "_link_XrayScanLink")],
                     "wait": [("Xray scan", "_link_XrayScanLink")]}

