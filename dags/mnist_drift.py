"""
### MNIST drift: the newest production batch against the training reference, with Evidently 0.7

Daily at 06:00 UTC and on demand. Reads the newest `.npz` batch from the landing folder, measures drift on
per-image features (intensity, ink, bounding box, centre of mass) with Evidently's `DataDriftPreset`,
keeps the HTML and JSON reports, and emits the `mnist_drift_detected` Asset event only when the share of
drifted features reaches the threshold, which schedules `mnist_training`. No batch or no drift is a skip.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task

from include.assets import MNIST_DRIFT


def _settings():
    from airflow.sdk import Variable

    from include.settings import PipelineSettings

    return PipelineSettings.from_env(data_dir=Variable.get("mnist_data_dir", default=None))


@dag(
    dag_id="mnist_drift",
    schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["mnist", "monitoring", "evidently"],
    default_args={"owner": "mlops", "retries": 1, "retry_delay": timedelta(seconds=20)},
    params={
        "drift_share": Param(
            0.5, type="number", exclusiveMinimum=0, maximum=1, description="Share of drifted features that means drift."
        ),
        "reference_size": Param(
            5000, type="integer", minimum=500, maximum=60000, description="Training images in the reference."
        ),
    },
)
def mnist_drift():
    @task
    def find_batch() -> dict:
        """The newest production batch in the landing folder; none is a skip."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.mnist.data import sha256_file

        landing = _settings().landing_dir
        batches = sorted(landing.glob("*.npz"), key=lambda p: (p.stat().st_mtime, p.name))
        if not batches:
            raise AirflowSkipException(f"no production batch (*.npz) in {landing}")
        newest = batches[-1]
        return {"path": str(newest), "name": newest.stem, "sha256": sha256_file(newest)}

    @task
    def measure_drift(batch: dict) -> dict:
        """Evidently DataDriftPreset on image features; reports kept per batch."""
        from pathlib import Path

        import numpy as np
        from airflow.sdk.exceptions import AirflowFailException

        from include.mlops.drift import BatchError, load_batch
        from include.mlops.drift import measure_drift as measure
        from include.mlops.files import write_json
        from include.mnist.data import load_split

        ctx = get_current_context()
        params = ctx["params"]
        settings = _settings()
        try:
            images, _ = load_batch(Path(batch["path"]))
        except BatchError as exc:
            raise AirflowFailException(str(exc)) from exc
        train = load_split(settings.data_dir, "train")
        pick = np.random.default_rng(0).choice(len(train.images), params["reference_size"], replace=False)
        result = measure(
            train.images[np.sort(pick)],
            images,
            settings.reports_dir / "drift" / f"{batch['name']}-{batch['sha256'][:12]}",
            drift_share=params["drift_share"],
        )
        print(
            f"batch {batch['name']}: {result.drifted_columns}/{result.total_columns} features drifted "
            f"(share {result.drift_share:.2f}, threshold {result.threshold}); report {result.html_path}"
        )
        summary = {**result.to_dict(), "batch": batch}
        write_json(settings.run_dir(ctx["dag"].dag_id, ctx["run_id"]) / "drift.json", summary)
        return summary

    @task(outlets=[MNIST_DRIFT])
    def emit_drift_event(result: dict) -> dict:
        """Emit the drift Asset event that schedules retraining; no drift is a skip, so no event."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not result["drift_detected"]:
            raise AirflowSkipException(
                f"no drift in {result['batch']['name']}: share {result['drift_share']:.2f} < {result['threshold']}"
            )
        get_current_context()["outlet_events"][MNIST_DRIFT].extra = {
            "batch": result["batch"]["name"],
            "batch_sha256": result["batch"]["sha256"],
            "drift_share": result["drift_share"],
            "report": result["json_path"],
        }
        return {"drift_detected": True, "batch": result["batch"]["name"]}

    emit_drift_event(measure_drift(find_batch()))


mnist_drift()
