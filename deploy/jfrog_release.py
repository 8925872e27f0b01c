"""The training DAG's supply-chain steps from CI against a real JFrog (.github/workflows/release-jfrog.yml).

The same code as the DAG's tasks, not a second implementation: include/mlops/training_run.py scans the
model file and signs its directory (OpenSSF model-signing), evaluates and registers the verified copy, uploads
model.json and model.sig beside the weights and builds and uploads the SBOM and ML-BOM; the JFrog provider's
operators upload the weights, publish the build-info and run the Xray gate. The input is what the training
image's entry point printed (`python -m include.mnist.container ... | tee train.log`) and the model directory
it wrote (model.safetensors and model.json); the signature goes beside that directory. The JFrog connection
comes from AIRFLOW_CONN_JFROG_DEFAULT, which the workflow fills with a short-lived token from the OIDC
exchange; MLflow from MLFLOW_TRACKING_URI; the signing key (a PEM EC private key) from MODEL_SIGNING_KEY and
the key that verifies it from MODEL_SIGNING_PUBLIC_KEY (default: derived from the private key).

    python deploy/jfrog_release.py --train-log train.log --model model/model.safetensors --build-number 42 \
        --run-id 42-1 --run-url "$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID"

Exit status: 0 published to the staging repository with a clean Xray gate, 1 blocked by the gate (the model
and its evidence stay in the staging repository, as in the DAG), 2 the training log, the model or the signing
key was refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
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
    parser.add_argument("--model", type=Path, required=True,
                        help="the --output path training was given (model.safetensors in its own directory)")
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


class SigningKeyError(ValueError):
    """The signing key is missing, or the public key given is not its own."""


def signing_keys(environ: Mapping[str, str]) -> tuple[bytes, bytes]:
    """(private PEM, public PEM) from MODEL_SIGNING_KEY and MODEL_SIGNING_PUBLIC_KEY; the key never in a message."""
    from include.mlops.signing import key_id, public_key_of

    private = environ.get("MODEL_SIGNING_KEY", "").strip()
    if not private:
        raise SigningKeyError("MODEL_SIGNING_KEY is not set: the model cannot be signed (put the PEM EC private "
                              "key in the workflow's MODEL_SIGNING_KEY secret)")
    derived = public_key_of(private.encode())
    public = environ.get("MODEL_SIGNING_PUBLIC_KEY", "").strip().encode() or derived
    # A model signed with one key and checked against another would be refused by the DAG that later loads it.
    if key_id(public) != key_id(derived):
        raise SigningKeyError(f"MODEL_SIGNING_PUBLIC_KEY (key id {key_id(public)[:16]}) is not the public key of "
                              f"MODEL_SIGNING_KEY (key id {key_id(derived)[:16]})")
    return private.encode(), public


def trained_from_log(args: argparse.Namespace, dataset: dict[str, Any], signing_key: bytes) -> dict[str, Any]:
    """train_model's dict from the training log, after the Docker path's checks, the model file's scan and signing."""
    from mnist_training_container import ContainerTraining

    from include.mlops.training_run import checked_training

    lines = args.train_log.read_text().splitlines()
    # The model path and training-data digests must be the ones asked for and validated.
    trained = ContainerTraining(image=args.trained_by).result(lines, output=args.model, digests=dataset["digests"])
    return checked_training(trained, args.model, signing_key)


def stored_artifact(hook: Any, stored: str) -> dict[str, Any]:
    """A build-info artifact for `repo/path` with the checksums Artifactory holds (JFrog REST "File Info")."""
    repo, _, path = stored.partition("/")
    checksums = hook.get_file_info(repo, path)["checksums"]
    return {"repo": repo, "path": path, **{k: checksums[k] for k in ("sha256", "sha1", "md5")}}


def release(args: argparse.Namespace, signing_key: bytes, public_key: bytes) -> dict[str, Any]:
    """Validate, check and sign, evaluate, register, publish the model, signature, BOMs and build-info, then gate."""
    from jfrog_provider.hooks.artifactory import ArtifactoryHook
    from jfrog_provider.operators.artifactory import (
        ArtifactoryPublishBuildInfoOperator,
        ArtifactoryUploadOperator,
    )
    from jfrog_provider.operators.xray import XrayScanGateOperator

    from include.mlops.data_version import prepare_dataset
    from include.mlops.training_run import (
        evaluate_against_champion,
        generate_boms,
        register,
        verify_published,
    )
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
    run: dict[str, Any] = {"dataset": dataset, "trained": trained_from_log(args, dataset, signing_key)}
    # No champion comparison here: CI publishes to the staging repository; the DAG's promotion gates decide.
    run["evaluation"] = evaluate_against_champion(MNIST, run["trained"], dataset["data_dir"], args.max_test_samples,
                                                  None, public_key)
    run.update(register(MNIST, run, settings=settings, dag_id=args.pipeline, run_id=args.run_id,
                        code_version=args.vcs_revision, public_key=public_key))
    published = ArtifactoryUploadOperator(
        task_id="publish_model", local_path=str(args.model), repo=run["artifactory_repo"],
        target_path=run["artifactory_model_path"], properties={**run["publish_properties"], "ci.run_url": args.run_url},
    ).execute(context)
    # Uploads model.json and model.sig beside the weights (from a verified copy), then the SBOM and ML-BOM.
    sbom = generate_boms(MNIST, run, published, hook, sbom_tool=settings.sbom_tool, run_dir=out,
                         pipeline=args.pipeline, public_key=public_key)
    signature = sbom["signature"]
    # What the build-info lists must verify as downloaded, as promote_model checks before a release.
    verify_published({**run, "published": published}, hook, public_key)
    beside = [*signature["uploaded"].values(), signature["artifactory_path"], sbom["artifactory_path"],
              sbom["mlbom"]["artifactory_path"]]
    build = ArtifactoryPublishBuildInfoOperator(
        task_id="publish_build_info", build_name=args.build_name, build_number=args.build_number,
        artifacts=[published, *(stored_artifact(hook, p) for p in beside)],
        properties={"buildInfo.env.CI_RUN_URL": args.run_url},
        module_properties={"mlflow.run_id": run["registered"]["run_id"],
                           "model.version": str(run["registered"]["version"])},
        vcs=[{"url": args.vcs_url, "revision": args.vcs_revision}] if args.vcs_url else None,
    ).execute(context)
    summary = {"model": published, "signature": signature, "sbom": sbom["artifactory_path"],
               "mlbom": sbom["mlbom"]["artifactory_path"], "build": build, "registered": run["registered"],
               "evaluation": run["evaluation"]}
    (out / "release.json").write_text(json.dumps(summary, indent=2, default=str))
    # The gate last, as in the DAG: a blocked model stays in the staging repository with its evidence.
    policy = load_xray_policy()
    summary["xray"] = XrayScanGateOperator(
        task_id="scan_model", sbom_path=sbom["path"], watches=args.watches or None,
        severity_threshold=args.severity_threshold or policy["severity_threshold"],
        allowlist=policy.get("allowlist"), fail_on_fail_build_violations=policy["fail_on_fail_build_violations"],
        artifact_paths=[f"{published['repo']}/{published['path'].lstrip('/')}"],  # Xray's verdict on the model too
        deferrable=False,
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
        # Before anything is read or uploaded: without the key the run could only publish an unsigned model.
        signing_key, public_key = signing_keys(os.environ)
        os.environ.pop("MODEL_SIGNING_KEY", None)  # no subprocess (the SBOM tool) inherits the private key
        summary = release(args, signing_key, public_key)
    except XrayPolicyViolation as exc:
        print(f"Xray gate blocked the release: {exc}", file=sys.stderr)
        return 1
    except (AirflowFailException, GateFailure, OSError, ValueError) as exc:
        print(f"release refused: {exc}", file=sys.stderr)
        return 2
    model, build = summary["model"], summary["build"]
    print(f"model {model['repo']}/{model['path']} sha256 {model['sha256']} "
          f"(MLflow {summary['registered']['model_name']} version {summary['registered']['version']})")
    print(f"signature {summary['signature']['artifactory_path']} (key id {summary['signature']['key_id'][:16]}), "
          f"config {', '.join(summary['signature']['uploaded'].values())}")
    print(f"SBOM {summary['sbom']}, ML-BOM {summary['mlbom']}")
    print(f"build-info {build['build_name']}/{build['build_number']}: {build['url']}")
    print(f"Xray gate passed: {summary['xray'].get('counts')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
