"""Markers of the deployment tests: `celery` starts real services (deselect locally with -m "not celery")."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "celery: runs Airflow with CeleryExecutor on the local PostgreSQL and Redis (minutes)"
    )
