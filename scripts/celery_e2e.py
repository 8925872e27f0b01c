"""Run mnist_training on Airflow's CeleryExecutor for real: PostgreSQL, Redis, two workers, one of them killed.

Starts, each in its own process group: the project's JFrog-compatible LOCAL server (not JFrog), an api-server,
a scheduler, a dag-processor and two `airflow celery worker`s (concurrency 1, distinct Celery hostnames), all
sharing one MLOPS_HOME (tasks pass file paths between workers). Airflow metadata and Celery results go to a
fresh PostgreSQL database, MLflow tracking to a second one, the broker to a dedicated Redis database under a
key prefix and queue of this run's own. Then:

1. happy path: a quick run must succeed, with tasks executed by both workers;
2. kill: a second run; once train_model has run for a few seconds, the worker holding it is SIGKILLed with its
   whole process tree; the scheduler must see the lost heartbeat, retry the task (try 2) on the other worker,
   and the run must succeed, with one MLflow model version and one model.safetensors in Artifactory per run.

Every process started here is stopped and both databases are dropped on the way out, also on failure.

    python scripts/celery_e2e.py [--no-kill] [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg2
import redis

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "mnist_training"
QUICK_CONF = {"max_train_samples": 4000, "max_test_samples": 1000, "epochs": 2, "min_accuracy": 0.5}
# train_model must still be training when the worker is killed, 3 s after it is seen running: 160k images take
# about 15 s on a quiet 2-core machine (the quick run's 8k, about 1 s, finished before the kill).
KILL_CONF = {**QUICK_CONF, "max_train_samples": 20000, "epochs": 8}
# The lost task is noticed after this many seconds without a heartbeat (Airflow's default is 300).
HEARTBEAT_TIMEOUT = 20
WORKLOAD_RE = re.compile(r"Executing workload in Celery: .*?task_id='(?P<task>[^']+)'.*?run_id='(?P<run>[^']+)'"
                         r".*?try_number=(?P<try>\d+)")


class E2EError(RuntimeError):
    """The distributed run did not behave as required."""


@dataclass
class Service:
    """A background process started in its own session, its output in a log file."""

    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 40) -> str:
        """The last lines of its log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    """Everything this script started or created, so that cleanup can undo it."""

    work: Path
    pg_base: str
    redis_url: str
    key_prefix: str
    services: list[Service] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        print(f"[celery-e2e {time.monotonic() - self.t0:6.1f}s] {message}", flush=True)

    def start(self, name: str, *cmd: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Service:
        log = self.work / "logs" / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd or ROOT,
                env={**self.env, **(env or {})}, start_new_session=True,
            )
        service = Service(name, proc, log)
        self.services.append(service)
        return service

    def airflow(self, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, env=self.env, cwd=ROOT,
            timeout=timeout, check=False,
        )
        if proc.returncode != 0:
            raise E2EError(f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def sql(self, database: str, query: str, params: tuple = ()) -> list[tuple]:
        with contextlib.closing(psycopg2.connect(f"{self.pg_base}/{database}")) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> None:
        with contextlib.closing(psycopg2.connect(f"{self.pg_base}/postgres")) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)

    def stop(self) -> None:
        """Stop every process tree (SIGTERM, then SIGKILL after 15 s), drop the databases and the Redis keys."""
        trees = {s.name: _tree(s.proc.pid) for s in self.services}
        for service in self.services:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for service in self.services:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for service in self.services:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.proc.pid, signal.SIGKILL)
            for proc in trees[service.name]:  # task processes run in process groups of their own
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=5)
        for name in reversed(self.databases):
            try:
                with contextlib.closing(psycopg2.connect(f"{self.pg_base}/postgres")) as conn:
                    conn.autocommit = True
                    with conn.cursor() as cur:
                        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg2.Error as exc:
                print(f"celery-e2e: could not drop database {name}: {exc}", file=sys.stderr)
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(self.redis_url)
            keys = list(client.scan_iter(match=f"{self.key_prefix}*"))
            if keys:
                client.delete(*keys)


def _tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants, children first."""
    try:
        root = psutil.Process(pid)
        return [*reversed(root.children(recursive=True)), root]
    except psutil.Error:
        return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(stack: Stack, what: str, check, timeout: float, interval: float = 1.0, services=()):
    """Poll `check()` until it returns something truthy; on timeout raise with the services' log tails."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        for service in stack.services:
            if service.proc.poll() is not None and service.name in services:
                raise E2EError(f"{service.name} exited ({service.proc.returncode}):\n{service.tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {s.name}\n{s.tail(15)}" for s in stack.services if s.name in services)
            raise E2EError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def task_instances(stack: Stack, db: str, run_id: str) -> dict[str, tuple]:
    """task_id -> (state, try_number, pid, start_date, end_date) for one run."""
    rows = stack.sql(
        db,
        "SELECT task_id, state, try_number, pid, start_date, end_date FROM task_instance "
        "WHERE dag_id = %s AND run_id = %s",
        (DAG_ID, run_id),
    )
    return {row[0]: row[1:] for row in rows}


def run_state(stack: Stack, db: str, run_id: str) -> str | None:
    rows = stack.sql(db, "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id))
    return rows[0][0] if rows else None


def workloads(worker: Service) -> list[tuple[str, str, int]]:
    """(task_id, run_id, try_number) of every workload this worker received, from its log."""
    text = worker.log.read_text(errors="replace") if worker.log.exists() else ""
    return [(m["task"], m["run"], int(m["try"])) for m in WORKLOAD_RE.finditer(text)]


def trigger(stack: Stack, run_id: str, conf: dict) -> None:
    stack.airflow("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(conf))


def wait_run(stack: Stack, db: str, run_id: str, timeout: float) -> float:
    """Wait for the run to end; return its wall time; raise with the task states when it failed."""
    start = time.monotonic()
    state = wait_until(
        stack, f"{run_id} to finish",
        lambda: (s := run_state(stack, db, run_id)) in ("success", "failed") and s,
        timeout, interval=2, services=("scheduler", "worker1", "worker2", "api-server"),
    )
    if state != "success":
        raise E2EError(f"{run_id} {state}: {task_instances(stack, db, run_id)}")
    return time.monotonic() - start


def per_worker(workers: list[Service], run_id: str) -> dict[str, list[str]]:
    return {w.name: [f"{t}#{n}" for t, r, n in workloads(w) if r == run_id] for w in workers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-kill", action="store_true", help="run the happy path only")
    parser.add_argument("--pg", default=os.environ.get("CELERY_E2E_PG", "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--redis", default=os.environ.get("CELERY_E2E_REDIS", "redis://127.0.0.1:6379/11"))
    parser.add_argument("--keep-logs", type=Path, help="copy the services' logs here at the end")
    parser.add_argument("--timeout", type=float, default=600, help="per DAG run, in seconds")
    args = parser.parse_args()

    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="celery-e2e-"))
    (work / "logs").mkdir()
    stack = Stack(work=work, pg_base=args.pg.rstrip("/"), redis_url=args.redis, key_prefix=f"airflow_ci_{tag}:")
    # Stop everything also when the test runner's timeout sends SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(stack, tag, args)
        return 0
    except E2EError as exc:
        stack.say(f"FAILED: {exc}")
        return 1
    finally:
        if args.keep_logs:
            shutil.copytree(work / "logs", args.keep_logs, dirs_exist_ok=True)
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
        stack.say("stopped every process, dropped the databases and the Redis keys")


def ensure_backends(stack: Stack, redis_url: str) -> None:
    """PostgreSQL and Redis run before CI on this machine; start the local ones when they are down."""
    def pg_up() -> bool:
        try:
            stack.sql("postgres", "SELECT 1")
            return True
        except psycopg2.OperationalError:
            return False

    def redis_up() -> bool:
        try:
            return bool(redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping())
        except redis.RedisError:
            return False

    local = ("127.0.0.1", "localhost")
    if not pg_up() and any(h in stack.pg_base for h in local) and Path("/etc/postgresql").is_dir():
        for version in sorted(p.name for p in Path("/etc/postgresql").iterdir()):
            stack.say(f"PostgreSQL is down: starting cluster {version}/main")
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False)
        wait_until(stack, "PostgreSQL", pg_up, 60)
    if not redis_up() and any(h in redis_url for h in local) and shutil.which("redis-server"):
        stack.say("Redis is down: starting redis-server on 127.0.0.1:6379")
        Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
        Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
                        "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
                        "--logfile", "/var/log/redis/ci.log"], check=False)
        wait_until(stack, "Redis", redis_up, 30)
    if not pg_up() or not redis_up():
        raise E2EError(f"PostgreSQL ({stack.pg_base}) or Redis ({redis_url}) is not reachable")


def run(stack: Stack, tag: str, args: argparse.Namespace) -> None:
    airflow_db, mlflow_db = f"airflow_ci_{tag}", f"mlflow_ci_{tag}"
    ensure_backends(stack, args.redis)
    stack.create_database(airflow_db)
    stack.create_database(mlflow_db)
    api_port = free_port()
    queue = f"ci_{tag}"
    jfrog_token = secrets.token_urlsafe(24)
    home = stack.work / "mlops"
    pg_host = stack.pg_base.split("://", 1)[1]
    stack.env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "MLOPS", "JFROG"))},
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "AIRFLOW_HOME": str(stack.work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg_host}/{airflow_db}",
        "AIRFLOW__CELERY__BROKER_URL": args.redis,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg_host}/{airflow_db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        # A message whose worker died is not redelivered within the run: the scheduler's retry is the recovery.
        "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": stack.key_prefix,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # This script triggers its own runs: no cron or Asset-triggered runs beside them.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "MLOPS_HOME": str(home),
        "MLOPS_EXPERIMENT": "mnist-training",
        "MLFLOW_TRACKING_URI": f"postgresql+psycopg2://{pg_host}/{mlflow_db}",
    }
    home.mkdir()
    stack.say(f"work dir {stack.work}; databases {airflow_db}, {mlflow_db}; Redis {args.redis} prefix "
              f"{stack.key_prefix}; queue {queue}")

    t_setup = time.monotonic()
    stack.start(
        "jfrog", sys.executable, "-m", "devtools.jfrog_compat.server", "--state-dir", str(stack.work / "jfrog"),
        "--port", "0", "--url-file", str(stack.work / "jfrog.url"), env={"JFROG_COMPAT_TOKEN": jfrog_token},
    )
    # MLflow creates its tables on first use; the experiment gets an artifact store in the shared home
    # (with a database URI MLflow would otherwise default to ./mlruns in each worker's directory).
    mlflow_init = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, mlflow; c = mlflow.MlflowClient(sys.argv[1]); "
         "c.create_experiment('mnist-training', artifact_location=sys.argv[2])",
         stack.env["MLFLOW_TRACKING_URI"], (home / "mlflow" / "artifacts").as_uri()],
        env=stack.env, cwd=stack.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    stack.airflow("db", "migrate", timeout=300)
    mlflow_out, _ = mlflow_init.communicate(timeout=300)
    if mlflow_init.returncode != 0:
        raise E2EError(f"MLflow store on PostgreSQL failed:\n{mlflow_out}")
    url_file = stack.work / "jfrog.url"
    wait_until(stack, "the JFrog-compatible server", url_file.exists, 60, 0.5, services=("jfrog",))
    jfrog_url = url_file.read_text().strip()
    stack.env["AIRFLOW_CONN_JFROG_DEFAULT"] = json.dumps({"conn_type": "jfrog", "host": jfrog_url,
                                                          "password": jfrog_token})
    # A throw-away model-signing key pair: train_model signs, every later load verifies.
    from include.mlops.signing import generate_key_pair

    private_key, public_key = generate_key_pair()
    stack.env["AIRFLOW_CONN_MNIST_MODEL_SIGNING"] = json.dumps(
        {"conn_type": "generic", "password": private_key.decode(), "extra": {"public_key": public_key.decode()}})
    stack.start("api-server", sys.executable, "-m", "airflow", "api-server", "--port", str(api_port))
    stack.start("scheduler", sys.executable, "-m", "airflow", "scheduler")
    stack.start("dag-processor", sys.executable, "-m", "airflow", "dag-processor")
    # scan_model defers its Xray polling to the triggerer.
    stack.start("triggerer", sys.executable, "-m", "airflow", "triggerer", "--skip-serve-logs")
    workers = []
    for n in (1, 2):
        wdir = stack.work / f"worker{n}"
        wdir.mkdir()
        workers.append(stack.start(
            f"worker{n}", sys.executable, "-m", "airflow", "celery", "worker", "--celery-hostname",
            f"worker{n}@%h", "--concurrency", "1", "--queues", queue, "--skip-serve-logs",
            "--pid", str(wdir / "worker.pid"), "--without-gossip", "--without-mingle", cwd=wdir,
        ))
    services = ("api-server", "scheduler", "dag-processor", "worker1", "worker2", "jfrog")
    wait_until(stack, "the api-server", lambda: http_ok(f"http://127.0.0.1:{api_port}/api/v2/monitor/health"),
               180, services=services)
    wait_until(stack, f"{DAG_ID} to be parsed",
               lambda: stack.sql(airflow_db, "SELECT 1 FROM serialized_dag WHERE dag_id = %s", (DAG_ID,)),
               180, services=services)
    wait_until(stack, "both Celery workers",
               lambda: all("ready." in w.log.read_text(errors="replace") for w in workers), 120,
               services=services)
    stack.airflow("dags", "unpause", DAG_ID)
    stack.say(f"stack ready in {time.monotonic() - t_setup:.1f} s: api-server :{api_port}, scheduler, "
              f"dag-processor, 2 Celery workers, JFrog-compatible local server {jfrog_url} (not JFrog)")

    # 1. Happy path: tasks spread over both workers, run succeeds.
    run1 = f"manual__celery_e2e_{tag}_1"
    trigger(stack, run1, QUICK_CONF)
    wall1 = wait_run(stack, airflow_db, run1, args.timeout)
    spread = per_worker(workers, run1)
    stack.say(f"run 1 ({run1}) succeeded in {wall1:.1f} s; tasks per worker: "
              + "; ".join(f"{k}: {len(v)} {v}" for k, v in spread.items()))
    if not all(spread.values()):
        raise E2EError(f"tasks did not run on both workers: {spread}")
    ti1 = task_instances(stack, airflow_db, run1)
    if any(v[0] != "success" for v in ti1.values()):
        raise E2EError(f"not every task succeeded: {ti1}")
    expected_runs = 1

    if not args.no_kill:
        # 2. Kill: SIGKILL the worker that runs train_model; the task must retry on the other one.
        run2 = f"manual__celery_e2e_{tag}_2"
        trigger(stack, run2, KILL_CONF)

        def training_pid():
            ti = task_instances(stack, airflow_db, run2).get("train_model")
            state = run_state(stack, airflow_db, run2)
            if state in ("success", "failed"):
                raise E2EError(f"{run2} ended ({state}) before train_model could be caught running")
            if ti and ti[0] == "running" and ti[2] and ti[3]:
                return ti
            return None

        ti = wait_until(stack, "train_model to run", training_pid, args.timeout, 0.5, services=services)
        victim = next(
            (w for w in workers if any(p.pid == w.proc.pid for p in _parents(ti[2]))),
            None,
        )
        if victim is None:
            raise E2EError(f"train_model pid {ti[2]} belongs to no worker")
        survivor = next(w for w in workers if w is not victim)
        time.sleep(3)  # in the middle of training, after its first heartbeats
        tree = _tree(victim.proc.pid)
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        t_kill = time.monotonic()
        stack.say(f"SIGKILLed {victim.name} and its {len(tree) - 1} descendants (train_model pid {ti[2]}, "
                  f"try {ti[1]}); waiting for the scheduler to notice (heartbeat timeout {HEARTBEAT_TIMEOUT} s)")
        stack.services.remove(victim)  # dead: no longer a service whose exit means failure
        detected = wait_until(
            stack, "the lost train_model to be noticed",
            lambda: (t := task_instances(stack, airflow_db, run2)["train_model"])[0] != "running" and t,
            HEARTBEAT_TIMEOUT * 6, services=services,
        )
        t_detect = time.monotonic() - t_kill
        stack.say(f"train_model noticed lost after {t_detect:.1f} s: state {detected[0]}, try {detected[1]}")
        wait_until(stack, "train_model try 2 to start",
                   lambda: (t := task_instances(stack, airflow_db, run2)["train_model"])[1] >= 2
                   and t[0] in ("running", "success"),
                   args.timeout, services=services)
        t_restart = time.monotonic() - t_kill
        stack.say(f"train_model try 2 running {t_restart:.1f} s after the kill (retry_delay of the DAG included)")
        wait_until(stack, "train_model try 2 to succeed",
                   lambda: task_instances(stack, airflow_db, run2)["train_model"][0] == "success",
                   args.timeout, services=services)
        t_recovered = time.monotonic() - t_kill
        wait_run(stack, airflow_db, run2, args.timeout)
        final = task_instances(stack, airflow_db, run2)["train_model"]
        retried_on = [w.name for w in workers if ("train_model", run2, 2) in workloads(w)]
        stack.say(f"kill recovery: lost task noticed {t_detect:.1f} s after SIGKILL, try 2 running after "
                  f"{t_restart:.1f} s, train_model succeeded after {t_recovered:.1f} s; run 2 ({run2}) "
                  f"succeeded, {time.monotonic() - t_kill:.1f} s after the kill")
        spread2 = per_worker(workers, run2)
        stack.say("run 2 tasks per worker: " + "; ".join(f"{k}: {len(v)} {v}" for k, v in spread2.items()))
        if final[1] != 2 or final[0] != "success":
            raise E2EError(f"train_model should have succeeded on try 2, got {final}")
        if retried_on != [survivor.name]:
            raise E2EError(f"train_model try 2 ran on {retried_on}, expected {survivor.name}")
        expected_runs = 2

    # No duplicates: one MLflow run and model version per Airflow run, one model.safetensors per version in Artifactory.
    versions = stack.sql(mlflow_db, "SELECT name, version, run_id FROM model_versions ORDER BY version")
    mlflow_runs = stack.sql(mlflow_db, "SELECT run_uuid FROM runs WHERE lifecycle_stage = 'active'")
    models = _aql(jfrog_url, jfrog_token, 'items.find({"repo": "ml-models-local", "name": "model.safetensors"})')
    stack.say(f"MLflow: {len(mlflow_runs)} runs, model versions {[v[1] for v in versions]}; "
              f"Artifactory ml-models-local: {sorted(m['path'] for m in models)} model.safetensors")
    if len(versions) != expected_runs or len({v[2] for v in versions}) != expected_runs:
        raise E2EError(f"expected {expected_runs} model versions from distinct runs, got {versions}")
    if len(mlflow_runs) != expected_runs:
        raise E2EError(f"expected {expected_runs} MLflow runs, got {len(mlflow_runs)}")
    if len(models) != expected_runs:
        raise E2EError(f"expected {expected_runs} model.safetensors in Artifactory, got {models}")
    stack.say(f"PASS: Celery run {wall1:.1f} s" + ("" if args.no_kill else f", kill recovery {t_recovered:.1f} s"))


def _parents(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.parents()]
    except psutil.Error:
        return []


def _aql(url: str, token: str, query: str) -> list[dict]:
    request = urllib.request.Request(
        f"{url}/artifactory/api/search/aql", data=query.encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["results"]


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(os.urandom(32)).decode()


if __name__ == "__main__":
    sys.exit(main())
