"""Local mode (scripts/local_env.sh) as scripts/pipeline starts it: loopback only, a login, roles, owner-only secrets."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local_env(home: Path, port: int) -> dict[str, str]:
    """The environment scripts/pipeline runs Airflow with, by sourcing the same file."""
    out = subprocess.run(
        ["bash", "-c", 'set -euo pipefail; source "$ROOT/scripts/local_env.sh" >/dev/null; env -0'],
        env={**os.environ, "ROOT": str(REPO_ROOT), "MLOPS_HOME": str(home), "AIRFLOW_PORT": str(port),
             "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        capture_output=True, check=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def _call(url: str, method: str = "GET", token: str | None = None, body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0  # not listening (yet)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("local-mode")
    port = _free_port()
    env = _local_env(home, port)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    log = (home / "api-server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while _call(f"{url}/api/v2/monitor/health") != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"api-server did not start: {(home / 'api-server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url, port, home, env
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def _token(url: str, env: dict[str, str], user: str) -> str:
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "local_auth.py"), "token", url,
                          env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"], user],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_api_server_listens_on_loopback_only(api_server):
    _, port, _, _ = api_server
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::


def test_anonymous_requests_are_refused(api_server):
    url, *_ = api_server
    refused = [
        _call(f"{url}/api/v2/dags"),
        _call(f"{url}/api/v2/variables", "POST", body={"key": "mnist_train_in_container", "value": "true"}),
        _call(f"{url}/api/v2/connections", "POST", body={"connection_id": "x", "conn_type": "http"}),
        _call(f"{url}/auth/token"),  # the all-admins token endpoint is off
    ]
    assert refused == [401, 401, 401, 403]


def test_viewer_reads_but_cannot_write_and_admin_writes(api_server):
    url, _, _, env = api_server
    viewer, admin = _token(url, env, "viewer"), _token(url, env, "admin")
    variable = {"key": "local_mode_probe", "value": "1"}
    assert _call(f"{url}/api/v2/dags", token=viewer) == 200
    assert _call(f"{url}/api/v2/variables", "POST", token=viewer, body=variable) == 403
    assert _call(f"{url}/api/v2/variables", "POST", token=admin, body=variable) == 201
    assert _call(f"{url}/api/v2/variables/local_mode_probe", "DELETE", token=admin) == 204


def test_secrets_are_owner_only_and_the_jwt_secret_is_long(api_server):
    _, _, home, env = api_server
    passwords = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    for path in (passwords, home / "airflow" / "jwt_secret", home / "jfrog" / "token", home / "logs"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"].encode()) >= 64
    assert set(json.loads(passwords.read_text())) == {"admin", "viewer"}
