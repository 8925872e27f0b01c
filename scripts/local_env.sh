# Local mode's environment, sourced by scripts/pipeline and by tests/scripts/test_local_mode.py: Airflow on
# SQLite with a LocalExecutor, every listener on 127.0.0.1, a login with roles, secrets in owner-only files.
# Needs ROOT and MLOPS_HOME; sets LOG_DIR, AIRFLOW_URL, AIRFLOW_PORT, JFROG_PORT.
# Everything under .local is this user's alone: logs (the LocalExecutor copies task output there), secrets, state.
umask 077
export AIRFLOW_HOME="$MLOPS_HOME/airflow"
# Airflow's LocalExecutor, with torch and mlflow imported before it forks its workers: each task process is a
# fork of a worker, so a training run's tasks do not import them one by one (plugins/mlops_executor.py).
export AIRFLOW__CORE__EXECUTOR=mlops_executor.PreloadingLocalExecutor
# The scheduler sleeps this long when a loop found nothing to do (Airflow's default is 1 s): each of a training
# run's eleven tasks waited up to that long for its upstream's success to be noticed. 0.2 s costs a few more
# metadata queries a second on this one-machine stack.
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.2
export AIRFLOW__CORE__PARALLELISM=4
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
# This script triggers its own runs: the scheduler must not add the nightly run (catchup=False still runs
# the latest missed interval on unpause) or asset-triggered runs that would outlive the script.
export AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False
AIRFLOW_PORT="${AIRFLOW_PORT:-8080}"
JFROG_PORT="${JFROG_PORT:-8081}"
AIRFLOW_URL="http://127.0.0.1:$AIRFLOW_PORT"
# Every listener on the loopback interface only (Airflow's default [api] host is 0.0.0.0).
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$AIRFLOW_PORT"
export AIRFLOW__API__BASE_URL="$AIRFLOW_URL"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$AIRFLOW_URL/execution/"
# Named users with roles and a login (Airflow's SimpleAuthManager): an admin who operates, a viewer who reads.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/passwords.json"
mkdir -p "$AIRFLOW_HOME" "$MLOPS_HOME/jfrog"
LOG_DIR="$MLOPS_HOME/logs/$(date -u +%Y%m%dT%H%M%SZ)"  # service logs are kept per run
mkdir -p "$LOG_DIR" && ln -sfn "$LOG_DIR" "$MLOPS_HOME/logs/latest"
chmod -R go-rwx "$MLOPS_HOME"
# Secrets live in owner-only files, never in the repo or on a command line. Airflow wants >= 64 bytes of JWT secret.
if [[ ! -f "$AIRFLOW_HOME/jwt_secret" || "$(wc -c < "$AIRFLOW_HOME/jwt_secret")" -lt 65 ]]; then
    python -c "import secrets; print(secrets.token_urlsafe(64))" > "$AIRFLOW_HOME/jwt_secret"
fi
[[ -s "$MLOPS_HOME/jfrog/token" ]] || python -c "import secrets; print(secrets.token_urlsafe(32))" > "$MLOPS_HOME/jfrog/token"
python "$ROOT/scripts/local_auth.py" ensure "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" admin viewer
export AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$AIRFLOW_HOME/jwt_secret")"
JFROG_TOKEN="$(cat "$MLOPS_HOME/jfrog/token")"
export AIRFLOW_CONN_JFROG_DEFAULT="{\"conn_type\": \"jfrog\", \"host\": \"http://127.0.0.1:$JFROG_PORT\", \"password\": \"$JFROG_TOKEN\"}"

# The model-signing key pair (P-256, OpenSSF model-signing's elliptic-key mode) in owner-only files; the worker
# reads it from the mnist_model_signing connection: password = private key, extra public_key = public key.
mkdir -p "$MLOPS_HOME/keys"
if [[ ! -s "$MLOPS_HOME/keys/model-signing.pem" || ! -s "$MLOPS_HOME/keys/model-signing.pub" ]]; then
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python - "$MLOPS_HOME/keys" <<'PY'
import sys
from pathlib import Path

from include.mlops.signing import generate_key_pair

private, public = generate_key_pair()
folder = Path(sys.argv[1])
(folder / "model-signing.pem").write_bytes(private)
(folder / "model-signing.pub").write_bytes(public)
PY
fi
chmod 600 "$MLOPS_HOME/keys/model-signing.pem" "$MLOPS_HOME/keys/model-signing.pub"
AIRFLOW_CONN_MNIST_MODEL_SIGNING="$(python -c 'import json, sys; print(json.dumps({"conn_type": "generic",
    "password": open(sys.argv[1]).read(), "extra": {"public_key": open(sys.argv[2]).read()}}))' \
    "$MLOPS_HOME/keys/model-signing.pem" "$MLOPS_HOME/keys/model-signing.pub")"
export AIRFLOW_CONN_MNIST_MODEL_SIGNING
