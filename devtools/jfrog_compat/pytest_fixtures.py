"""Pytest fixtures for the local JFrog-compatible server; register with `pytest_plugins = [...]`."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools.jfrog_compat.server import JFrogCompatServer

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


@pytest.fixture
def extra_links() -> Callable[[str, str, str], dict[str, str | None]]:
    """A task instance's extra links as the API server answers them (the route the UI calls), after a run."""
    from airflow.api_fastapi.core_api.routes.public.extra_links import get_extra_links
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    def links(dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        with create_session() as session:
            return get_extra_links(dag_id, run_id, task_id, session=session, dag_bag=DBDagBag()).extra_links

    return links


# -- one contract suite, two targets ------------------------------------------------------------------

LIVE_ENV_HINT = ("live JFrog contract run not configured: set JFROG_URL (platform URL, e.g. https://acme.jfrog.io) "
                 "and JFROG_ACCESS_TOKEN (optional: JFROG_TEST_REPO, a generic local repo with deploy and delete "
                 "rights, default ml-models-local; JFROG_TEST_RELEASE_REPO for real promotions)")


@dataclass
class JFrogTarget:
    """Where a contract test runs: the local server (with fault injection) or a live JFrog platform."""

    kind: str
    url: str
    token: str
    repo: str
    release_repo: str | None
    server: JFrogCompatServer | None
    prefix: str = field(default_factory=lambda: f"contract-tests/{uuid.uuid4().hex[:12]}")

    @property
    def is_local(self) -> bool:
        """True for the local server."""
        return self.server is not None


@pytest.fixture(params=["local", pytest.param("live", marks=pytest.mark.live_jfrog)])
def jfrog_target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path) -> Iterator[JFrogTarget]:
    """The local server always; a live JFrog too when JFROG_URL and JFROG_ACCESS_TOKEN are set."""
    if request.param == "local":
        server = JFrogCompatServer(tmp_path / "jfrog-state", token=JFROG_TEST_TOKEN).start()
        target = JFrogTarget("local", server.url, server.token, "ml-models-local", "ml-models-release", server)
    else:
        url, token = os.environ.get("JFROG_URL", ""), os.environ.get("JFROG_ACCESS_TOKEN", "")
        if not (url and token):
            pytest.skip(LIVE_ENV_HINT)
        server = None
        target = JFrogTarget("live", url.rstrip("/"), token, os.environ.get("JFROG_TEST_REPO", "ml-models-local"),
                             os.environ.get("JFROG_TEST_RELEASE_REPO") or None, None)
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps(
        {"conn_type": "jfrog", "host": target.url, "password": target.token}))
    try:
        yield target
    finally:
        if server is not None:
            server.stop()
