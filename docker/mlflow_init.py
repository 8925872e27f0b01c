"""One-shot of docker-compose.yaml: the pipeline's MLflow account, with grants on the pipeline's resources only."""

# Runs as MLflow's admin (MLFLOW_TRACKING_USERNAME/PASSWORD) through MLflow's auth REST API on every
# `docker compose up`, and is idempotent: the account is created or its password set from .env (rotating it is
# editing .env and `up` again), it is never an admin, the pipeline's experiments and registered models exist,
# and the account holds MANAGE on exactly those. The server's default_permission is NO_PERMISSIONS
# (docker/mlflow-server.sh), so nothing else is visible to it.
#
# MANAGE rather than EDIT: the pipeline deletes the half-logged run of a failed try before it retries
# (include/mlops/registry.py, `delete_run`) and removes the `champion` alias when the security re-scan demotes
# a version (`delete_registered_model_alias`); MLflow refuses both with EDIT (403): they need the delete
# right, which only MANAGE carries (MLflow "Authentication with Username and Password", Permissions:
# https://mlflow.org/docs/latest/self-hosting/security/basic-http-auth). MANAGE also lets the account grant
# others access to these resources, and to nothing beyond them.
#
# Limit: without MLflow workspaces every signed-in account may create new experiments and registered models
# (and then manages those); the account cannot read or change anything it did not create or was not granted.

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("mlflow-init")

GRANTED = "MANAGE"


@dataclass(frozen=True)
class InitSettings:
    """What the one-shot sets up, read from its environment."""

    tracking_uri: str
    username: str
    password: str
    experiments: tuple[str, ...]
    registered_models: tuple[str, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> InitSettings:
        """Read MLFLOW_TRACKING_URI and the MLFLOW_PIPELINE_* variables; a missing one is named in the error."""
        missing = [name for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                     "MLFLOW_PIPELINE_USERNAME", "MLFLOW_PIPELINE_PASSWORD",
                                     "MLFLOW_PIPELINE_EXPERIMENTS", "MLFLOW_PIPELINE_REGISTERED_MODELS")
                   if not env.get(name, "").strip()]
        if missing:
            raise SystemExit(f"mlflow-init: set {', '.join(missing)} in the environment")
        username = env["MLFLOW_PIPELINE_USERNAME"].strip()
        if username == env["MLFLOW_TRACKING_USERNAME"].strip():
            raise SystemExit("mlflow-init: MLFLOW_PIPELINE_USERNAME must differ from the admin account")
        return cls(
            tracking_uri=env["MLFLOW_TRACKING_URI"].strip(),
            username=username,
            password=env["MLFLOW_PIPELINE_PASSWORD"],
            experiments=_names(env["MLFLOW_PIPELINE_EXPERIMENTS"]),
            registered_models=_names(env["MLFLOW_PIPELINE_REGISTERED_MODELS"]),
        )


def _names(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


def _error_code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


def ensure_account(auth, username: str, password: str) -> str:
    """Create the account, or set its password from .env; never an admin. Returns 'created' or 'updated'."""
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(username)
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
        auth.create_user(username, password)
        return "created"
    auth.update_user_password(username, password)
    auth.update_user_admin(username, False)
    return "updated"


def ensure_experiment(client, name: str) -> str:
    """The experiment's id, created by the admin if missing (artifacts then go through the server)."""
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else client.create_experiment(name)


def ensure_registered_model(client, name: str) -> None:
    """Create the registered model if it does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name)


def grant(auth, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Give `username` exactly `permission` on one resource, replacing a different earlier grant."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, resource_type, resource_id, permission)
        return
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
    if auth.get_user_permission(username, resource_type, resource_id).permission != permission:
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, permission)


def initialise(settings: InitSettings) -> dict[str, str]:
    """Apply the account and its grants; returns {resource: permission} as the server now resolves it."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=settings.tracking_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    log.info("account %s %s", settings.username, ensure_account(auth, settings.username, settings.password))
    resources = [("experiment", ensure_experiment(client, name), f"experiment {name}")
                 for name in settings.experiments]
    for name in settings.registered_models:
        ensure_registered_model(client, name)
        resources.append(("registered_model", name, f"registered model {name}"))
    effective = {}
    for resource_type, resource_id, label in resources:
        grant(auth, settings.username, resource_type, resource_id, GRANTED)
        effective[label] = auth.get_user_permission(settings.username, resource_type, resource_id).permission
        if effective[label] != GRANTED:
            raise SystemExit(f"mlflow-init: {settings.username} has {effective[label]} on {label}, not {GRANTED}")
        log.info("%s: %s for %s", label, GRANTED, settings.username)
    return effective


def main() -> int:
    """Entry point of the `mlflow-init` service."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    initialise(InitSettings.from_env(os.environ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
