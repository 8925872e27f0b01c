"""
### MNIST training: validate → train → evaluate → register → publish → SBOM → Xray → promote → release

Runs nightly at 02:00 UTC, whenever new training data or a drift verdict lands (Assets), and on demand
from the trigger form. `scan_model` is the Xray policy gate: a blocking finding fails it, naming the CVE,
component and threshold. `promote_model` runs only after it and moves the MLflow alias `champion` only when
the accuracy and champion-vs-challenger gates pass too; otherwise the version keeps `challenger` and the run
fails so the blocked release is visible. `release_model` then copies the champion's file from the staging
repository to the release repository with a property stamp.

XCom carries references only: file paths under a run-scoped directory, MLflow ids, Artifactory
repo/path + sha256, metric dicts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task
from jfrog_provider.operators.artifactory import ArtifactoryPromoteOperator, ArtifactoryUploadOperator
from jfrog_provider.operators.xray import XrayScanGateOperator

from include.assets import MNIST_CHAMPION, MNIST_DRIFT, MNIST_TRAINING_DATA

SEVERITIES = ["Critical", "High", "Medium", "Low"]


def _context() -> tuple[dict, str, str]:
    ctx = get_current_context()
    return dict(ctx["params"]), ctx["dag"].dag_id, ctx["run_id"]


def _settings():
    from airflow.sdk import Variable

    from include.settings import PipelineSettings

    return PipelineSettings.from_env(data_dir=Variable.get("mnist_data_dir", default=None))


@dag(
    dag_id="mnist_training",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
        assets=(MNIST_TRAINING_DATA | MNIST_DRIFT),
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["mnist", "training", "mlflow", "jfrog"],
    default_args={"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=20)},
    params={
        "epochs": Param(1, type="integer", minimum=1, maximum=50, description="Training epochs."),
        "batch_size": Param(256, type="integer", minimum=16, maximum=4096, description="Mini-batch size."),
        "learning_rate": Param(0.01, type="number", exclusiveMinimum=0, maximum=1, description="Peak LR."),
        "seed": Param(42, type="integer", minimum=0, description="Seed for shuffling and initialisation."),
        "min_accuracy": Param(
            0.985, type="number", minimum=0, maximum=1, description="Absolute test-accuracy gate."
        ),
        "max_regression": Param(
            0.002, type="number", minimum=0, maximum=1, description="Allowed accuracy drop versus the champion."
        ),
        "max_train_samples": Param(
            0, type="integer", minimum=0, description="Cap on training images for quick runs (0 = all 60,000)."
        ),
        "max_test_samples": Param(
            0, type="integer", minimum=0, description="Cap on test images for quick runs (0 = all 10,000)."
        ),
        "severity_threshold": Param(
            "High", type="string", enum=SEVERITIES, description="Xray findings at or above this block promotion."
        ),
        "xray_watches": Param(
            [], type="array", items={"type": "string"}, description="Xray watches that give the scan a policy context."
        ),
    },
)
def mnist_training():
    @task
    def validate_data() -> dict:
        """Check SHA-256, IDX structure, shapes and labels before anything trains on the data."""
        from include.mnist.data import validate_dataset

        report = validate_dataset(_settings().data_dir)
        print(f"validated {report.data_dir}: {report.counts} images, digests {report.digests}")
        return {"data_dir": report.data_dir, "digests": report.digests, "counts": report.counts}

    @task
    def train_model(dataset: dict) -> dict:
        """Train the CNN and save its state_dict atomically in the run directory."""
        import sys
        from dataclasses import asdict
        from pathlib import Path

        from include.mnist.train import TrainConfig
        from include.mnist.train import train_model as train

        params, dag_id, run_id = _context()
        config = TrainConfig.from_params(params)
        output = _settings().run_dir(dag_id, run_id) / "model.pt"
        result = train(config, Path(dataset["data_dir"]), output, log=print)
        return {
            "model_path": result.model_path,
            "sha256": result.sha256,
            "config": config.to_dict(),
            "epochs": [asdict(epoch) for epoch in result.epochs],
            "train_seconds": result.train_seconds,
            "num_train_samples": result.num_train_samples,
            "device": result.device,
            "parameters": result.parameters,
            "data_digests": result.data_digests,
            "python": sys.executable,
        }

    @task
    def evaluate_model(trained: dict) -> dict:
        """Accuracy, loss and per-class accuracy on the held-out test set."""
        from pathlib import Path

        from include.mnist.evaluate import evaluate_model as evaluate

        params, _, _ = _context()
        result = evaluate(
            Path(trained["model_path"]), _settings().data_dir, max_samples=params["max_test_samples"] or None
        )
        print(f"test accuracy {result.accuracy:.4f} on {result.num_samples} images, loss {result.loss:.4f}")
        return result.to_dict()

    @task
    def register_model(dataset: dict, trained: dict, evaluation: dict) -> dict:
        """Log params, per-epoch metrics, datasets and the model to MLflow; register it as `challenger`."""
        from pathlib import Path

        from include.mlops.lineage import code_version, package_versions
        from include.mlops.registry import DatasetRef, pinned_requirements, register_training_run
        from include.settings import REPO_ROOT

        params, dag_id, run_id = _context()
        settings = _settings()
        datasets = [
            DatasetRef(name=f"mnist-{split}", source=str(Path(dataset["data_dir"]) / name), sha256=digest)
            for name, digest in sorted(dataset["digests"].items())
            for split in ["train" if name.startswith("train") else "test"]
            if "images" in name
        ]
        registered = register_training_run(
            tracking_uri=settings.mlflow_tracking_uri,
            experiment_name=settings.experiment_name,
            artifact_root=settings.mlflow_artifact_root,
            model_name=settings.model_name,
            run_key=f"{dag_id}/{run_id}",
            model_path=Path(trained["model_path"]),
            params={**trained["config"], "device": trained["device"], "parameters": trained["parameters"]},
            epoch_metrics=trained["epochs"],
            eval_metrics={k: v for k, v in evaluation.items() if isinstance(v, int | float)},
            datasets=datasets,
            tags={
                "airflow.dag_id": dag_id,
                "airflow.run_id": run_id,
                "model.sha256": trained["sha256"],
                "git.commit": code_version(REPO_ROOT),
                "python": trained["python"],
                **{f"version.{k}": v for k, v in package_versions("torch", "numpy", "mlflow", "apache-airflow").items()},
            },
            pip_requirements=pinned_requirements("torch", "numpy"),
        )
        print(f"MLflow run {registered.run_id}, model {registered.model_name} version {registered.version}")
        # Artifactory paths derive from the model version, so a retried publish overwrites, never duplicates.
        return {
            **registered.to_dict(),
            "artifactory_repo": settings.artifactory_repo,
            "artifactory_release_repo": settings.artifactory_release_repo,
            "artifactory_model_path": f"{registered.model_name}/{registered.version}/model.pt",
        }

    @task
    def generate_sbom(trained: dict, registered: dict, published: dict) -> dict:
        """CycloneDX 1.6 SBOM of the environment that trained the model, attached to MLflow and Artifactory."""
        from pathlib import Path

        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops.registry import log_artifact
        from include.mlops.sbom import generate_sbom as generate

        _, dag_id, run_id = _context()
        settings = _settings()
        sbom = generate(trained["python"], settings.run_dir(dag_id, run_id) / "sbom.cdx.json", settings.sbom_tool)
        log_artifact(registered["tracking_uri"], registered["run_id"], Path(sbom.path), "sbom")
        folder = published["path"].lstrip("/").rsplit("/", 1)[0]
        uploaded = ArtifactoryHook().deploy_artifact(
            sbom.path,
            published["repo"],
            f"{folder}/sbom.cdx.json",
            properties={"model.version": registered["version"], "sbom.serial": sbom.serial_number},
        )
        print(f"SBOM {sbom.path}: {sbom.components} components in {sbom.seconds}s, serial {sbom.serial_number}")
        return {**sbom.to_dict(), "artifactory_path": f"{uploaded.repo}/{uploaded.path}"}

    @task(outlets=[MNIST_CHAMPION])
    def promote_model(
        trained: dict, registered: dict, evaluation: dict, published: dict, sbom: dict, scan: dict
    ) -> dict:
        """Runs only after the Xray gate passed; moves `champion` when the model gates pass too."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.mlops import gates, registry
        from include.mlops.files import write_json

        params, dag_id, run_id = _context()
        uri, name, version = registered["tracking_uri"], registered["model_name"], registered["version"]
        if published["sha256"] != trained["sha256"]:
            raise AirflowFailException(
                f"Artifactory holds sha256 {published['sha256']} at {published['repo']}/{published['path']}, "
                f"but train_model wrote {trained['sha256']}"
            )
        current = registry.champion(uri, name)
        decision = gates.decide_promotion(
            [
                gates.accuracy_gate(evaluation["accuracy"], params["min_accuracy"]),
                gates.champion_gate(
                    evaluation["accuracy"],
                    current[1] if current and current[0] != version else None,
                    params["max_regression"],
                ),
            ]
        )
        for gate in decision.gates:
            print(f"gate {gate.name}: {'PASS' if gate.passed else 'BLOCK'} - {gate.reason}")
        print(f"gate xray: PASS - {scan['counts']} (threshold {scan['severity_threshold']}, scan {scan['scan_id']})")
        registry.set_version_tags(
            uri,
            name,
            version,
            {
                "gate.decision": "promote" if decision.promote else "blocked",
                "xray.scan_id": scan["scan_id"],
                "artifactory.path": f"{published['repo']}/{published['path'].lstrip('/')}",
                "artifactory.sha256": published["sha256"],
            },
        )
        write_json(
            _settings().run_dir(dag_id, run_id) / "release.json",
            {
                "mlflow": registered,
                "test_accuracy": evaluation["accuracy"],
                "artifactory": published,
                "sbom": sbom,
                "xray": scan,
                "decision": decision.to_dict(),
                "previous_champion": current[0] if current else None,
            },
        )
        if not decision.promote:
            raise AirflowFailException(
                f"{name} version {version} stays '{registry.CHALLENGER}', champion unchanged "
                f"({current[0] if current else 'none'}): " + " | ".join(decision.reasons)
            )
        registry.promote(uri, name, version)
        get_current_context()["outlet_events"][MNIST_CHAMPION].extra = {
            "model_name": name,
            "version": version,
            "sha256": published["sha256"],
        }
        print(f"{name} version {version} is now '{registry.CHAMPION}' (was {current[0] if current else 'none'})")
        return {"promoted": True, "version": version, "previous_champion": current[0] if current else None}

    dataset = validate_data()
    trained = train_model(dataset)
    evaluation = evaluate_model(trained)
    registered = register_model(dataset, trained, evaluation)
    published = ArtifactoryUploadOperator(
        task_id="publish_model",
        local_path=trained["model_path"],
        repo=registered["artifactory_repo"],
        target_path=registered["artifactory_model_path"],
        properties={
            "model.name": registered["model_name"],
            "model.version": registered["version"],
            "model.sha256": trained["sha256"],
            "mlflow.run_id": registered["run_id"],
            "airflow.dag_id": "{{ dag.dag_id }}",
            "airflow.run_id": "{{ run_id }}",
            "test.accuracy": evaluation["accuracy"],
            "dataset.sha256": "{{ ti.xcom_pull(task_ids='validate_data', key='digests').values() | join(',') }}",
        },
    )
    sbom = generate_sbom(trained, registered, published.output)
    scan = XrayScanGateOperator(
        task_id="scan_model",
        sbom_path=sbom["path"],
        watches="{{ params.xray_watches | join(',') }}",
        severity_threshold="{{ params.severity_threshold }}",
    )
    promoted = promote_model(trained, registered, evaluation, published.output, sbom, scan.output)
    # Copy the champion from the staging repo to the release repo; idempotent, so a retry re-stamps only.
    promoted >> ArtifactoryPromoteOperator(
        task_id="release_model",
        source_repo=registered["artifactory_repo"],
        source_path=registered["artifactory_model_path"],
        target_repo=registered["artifactory_release_repo"],
        copy=True,
        properties={"model.version": registered["version"], "mlflow.alias": "champion"},
    )

mnist_training()
