"""
### MNIST drift: production batches against the champion's reference, decided fast, reported by Evidently

Daily at 06:00 UTC and on demand.

1. `wait_for_batch` is a sensor (reschedule mode): "a batch is waiting in the landing folder" is a lasting
   state, not an event, so a sensor fits and an AssetWatcher does not. No batch by the timeout is a skip.
2. `ingest_batches` validates each landed file (format, shape, dtype, value range, non-empty, no NaN, labels)
   and either claims it by an atomic rename keyed by the sha256 of its decoded arrays (the same arrays saved
   differently are one batch) or quarantines it with a `.reason.json`; symlinks, FIFOs and partial files are
   quarantined too. A batch counts as processed only once its processed marker is written, so reruns finish
   what was claimed and never measure a batch twice; a re-sent batch is quarantined as a duplicate.
3. `prepare_reference` builds the reference profile of the champion model version once (image features plus
   the model's embeddings, predicted class and confidence) and stores it with that version in MLflow.
4. `measure_batch` (one mapped task per batch) decides drift with Evidently's default per-column tests and
   thresholds computed from the cached reference, keeps Evidently's DataDriftPreset report (plus a
   ClassificationPreset report when the batch has labels) as HTML and JSON, in MLflow too, and checks that
   the report's per-column flags agree with the verdict (`report_agreement` in decision.json; a WARNING if not).
   Its link "Evidently drift report" opens the report in the MLflow UI; the map index is the batch's name.
5. `report_history` redraws the drift history (share of drifted features per day: PNG, CSV, HTML).
6. `decide_retrain` emits the `mnist_drift_detected` Asset event that schedules `mnist_training`: one event for
   any number of drifted batches, none inside the cooldown or while a requested retrain is pending (the newest
   drift event is newer than the newest `mnist_training_input` event: no training run has started since).
   It learns this from Asset events only. No drift is a skip. Alerts go through the `AlertNotifier` (`drift`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task
from mlops_links import DriftReportLink, with_links
from mlops_notifiers import AlertNotifier
from mlops_signing import signing_key

from include.assets import MNIST_DRIFT, MNIST_TRAINING_INPUT


def _settings():
    from airflow.sdk import Variable

    from include.settings import PipelineSettings

    return PipelineSettings.from_env(data_dir=Variable.get("mnist_data_dir", default=None))


def _store():
    from include.mlops.drift_store import DriftStore

    settings = _settings()
    return DriftStore(landing=settings.landing_dir, root=settings.home / "drift")


def _latest_event_at(asset) -> datetime | None:
    """When the newest event of an inlet Asset was emitted, or None."""
    newest = list(get_current_context()["inlet_events"][asset].ascending(False).limit(1))
    return newest[0].timestamp if newest else None


@dag(
    dag_id="mnist_drift",
    schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    description="Measure landed production batches for drift against the champion (Evidently); request a retrain",
    doc_md=__doc__,
    tags=["mnist", "monitoring", "evidently"],
    default_args={
        "owner": "mlops",
        # Return values are summaries (the XCom tab shows them); each task logs its own one-line result instead.
        "show_return_value_in_logs": False,
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

    @task(multiple_outputs=False)
    def ingest_batches() -> list[dict]:
        """Quarantine bad files with a reason, claim good batches by sha256; returns every pending batch."""
        from include.mlops.drift_run import ingest_landed, quarantine_alert
        from include.mnist.spec import MNIST

        result = ingest_landed(MNIST, _store())
        if message := quarantine_alert(result):
            AlertNotifier(message, channel="drift", kind="quarantine")(get_current_context())
        return [b.to_dict() for b in result.pending]

    @task(multiple_outputs=False)
    def prepare_reference() -> dict:
        """The champion's reference profile, built once per model version and stored with it in MLflow."""
        from include.mlops.drift_run import prepare_reference as prepare
        from include.mnist.spec import MNIST

        return prepare(MNIST, _settings(), int(get_current_context()["params"]["reference_size"]), signing_key())

    # A mapped task takes no doc_md from its docstring: given here. The map index is the batch's name.
    @task(multiple_outputs=False, map_index_template="{{ task.op_kwargs['batch']['name'] }}",
          doc_md="Fast drift decision on one batch, Evidently's reports and their agreement, MLflow run, processed "
                 "marker. Link: the Evidently drift report in the MLflow UI.")
    def measure_batch(batch: dict, reference: dict) -> dict:
        """Fast drift decision on one batch, Evidently's reports and their agreement, MLflow run, processed marker."""
        from pathlib import Path

        from jfrog_provider.hooks.artifactory import ArtifactoryHook
        from mlops_links import mlflow_run_url, push_link

        from include.mlops.drift_run import measure_batch as measure
        from include.mlops.registry import ensure_experiment
        from include.mnist.spec import MNIST

        ctx, store = get_current_context(), _store()
        # Under the batch's lock a racing run waits, then finds the processed marker and does not measure again.
        with store.measuring(batch["sha256"]):
            measured = measure(MNIST, batch, reference, settings=_settings(), store=store, artifacts=ArtifactoryHook(),
                               drift_share=ctx["params"]["drift_share"], run_id=ctx["run_id"], public_key=signing_key())
        settings = _settings()
        # the experiment log_batch_run files each batch's run under (the artifact viewer's route needs its id)
        experiment = ensure_experiment(settings.mlflow_tracking_uri, f"{MNIST.name}-drift", settings.mlflow_artifact_root)
        push_link(DriftReportLink, mlflow_run_url(settings.mlflow_ui_url, measured["mlflow_run_id"], experiment,
                                                  f"evidently/{Path(measured['html_path']).name}"))
        return measured

    @task(multiple_outputs=False, trigger_rule="none_failed_min_one_success")
    def report_history() -> dict:
        """Redraw the drift history (PNG, CSV, HTML) and keep this run's summary under its run directory."""
        from include.mlops.drift_run import report_history as write

        ctx, settings = get_current_context(), _settings()
        return write(settings, _store(), settings.run_dir(ctx["dag"].dag_id, ctx["run_id"]), ctx["run_id"])

    @task(multiple_outputs=False, inlets=[MNIST_DRIFT, MNIST_TRAINING_INPUT], outlets=[MNIST_DRIFT])
    def decide_retrain() -> dict:
        """Emit one drift event for the drifted batches unless one is pending or in cooldown; else skip."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.mlops.drift_run import decide_retrain as decide

        ctx = get_current_context()
        outcome = decide(_store(), ctx["run_id"], run_dir=_settings().run_dir(ctx["dag"].dag_id, ctx["run_id"]),
                         cooldown=timedelta(hours=ctx["params"]["cooldown_hours"]),
                         last_request_at=_latest_event_at(MNIST_DRIFT), last_start_at=_latest_event_at(MNIST_TRAINING_INPUT))
        if outcome.decision.action == "none":
            raise AirflowSkipException(f"no drift: {outcome.decision.reason}")
        AlertNotifier(f"{outcome.decision.reason} (action: {outcome.decision.action})", channel="drift", kind="drift")(ctx)
        if outcome.event_extra is None:
            raise AirflowSkipException(outcome.decision.reason)
        ctx["outlet_events"][MNIST_DRIFT].extra = outcome.event_extra
        return outcome.record

    batches = ingest_batches()
    reference = prepare_reference()
    measured = with_links(measure_batch.partial(reference=reference).expand(batch=batches), DriftReportLink())
    history = report_history()
    wait_for_batch() >> batches >> reference
    # The history also runs when no batch was claimed (all quarantined): measure_batch then maps over nothing.
    [batches, measured] >> history >> decide_retrain()


mnist_drift()
