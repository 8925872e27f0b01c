"""Hook tests run against the project's local JFrog-compatible server (contract-following, not JFrog)."""

from include.jfrog_compat.pytest_fixtures import jfrog_conn, jfrog_server  # noqa: F401 - fixtures
