"""Contract tests for the local JFrog-compatible server."""

from include.jfrog_compat.pytest_fixtures import jfrog_conn, jfrog_server  # noqa: F401 - fixtures
