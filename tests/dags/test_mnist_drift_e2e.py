"""The drift DAG with dag.test(): a clean day skips, a drifted day emits one event, a pending retrain holds the next."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = {"reference_size": 2000}


def _champion(home: Path, private_key: bytes) -> str:
    """Register a seeded, untrained fast99 CNN, signed, as `champion`: the DAG only needs the weights and the alias."""
    import torch
    from mlflow import MlflowClient

    from include.mlops.registry import CHAMPION, SIGNED_MODEL, ensure_experiment
    from include.mlops.signing import sign_model
    from include.mnist.model import build_model
    from include.mnist.train import save_model
    from include.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    torch.manual_seed(0)
    folder = home / "seed-model"
    save_model(build_model(), folder / "model" / "model.safetensors", "fast")
    info = sign_model(folder / "model", folder / "model.sig", private_key)
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    experiment = ensure_experiment(settings.mlflow_tracking_uri, settings.experiment_name, settings.mlflow_artifact_root)
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(folder / "model"), artifact_path=f"{SIGNED_MODEL}/model")
    client.log_artifact(run.info.run_id, str(folder / "model.sig"), artifact_path=SIGNED_MODEL)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(settings.model_name)
    version = client.create_model_version(settings.model_name, f"{run.info.artifact_uri}/{SIGNED_MODEL}",
                                          run.info.run_id, tags={"signature.sha256": info.sha256})
    client.set_registered_model_alias(settings.model_name, CHAMPION, version.version)
    return run.info.run_id


def _land(home: Path, scenario: str, name: str, seed: int) -> Path:
    from include.mnist.batches import make_batch, write_batch
    from include.mnist.data import load_split
    from include.settings import DEFAULT_DATA_DIR

    test = load_split(DEFAULT_DATA_DIR, "test")
    images, labels = make_batch(test.images, test.labels, scenario, size=600, seed=seed)
    return write_batch(home / "landing", images, labels, name)


def _states(run) -> dict[str, str]:
    states: dict[str, str] = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, ti.state)
    return states


def _records(home: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (home / "drift" / "processed").glob("*.json")]


def _events(dag_id: str = "mnist_drift") -> list:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(
            session.scalars(
                select(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id).where(AssetModel.name == "mnist_drift_detected")
            ).all()
        )


@pytest.mark.e2e
def test_clean_day_skips_drifted_day_emits_once_and_reruns_do_nothing(airflow_db, mlops_home, jfrog_server, jfrog_conn,
                                                                     model_signing_keys):
    from airflow.dag_processing.dagbag import DagBag
    from jfrog_provider.hooks.artifactory import ArtifactoryHook
    from mlflow import MlflowClient

    from include.settings import PipelineSettings, safe_name

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_drift.py")).dags["mnist_drift"]
    settings = PipelineSettings.from_env()
    model_run = _champion(mlops_home, model_signing_keys[0])
    before = len(_events())

    # Day 1: a clean batch and two bad files. The clean one is measured, the bad ones quarantined, no event.
    _land(mlops_home, "clean", "day1-clean", seed=1)
    np.savez(mlops_home / "landing" / "day1-float.npz", images=np.zeros((4, 28, 28), np.float32))
    (mlops_home / "landing" / "day1-notes.txt").write_text("not a batch")
    clean = dag.test(run_conf=SMALL)
    states = _states(clean)
    assert states["measure_batch"] == "success", states
    assert states["report_history"] == "success", states
    assert states["decide_retrain"] == "skipped", states
    assert len(_events()) == before
    quarantine = mlops_home / "drift" / "quarantine"
    reasons = {json.loads(p.read_text())["file"]: json.loads(p.read_text())["reason"] for p in quarantine.glob("*.reason.json")}
    assert "must be uint8" in reasons["day1-float.npz"] and "format" in reasons["day1-notes.txt"]
    assert list((mlops_home / "landing").iterdir()) == []

    summary = json.loads((mlops_home / "runs" / "mnist_drift" / safe_name(clean.run_id) / "drift.json").read_text())
    (day1,) = summary["batches"]
    assert day1["drift_detected"] is False
    assert Path(day1["html_path"]).exists() and Path(day1["json_path"]).exists()
    # The report a person reads says what the verdict said, column by column (checked and recorded per batch).
    decision_file = mlops_home / "reports" / "drift" / f"day1-clean-{day1['sha256'][:12]}" / "decision.json"
    agreement = json.loads(decision_file.read_text())["report_agreement"]
    assert agreement["agree"] is True and agreement["differing_columns"] == [] and day1["report_agrees"] is True
    assert Path(summary["history"]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored_report = ArtifactoryHook().get_file_info(
        settings.artifactory_repo, f"drift-reports/day1-clean-{day1['sha256'][:12]}/drift_report.json"
    )
    assert stored_report["checksums"]["sha256"] == hashlib.sha256(Path(day1["json_path"]).read_bytes()).hexdigest()

    # The reference profile was built once for the champion version and stored with its MLflow run.
    client = MlflowClient(settings.mlflow_tracking_uri)
    stored = {a.path for a in client.list_artifacts(model_run, "drift_reference")}
    assert {"drift_reference/profile.npz", "drift_reference/profile.json"} <= stored
    drift_runs = client.search_runs(
        [client.get_experiment_by_name("mnist-drift").experiment_id],
        filter_string=f"tags.`drift.batch_sha256` = '{day1['sha256']}'",
    )
    assert len(drift_runs) == 1
    assert {a.path for a in client.list_artifacts(drift_runs[0].info.run_id, "evidently")} >= {
        "evidently/drift_report.html", "evidently/drift_report.json", "evidently/classification_report.html",
    }

    # Day 2: an inverted batch drifts; the event is emitted once, with the facts as extras.
    _land(mlops_home, "inversion", "day2-inverted", seed=2)
    drifted = dag.test(run_conf=SMALL)
    assert _states(drifted)["decide_retrain"] == "success"
    events = _events()
    assert len(events) == before + 1
    assert events[-1].extra["batches"] == ["day2-inverted"]
    alerts = (mlops_home / "alerts" / "drift.jsonl").read_text().splitlines()
    assert any(json.loads(a)["kind"] == "drift" and "retrain scheduled" in json.loads(a)["message"] for a in alerts)

    # Day 3: drift again, but the day-2 request has not started a training run yet: recorded and alerted,
    # no second request (learnt from the Asset events alone).
    _land(mlops_home, "noise", "day3-noise", seed=3)
    storm = dag.test(run_conf=SMALL)
    assert _states(storm)["decide_retrain"] == "skipped"
    assert len(_events()) == before + 1
    decision = json.loads((mlops_home / "runs" / "mnist_drift" / safe_name(storm.run_id) / "decision.json").read_text())
    assert decision["action"] == "pending" and "has not started yet" in decision["reason"]
    noise = next(r for r in _records(mlops_home) if r["batch"]["name"] == "day3-noise")
    assert noise["drift_detected"] is True and noise["signal"]["action"] == "pending"

    # A training run starts: its validate_data emits the training-input event, so the request is no longer pending.
    training = DagBag(dag_folder=str(REPO_ROOT / "dags" / "mnist_training.py")).dags["mnist_training"]
    started = training.test(mark_success_pattern=r"(?!validate_data$).*")
    assert _states(started)["validate_data"] == "success"

    # Day 4: drift inside the cooldown: no second request.
    _land(mlops_home, "rotation", "day4-rotated", seed=4)
    assert _states(dag.test(run_conf=SMALL))["decide_retrain"] == "skipped"
    rotated = next(r for r in _records(mlops_home) if r["batch"]["name"] == "day4-rotated")
    assert rotated["drift_detected"] is True and rotated["signal"]["action"] == "cooldown"

    # Day 5: the cooldown over (0 h), the next drift is requested again.
    _land(mlops_home, "noise", "day5-noise", seed=5)
    requested = dag.test(run_conf={**SMALL, "cooldown_hours": 0})
    assert _states(requested)["decide_retrain"] == "success"
    assert len(_events()) == before + 2 and _events()[-1].extra["batches"] == ["day5-noise"]

    # The same bytes sent again are quarantined as a duplicate, never measured a second time.
    _land(mlops_home, "clean", "day6-resent", seed=1)
    processed = sorted(p.name for p in (mlops_home / "drift" / "processed").iterdir())
    resent = dag.test(run_conf=SMALL)
    assert _states(resent)["measure_batch"] == "skipped"
    assert sorted(p.name for p in (mlops_home / "drift" / "processed").iterdir()) == processed
    assert any("duplicate" in json.loads(p.read_text())["reason"] for p in quarantine.glob("day6-resent*.reason.json"))
    assert len(_events()) == before + 2
