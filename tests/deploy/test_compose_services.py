"""The compose services' own scripts, run for real without Docker: docker/postgres-init.sql on the local PostgreSQL,
docker/mlflow-server.sh starting `mlflow server --app-name basic-auth` on the databases it created, and
docker/mlflow_init.py giving the pipeline's account its grants, then the pipeline's MLflow calls as that account."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg2
import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_INIT = REPO_ROOT / "docker" / "postgres-init.sql"
MLFLOW_SERVER = REPO_ROOT / "docker" / "mlflow-server.sh"
MLFLOW_INIT = REPO_ROOT / "docker" / "mlflow_init.py"
# The superuser connection to the local server (the same default as scripts/celery_e2e.py).
PG_ADMIN = os.environ.get("COMPOSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
# What docker-compose.yaml's mlflow-init grants (tests/deploy/test_compose.py checks that list against the code).
EXPERIMENTS = ("mnist-training", "mnist-drift")
MODEL = "mnist-cnn"

# The MLflow calls the pipeline makes (include/mlops/registry.py, drift and evaluation tasks), as the account
# named in the environment, the way a worker signs in: MLFLOW_TRACKING_USERNAME/PASSWORD.
PIPELINE_CALLS = """
import sys, tempfile
from pathlib import Path
import mlflow, numpy, torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
uri = sys.argv[1]
mlflow.set_tracking_uri(uri); mlflow.set_registry_uri(uri)
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
experiment_id = client.get_experiment_by_name("mnist-training").experiment_id
assert client.search_runs([experiment_id], filter_string="tags.`mlops.run_key` = 'k'", max_results=2) == []
stale = client.create_run(experiment_id)
client.delete_run(stale.info.run_id)
state = Path(tempfile.mkdtemp()) / "model.pt"
state.write_bytes(b"weights")
with mlflow.start_run(experiment_id=experiment_id, tags={"mlops.run_key": "k"}) as run:
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param("epochs", "1")])
    client.log_batch(run_id, metrics=[Metric("test_accuracy", 0.9, 0, 0)])
    mlflow.log_input(mlflow.data.from_numpy(numpy.zeros((2, 2)), name="mnist-train", digest="d"), context="train")
    client.log_batch(run_id, tags=[RunTag("dataset.mnist-train.sha256", "d")])
    info = mlflow.pytorch.log_model(torch.nn.Linear(2, 1), name="model", input_example=numpy.zeros((2, 2),
                                    dtype=numpy.float32), pip_requirements=[])
    mlflow.log_artifact(str(state), artifact_path="state_dict")
version = mlflow.register_model(info.model_uri, "mnist-cnn", tags={"mlops.run_key": "k"}).version
client.set_registered_model_alias("mnist-cnn", "challenger", version)
client.set_tag(run_id, "registered_version", version)
assert [v.version for v in client.search_model_versions(f"run_id = '{run_id}'")] == [version]
client.set_model_version_tag("mnist-cnn", version, "gate.accuracy", "passed")
client.log_artifact(run_id, str(state), artifact_path="evidence")
client.set_registered_model_alias("mnist-cnn", "champion", version)
assert client.get_model_version_by_alias("mnist-cnn", "champion").version == version
client.delete_registered_model_alias("mnist-cnn", "champion")
assert mlflow.artifacts.download_artifacts(f"runs:/{run_id}/state_dict/model.pt")
drift = client.get_experiment_by_name("mnist-drift").experiment_id
batch = client.create_run(drift, run_name="batch", tags={"batch.sha256": "b"}).info.run_id
client.log_batch(batch, metrics=[Metric("drift_share", 0.1, 0, 0)], tags=[RunTag("verdict", "ok")])
client.log_artifact(batch, str(state), artifact_path="evidently")
client.set_terminated(batch)
print("pipeline calls ok")
"""


@dataclass(frozen=True)
class Roles:
    """The two roles and their passwords that docker/postgres-init.sql created for one test module."""

    airflow: str
    airflow_password: str
    mlflow: str
    mlflow_password: str

    def uri(self, user: str, password: str, database: str) -> str:
        """A SQLAlchemy URI as compose writes it, on the local server."""
        host = PG_ADMIN.split("@", 1)[1]
        return f"postgresql+psycopg2://{user}:{quote(password, safe='')}@{host}/{database}"


@dataclass(frozen=True)
class Server:
    """A running docker/mlflow-server.sh and what it was started with."""

    url: str
    proc: subprocess.Popen
    tmp: Path
    admin: tuple[str, str]
    secrets: dict[str, str]


def _psql_init(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run docker/postgres-init.sql as the image's entrypoint does: psql as the superuser, with ON_ERROR_STOP."""
    return subprocess.run(
        ["psql", f"{PG_ADMIN}/postgres", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q", "-f", str(POSTGRES_INIT)],
        env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60, check=False,
    )


@contextlib.contextmanager
def _superuser():
    """An autocommit cursor as the superuser (DROP DATABASE refuses to run in a transaction)."""
    connection = psycopg2.connect(f"{PG_ADMIN}/postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def _drop(*, databases: list[str], roles: list[str]) -> None:
    with _superuser() as cursor:
        for database in databases:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in roles:
            cursor.execute(f'DROP ROLE IF EXISTS "{role}"')


def _connect(roles: Roles, user: str, password: str, database: str):
    host_port = PG_ADMIN.split("@", 1)[1]
    host, _, port = host_port.partition(":")
    return psycopg2.connect(host=host, port=port or 5432, user=user, password=password, dbname=database)


@pytest.fixture(scope="module")
def roles():
    suffix = secrets.token_hex(4)
    # A '%' in MLflow's password: URL-encoded in the URIs, it must survive the auth config file (configparser).
    made = Roles(f"airflow_{suffix}", secrets.token_urlsafe(24), f"mlflow_{suffix}", secrets.token_urlsafe(18) + "%2F")
    proc = _psql_init({"AIRFLOW_DB_USER": made.airflow, "AIRFLOW_DB_PASSWORD": made.airflow_password,
                       "MLFLOW_DB_USER": made.mlflow, "MLFLOW_DB_PASSWORD": made.mlflow_password})
    try:
        assert proc.returncode == 0, proc.stderr
        yield made
    finally:
        _drop(databases=[made.airflow, made.mlflow, f"{made.mlflow}_auth"], roles=[made.airflow, made.mlflow])


def test_postgres_init_creates_two_unprivileged_roles(roles: Roles) -> None:
    with _superuser() as cursor:
        cursor.execute("SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, "
                       "rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid WHERE rolname IN (%s, %s)",
                       (roles.airflow, roles.mlflow))
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
        cursor.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname IN (%s, %s, %s)",
                       (roles.airflow, roles.mlflow, f"{roles.mlflow}_auth"))
        owners = dict(cursor.fetchall())
    assert rows == {roles.airflow: (False,) * 5 + (True,), roles.mlflow: (False,) * 5 + (True,)}
    assert owners == {roles.airflow: roles.airflow, roles.mlflow: roles.mlflow,
                      f"{roles.mlflow}_auth": roles.mlflow}


@pytest.mark.parametrize("who", ["airflow", "mlflow"])
def test_each_role_works_only_in_its_own_databases(roles: Roles, who: str) -> None:
    user, password = (roles.airflow, roles.airflow_password) if who == "airflow" else (roles.mlflow,
                                                                                       roles.mlflow_password)
    own = [roles.airflow] if who == "airflow" else [roles.mlflow, f"{roles.mlflow}_auth"]
    others = [roles.mlflow, f"{roles.mlflow}_auth"] if who == "airflow" else [roles.airflow]
    for database in own:
        connection = _connect(roles, user, password, database)
        try:
            with connection.cursor() as cursor:
                cursor.execute("CREATE TABLE migrated (id int)")  # what `airflow db migrate` and MLflow's need
                connection.commit()
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cursor.execute("CREATE ROLE intruder")
        finally:
            connection.close()
    for database in others:
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            _connect(roles, user, password, database)


def test_postgres_init_refuses_an_empty_password() -> None:
    suffix = secrets.token_hex(4)
    role = f"airflow_{suffix}"
    proc = _psql_init({"AIRFLOW_DB_USER": role, "AIRFLOW_DB_PASSWORD": "", "MLFLOW_DB_USER": f"mlflow_{suffix}",
                       "MLFLOW_DB_PASSWORD": secrets.token_urlsafe(24)})
    try:
        assert proc.returncode != 0
        assert "AIRFLOW_DB_PASSWORD is empty" in proc.stderr, proc.stderr
        with _superuser() as cursor:
            cursor.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,))
            assert cursor.fetchone() == (0,)
    finally:
        _drop(databases=[role, f"mlflow_{suffix}", f"mlflow_{suffix}_auth"], roles=[role, f"mlflow_{suffix}"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _base_env(home: Path) -> dict[str, str]:
    """A clean environment: PATH (the virtualenv first), PYTHONPATH if the caller has one, nothing else."""
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "HOME": str(home),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def test_mlflow_server_script_names_a_missing_setting(tmp_path: Path) -> None:
    proc = subprocess.run([str(MLFLOW_SERVER), "--port=1"], env=_base_env(tmp_path), capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode != 0
    assert "MLFLOW_BACKEND_STORE_URI" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def server(roles: Roles, tmp_path_factory):
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.fail("MLflow's basic-auth app needs Flask-WTF (mlflow[auth]); it is missing from requirements.txt, "
                    "so the compose mlflow service could not start either")
    tmp = tmp_path_factory.mktemp("mlflow-server")
    (tmp / "tmp").mkdir()
    port = _free_port()
    admin = ("admin", secrets.token_urlsafe(18))
    mlflow_password = roles.mlflow_password
    values = {
        "MLFLOW_BACKEND_STORE_URI": roles.uri(roles.mlflow, mlflow_password, roles.mlflow),
        "MLFLOW_AUTH_DATABASE_URI": roles.uri(roles.mlflow, mlflow_password, f"{roles.mlflow}_auth"),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    log = tmp / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(MLFLOW_SERVER), "--host=127.0.0.1", f"--port={port}", "--workers=1", "--serve-artifacts",
             f"--artifacts-destination={tmp / 'artifacts'}"],
            env={**_base_env(tmp), "TMPDIR": str(tmp / "tmp"), **values}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield Server(url, proc, tmp, admin, {"database password": mlflow_password,
                                            "database password, URL-encoded": quote(mlflow_password, safe=""),
                                            "admin password": admin[1],
                                            "flask secret": values["MLFLOW_FLASK_SERVER_SECRET_KEY"]})
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_mlflow_server_keeps_secrets_off_command_lines(server: Server) -> None:
    parent = psutil.Process(server.proc.pid)
    processes = [parent, *parent.children(recursive=True)]
    assert any("uvicorn" in " ".join(p.cmdline()) for p in processes), "no server worker found to inspect"
    for process in processes:
        cmdline = " ".join(process.cmdline())
        leaked = [name for name, value in server.secrets.items() if value in cmdline]
        assert not leaked, f"{leaked} on the command line of pid {process.pid}"
    mlflow_process = next(p for p in processes if "mlflow" in " ".join(p.cmdline()[:3]))
    assert "MLFLOW_AUTH_DATABASE_URI" not in mlflow_process.environ()
    config = Path(mlflow_process.environ()["MLFLOW_AUTH_CONFIG_PATH"])
    assert config.is_relative_to(server.tmp / "tmp"), config
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert "default_permission = NO_PERMISSIONS" in config.read_text()


def test_mlflow_refuses_anonymous_and_wrong_credentials(server: Server) -> None:
    search = f"{server.url}/api/2.0/mlflow/experiments/search"
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
    assert requests.get(search, params={"max_results": 10}, timeout=10).status_code == 401
    assert requests.get(search, params={"max_results": 10}, auth=(server.admin[0], "wrong-password-1"),
                        timeout=10).status_code == 401
    assert requests.get(search, params={"max_results": 10}, auth=server.admin, timeout=10).status_code == 200


def _run_init(server: Server, username: str, password: str) -> subprocess.CompletedProcess:
    env = {**_base_env(server.tmp), "MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": server.admin[0],
           "MLFLOW_TRACKING_PASSWORD": server.admin[1], "MLFLOW_PIPELINE_USERNAME": username,
           "MLFLOW_PIPELINE_PASSWORD": password, "MLFLOW_PIPELINE_EXPERIMENTS": ",".join(EXPERIMENTS),
           "MLFLOW_PIPELINE_REGISTERED_MODELS": MODEL}
    return subprocess.run([sys.executable, str(MLFLOW_INIT)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def pipeline(server: Server) -> tuple[str, str]:
    """The pipeline's account after two mlflow-init runs, the second rotating its password."""
    username, first, second = "airflow-pipeline", secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    for password in (first, second):
        proc = _run_init(server, username, password)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert password not in proc.stdout + proc.stderr
    probe = f"{server.url}/api/2.0/mlflow/experiments/get-by-name"
    assert requests.get(probe, params={"experiment_name": EXPERIMENTS[0]}, auth=(username, first),
                        timeout=10).status_code == 401, "the old password still works after rotation"
    return username, second


def _admin_call(server: Server, method: str, path: str, **kwargs) -> requests.Response:
    response = requests.request(method, f"{server.url}/api/{path}", auth=server.admin, timeout=30, **kwargs)
    assert response.ok, (path, response.status_code, response.text)
    return response


def test_init_grants_manage_on_the_pipelines_resources_and_no_admin(server: Server, pipeline) -> None:
    username, _ = pipeline
    user = _admin_call(server, "GET", "2.0/mlflow/users/get", params={"username": username}).json()["user"]
    assert user["is_admin"] is False
    for name in EXPERIMENTS:
        experiment_id = _admin_call(server, "GET", "2.0/mlflow/experiments/get-by-name",
                                    params={"experiment_name": name}).json()["experiment"]["experiment_id"]
        granted = _admin_call(server, "GET", "3.0/mlflow/users/permissions/get", params={
            "username": username, "resource_type": "experiment", "resource_id": experiment_id}).json()
        assert granted["permission"] == "MANAGE", (name, granted)
    granted = _admin_call(server, "GET", "3.0/mlflow/users/permissions/get", params={
        "username": username, "resource_type": "registered_model", "resource_id": MODEL}).json()
    assert granted["permission"] == "MANAGE", granted


def test_the_pipeline_account_makes_the_pipelines_calls(server: Server, pipeline) -> None:
    username, password = pipeline
    env = {**_base_env(server.tmp), "MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}
    proc = subprocess.run([sys.executable, "-c", PIPELINE_CALLS, server.url], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "pipeline calls ok" in proc.stdout, proc.stderr[-4000:]


def test_the_pipeline_account_is_refused_everything_else(server: Server, pipeline) -> None:
    other = _admin_call(server, "POST", "2.0/mlflow/experiments/create",
                        json={"name": f"other-team-{secrets.token_hex(3)}"}).json()["experiment_id"]
    other_model = f"other-model-{secrets.token_hex(3)}"
    _admin_call(server, "POST", "2.0/mlflow/registered-models/create", json={"name": other_model})
    refused = {
        "read another team's experiment": ("GET", "2.0/mlflow/experiments/get", {"params": {"experiment_id": other}}),
        "log a run there": ("POST", "2.0/mlflow/runs/create", {"json": {"experiment_id": other}}),
        "read another model": ("GET", "2.0/mlflow/registered-models/get", {"params": {"name": other_model}}),
        "move its alias": ("POST", "2.0/mlflow/registered-models/alias",
                           {"json": {"name": other_model, "alias": "champion", "version": "1"}}),
        "create a user": ("POST", "2.0/mlflow/users/create",
                          {"json": {"username": "intruder", "password": secrets.token_urlsafe(18)}}),
        "make itself admin": ("PATCH", "2.0/mlflow/users/update-admin",
                              {"json": {"username": pipeline[0], "is_admin": True}}),
        "grant itself more": ("POST", "3.0/mlflow/users/permissions/grant",
                              {"json": {"username": pipeline[0], "resource_type": "experiment",
                                        "resource_id": other, "permission": "MANAGE"}}),
    }
    answers = {what: requests.request(method, f"{server.url}/api/{path}", auth=pipeline, timeout=30,
                                      **kwargs).status_code
               for what, (method, path, kwargs) in refused.items()}
    assert answers == dict.fromkeys(refused, 403), answers
    listed = requests.get(f"{server.url}/api/2.0/mlflow/experiments/search", params={"max_results": 100},
                          auth=pipeline, timeout=30).json()["experiments"]
    assert {e["name"] for e in listed} == set(EXPERIMENTS)


def test_an_account_without_grants_sees_nothing(server: Server, pipeline) -> None:
    viewer = (f"viewer-{secrets.token_hex(3)}", secrets.token_urlsafe(18))
    _admin_call(server, "POST", "2.0/mlflow/users/create", json={"username": viewer[0], "password": viewer[1]})
    get = requests.get(f"{server.url}/api/2.0/mlflow/experiments/get-by-name",
                       params={"experiment_name": EXPERIMENTS[0]}, auth=viewer, timeout=30)
    alias = requests.post(f"{server.url}/api/2.0/mlflow/registered-models/alias", auth=viewer, timeout=30,
                          json={"name": MODEL, "alias": "champion", "version": "1"})
    assert (get.status_code, alias.status_code) == (403, 403)
    models = requests.get(f"{server.url}/api/2.0/mlflow/registered-models/search", auth=viewer, timeout=30)
    assert models.json().get("registered_models", []) == [], json.dumps(models.json())[:300]


def _init_module():
    spec = importlib.util.spec_from_file_location("mlflow_init", MLFLOW_INIT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_init_names_what_is_missing_or_wrong() -> None:
    settings = _init_module().InitSettings
    with pytest.raises(SystemExit, match="MLFLOW_PIPELINE_PASSWORD, MLFLOW_PIPELINE_EXPERIMENTS"):
        settings.from_env({"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_TRACKING_USERNAME": "admin",
                           "MLFLOW_TRACKING_PASSWORD": "x" * 12, "MLFLOW_PIPELINE_USERNAME": "pipeline",
                           "MLFLOW_PIPELINE_REGISTERED_MODELS": "mnist-cnn"})
    complete = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_TRACKING_USERNAME": "admin",
                "MLFLOW_TRACKING_PASSWORD": "x" * 12, "MLFLOW_PIPELINE_USERNAME": "admin",
                "MLFLOW_PIPELINE_PASSWORD": "y" * 12, "MLFLOW_PIPELINE_EXPERIMENTS": " a, b ,a",
                "MLFLOW_PIPELINE_REGISTERED_MODELS": "m"}
    with pytest.raises(SystemExit, match="must differ from the admin"):
        settings.from_env(complete)
    parsed = settings.from_env({**complete, "MLFLOW_PIPELINE_USERNAME": "pipeline"})
    assert parsed.experiments == ("a", "b") and parsed.registered_models == ("m",)
