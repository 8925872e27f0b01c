"""
### MNIST drift: production batches against the champion's reference, decided fast, reported by Evidently

Daily at 06:00 UTC and on demand.

1. `wait_for_batch` is a sensor (reschedule mode): "a batch is waiting in the landing folder" is a lasting
   state, not an event, so a sensor fits and an AssetWatcher does not. No batch by the timeout is a skip.
2. `ingest_batches` validates each landed file (format, shape, dtype, value range, non-empty, no NaN, labels)
   and either claims it by an atomic rename keyed by its sha256 or quarantines it with a `.reason.json`.
   A batch counts as processed only once its processed marker is written, so reruns finish what was claimed
   and never measure a batch twice; a re-sent batch is quarantined as a duplicate.
3. `prepare_reference` builds the reference profile of the champion model version once (image features plus
   the model's embeddings, predicted class and confidence) and stores it with that version in MLflow.
4. `measure_batch` (one mapped task per batch) decides drift with Evidently's default per-column tests and
   thresholds computed from the cached reference, and keeps Evidently's DataDriftPreset report (plus a
   ClassificationPreset report when the batch has labels) as HTML and JSON, in MLflow too.
5. `report_history` redraws the drift history (share of drifted features per day: PNG, CSV, HTML).
6. `decide_retrain` emits the `mnist_drift_detected` Asset event that schedules `mnist_training`: one event for
   any number of drifted batches, none inside the cooldown or while a retrain is queued or running.
   No drift is a skip. Alerts go through the `AlertNotifier` (channel `drift`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task
from mlops_notifiers import AlertNotifier

from include.assets import MNIST_DRIFT

TRAINING_DAG = "mnist_training"


def _settings():
    from airflow.sdk import Variable

    from include.settings import PipelineSettings

    return PipelineSettings.from_env(data_dir=Variable.get("mnist_data_dir", default=None))


def _store():
    from include.mlops.drift_store import DriftStore

    settings = _settings()
    return DriftStore(landing=settings.landing_dir, root=settings.home / "drift")


@dag(
    dag_id="mnist_drift",
    schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["mnist", "monitoring", "evidently"],
    default_args={
        "owner": "mlops",
        "retries": 1,
        "retry_delay": timedelta(seconds=20),
        "on_failure_callback": AlertNotifier("{{ dag.dag_id }}.{{ ti.task_id }} failed in {{ run_id }}", channel="drift"),
    },
    params={
        "drift_share": Param(
            0.4,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            description="Share of drifted features that means drift (clean batches measured at most 0.25).",
        ),
        "reference_size": Param(
            5000, type="integer", minimum=1001, maximum=60000, description="Training images in the reference profile."
        ),
        "cooldown_hours": Param(
            24, type="number", minimum=0, description="No second retrain request within this many hours of the last."
        ),
    },
)
def mnist_drift():
    @task.sensor(poke_interval=60, timeout=timedelta(hours=3), mode="reschedule", soft_fail=True)
    def wait_for_batch() -> bool:
        """Done when a file waits in the landing folder or a claimed batch is unfinished."""
        return _store().has_work()

    @task
    def ingest_batches() -> list[dict]:
        """Quarantine bad files with a reason, claim good batches by sha256; returns every pending batch."""
        from include.mlops.drift import load_batch
        from include.mlops.drift_store import ingest
        from include.mnist.data import sha256_file

        store = _store()
        result = ingest(store, load_batch, sha256_file)
        for bad in result.quarantined:
            print(f"quarantined {bad.name} -> {bad.path}: {bad.reason}")
        if result.quarantined:
            lines = "; ".join(f"{q.name}: {q.reason}" for q in result.quarantined)
            AlertNotifier(f"{len(result.quarantined)} batch(es) quarantined: {lines}", channel="drift", kind="quarantine")(get_current_context())
        print(f"claimed {[b.name for b in result.claimed]}; pending {[b.name for b in result.pending]}")
        return [b.to_dict() for b in result.pending]

    @task
    def prepare_reference() -> dict:
        """The champion's reference profile, built once per model version and stored with it in MLflow."""
        import numpy as np

        from include.mlops.drift import build_reference_profile, save_profile
        from include.mlops.registry import champion_model, log_reference
        from include.mnist.data import load_split

        params = get_current_context()["params"]
        settings = _settings()
        champion = champion_model(settings.mlflow_tracking_uri, settings.model_name, settings.champions_dir)
        version = champion.version if champion else "none"
        size = int(params["reference_size"])
        directory = settings.reports_dir / "drift" / "reference" / f"{settings.model_name}-v{version}-n{size}"
        if not (directory / "profile.json").exists():
            train = load_split(settings.data_dir, "train")
            pick = np.sort(np.random.default_rng(0).choice(len(train.images), size, replace=False))
            profile = build_reference_profile(
                train.images[pick],
                champion.state_dict if champion else None,
                version,
                meta={"model_name": settings.model_name, "reference": f"train split, {size} images, seed 0"},
            )
            save_profile(profile, directory)
            if champion:
                uri = log_reference(settings.mlflow_tracking_uri, champion.run_id, directory)
                print(f"reference profile of v{version} stored at {directory} and {uri}")
        else:
            print(f"reference profile of v{version} reused from {directory}")
        if champion is None:
            print("no champion model yet: drift is measured on image features only")
        return {
            "model_version": version,
            "model_path": champion.state_dict if champion else None,
            "profile_dir": str(directory),
        }

    @task(map_index_template="{{ task.op_kwargs['batch']['name'] }}")
    def measure_batch(batch: dict, reference: dict) -> dict:
        """Fast drift decision on one batch, Evidently's HTML/JSON reports, MLflow run, then the processed marker."""
        from datetime import UTC
        from pathlib import Path

        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops.drift import CATEGORICAL, batch_features, load_batch, load_profile, write_reports
        from include.mlops.drift_stats import decide, summarize_reference
        from include.mlops.files import write_json
        from include.mlops.registry import log_batch_run

        ctx = get_current_context()
        store, settings = _store(), _settings()
        done = store.record(batch["sha256"])
        if done is not None:
            print(f"batch {batch['name']} was already processed at {done['measured_at']}: not measured again")
            return _summary(done)
        images, labels = load_batch(Path(batch["path"]))
        profile = load_profile(Path(reference["profile_dir"]))
        current = batch_features(images, profile, reference["model_path"])
        decision = decide(summarize_reference(profile.columns, CATEGORICAL), current, ctx["params"]["drift_share"])
        report_dir = settings.reports_dir / "drift" / f"{batch['name']}-{batch['sha256'][:12]}"
        write_json(report_dir / "decision.json", decision.to_dict())
        report = write_reports(profile.columns, current, report_dir, ctx["params"]["drift_share"], labels=labels)
        files = [Path(p) for p in (report.html_path, report.json_path, report.classification_html, report.classification_json) if p]
        mlflow_run = log_batch_run(
            tracking_uri=settings.mlflow_tracking_uri,
            experiment_name="mnist-drift",
            artifact_root=settings.mlflow_artifact_root,
            batch_sha256=batch["sha256"],
            run_name=batch["name"],
            params={"batch": batch["name"], "model_version": reference["model_version"], "rows": decision.current_rows},
            metrics={"drift_share": decision.drift_share, **{f"score.{k}": v.score for k, v in decision.columns.items()}},
            tags={"drift_detected": decision.drift_detected, "airflow.run_id": ctx["run_id"]},
            files=files + [report_dir / "decision.json"],
        )
        # The reports also go to Artifactory, keyed by the batch digest so a retry overwrites them.
        hook = ArtifactoryHook()
        folder = f"drift-reports/{batch['name']}-{batch['sha256'][:12]}"
        for path in files + [report_dir / "decision.json"]:
            hook.deploy_artifact(
                path,
                settings.artifactory_repo,
                f"{folder}/{path.name}",
                properties={"drift.batch_sha256": batch["sha256"], "drift.detected": str(decision.drift_detected)},
            )
        record = {
            "batch": batch,
            "measured_at": datetime.now(UTC).isoformat(),
            "run_id": ctx["run_id"],
            "model_version": reference["model_version"],
            "drift_detected": decision.drift_detected,
            "drift_share": decision.drift_share,
            "threshold": decision.threshold,
            "drifted_columns": decision.drifted_columns,
            "total_columns": len(decision.columns),
            "scores": {k: v.score for k, v in decision.columns.items()},
            "report": report.to_dict(),
            "mlflow_run_id": mlflow_run,
            "artifactory_path": f"{settings.artifactory_repo}/{folder}/",
            "signal": None,
        }
        store.mark_processed(batch["sha256"], record)
        print(
            f"batch {batch['name']}: {len(decision.drifted_columns)}/{len(decision.columns)} features drifted "
            f"(share {decision.drift_share:.2f}, threshold {decision.threshold}) {decision.drifted_columns}; "
            f"report {report.html_path}"
        )
        return _summary(record)

    @task(trigger_rule="none_failed_min_one_success")
    def report_history() -> dict:
        """Redraw the drift history (PNG, CSV, HTML) and keep this run's summary under its run directory."""
        from include.mlops.drift_store import write_history
        from include.mlops.files import write_json

        ctx = get_current_context()
        settings, store = _settings(), _store()
        records = store.records()
        paths = write_history(records, settings.reports_dir / "drift")
        summary = {"batches": [_summary(r) for r in records if r["run_id"] == ctx["run_id"]], "history": paths}
        write_json(settings.run_dir(ctx["dag"].dag_id, ctx["run_id"]) / "drift.json", summary)
        print(f"drift history {paths['html']} (plot {paths['png']})")
        return summary

    @task(inlets=[MNIST_DRIFT], outlets=[MNIST_DRIFT])
    def decide_retrain() -> dict:
        """Emit one drift event for the drifted batches unless in cooldown or a retrain is active; else skip."""
        from datetime import UTC

        from airflow.sdk.exceptions import AirflowSkipException

        from include.mlops.drift_policy import retrain_decision
        from include.mlops.files import write_json

        ctx = get_current_context()
        store, run_id = _store(), ctx["run_id"]
        pending = store.unsignalled_drift(run_id)
        events = list(ctx["inlet_events"][MNIST_DRIFT])
        last = events[-1].timestamp if events else None
        active = ctx["ti"].get_dr_count(dag_id=TRAINING_DAG, states=["queued", "running"])
        now = datetime.now(UTC)
        decision = retrain_decision(
            [r["batch"]["name"] for r in pending], now, timedelta(hours=ctx["params"]["cooldown_hours"]), last, active
        )
        outcome = {**decision.to_dict(), "batches": [r["batch"]["sha256"] for r in pending], "run_id": run_id, "at": now.isoformat()}
        write_json(_settings().run_dir(ctx["dag"].dag_id, run_id) / "decision.json", outcome)
        if decision.action == "none":
            raise AirflowSkipException(f"no drift: {decision.reason}")
        store.mark_signal([r["batch"]["sha256"] for r in pending], outcome)
        AlertNotifier(f"{decision.reason} (action: {decision.action})", channel="drift", kind="drift")(ctx)
        if not decision.emit:
            raise AirflowSkipException(decision.reason)
        worst = max(pending, key=lambda r: r["drift_share"])
        # Facts for the training run's trigger, no secrets: which batches, how strong, where the report is.
        ctx["outlet_events"][MNIST_DRIFT].extra = {
            "batches": [r["batch"]["name"] for r in pending],
            "batch_sha256": [r["batch"]["sha256"] for r in pending],
            "drift_share": worst["drift_share"],
            "drifted_columns": worst["drifted_columns"],
            "report": worst["report"]["json_path"],
        }
        return outcome

    batches = ingest_batches()
    reference = prepare_reference()
    measured = measure_batch.partial(reference=reference).expand(batch=batches)
    history = report_history()
    wait_for_batch() >> batches >> reference
    # The history also runs when no batch was claimed (all quarantined): measure_batch then maps over nothing.
    [batches, measured] >> history >> decide_retrain()


def _summary(record: dict) -> dict:
    return {
        "batch": record["batch"]["name"],
        "sha256": record["batch"]["sha256"],
        "drift_detected": record["drift_detected"],
        "drift_share": record["drift_share"],
        "threshold": record["threshold"],
        "drifted_columns": record["drifted_columns"],
        "total_columns": record["total_columns"],
        "html_path": record["report"]["html_path"],
        "json_path": record["report"]["json_path"],
        "mlflow_run_id": record["mlflow_run_id"],
    }


mnist_drift()
