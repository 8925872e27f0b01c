"""
### MNIST training: validate → train → evaluate → register → publish → SBOM → Xray → promote → release → champion

Runs nightly at 02:00 UTC, whenever new training data or a drift verdict lands (Assets), and on demand
from the trigger form. `scan_model` is the Xray policy gate: a blocking finding fails it, naming the CVE,
component and threshold. `promote_model` runs only after it: it checks the accuracy and champion-vs-challenger
gates and writes the evidence pack and lineage stamps; a blocked version keeps `challenger` and the run fails
so the blocked release is visible. `release_model` copies the file from the staging repository to the
release repository. `set_champion` is the commit point: it moves the MLflow alias `champion` last, when every
gate (model-file scan, SBOM and ML-BOM validity, Xray, accuracy, champion) has passed and the release copy
is in place, so a crash or kill at any earlier step leaves `champion` where it was and clearing the failed
task reruns the rest without duplicates. The release copy's `mlflow.alias` stamp follows the alias.

XCom carries references only: file paths under a run-scoped directory, MLflow ids, Artifactory
repo/path + sha256, metric dicts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task
from jfrog_provider.operators.artifactory import ArtifactoryPromoteOperator, ArtifactoryUploadOperator
from jfrog_provider.operators.xray import XrayScanGateOperator

from include.assets import MNIST_CHAMPION, MNIST_DRIFT, MNIST_TRAINING_DATA
from include.security import load_xray_policy

# Policy as data (include/security/xray_policy.json): the threshold's default and the CVE allowlist.
XRAY_POLICY = load_xray_policy()

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
        "preset": Param(
            "fast",
            type="string",
            enum=["fast", "quality"],
            description="fast: about 99.0 % in seconds on a CPU (nightly); quality: about 99.5 %, minutes on a CPU.",
        ),
        "epochs": Param(0, type="integer", minimum=0, maximum=50, description="Training epochs (0 = the preset's)."),
        "batch_size": Param(
            0, type="integer", minimum=0, maximum=4096, description="Mini-batch size (0 = the preset's)."
        ),
        "learning_rate": Param(0, type="number", minimum=0, maximum=1, description="Peak LR (0 = the preset's)."),
        "seed": Param(42, type="integer", minimum=0, description="Seed for shuffling and initialisation."),
        "precision": Param(
            "auto",
            type="string",
            enum=["auto", "fp32", "bf16"],
            description="auto: bf16 autocast where the GPU or CPU computes bf16 natively, else fp32.",
        ),
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
            XRAY_POLICY["severity_threshold"],
            type="string",
            enum=SEVERITIES,
            description="Xray findings at or above this block promotion.",
        ),
        "xray_watches": Param(
            [], type="array", items={"type": "string"}, description="Xray watches that give the scan a policy context."
        ),
        # null = the deployment's setting, read when train_model runs: Variables at parse time would cost a
        # metadata round trip per parse and freeze the value into the serialised DAG.
        "train_in_container": Param(
            None,
            type=["null", "boolean"],
            description="Train in the training image through Docker (null: Variable mnist_train_in_container, else no).",
        ),
        "training_image": Param(
            None,
            type=["null", "string"],
            description="Training image (null: Variable mnist_training_image, MLOPS_TRAINING_IMAGE, else "
            "mnist-mlops-training:0.1.0).",
        ),
        "gpus": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=8,
            description="GPUs for the training container (0 = none; null: Variable mnist_training_docker's gpus, else 0).",
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
        """Train the CNN, in this process or in the training image, and save its state_dict in the run directory."""
        import sys
        from pathlib import Path

        from airflow.sdk import Variable
        from airflow.sdk.exceptions import AirflowFailException
        from mnist_training_container import ContainerTraining

        from include.mlops.model_scan import assert_safe_model_file
        from include.mnist.train import TrainConfig
        from include.mnist.train import train_model as train

        params, dag_id, run_id = _context()
        config = TrainConfig.from_params(params)
        output = _settings().run_dir(dag_id, run_id) / "model.pt"
        container = ContainerTraining.resolve(params, lambda key: Variable.get(key, default=None))
        if container is None:
            trained = {
                **train(config, Path(dataset["data_dir"]), output, log=print).to_dict(),
                "config": config.to_dict(),
                "container": None,
            }
        else:
            trained = container.train(
                get_current_context(),
                config=config.to_dict(),
                data_dir=Path(dataset["data_dir"]),
                output=output,
                digests=dataset["digests"],
            )
        # Scan the file on this worker before anything uploads or loads it (pickle opcodes against an
        # allowlist), whoever wrote it: a container's own scan and sha256 are claims, not evidence.
        model_scan = assert_safe_model_file(output)
        if model_scan.sha256 != trained["sha256"]:
            raise AirflowFailException(f"{output} has sha256 {model_scan.sha256}, training reported {trained['sha256']}")
        # generate_sbom inventories what trained: this interpreter, or the packages the training image reported.
        return {**trained, "model_scan": model_scan.to_dict(), "python": sys.executable}

    @task
    def evaluate_model(trained: dict) -> dict:
        """Accuracy, loss and per-class accuracy on the held-out test set, for the candidate and the champion."""
        from pathlib import Path

        from include.mlops import registry
        from include.mlops.model_scan import assert_safe_model_file
        from include.mnist.evaluate import evaluate_model as evaluate

        params, _, _ = _context()
        settings = _settings()
        limit = params["max_test_samples"] or None
        assert_safe_model_file(trained["model_path"])  # a shared run directory may be written by others
        result = evaluate(Path(trained["model_path"]), settings.data_dir, max_samples=limit)
        print(f"test accuracy {result.accuracy:.4f} on {result.num_samples} images, loss {result.loss:.4f}")
        # Champion vs challenger on the very same images, not against a figure logged on other data.
        champion = registry.champion_model(settings.mlflow_tracking_uri, settings.model_name, settings.champions_dir)
        compared = None
        if champion is not None:
            assert_safe_model_file(champion.state_dict)  # bytes from the registry are untrusted until scanned
            baseline = evaluate(Path(champion.state_dict), settings.data_dir, max_samples=limit)
            compared = {"version": champion.version, "accuracy": baseline.accuracy, "loss": baseline.loss,
                        "num_samples": baseline.num_samples}
            print(f"champion version {champion.version} on the same {baseline.num_samples} images: accuracy "
                  f"{baseline.accuracy:.4f}, loss {baseline.loss:.4f}; candidate - champion = "
                  f"{result.accuracy - baseline.accuracy:+.4f}")
        return {**result.to_dict(), "champion": compared}

    @task
    def register_model(dataset: dict, trained: dict, evaluation: dict) -> dict:
        """Log params, per-epoch metrics, datasets and the model to MLflow; register it as `challenger`."""
        from pathlib import Path

        from include.mlops.lineage import code_version, package_versions
        from include.mlops.model_scan import assert_safe_model_file
        from include.mlops.registry import DatasetRef, pinned_requirements, register_training_run
        from include.settings import REPO_ROOT

        params, dag_id, run_id = _context()
        settings = _settings()
        assert_safe_model_file(trained["model_path"])
        compared, container = evaluation.get("champion"), trained.get("container") or {}
        eval_metrics = {k: v for k, v in evaluation.items() if isinstance(v, int | float)}
        if compared:  # the comparison with the champion, measured on the same images (evaluate_model)
            eval_metrics["champion_accuracy"] = compared["accuracy"]
            eval_metrics["accuracy_delta_vs_champion"] = evaluation["accuracy"] - compared["accuracy"]
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
            params={
                **trained["config"],
                **{k: trained[k] for k in ("device", "parameters", "architecture", "deterministic", "threads")},
                "amp_dtype": trained["amp_dtype"] or "none",
                "cuda_graph": trained["cuda_graph"],
            },
            epoch_metrics=trained["epochs"],
            eval_metrics=eval_metrics,
            datasets=datasets,
            tags={
                "airflow.dag_id": dag_id,
                "airflow.run_id": run_id,
                "model.sha256": trained["sha256"],
                "champion.compared_version": compared["version"] if compared else "none",
                "training.image": container.get("image") or "none (in-process)",
                "training.image_id": container.get("image_id") or "none",
                "git.commit": code_version(REPO_ROOT),
                "python": trained["python"],
                **{f"version.{k}": v for k, v in trained["versions"].items()},
                **{f"version.{k}": v for k, v in package_versions("mlflow", "apache-airflow").items()},
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
    def generate_sbom(dataset: dict, trained: dict, evaluation: dict, registered: dict, published: dict) -> dict:
        """CycloneDX 1.6 SBOM of the training environment plus the ML-BOM; both to MLflow and Artifactory."""
        import json
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops.mlbom import build_mlbom, datasets_from_digests, write_mlbom
        from include.mlops.registry import log_artifact
        from include.mlops.sbom import generate_sbom as generate
        from include.mnist.model import ARCHITECTURE

        _, dag_id, run_id = _context()
        settings = _settings()
        run_dir = settings.run_dir(dag_id, run_id)
        image_packages = image_requires = None
        if trained.get("container"):
            image_packages, image_requires = trained["container"].get("packages"), trained["container"].get("requires")
            if not image_packages:  # never inventory the worker in place of the image that trained
                raise AirflowFailException(f"training image {trained['container']['image']} reported no packages")
        sbom = generate(
            trained["python"], run_dir / "sbom.cdx.json", settings.sbom_tool,
            packages=image_packages, requires=image_requires,
        )
        hook = ArtifactoryHook()
        mlbom = write_mlbom(
            run_dir / "mlbom.cdx.json",
            build_mlbom(
                model_name=registered["model_name"],
                model_version=registered["version"],
                model_sha256=trained["sha256"],
                architecture=trained.get("architecture", ARCHITECTURE),
                sbom=json.loads(Path(sbom.path).read_text()),
                datasets=datasets_from_digests(dataset["digests"], dataset["data_dir"], dataset["counts"]),
                metrics=evaluation,
                mlflow_run_url=f"{registered['tracking_uri']}#/runs/{registered['run_id']}",
                artifactory_url=hook.artifact_url(published["repo"], published["path"]),
            ),
        )
        folder = published["path"].lstrip("/").rsplit("/", 1)[0]
        uploaded = {}
        for name, path, serial in (("sbom", sbom.path, sbom.serial_number), ("mlbom", mlbom.path, mlbom.serial_number)):
            log_artifact(registered["tracking_uri"], registered["run_id"], Path(path), "sbom")
            result = hook.deploy_artifact(
                path,
                published["repo"],
                f"{folder}/{Path(path).name}",
                properties={"model.version": registered["version"], f"{name}.serial": serial},
            )
            uploaded[name] = f"{result.repo}/{result.path}"
        print(f"SBOM {sbom.path}: {sbom.components} components in {sbom.seconds}s; ML-BOM {mlbom.path}")
        return {
            **sbom.to_dict(),
            "artifactory_path": uploaded["sbom"],
            "mlbom": {**mlbom.to_dict(), "artifactory_path": uploaded["mlbom"]},
        }

    @task
    def promote_model(
        dataset: dict, trained: dict, registered: dict, evaluation: dict, published: dict, sbom: dict, scan: dict
    ) -> dict:
        """Runs only after the Xray gate passed; decides promotion, writes the evidence pack and lineage stamps."""
        import json
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops import gates, registry
        from include.mlops.evidence import (
            build_lineage,
            evidence_properties,
            runtime_purls_of,
            write_evidence_pack,
        )
        from include.mlops.files import write_json
        from include.mlops.lineage import code_version
        from include.settings import REPO_ROOT

        params, dag_id, run_id = _context()
        uri, name, version = registered["tracking_uri"], registered["model_name"], registered["version"]
        if published["sha256"] != trained["sha256"]:
            raise AirflowFailException(
                f"Artifactory holds sha256 {published['sha256']} at {published['repo']}/{published['path']}, "
                f"but train_model wrote {trained['sha256']}"
            )
        current = registry.champion(uri, name)
        compared = evaluation.get("champion") or {}
        if current is None or current[0] == version:
            champion_gate = gates.champion_gate(evaluation["accuracy"], None, params["max_regression"])
        elif compared.get("version") == current[0]:
            champion_gate = gates.champion_gate(
                evaluation["accuracy"], compared["accuracy"], params["max_regression"],
                f"both on the same {compared['num_samples']} test images",
            )
        else:  # the champion moved after evaluate_model scored it: a figure logged on other images is no comparison
            champion_gate = gates.GateResult(
                "champion", False, f"champion is version {current[0]} but evaluate_model compared against "
                f"{compared.get('version') or 'none'}: rerun the DAG to compare on the same images")
        decision = gates.decide_promotion(
            [gates.accuracy_gate(evaluation["accuracy"], params["min_accuracy"]), champion_gate]
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
        # The evidence pack goes next to the model whatever the decision; `champion` moves only in set_champion.
        run_dir = _settings().run_dir(dag_id, run_id)
        mlbom_doc = json.loads(Path(sbom["mlbom"]["path"]).read_text())
        lineage = build_lineage(
            dataset_digests=dataset["digests"],
            dag_id=dag_id,
            run_id=run_id,
            mlflow_run_id=registered["run_id"],
            model_name=name,
            model_version=version,
            artifactory_repo=published["repo"],
            artifactory_path=published["path"],
            model_sha256=published["sha256"],
            sbom_serial=sbom["serial_number"],
            sbom_sha256=sbom["sha256"],
            mlbom_serial=sbom["mlbom"]["serial_number"],
            model_scan=trained["model_scan"],
            xray_verdict=scan,
            decision=decision.to_dict(),
            runtime_purls=runtime_purls_of(mlbom_doc),
            code_version=code_version(REPO_ROOT),
        )
        pack = write_evidence_pack(
            run_dir / "evidence",
            sbom_path=Path(sbom["path"]),
            mlbom=mlbom_doc,
            model_scan=trained["model_scan"],
            xray_verdict=scan,
            decision=decision.to_dict(),
            metrics=evaluation,
            lineage=lineage,
        )
        hook = ArtifactoryHook()
        folder = published["path"].lstrip("/").rsplit("/", 1)[0]
        for file_name in sorted(pack.files) + [Path(pack.manifest).name]:
            hook.deploy_artifact(
                Path(pack.directory) / file_name, published["repo"], f"{folder}/evidence/{file_name}",
                properties={"model.version": version},
            )
        hook.set_item_properties(
            published["repo"], published["path"].lstrip("/"), evidence_properties(lineage, sbom["artifactory_path"])
        )
        registry.set_version_tags(uri, name, version, {"evidence.path": f"{published['repo']}/{folder}/evidence/"})
        write_json(
            run_dir / "release.json",
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
        print(f"{name} version {version} passed every gate; set_champion moves '{registry.CHAMPION}' after the release")
        return {"promote": True, "version": version, "previous_champion": current[0] if current else None}

    @task(outlets=[MNIST_CHAMPION])
    def set_champion(registered: dict, published: dict, promoted: dict, released: dict) -> dict:
        """The commit point: move `champion` to this version, then mirror the alias on its release copy."""
        from airflow.sdk.exceptions import AirflowFailException
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops import registry
        from include.mlops.evidence import champion_properties, champion_query

        uri, name, version = registered["tracking_uri"], registered["model_name"], registered["version"]
        if released["sha256"] != published["sha256"]:
            raise AirflowFailException(
                f"release copy {released['repo']}/{released['path']} has sha256 {released['sha256']}, "
                f"but the gated file {published['repo']}/{published['path']} has {published['sha256']}"
            )
        current = registry.champion(uri, name)
        if current is not None and current[0] not in (promoted["previous_champion"], version):
            # Another run promoted since promote_model gated against version {previous}: never roll it back.
            raise AirflowFailException(
                f"champion is now version {current[0]}, not {promoted['previous_champion']} that {name} version "
                f"{version} was gated against; it stays '{registry.CHALLENGER}' (trigger a new run to compare)"
            )
        # The commit point. This task runs only when every upstream task succeeded (model-file scan, SBOM and
        # ML-BOM validity, Xray, model gates, release copy) and each of those is idempotent per model version,
        # so a crash anywhere before this call leaves `champion` where it was and a cleared rerun adds nothing.
        # The alias move is one registry call.
        registry.promote(uri, name, version)
        # After the commit, Artifactory's mirror of the alias follows; a crash in between is repaired by a
        # rerun, which finds `champion` already here and re-stamps.
        hook = ArtifactoryHook()
        hook.set_item_properties(released["repo"], released["path"], champion_properties())
        for row in hook.search_aql(champion_query(released["repo"])):
            stale = f"{row['path']}/{row['name']}"
            if stale != released["path"]:
                hook.delete_item_properties(released["repo"], stale, list(champion_properties()))
        get_current_context()["outlet_events"][MNIST_CHAMPION].extra = {
            "model_name": name,
            "version": version,
            "sha256": published["sha256"],
        }
        previous = current[0] if current else None
        print(f"{name} version {version} is now '{registry.CHAMPION}' (was {previous or 'none'})")
        return {"promoted": True, "version": version, "previous_champion": previous}

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
    sbom = generate_sbom(dataset, trained, evaluation, registered, published.output)
    scan = XrayScanGateOperator(
        task_id="scan_model",
        sbom_path=sbom["path"],
        watches="{{ params.xray_watches | join(',') }}",
        severity_threshold="{{ params.severity_threshold }}",
        allowlist=XRAY_POLICY["allowlist"],
    )
    promoted = promote_model(dataset, trained, registered, evaluation, published.output, sbom, scan.output)
    # Copy the gated file from the staging repo to the release repo; idempotent, so a rerun re-stamps only.
    # The `mlflow.alias` stamp is not set here: set_champion moves it with the alias.
    released = ArtifactoryPromoteOperator(
        task_id="release_model",
        source_repo=registered["artifactory_repo"],
        source_path=registered["artifactory_model_path"],
        target_repo=registered["artifactory_release_repo"],
        copy=True,
        properties={"model.version": registered["version"]},
    )
    promoted >> released
    set_champion(registered, published.output, promoted, released.output)

mnist_training()
