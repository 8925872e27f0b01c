"""Pytest fixtures for the local JFrog-compatible server; register with `pytest_plugins = [...]`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from include.jfrog_compat.server import JFrogCompatServer

JFROG_TEST_TOKEN = "test-token-5f2c9a7e1d"


@pytest.fixture
def jfrog_server(tmp_path: Path) -> Iterator[JFrogCompatServer]:
    """A started local server on a free 127.0.0.1 port with a fresh state dir."""
    server = JFrogCompatServer(tmp_path / "jfrog-state", token=JFROG_TEST_TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jfrog_conn(monkeypatch: pytest.MonkeyPatch, jfrog_server: JFrogCompatServer) -> str:
    """Point the `jfrog_default` Airflow connection at jfrog_server; returns the conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps(
        {"conn_type": "jfrog", "host": jfrog_server.url, "password": jfrog_server.token}))
    return "jfrog_default"
