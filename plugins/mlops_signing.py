"""The model-signing keys of the DAGs, from the Airflow connection `mnist_model_signing`.

Password: the PEM private key (only the training DAG signs); extra `public_key`: the PEM public key every load
verifies against. Read inside the task that uses it and passed to include/ as bytes: never logged, never in XCom.
"""

from __future__ import annotations

from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

SIGNING_CONN_ID = "mnist_model_signing"


def signing_key(private: bool = False) -> bytes:
    """The private (signing) or public (verifying) key as PEM bytes; a missing one fails the task without retry."""
    try:
        conn = Connection.get(SIGNING_CONN_ID)
    except AirflowNotFoundException:
        raise AirflowFailException(f"no Airflow connection {SIGNING_CONN_ID}: the model cannot be signed or "
                                   "verified (password: PEM private key, extra {\"public_key\": PEM})") from None
    value = conn.password if private else conn.extra_dejson.get("public_key")
    if not value:
        raise AirflowFailException(f"connection {SIGNING_CONN_ID} has no "
                                   f"{'password (the PEM private key)' if private else 'extra public_key (PEM)'}")
    return value.encode()
