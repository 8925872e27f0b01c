"""Print where each result of a local pipeline run is: MLflow, Artifactory, SBOM, Xray, drift report."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.settings import PipelineSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--training-run", required=True)
    parser.add_argument("--drift-run", required=True)
    parser.add_argument("--airflow-url", default="http://127.0.0.1:8080")
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
        print(f"                     {art['download_uri']}")
        print(f"SBOM                 {sbom['path']}  ({sbom['components']} components, {sbom['serial_number']})")
        print(f"                     Artifactory {sbom['artifactory_path']}")
        print(f"Xray verdict         scan {xray['scan_id']}: {xray['counts']} "
              f"(threshold {xray['severity_threshold']}) -> {'PASS' if xray['passed'] else 'BLOCK'}")
        print(f"Promotion            {'champion' if decision['promote'] else 'blocked: ' + '; '.join(decision['reasons'])}")
    else:
        print("Blocked or failed    no release manifest: promote_model did not run (a gate failed; see the log of")
        print("                     the failed task above, e.g. scan_model names the CVE, component and threshold)")

    drift_file = settings.run_dir("mnist_drift", args.drift_run) / "drift.json"
    print("\n=== mnist_drift", args.drift_run)
    print_task_durations("mnist_drift", args.drift_run)
    if drift_file.exists():
        drift = json.loads(drift_file.read_text())
        print(f"Batch                {drift['batch']['path']}")
        print(f"Drift                {'DRIFT' if drift['drift_detected'] else 'no drift'}: "
              f"{drift['drifted_columns']}/{drift['total_columns']} features (threshold share {drift['threshold']})")
        print(f"Drift report         {drift['html_path']}")
        print(f"                     {drift['json_path']}")
    else:
        print(f"no drift summary at {drift_file}")
    print(f"\nAirflow UI           {args.airflow_url}  (only while Airflow runs: scripts/pipeline --keep-running)")
    print(f"MLflow UI            mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")


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
