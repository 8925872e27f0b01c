"""
### MNIST training: validate → train → evaluate → register → publish → SBOM → Xray → promote → release → champion

Runs nightly at 02:00 UTC, when a training data version or a drift verdict lands (Assets), and on demand.
`validate_data` uses the data version a `mnist_training_data` event names (downloaded from Artifactory, each
sha256 checked against the event) or else the bundled copy; the version is recorded in MLflow and the lineage.
`scan_model` is the Xray policy gate. `promote_model` then checks the accuracy, champion and registry gates (a
demoted version, or one with a blocking finding, never returns) and uploads the evidence pack whatever the
decision; a blocked version keeps `challenger` and the run fails naming the gate and its figures. `release_model`
copies the file to the release repository; `approve_champion` asks a person when Param `require_approval` (or
Variable `mnist_require_approval`) says so. `set_champion` is the commit point: it moves the MLflow alias
`champion` last, so a crash at any earlier step leaves `champion` where it was and clearing the failed task
reruns the rest without duplicates. Alias moves, gate decisions and approvals go to the version's audit trail.

Each task returns the run summary so far (references only), so the graph's edges are the order above; the
steps live in `include/mlops`, the task glue in `plugins/mlops_tasks.py`. Extra links (task → Links): the MLflow
run and model version, the SBOM, the Xray scan, the evidence pack, the model and its release copy in Artifactory.

**Quick trial run** (seconds, e.g. to try the pipeline): trigger with
`{"max_train_samples": 10000, "max_test_samples": 2000, "min_accuracy": 0.9}`: about 0.94 test accuracy, so it
passes the accuracy gate and, with no champion yet, becomes champion. Against a champion trained on all images the
champion gate (`max_regression`) blocks it, as it should: a capped run is for trying the pipeline, not for
replacing a champion.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import mlops_tasks as step
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task
from jfrog_provider.links import ArtifactoryLink
from jfrog_provider.operators.artifactory import ArtifactoryPromoteOperator, ArtifactoryUploadOperator
from jfrog_provider.operators.xray import XrayScanGateOperator
from mlops_champion import ChampionApprovalOperator
from mlops_links import MlflowModelVersionLink, MlflowRunLink, with_links
from mlops_signing import signing_key

from include.assets import MNIST_CHAMPION, MNIST_DRIFT, MNIST_TRAINING_DATA, MNIST_TRAINING_INPUT
from include.security import SEVERITIES, load_xray_policy

# Policy as data (include/security/xray_policy.json): the threshold's default and the CVE allowlist.
XRAY_POLICY = load_xray_policy()


@dag(
    dag_id="mnist_training",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
                                 assets=(MNIST_TRAINING_DATA | MNIST_DRIFT)),
    start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1,
    description="Train the MNIST CNN, register it in MLflow, publish, SBOM and Xray-gate it in JFrog, promote the champion",
    doc_md=__doc__,
    tags=["mnist", "training", "mlflow", "jfrog"],
    # Return values are run summaries (the XCom tab shows them); each task logs its own one-line result instead.
    default_args={"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=20),
                  "show_return_value_in_logs": False},
    params={
        "preset": Param("fast", type="string", enum=["fast", "quality"], description="fast: about 99.0 % in "
                        "seconds on a CPU (nightly); quality: about 99.5 %, minutes on a CPU."),
        "epochs": Param(0, type="integer", minimum=0, maximum=50, description="Training epochs (0 = the preset's)."),
        "batch_size": Param(0, type="integer", minimum=0, maximum=4096, description="Mini-batch size (0 = the preset's)."),
        "learning_rate": Param(0, type="number", minimum=0, maximum=1, description="Peak LR (0 = the preset's)."),
        "seed": Param(42, type="integer", minimum=0, description="Seed for shuffling and initialisation."),
        "precision": Param("auto", type="string", enum=["auto", "fp32", "bf16"],
                           description="auto: bf16 autocast where the GPU or CPU computes bf16 natively, else fp32."),
        "min_accuracy": Param(0.985, type="number", minimum=0, maximum=1, description="Absolute test-accuracy gate."),
        "max_regression": Param(0.002, type="number", minimum=0, maximum=1,
                                description="Allowed accuracy drop versus the champion."),
        "max_train_samples": Param(0, type="integer", minimum=0,
                                   description="Cap on training images (0 = all 60,000). The gates still apply: for a "
                                   "quick trial run (see the DAG docs) lower min_accuracy too."),
        "max_test_samples": Param(0, type="integer", minimum=0,
                                  description="Cap on test images (0 = all 10,000)."),
        "severity_threshold": Param(XRAY_POLICY["severity_threshold"], type="string", enum=list(SEVERITIES),
                                    description="Xray findings at or above this block promotion."),
        "xray_watches": Param([], type="array", items={"type": "string"},
                              description="Xray watches that give the scan a policy context."),
        # null = the deployment's setting, read when train_model runs: Variables at parse time would cost a
        # metadata round trip per parse and freeze the value into the serialised DAG.
        "train_in_container": Param(None, type=["null", "boolean"], description="Train in the training image "
                                    "through Docker (null: Variable mnist_train_in_container, else no)."),
        "train_on_kubernetes": Param(None, type=["null", "boolean"], description="Train in a Kubernetes pod "
                                     "(null: Variable mnist_train_on_kubernetes, else no)."),
        "training_image": Param(None, type=["null", "string"], description="Training image (null: Variable "
                                "mnist_training_image, MLOPS_TRAINING_IMAGE, else mnist-mlops-training:0.1.0)."),
        "gpus": Param(None, type=["null", "integer"], minimum=0, maximum=8, description="GPUs for the training "
                      "container (0 = none; null: Variable mnist_training_docker's gpus, else 0)."),
        "require_approval": Param(None, type=["null", "boolean"], description="A person approves the champion move "
                                  "(null: Variable mnist_require_approval, else no)."),
        "approval_timeout_hours": Param(None, type=["null", "number"], exclusiveMinimum=0, description="No answer "
                                        "by then: no promotion (null: Variable mnist_approval_timeout_hours, else 24)."),
    },
)
def mnist_training():
    @task(outlets=[MNIST_TRAINING_INPUT], multiple_outputs=False)
    def validate_data() -> dict:
        """Validate the data version a data event names (downloaded, digests checked), else the bundled copy."""
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops.data_version import prepare_dataset
        from include.mnist.spec import MNIST

        ctx = get_current_context()
        # Several data events queued before this run started: the newest version is the one to train on.
        event = max(ctx["triggering_asset_events"].get(MNIST_TRAINING_DATA, []), key=lambda e: e.timestamp, default=None)
        with step.no_retry():
            dataset = prepare_dataset(event.extra if event else None, bundled_dir=step.settings().data_dir,
                                      directory=step.run_dir() / "data", download=ArtifactoryHook().download_artifact,
                                      validate=MNIST.validate_data)
        print(f"validated data version {dataset['data_version']} in {dataset['data_dir']}: {dataset['counts']}")
        ctx["outlet_events"][MNIST_TRAINING_INPUT].extra = {"data_version": dataset["data_version"]}
        return {"dataset": dataset}

    @task(multiple_outputs=False)
    def train_model(run: dict) -> dict:
        """Train the CNN with the chosen backend, then scan and sign the model it wrote on this worker."""
        from include.mlops.training_run import checked_training
        from include.mnist.train import TrainConfig

        params, _, _ = step.context()
        output, dataset = step.run_dir() / "model" / "model.safetensors", run["dataset"]
        config = TrainConfig.from_params(params).to_dict()
        trained = step.trainer(params)(config=config, data_dir=Path(dataset["data_dir"]), output=output,
                                   digests=dataset["digests"])
        with step.no_retry():
            return {**run, "trained": checked_training(trained, output, signing_key(private=True))}

    @task(multiple_outputs=False)
    def evaluate_model(run: dict) -> dict:
        """Accuracy, loss and per-class accuracy on the held-out test set, for the candidate and the champion."""
        from include.mlops.registry import champion_model
        from include.mlops.training_run import evaluate_against_champion
        from include.mnist.spec import MNIST

        params, settings = step.context()[0], step.settings()
        public_key = signing_key()
        with step.no_retry():  # a signature that does not verify will not verify on a retry either
            champion = champion_model(settings.mlflow_tracking_uri, settings.model_name, settings.champions_dir,
                                      public_key)
            evaluation = evaluate_against_champion(MNIST, run["trained"], run["dataset"]["data_dir"],
                                                   params["max_test_samples"] or None, champion, public_key,
                                                   digests=run["dataset"]["digests"])
        return {**run, "evaluation": evaluation}

    @task(multiple_outputs=True)  # publish_model reads single keys
    def register_model(run: dict) -> dict:
        """Log params, per-epoch metrics, datasets and the model to MLflow; register it as `challenger`."""
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops.audit import record_challenger
        from include.mlops.lineage import code_version
        from include.mlops.training_run import register
        from include.mnist.spec import MNIST
        from include.settings import REPO_ROOT

        _, dag_id, run_id = step.context()
        with step.no_retry():
            registered = register(MNIST, run, settings=step.settings(), dag_id=dag_id, run_id=run_id,
                                  code_version=code_version(REPO_ROOT), public_key=signing_key())
        step.push_mlflow_links(registered["registered"])
        record_challenger(registered["registered"], actor=step.actor(), store=ArtifactoryHook(),
                          repo=registered["artifactory_repo"])
        return {**run, **registered}

    @task(multiple_outputs=True)  # scan_model reads the SBOM's path
    def generate_sbom(published: dict) -> dict:
        """CycloneDX 1.6 SBOM of what trained plus the ML-BOM; both to MLflow and next to the model in Artifactory."""
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops.training_run import generate_boms
        from include.mnist.spec import MNIST

        run, settings = {**step.summary("register_model"), "published": published}, step.settings()
        with step.no_retry():
            sbom = generate_boms(MNIST, run, published, ArtifactoryHook(), sbom_tool=settings.sbom_tool,
                                 sbom_cache=settings.sbom_cache_dir, run_dir=step.run_dir(),
                                 pipeline=step.context()[1], public_key=signing_key())
        step.push_artifactory_link(sbom["artifactory_path"])
        model_ref = f"{published['repo']}/{published['path'].lstrip('/')}"
        return {**run, "sbom": sbom, "sbom_path": sbom["path"], "model_ref": model_ref}

    @task(multiple_outputs=True)  # release_model reads single keys
    def promote_model(scan: dict) -> dict:
        """Runs only after the Xray gate passed: model gates, evidence pack and lineage stamps; fails when blocked."""
        from jfrog_provider.hooks.artifactory import ArtifactoryHook
        from jfrog_provider.hooks.evidence import EvidenceHook

        from include.mlops.jfrog_evidence import evidence_target
        from include.mlops.promotion import promote
        from include.mlops.training_run import verify_published

        params, dag_id, run_id = step.context()
        run = step.summary("generate_sbom")
        # The evidence pack goes beside the model whatever the gates decide, so a blocked run links it too.
        model_folder = run["published"]["path"].strip("/").rpartition("/")[0]
        step.push_artifactory_link(f"{run['published']['repo']}/{model_folder}/evidence")
        with step.no_retry():
            # What release_model copies is what was signed: the published files verify against the public key.
            verify_published(run, ArtifactoryHook(), signing_key())
            promotion = promote(run, scan, ArtifactoryHook(), run_dir=step.run_dir(), min_accuracy=params["min_accuracy"],
                                max_regression=params["max_regression"], dag_id=dag_id, run_id=run_id, actor=step.actor(),
                                # JFrog Evidence when MLOPS_JFROG_EVIDENCE is on; the key is read only then
                                jfrog_evidence=evidence_target(EvidenceHook, lambda: signing_key(private=True)))
        return {**run, "scan": scan, "promotion": promotion}

    @task(outlets=[MNIST_CHAMPION], multiple_outputs=False)
    def set_champion(approval: dict) -> dict:
        """The commit point: move `champion` to this version, then mirror the alias on its release copy."""
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops.promotion import commit_champion

        with step.no_retry():
            committed = commit_champion(step.summary("promote_model"), step.summary("release_model"), ArtifactoryHook(),
                                        actor=step.actor(), approval=approval)
        step.push_mlflow_links(step.summary("register_model")["registered"], run=False)
        event = {key: committed[key] for key in ("model_name", "version", "sha256")}
        get_current_context()["outlet_events"][MNIST_CHAMPION].extra = event
        return committed

    registered = with_links(register_model(evaluate_model(train_model(validate_data()))),
                            MlflowRunLink(), MlflowModelVersionLink())
    published = ArtifactoryUploadOperator(
        task_id="publish_model", local_path=registered["model_path"], repo=registered["artifactory_repo"],
        doc_md="Upload the model to Artifactory with lineage properties (model version, sha256, signature, MLflow "
        "run, data version). Link: the model in Artifactory.",
        target_path=registered["artifactory_model_path"], properties=registered["publish_properties"])
    sbom = with_links(generate_sbom(published.output), ArtifactoryLink())
    scan = XrayScanGateOperator(
        task_id="scan_model", sbom_path=sbom["sbom_path"], watches="{{ params.xray_watches | join(',') }}",
        doc_md="The Xray policy gate: a graph scan of the SBOM's libraries plus Xray's summary of the published "
        "model, judged by `include/security/xray_policy.json` (threshold, allowlist, fail_build violations); a "
        "blocking finding fails the run. Deferred to the triggerer. Link: the Xray scan.",
        severity_threshold="{{ params.severity_threshold }}", allowlist=XRAY_POLICY["allowlist"],
        fail_on_fail_build_violations=XRAY_POLICY["fail_on_fail_build_violations"],
        artifact_paths=[sbom["model_ref"]],  # also wait for Xray to index the published model and judge it
        deferrable=True,  # polls on the triggerer, holding no worker slot while Xray scans
        defer_after=5.0,  # a scan done within 5 s is judged at once, saving the triggerer round trip (~7 s)
    )
    promoted = with_links(promote_model(scan.output), ArtifactoryLink())
    # Copy the gated file to the release repo (idempotent: a rerun re-stamps only); set_champion stamps the alias.
    released = ArtifactoryPromoteOperator(
        task_id="release_model", source_repo=promoted["artifactory_repo"],
        doc_md="Copy the gated model to the release repository (a rerun only re-stamps its properties). Link: the "
        "release copy in Artifactory.",
        source_path=promoted["artifactory_model_path"], target_repo=promoted["artifactory_release_repo"],
        copy=True, properties=promoted["release_properties"], companions=promoted["release_companions"])
    # Waits holding no worker slot; no answer in time fails it without a retry.
    approval = ChampionApprovalOperator(
        task_id="approve_champion", summary_task_id="promote_model",
        doc_md="When Param `require_approval` (or Variable `mnist_require_approval`) asks for it, a person approves "
        "the champion move in the UI (Required actions); otherwise passes at once. No answer in time: no promotion.")
    with_links(set_champion((released >> approval).output), MlflowModelVersionLink())


mnist_training()
