"""The training DAG's supply-chain steps from CI against a real JFrog (.github/workflows/release-jfrog.yml).

The same code as the DAG's tasks, not a second implementation: include/mlops/training_run.py checks the model
file, evaluates it, registers it in MLflow and builds and uploads the SBOM and ML-BOM; the JFrog provider's
operators upload the model, publish the build-info and run the Xray gate. The input is what the training
image's entry point printed (`python -m include.mnist.container ... | tee train.log`). The JFrog connection
comes from AIRFLOW_CONN_JFROG_DEFAULT, which the workflow fills with a short-lived token from the OIDC
exchange; MLflow from MLFLOW_TRACKING_URI.

    python deploy/jfrog_release.py --train-log train.log --model model.pt --build-number 42 \
        --run-url "$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID"

Exit status: 0 published to the staging repository with a clean Xray gate, 1 blocked by the gate (the model
and its evidence stay in the staging repository, as in the DAG), 2 the training log or model was refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "plugins"):  # run as a script: include/ and the plugin modules
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-log", type=Path, required=True,
                        help="output of `python -m include.mnist.container` (its MNIST_TRAIN_RESULT line)")
    parser.add_argument("--model", type=Path, required=True, help="the --output path training was given")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "include" / "data" / "mnist")
    parser.add_argument("--trained-by", default="ci-runner",
                        help="what trained (an image tag, or the runner): MLflow tag training.image")
    parser.add_argument("--pipeline", default="github-actions/release-jfrog",
                        help="the pipeline name in MLflow and the ML-BOM (the DAG uses its dag_id)")
    parser.add_argument("--run-id", required=True, help="this CI run, unique per attempt (the DAG's run_id)")
    parser.add_argument("--build-name", default="mnist-training")
    parser.add_argument("--build-number", required=True)
    parser.add_argument("--run-url", required=True, help="the CI run's page, recorded in the build-info")
    parser.add_argument("--vcs-url", default="")
    parser.add_argument("--vcs-revision", default="unknown")
    parser.add_argument("--watches", default="", help="comma-separated Xray watch names (the gate's context)")
    parser.add_argument("--severity-threshold", default=None,
                        help="lowest blocking severity; default: include/security/xray_policy.json")
    parser.add_argument("--max-test-samples", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=Path("release"))
    return parser.parse_args(argv)


def trained_from_log(args: argparse.Namespace, dataset: dict[str, Any]) -> dict[str, Any]:
    """train_model's dict from the training log, after the Docker path's checks and the model file's scan."""
    from mnist_training_container import ContainerTraining

    from include.mlops.training_run import checked_training

    lines = args.train_log.read_text().splitlines()
    # The model path and training-data digests must be the ones asked for and validated.
    trained = ContainerTraining(image=args.trained_by).result(lines, output=args.model, digests=dataset["digests"])
    return checked_training(trained, args.model)


def release(args: argparse.Namespace) -> dict[str, Any]:
    """Validate, check, evaluate, register, publish the model, SBOM, ML-BOM and build-info, then gate."""
    from jfrog_provider.hooks.artifactory import ArtifactoryHook, file_checksums
    from jfrog_provider.operators.artifactory import (
        ArtifactoryPublishBuildInfoOperator,
        ArtifactoryUploadOperator,
    )
    from jfrog_provider.operators.xray import XrayScanGateOperator

    from include.mlops.data_version import prepare_dataset
    from include.mlops.training_run import evaluate_against_champion, generate_boms, register
    from include.mnist.spec import MNIST
    from include.security import load_xray_policy
    from include.settings import PipelineSettings

    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = PipelineSettings.from_env()
    hook = ArtifactoryHook()
    context: dict[str, Any] = {}  # no task instance: the operators skip their extra-link XComs
    dataset = prepare_dataset(None, bundled_dir=args.data_dir, directory=out / "data",
                              download=hook.download_artifact, validate=MNIST.validate_data)
    run: dict[str, Any] = {"dataset": dataset, "trained": trained_from_log(args, dataset)}
    run["evaluation"] = evaluate_against_champion(MNIST, args.model, dataset["data_dir"], args.max_test_samples, None)
    run.update(register(MNIST, run, settings=settings, dag_id=args.pipeline, run_id=args.run_id,
                        code_version=args.vcs_revision))
    published = ArtifactoryUploadOperator(
        task_id="publish_model", local_path=str(args.model), repo=run["artifactory_repo"],
        target_path=run["artifactory_model_path"], properties={**run["publish_properties"], "ci.run_url": args.run_url},
    ).execute(context)
    sbom = generate_boms(MNIST, run, published, hook, sbom_tool=settings.sbom_tool, run_dir=out,
                         pipeline=args.pipeline)
    boms = []
    for local, stored in ((sbom["path"], sbom["artifactory_path"]), (sbom["mlbom"]["path"], sbom["mlbom"]["artifactory_path"])):
        repo, _, path = stored.partition("/")
        boms.append({"repo": repo, "path": path, **vars(file_checksums(local))})
    build = ArtifactoryPublishBuildInfoOperator(
        task_id="publish_build_info", build_name=args.build_name, build_number=args.build_number,
        artifacts=[published, *boms], properties={"buildInfo.env.CI_RUN_URL": args.run_url},
        module_properties={"mlflow.run_id": run["registered"]["run_id"],
                           "model.version": str(run["registered"]["version"])},
        vcs=[{"url": args.vcs_url, "revision": args.vcs_revision}] if args.vcs_url else None,
    ).execute(context)
    summary = {"model": published, "sbom": sbom["artifactory_path"], "mlbom": sbom["mlbom"]["artifactory_path"],
               "build": build, "registered": run["registered"], "evaluation": run["evaluation"]}
    (out / "release.json").write_text(json.dumps(summary, indent=2, default=str))
    # The gate last, as in the DAG: a blocked model stays in the staging repository with its evidence.
    policy = load_xray_policy()
    summary["xray"] = XrayScanGateOperator(
        task_id="scan_model", sbom_path=sbom["path"], watches=args.watches or None,
        severity_threshold=args.severity_threshold or policy["severity_threshold"],
        allowlist=policy.get("allowlist"), deferrable=False,
    ).execute(context)
    (out / "release.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Run the release; print where everything went."""
    from airflow.sdk.exceptions import AirflowFailException
    from jfrog_provider.policy import XrayPolicyViolation

    from include.mlops.gates import GateFailure

    args = parse_args(argv)
    try:
        summary = release(args)
    except XrayPolicyViolation as exc:
        print(f"Xray gate blocked the release: {exc}", file=sys.stderr)
        return 1
    except (AirflowFailException, GateFailure, OSError, ValueError) as exc:
        print(f"release refused: {exc}", file=sys.stderr)
        return 2
    model, build = summary["model"], summary["build"]
    print(f"model {model['repo']}/{model['path']} sha256 {model['sha256']} "
          f"(MLflow {summary['registered']['model_name']} version {summary['registered']['version']})")
    print(f"SBOM {summary['sbom']}, ML-BOM {summary['mlbom']}")
    print(f"build-info {build['build_name']}/{build['build_number']}: {build['url']}")
    print(f"Xray gate passed: {summary['xray'].get('counts')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
