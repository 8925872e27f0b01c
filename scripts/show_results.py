"""Print where each result of a local pipeline run is: MLflow, Artifactory, SBOM, Xray, drift days, retrain."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.settings import PipelineSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--training-run", required=True)
    parser.add_argument("--data-run", help="the mnist_data_arrival run that announced a new data version")
    parser.add_argument("--drift-run", required=True, action="append", help="one per drift day, in order")
    parser.add_argument("--airflow-url", default="http://127.0.0.1:8080")
    parser.add_argument(
        "--clear-queued-retrain", action="store_true", help="after showing it, clear the retrain the drift event queued"
    )
    args = parser.parse_args()
    settings = PipelineSettings.from_env()

    release_file = settings.run_dir("mnist_training", args.training_run) / "release.json"
    print("\n=== mnist_training", args.training_run)
    print_task_durations("mnist_training", args.training_run)
    if release_file.exists():
        release = json.loads(release_file.read_text())
        mlflow, art, sbom, xray = release["mlflow"], release["artifactory"], release["sbom"], release["xray"]
        decision = release["decision"]
        print(f"MLflow tracking      {mlflow['tracking_uri']}")
        print(f"MLflow run           {mlflow['run_id']} (experiment {mlflow['experiment_id']})")
        print(f"Model version        {mlflow['model_name']} v{mlflow['version']}  test accuracy {release['test_accuracy']:.4f}")
        print(f"Artifactory          {art['repo']}/{art['path'].lstrip('/')}  sha256 {art['sha256']}")
        print(f"                     {art.get('uri') or art.get('download_uri', '')}")
        print(f"SBOM                 {sbom['path']}  ({sbom['components']} components, {sbom['serial_number']})")
        print(f"                     Artifactory {sbom['artifactory_path']}")
        print(f"Xray verdict         scan {xray['scan_id']}: {xray['counts']} "
              f"(threshold {xray['severity_threshold']}) -> {'PASS' if xray['passed'] else 'BLOCK'}")
        # release.json is written before the alias moves (set_champion is the commit point): ask MLflow
        from include.mlops import registry

        current = registry.champion(mlflow["tracking_uri"], mlflow["model_name"])
        if not decision["promote"]:
            print(f"Promotion            blocked: {'; '.join(decision['reasons'])}")
        elif current and current[0] == str(mlflow["version"]):
            print(f"Promotion            champion (MLflow alias on v{current[0]})")
        else:
            print(f"Promotion            gates passed, champion still {current[0] if current else 'none'}: "
                  "release_model or set_champion did not finish (see their logs above)")
    else:
        print("Blocked or failed    no release manifest: promote_model did not run (a gate failed; see the log of")
        print("                     the failed task above, e.g. scan_model names the CVE, component and threshold)")

    history = None
    for drift_run in args.drift_run:
        history = print_drift_day(settings, drift_run) or history
    if history:
        print(f"\nDrift history        {history['html']}")
        print(f"                     plot {history['png']}  table {history['csv']}")
    print_retrain(args.airflow_url, args.data_run, args.drift_run[-1], args.clear_queued_retrain)
    print(f"\nAirflow UI           {args.airflow_url}  (only while Airflow runs: scripts/pipeline --keep-running)")
    ui = os.environ.get("MLOPS_MLFLOW_UI_URL")
    print(f"MLflow UI            {ui} (user admin; only while the pipeline runs: --keep-running)" if ui
          else f"MLflow UI            .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")


def print_drift_day(settings: PipelineSettings, run_id: str) -> dict | None:
    """What one mnist_drift run measured and decided; returns the history's paths."""
    run_dir = settings.run_dir("mnist_drift", run_id)
    print("\n=== mnist_drift", run_id)
    print_task_durations("mnist_drift", run_id)
    drift_file = run_dir / "drift.json"
    if not drift_file.exists():
        print(f"no drift summary at {drift_file} (no batch landed, or the run failed)")
        return None
    summary = json.loads(drift_file.read_text())
    for batch in summary["batches"]:
        verdict = "DRIFT" if batch["drift_detected"] else "no drift"
        print(f"Batch                {batch['batch']}  sha256 {batch['sha256'][:12]}")
        print(f"Drift                {verdict}: {len(batch['drifted_columns'])}/{batch['total_columns']} features "
              f"(share {batch['drift_share']:.2f}, threshold {batch['threshold']}) {batch['drifted_columns']}")
        print(f"Evidently report     {batch['html_path']}")
        print(f"                     {batch['json_path']}  (MLflow run {batch['mlflow_run_id']})")
    decision_file = run_dir / "decision.json"
    if decision_file.exists():
        decision = json.loads(decision_file.read_text())
        print(f"Retrain decision     {decision['action']}: {decision['reason']}")
    quarantine = settings.home / "drift" / "quarantine"
    if quarantine.is_dir() and any(quarantine.glob("*.reason.json")):
        print(f"Quarantine           {quarantine} ({len(list(quarantine.glob('*.reason.json')))} files with reasons)")
    return summary["history"]


def print_retrain(airflow_url: str, data_run: str | None, drift_run: str, clear: bool) -> None:
    """The data-version and drift Asset events and the mnist_training run they queued, from Airflow's REST API."""
    print("\n=== retraining")
    events = []
    for dag_id, run_id in (("mnist_data_arrival", data_run), ("mnist_drift", drift_run)):
        if run_id:
            query = urllib.parse.urlencode({"source_dag_id": dag_id, "source_run_id": run_id})
            found = _api(airflow_url, f"/api/v2/assets/events?{query}")
            events = None if found is None or events is None else events + found.get("asset_events", [])
    queued = _api(airflow_url, "/api/v2/dags/mnist_training/assets/queuedEvents")
    if events is None or queued is None:
        print("Retrain              Airflow API unavailable: run scripts/pipeline --keep-running to inspect it")
        return
    for event in events:
        print(f"Asset event          {event.get('name') or event.get('uri')} from {event.get('source_dag_id')} at "
              f"{event['timestamp']} extra {event.get('extra')}")
    rows = queued.get("queued_events", [])
    if rows:
        print(f"Retrain scheduled    mnist_training queued by {len(rows)} asset event(s) since {rows[0]['created_at']}")
        if clear:
            _api(airflow_url, "/api/v2/dags/mnist_training/assets/queuedEvents", method="DELETE")
            print("                     cleared after showing it, so no training outlives this script")
    else:
        print("Retrain              nothing queued for mnist_training")


def _api(base: str, path: str, method: str = "GET") -> dict | None:
    headers = {"Accept": "application/json"}
    if os.environ.get("AIRFLOW_API_TOKEN"):  # local mode requires a login; scripts/pipeline gets an admin token
        headers["Authorization"] = f"Bearer {os.environ['AIRFLOW_API_TOKEN']}"
    request = urllib.request.Request(base.rstrip("/") + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(exc, urllib.error.HTTPError) and exc.code == 404:
            return {}
        return None
    return json.loads(body) if body else {}


def print_task_durations(dag_id: str, run_id: str) -> None:
    """One line per task: state and wall seconds, from Airflow's own records."""
    out = subprocess.run(
        ["airflow", "tasks", "states-for-dag-run", dag_id, run_id, "-o", "json"], capture_output=True, text=True
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("[")]
    cells = []
    for task in json.loads(rows[-1]) if rows else []:
        if task["start_date"] and task["end_date"]:
            took = datetime.fromisoformat(task["end_date"]) - datetime.fromisoformat(task["start_date"])
            cells.append(f"{task['task_id']} {took.total_seconds():.1f}s")
        else:
            cells.append(f"{task['task_id']} {task['state']}")
    print("Tasks                " + ", ".join(cells))


if __name__ == "__main__":
    main()
