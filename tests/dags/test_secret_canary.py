"""A canary JFrog token, echoed back by the stand-in in every answer, is found nowhere after a training run.

The training DAG runs with dag.test() against the local JFrog-compatible server in its echo_credentials mode:
every error message and JSON answer (downloadUri included) reflects the request with its Authorization
header. Afterwards the task logs, the XCom table, the MLflow store (params, tags, artifacts), the stand-in's
state directory and every file under MLOPS_HOME and AIRFLOW_HOME are swept for every form of the canary
(token, Bearer, Basic base64 of login:token, URL-encoded): 0 hits, with Bearer and with Basic auth.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_RUN = {"max_train_samples": 4000, "max_test_samples": 1000, "min_accuracy": 0.5, "epochs": 2}
LOGIN = "svc-airflow"


def canary_forms(token: str, login: str | None) -> list[bytes]:
    """Every form of the canary to look for, as bytes."""
    plain = [token]
    if login:
        basic = base64.b64encode(f"{login}:{token}".encode()).decode()
        plain += [basic, basic.rstrip("="), base64.urlsafe_b64encode(f"{login}:{token}".encode()).decode()]
    forms = {*plain, *(quote(f, safe="") for f in plain), *(quote_plus(f) for f in plain)}
    return sorted({f.encode() for f in forms}, key=len, reverse=True)


def hits_in(data: bytes, forms: list[bytes]) -> int:
    return sum(data.count(f) for f in forms)


def sweep_files(root: Path, forms: list[bytes]) -> dict[str, int]:
    """{file: hits} for every file under root that holds a form."""
    found: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            if n := hits_in(path.read_bytes(), forms):
                found[str(path)] = n
    return found


def _xcom_rows(dag_id: str, run_id: str) -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(XComModel.task_id, XComModel.key, XComModel.value)
                               .where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)).all()
    return [json.dumps([task_id, key, value], default=str) for task_id, key, value in rows]


def _mlflow_texts(tracking_uri: str, download_dir: Path) -> tuple[int, list[str]]:
    """(runs read, every param, tag and artifact file of every run as text)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    texts: list[str] = []
    runs = [r for e in client.search_experiments(view_type=ViewType.ALL)
            for r in client.search_runs([e.experiment_id], run_view_type=ViewType.ALL)]
    for run in runs:
        texts += [json.dumps(run.data.params), json.dumps(run.data.tags)]
        local = Path(client.download_artifacts(run.info.run_id, "", str(download_dir / run.info.run_id)))
        texts += [p.read_bytes().decode("latin-1") for p in local.rglob("*") if p.is_file()]
    for model in client.search_registered_models():
        texts.append(json.dumps({"tags": model.tags, "aliases": model.aliases}, default=str))
        for version in client.search_model_versions(f"name = '{model.name}'"):
            texts.append(json.dumps({"tags": version.tags, "source": version.source}, default=str))
    return len(runs), texts


@pytest.mark.e2e
@pytest.mark.parametrize("login", [None, LOGIN], ids=["bearer", "basic"])
def test_canary_token_leaves_no_trace(airflow_db, mlops_home, tmp_path, monkeypatch, capfd, caplog, login):
    from airflow.dag_processing.dagbag import DagBag

    from devtools.jfrog_compat.server import JFrogCompatServer
    from include.settings import PipelineSettings

    token = f"canary-{secrets.token_urlsafe(24)}+/="
    forms = canary_forms(token, login)
    state = tmp_path / "jfrog-state"
    with JFrogCompatServer(state, token=token, echo_credentials=True) as server:
        monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps(
            {"conn_type": "jfrog", "host": server.url, "login": login, "password": token}))
        dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"]
        run = dag.test(run_conf=QUICK_RUN)
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert states["publish_model"] == "success", states

    captured = capfd.readouterr()
    xcoms = _xcom_rows(run.dag_id, run.run_id)
    published = next(x for x in xcoms if x.startswith('["publish_model", "return_value"'))
    # the stand-in did echo the request into downloadUri, and the hook redacted it on the way to XCom
    assert "echo=" in published and "***" in published
    runs, mlflow_texts = _mlflow_texts(PipelineSettings.from_env().mlflow_tracking_uri, tmp_path / "mlflow-dl")
    assert runs >= 1
    found = {
        "task logs (stdout/stderr)": hits_in((captured.out + captured.err).encode(), forms),
        "log records": hits_in(caplog.text.encode(), forms),
        "XCom table": sum(hits_in(x.encode(), forms) for x in xcoms),
        "MLflow params, tags, artifacts": sum(hits_in(t.encode("utf-8", "replace"), forms) for t in mlflow_texts),
        **{f"file {k}": v for k, v in sweep_files(state, forms).items()},
        **{f"file {k}": v for k, v in sweep_files(mlops_home, forms).items()},
        **{f"file {k}": v for k, v in sweep_files(Path(os.environ["AIRFLOW_HOME"]), forms).items()},
    }
    total = sum(found.values())
    with capfd.disabled():
        print(f"\ncanary ({'basic' if login else 'bearer'}, {len(forms)} forms), run {run.state}: {len(xcoms)} XComs, "
              f"{runs} MLflow runs, {sum(1 for _ in state.rglob('*'))} stand-in files swept: {total} hits")
    assert total == 0, {k: v for k, v in found.items() if v}
