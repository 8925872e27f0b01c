#!/usr/bin/env bash
# Entrypoint of the `mlflow` service (docker-compose.yaml): `mlflow server` behind MLflow's basic-auth app, with
# no secret on any command line, so none shows in `ps` or `docker inspect`'s Args:
# - the tracking store URI stays in MLFLOW_BACKEND_STORE_URI, the environment variable the CLI reads for
#   --backend-store-uri (`mlflow server --help`);
# - the auth store URI, which MLflow reads only from its auth config file (`database_uri`), goes into a file
#   written here, owner-only, on the container's tmpfs (/tmp), and MLFLOW_AUTH_CONFIG_PATH points at it;
# - the admin account comes from MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD, which MLflow uses
#   to create it the first time the auth store is empty (MLflow ships no default admin password).
# MLflow "Authentication with Username and Password": https://mlflow.org/docs/latest/self-hosting/security/basic-http-auth
# The remaining arguments (host, port, workers, artifact store) pass through to `mlflow server`.
set -euo pipefail

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI to the tracking store URI}"
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI to the auth store URI (users and permissions)}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?set MLFLOW_AUTH_ADMIN_USERNAME}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD (at least 12 characters)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY (signs the CSRF token of the sign-up page)}"

umask 077
config_dir="$(mktemp -d)"
# configparser treats '%' as interpolation: doubled, a URL-encoded password reads back unchanged.
auth_database_uri="${MLFLOW_AUTH_DATABASE_URI//%/%%}"
# printf is a shell builtin: the URI never becomes an argument of another process.
# default_permission: an account without a grant sees and changes nothing (NO_PERMISSIONS rather than READ:
# the registry's aliases and evidence are the pipeline's and the admin's business only).
printf '%s\n' \
    "[mlflow]" \
    "default_permission = NO_PERMISSIONS" \
    "database_uri = ${auth_database_uri}" \
    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" \
    "grant_default_workspace_access = false" \
    > "${config_dir}/basic_auth.ini"
unset MLFLOW_AUTH_DATABASE_URI auth_database_uri
export MLFLOW_AUTH_CONFIG_PATH="${config_dir}/basic_auth.ini"

exec mlflow server --app-name basic-auth "$@"
