"""The local stack as scripts/pipeline starts it, in a temporary MLOPS_HOME on free ports, for the browser test."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_env(home: Path, airflow_port: int, jfrog_port: int) -> dict[str, str]:
    """The environment scripts/pipeline runs the services with, by sourcing the same two files."""
    out = subprocess.run(
        ["bash", "-c", 'set -euo pipefail; source "$ROOT/scripts/env.sh"; source "$ROOT/scripts/local_env.sh" >/dev/null;'
                       " env -0"],
        env={**os.environ, "ROOT": str(REPO_ROOT), "MLOPS_HOME": str(home), "AIRFLOW_PORT": str(airflow_port),
             "JFROG_PORT": str(jfrog_port)},
        capture_output=True, check=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def http_status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0  # not listening (yet)


@dataclass
class LocalStack:
    """JFrog stand-in, MLflow UI, api-server, scheduler, dag-processor and triggerer as child process groups."""

    home: Path
    airflow_port: int = field(default_factory=free_port)
    jfrog_port: int = field(default_factory=free_port)
    mlflow_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)  # on top of scripts/local_env.sh's, for every service
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def jfrog_url(self) -> str:
        return f"http://127.0.0.1:{self.jfrog_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def jfrog_token(self) -> str:
        return (self.home / "jfrog" / "token").read_text().strip()

    @property
    def mlflow_password(self) -> str:
        return (self.home / "mlflow" / "ui_admin_password").read_text().strip()

    def password(self, user: str) -> str:
        return json.loads(Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())[user]

    def start(self, timeout: float = 240) -> LocalStack:
        self.env = {**local_env(self.home, self.airflow_port, self.jfrog_port),
                    "MLFLOW_PORT": str(self.mlflow_port), "MLOPS_MLFLOW_UI_URL": self.mlflow_url, **self.extra_env}
        (self.home / "mlflow").mkdir(parents=True, exist_ok=True)
        for name in ("ui_admin_password", "flask_secret"):
            path = self.home / "mlflow" / name
            if not path.exists():
                path.write_text(secrets.token_urlsafe(24))
                path.chmod(0o600)
        (self.home / "logs").mkdir(exist_ok=True)
        airflow = [sys.executable, "-m", "airflow"]
        subprocess.run([*airflow, "db", "migrate"], env=self.env, check=True, capture_output=True)
        self._spawn("jfrog", [sys.executable, "-m", "devtools.jfrog_compat.server", "--state-dir",
                              str(self.home / "jfrog" / "state"), "--port", str(self.jfrog_port)],
                    JFROG_COMPAT_TOKEN=self.jfrog_token)
        self._spawn("api-server", [*airflow, "api-server", "--port", str(self.airflow_port)])
        self._spawn("mlflow", ["bash", str(REPO_ROOT / "docker" / "mlflow-server.sh"), "--host", "127.0.0.1",
                               "--port", str(self.mlflow_port), "--workers", "1"],
                    MLFLOW_BACKEND_STORE_URI=f"sqlite:///{self.home}/mlflow/mlflow.db",
                    MLFLOW_AUTH_DATABASE_URI=f"sqlite:///{self.home}/mlflow/auth.db",
                    MLFLOW_AUTH_ADMIN_USERNAME="admin", MLFLOW_AUTH_ADMIN_PASSWORD=self.mlflow_password,
                    MLFLOW_FLASK_SERVER_SECRET_KEY=(self.home / "mlflow" / "flask_secret").read_text().strip())
        self._spawn("scheduler", [*airflow, "scheduler", "--skip-serve-logs"])
        self._spawn("dag-processor", [*airflow, "dag-processor"])
        self._spawn("triggerer", [*airflow, "triggerer", "--skip-serve-logs"])
        deadline = time.monotonic() + timeout
        for url in (f"{self.jfrog_url}/artifactory/api/system/ping", f"{self.airflow_url}/api/v2/monitor/health",
                    f"{self.mlflow_url}/health"):
            self._wait(lambda url=url: http_status(url) == 200, deadline, f"{url} did not answer 200")
        return self

    def token(self, user: str = "admin") -> str:
        """An API token, as the UI's login form gets one (SimpleAuthManager's POST /auth/token)."""
        body = json.dumps({"username": user, "password": self.password(user)}).encode()
        request = urllib.request.Request(f"{self.airflow_url}/auth/token", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["access_token"]

    def api(self, path: str, method: str = "GET", body: dict | None = None, token: str | None = None) -> dict:
        """Airflow's REST API as admin (a fresh token unless given); raises on an error status."""
        request = urllib.request.Request(
            f"{self.airflow_url}/api/v2/{path.lstrip('/')}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token or self.token()}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
        """Until the dag-processor has serialized these DAGs; a DAG import error fails at once."""
        deadline = time.monotonic() + timeout

        def parsed() -> bool:
            errors = self.api("importErrors")["import_errors"]
            if errors:
                raise AssertionError(f"DAG import errors: {errors}")
            return {d["dag_id"] for d in self.api("dags?limit=100")["dags"]} >= set(dag_ids)

        self._wait(parsed, deadline, f"DAGs {dag_ids} were not parsed")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """The run's final state (success or failed)."""
        deadline = time.monotonic() + timeout
        token = ""

        def finished() -> bool:
            nonlocal token
            try:
                token = token or self.token()  # one login for the whole wait, as the UI keeps its token
                return self.api(f"dags/{dag_id}/dagRuns/{run_id}", token=token)["state"] in ("success", "failed")
            except urllib.error.HTTPError:  # an error status is an answer
                raise
            except (TimeoutError, urllib.error.URLError) as exc:
                # On 2 cores a training task can keep the api-server from answering one poll within its timeout
                # (seen once in CI): ask again until the deadline.
                if not isinstance(getattr(exc, "reason", exc), TimeoutError):
                    raise
                return False

        self._wait(finished, deadline, f"{dag_id} run {run_id} did not finish")
        return self.api(f"dags/{dag_id}/dagRuns/{run_id}", token=token)["state"]

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return (self.home / "logs" / f"{name}.log").read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after 10 s."""
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _spawn(self, name: str, argv: list[str], **extra_env: str) -> None:
        log = (self.home / "logs" / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(argv, env={**self.env, **extra_env}, cwd=REPO_ROOT, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)

    def _wait(self, ready, deadline: float, message: str) -> None:
        while not ready():
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            if dead or time.monotonic() > deadline:
                name = next(iter(dead), "api-server")
                raise AssertionError(f"{message}; exited: {dead}; {name} log:\n{self.log_tail(name)}")
            time.sleep(1)

