"""DAG-test setup: a fresh model-signing key pair in the `mnist_model_signing` connection for every test."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def model_signing_keys() -> tuple[bytes, bytes]:
    """One P-256 key pair (private PEM, public PEM) for the session's DAG runs."""
    from include.mlops.signing import generate_key_pair

    return generate_key_pair()


@pytest.fixture(autouse=True)
def model_signing_conn(monkeypatch: pytest.MonkeyPatch, model_signing_keys: tuple[bytes, bytes]) -> str:
    """The connection the training DAG signs and verifies with (password: private key; extra public_key)."""
    private, public = model_signing_keys
    monkeypatch.setenv("AIRFLOW_CONN_MNIST_MODEL_SIGNING", json.dumps(
        {"conn_type": "generic", "password": private.decode(), "extra": {"public_key": public.decode()}}))
    return "mnist_model_signing"
