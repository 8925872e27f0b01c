"""All-or-nothing promotion: a crash at each step from publish to the alias move, then a rerun of the same run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.dag_runs import rerun, signing_connection

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = REPO_ROOT / "dags" / "mnist_training.py"
# Tiny and permissive: the model gates are not under test here, the order of side effects is.
TINY = {
    "max_train_samples": 512, "max_test_samples": 256, "epochs": 1, "min_accuracy": 0.1, "max_regression": 1.0,
}
STAGING, RELEASE = "ml-models-local", "ml-models-release"
VERSION_FILES = {"model.safetensors", "model.json", "model.sig", "sbom.cdx.json", "mlbom.cdx.json"}
FAULT = [{"status": 500, "body": "injected by the crash-point test"}] * 3


@dataclass
class CrashPoint:
    """Where a run is made to crash, how, and what `champion` must be right after the crash."""

    name: str
    task_id: str
    arm: Callable[[World], Callable[[], None]]  # sets the fault up; returns what takes it away again
    after_commit: bool = False
    kill: bool = False  # run in a child process and SIGKILL it once the fault holds the task


@dataclass
class World:
    """The DAG, the servers it talks to, and what the crash points recorded."""

    dag: object
    server: object
    monkeypatch: pytest.MonkeyPatch
    tmp: Path
    tracking_uri: str
    model_name: str
    run_ids: list[str] = field(default_factory=list)


def _load_dag():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAG_FILE)).dags["mnist_training"]
    for task in dag.tasks:
        task.retries = 0  # a retry would absorb the crash; each point wants the failed run, then a cleared rerun
    # The local Xray answers on the second poll: the DAG's 5 s poll interval would be dead time, 17 times.
    dag.get_task("scan_model").poll_interval = 0.2
    return dag


def _jfrog_fault(path_regex: str, method: str, specs=FAULT):
    """Arm a run of injected errors on one Artifactory or Xray path."""

    def arm(world: World) -> Callable[[], None]:
        world.server.inject_faults(path_regex, specs, method=method)
        return world.server.clear_faults

    return arm


def _missing_sbom_tool(world: World) -> Callable[[], None]:
    """Point the SBOM tool at a path that does not exist, as on a worker without .venv-sbom."""
    world.monkeypatch.setenv("MLOPS_SBOM_TOOL", str(world.tmp / "missing" / "cyclonedx-py"))
    return lambda: world.monkeypatch.delenv("MLOPS_SBOM_TOOL")


def _mlflow_locked_at_alias(world: World) -> Callable[[], None]:
    """Hold MLflow's SQLite write lock while set_champion runs: its alias move fails, reads still work."""
    db = world.tracking_uri.removeprefix("sqlite:///")
    held: list[sqlite3.Connection] = []

    def lock(context) -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # another writer holds the database, as a busy shared MLflow can
        held.append(conn)

    task = world.dag.get_task("set_champion")
    original = task.on_execute_callback
    task.on_execute_callback = [lock]

    def disarm() -> None:
        task.on_execute_callback = original
        for conn in held:
            conn.rollback()
            conn.close()
        assert held, "set_champion never started, so the MLflow fault was not exercised"

    return disarm


# The mirror stamp on the release copy is set_champion's second PUT to that path (release_model's is first).
_PASS_ONCE = [{"delay": 0}]
# Holds promote_model's lineage stamp (after the evidence upload, before any alias) until the kill lands;
# the 500 after it keeps the request from taking effect once its process is gone.
_HOLD = [{"delay": 20, "status": 500, "body": "held by the crash-point test"}]
POINTS = [
    # The checksum-deploy probe gets its usual 404, then the PUT carrying the bytes is answered 500.
    CrashPoint("publish_model: model bytes sent, upload answered 500", "publish_model",
               _jfrog_fault(rf"^/artifactory/{STAGING}/mnist-cnn/\d+/model\.safetensors", "PUT",
                            [{"status": 404, "body": "no artifact with this checksum"}, FAULT[0]])),
    CrashPoint("generate_sbom: SBOM tool missing", "generate_sbom", _missing_sbom_tool),
    CrashPoint("generate_sbom: part-way, SBOM uploaded, ML-BOM upload 500", "generate_sbom",
               _jfrog_fault(rf"^/artifactory/{STAGING}/mnist-cnn/\d+/mlbom\.cdx\.json", "PUT")),
    CrashPoint("scan_model: Xray graph scan 500", "scan_model", _jfrog_fault(r"^/xray/api/v1/scan/graph$", "POST")),
    CrashPoint("promote_model: part-way, evidence uploaded, lineage stamp 500", "promote_model",
               _jfrog_fault(rf"^/artifactory/api/storage/{STAGING}/mnist-cnn/\d+/model\.safetensors$", "PUT")),
    CrashPoint("promote_model: SIGKILL of the process, evidence uploaded, lineage stamp in flight", "promote_model",
               _jfrog_fault(rf"^/artifactory/api/storage/{STAGING}/mnist-cnn/\d+/model\.safetensors$", "PUT", _HOLD),
               kill=True),
    CrashPoint("release_model: part-way, copied, release stamp 500", "release_model",
               _jfrog_fault(rf"^/artifactory/api/storage/{RELEASE}/mnist-cnn/\d+/model\.safetensors$", "PUT")),
    CrashPoint("set_champion: MLflow database locked at the alias move", "set_champion", _mlflow_locked_at_alias),
    CrashPoint("set_champion: after the commit, mirror stamp 500", "set_champion",
               _jfrog_fault(rf"^/artifactory/api/storage/{RELEASE}/mnist-cnn/\d+/model\.safetensors$", "PUT",
                            _PASS_ONCE + FAULT), after_commit=True),
]


def _rerun(dag, run_id: str, only_failed: bool = True):
    """Clear the run's failed tasks (or all) and run them again in the same DagRun (dag.test() cannot)."""
    return rerun(dag, run_id, only_failed=only_failed)


def _run_killed(world: World, seed: int):
    """Run the DAG in a child process, SIGKILL it while the armed fault holds its request, return its DagRun."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    log = world.tmp / f"killed-{seed}.log"
    logical_date = timezone.utcnow()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "plugins"),
                                                        str(REPO_ROOT / "tests")])}
    with log.open("wb") as out:
        child = subprocess.Popen([sys.executable, __file__, str(seed), logical_date.isoformat()],
                                 stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while world.server.pending_faults() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL, f"the child was not killed in flight:\n{log.read_text()[-4000:]}"
    with create_session() as session:
        dag_run = session.scalars(
            select(DagRun).where(DagRun.dag_id == world.dag.dag_id, DagRun.logical_date == logical_date)
        ).one()
        assert dag_run.state == DagRunState.RUNNING, dag_run
        running = [ti for ti in dag_run.get_task_instances(session=session) if ti.state == TaskInstanceState.RUNNING]
        # A killed task stops heartbeating and the scheduler fails it (task_instance_heartbeat_timeout); with
        # no scheduler here, the test records the same, then the run ends as the scheduler would end it.
        for ti in running:
            ti.state = TaskInstanceState.FAILED
        dag_run.state = DagRunState.FAILED
        session.flush()
        session.expunge(dag_run)
    assert [ti.task_id for ti in running] == ["promote_model"], running
    return dag_run


def _states(dag_run) -> dict[str, str]:
    """Task id → state of one DagRun."""
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def _champion(world: World) -> str | None:
    from include.mlops import registry

    current = registry.champion(world.tracking_uri, world.model_name)
    return current[0] if current else None


def _stamped_champions() -> list[str]:
    """Versions whose release copy carries `mlflow.alias=champion` (what the lineage AQL query returns)."""
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    from include.mlops.evidence import champion_query

    return sorted(row["path"].rsplit("/", 1)[-1] for row in ArtifactoryHook().search_aql(champion_query(RELEASE)))


def _version_of(world: World, run_id: str) -> str:
    from mlflow import MlflowClient

    from include.mlops.registry import RUN_KEY_TAG

    client = MlflowClient(world.tracking_uri, registry_uri=world.tracking_uri)
    found = client.search_model_versions(f"name = '{world.model_name}' and tag.`{RUN_KEY_TAG}` = 'mnist_training/{run_id}'")
    assert len(found) == 1, f"{len(found)} model versions for run {run_id}"
    return str(found[0].version)


def _items(repo: str) -> list[dict]:
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    query = f'items.find({json.dumps({"repo": repo})}).include("repo","path","name","sha256")'
    return ArtifactoryHook().search_aql(query)


def _champion_events(run_ids: list[str]) -> Counter:
    """MNIST_CHAMPION asset events per producing run."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from include.assets import MNIST_CHAMPION

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent.source_run_id).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == MNIST_CHAMPION.name, AssetEvent.source_run_id.in_(run_ids))
        ).all()
    return Counter(rows)


@pytest.mark.e2e
def test_crash_at_each_step_keeps_champion_and_rerun_completes_without_duplicates(
    airflow_db, mlops_home, jfrog_server, jfrog_conn, monkeypatch, tmp_path
):
    from mlflow import MlflowClient

    from include.mlops import audit
    from include.mlops.evidence import PACK_FILES
    from include.mlops.registry import RUN_KEY_TAG
    from include.settings import PipelineSettings

    started = time.perf_counter()
    signing_connection(monkeypatch)
    settings = PipelineSettings.from_env()
    world = World(_load_dag(), jfrog_server, monkeypatch, tmp_path, settings.mlflow_tracking_uri, settings.model_name)
    # A different seed per run: distinct model files, so a file published under two versions would show.
    baseline = world.dag.test(run_conf={**TINY, "seed": 0})
    assert baseline.state == "success", _states(baseline)
    world.run_ids.append(baseline.run_id)
    assert _champion(world) == _version_of(world, baseline.run_id)
    assert _stamped_champions() == [_champion(world)]

    results = []
    for seed, point in enumerate(POINTS, start=1):
        before = _champion(world)
        disarm = point.arm(world)
        try:
            crashed = _run_killed(world, seed) if point.kill else world.dag.test(run_conf={**TINY, "seed": seed})
        finally:
            disarm()
        world.run_ids.append(crashed.run_id)
        version = _version_of(world, crashed.run_id)
        failed = sorted(task_id for task_id, state in _states(crashed).items() if state == "failed")
        champion, stamped = _champion(world), _stamped_champions()
        rerun = _rerun(world.dag, crashed.run_id)
        results.append({
            "point": point.name,
            "crashed_there": crashed.state == "failed" and failed == [point.task_id],
            # Before the commit point nothing may move; after it the alias has moved and only the mirror lags.
            "champion_kept": champion == (version if point.after_commit else before) and stamped == [before],
            "rerun_completed": rerun.state == "success" and _champion(world) == version
            and _stamped_champions() == [version],
            "failed": failed, "champion": champion, "stamped": stamped, "before": before, "version": version,
            "rerun": _states(rerun),
        })

    # A forced rerun of a finished run with every task cleared, training included, must add nothing either.
    last_run, last_version = world.run_ids[-1], _champion(world)
    full = _rerun(world.dag, last_run, only_failed=False)
    full_rerun_same = (
        full.state == "success" and set(_states(full).values()) == {"success"}
        and _version_of(world, last_run) == last_version == _champion(world) and _stamped_champions() == [last_version]
    )

    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    versions_per_run = Counter(v.tags.get(RUN_KEY_TAG) for v in versions)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    runs_per_key = Counter(r.data.tags.get(RUN_KEY_TAG) for r in client.search_runs([experiment.experiment_id]))
    duplicate_versions = sum(n - 1 for n in versions_per_run.values()) + sum(n - 1 for n in runs_per_key.values())

    expected = Counter()
    for version in {str(v.version) for v in versions}:
        expected.update(f"{STAGING}/mnist-cnn/{version}/{name}" for name in VERSION_FILES)
        expected.update(f"{STAGING}/mnist-cnn/{version}/evidence/{name}" for name in (*PACK_FILES, "manifest.json"))
        expected.update(f"{RELEASE}/mnist-cnn/{version}/{name}" for name in ("model.safetensors", "model.json",
                                                                               "model.sig"))
        # One audit record per event of the version's trail, none twice for a retried or rerun step.
        expected.update(f"{STAGING}/{audit.audit_folder(settings.model_name, version)}/"
                        f"{audit.artifactory_name(e['tag'], e['event'])}"
                        for e in audit.history(settings.mlflow_tracking_uri, settings.model_name, version))
    items = [row for repo in (STAGING, RELEASE) for row in _items(repo)]
    stored = Counter(f"{row['repo']}/{row['path']}/{row['name']}" for row in items)
    same_model_twice = Counter(row["sha256"] for row in items
                               if row["repo"] == STAGING and row["name"] == "model.safetensors")
    duplicate_artifacts = sum((stored - expected).values()) + sum(n - 1 for n in same_model_twice.values())
    missing_artifacts = sum((expected - stored).values())
    events = _champion_events(world.run_ids)

    before_commit = [r for r, p in zip(results, POINTS, strict=True) if not p.after_commit]
    after_commit = [r for r, p in zip(results, POINTS, strict=True) if p.after_commit]
    seconds = time.perf_counter() - started
    summary = (
        f"crash at {sum(r['crashed_there'] for r in results)} of {len(POINTS)} points "
        f"({sum(p.kill for p in POINTS)} by SIGKILL): "
        f"champion unchanged {sum(r['champion_kept'] for r in before_commit)}/{len(before_commit)} before the commit "
        f"point, committed and mirror repaired {sum(r['champion_kept'] for r in after_commit)}/{len(after_commit)} "
        f"after it; rerun completed {sum(r['rerun_completed'] for r in results)}/{len(POINTS)}; full rerun of a "
        f"finished run {'same version, nothing added' if full_rerun_same else 'CHANGED SOMETHING'}; "
        f"model versions {len(versions)} for {len(world.run_ids)} runs, duplicate model versions "
        f"{duplicate_versions}; artifacts {sum(stored.values())}, duplicate artifacts {duplicate_artifacts}, "
        f"missing {missing_artifacts}; champion asset events {sum(events.values())} for {len(world.run_ids)} "
        f"champions and 1 full rerun; {seconds:.0f} s"
    )
    print(summary)
    for row in results:
        print(row)
    assert all(r["crashed_there"] and r["champion_kept"] and r["rerun_completed"] for r in results), results
    assert full_rerun_same, _states(full)
    assert len(versions) == len(world.run_ids) and duplicate_versions == 0, (versions_per_run, runs_per_key)
    assert duplicate_artifacts == 0 and missing_artifacts == 0, (stored - expected, expected - stored)
    # The Asset event comes with the task that moves the alias: one per champion, none from a crashed try, and
    # one more from the full rerun, since Airflow emits an event for every successful try of a producer.
    assert events == Counter(world.run_ids) + Counter([last_run]), events

    # A commit point reached after another run moved `champion` must not roll that run back.
    from include.mlops import registry

    disarm = _jfrog_fault(rf"^/artifactory/api/storage/{RELEASE}/mnist-cnn/\d+/model\.safetensors$", "PUT")(world)
    try:
        late = world.dag.test(run_conf={**TINY, "seed": len(POINTS) + 1})
    finally:
        disarm()
    assert _states(late)["release_model"] == "failed" and _champion(world) == last_version
    other = _version_of(world, baseline.run_id)
    registry.promote(world.tracking_uri, world.model_name, other)  # what another run's set_champion would do
    late = _rerun(world.dag, late.run_id)
    assert late.state == "failed" and _states(late)["set_champion"] == "failed", _states(late)
    assert _champion(world) == other


if __name__ == "__main__":
    # The child process of the SIGKILL point: one run of the DAG, in-process tasks, killed from outside.
    from datetime import datetime

    _load_dag().test(logical_date=datetime.fromisoformat(sys.argv[2]), run_conf={**TINY, "seed": int(sys.argv[1])})
