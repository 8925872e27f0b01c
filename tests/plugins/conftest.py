"""Provider tests run against the project's local JFrog-compatible server (contract-following, not JFrog)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def conn(monkeypatch, jfrog_server) -> str:
    """jfrog_default with fast retries, so fault tests take milliseconds."""
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps({
        "conn_type": "jfrog", "host": jfrog_server.url, "password": jfrog_server.token,
        "extra": {"backoff_base": 0.01, "backoff_max": 0.02, "max_retries": 2}}))
    return "jfrog_default"
