"""Contract tests for the local JFrog-compatible server."""

from __future__ import annotations

import pytest
import requests


@pytest.fixture
def api(jfrog_server) -> requests.Session:
    """An authenticated session against the server, for raw contract requests."""
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {jfrog_server.token}"
    yield s
    s.close()
