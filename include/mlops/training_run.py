"""The training DAG's steps from the trained file to the SBOMs, model-agnostic: the model comes as a ModelSpec.

Each step takes the run summary the previous one returned (a dict of references: paths, digests, MLflow ids)
and returns what it adds; the Airflow tasks only wire them together.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from include.mlops.gates import GateFailure
from include.mlops.model_scan import assert_safe_model_file
from include.mlops.model_spec import ModelSpec
from include.mlops.signing import (
    SIGNATURE_FILE,
    ModelSignatureError,
    public_key_of,
    sign_model,
    verified_model,
    verify_model,
)

log = logging.getLogger(__name__)


class ArtifactStore(Protocol):
    """The Artifactory calls these steps make (jfrog_provider's ArtifactoryHook has them)."""

    def deploy_artifact(self, local_path: Any, repo: str, target_path: str, properties: Any = None) -> Any: ...

    def artifact_url(self, repo: str, path: str) -> str: ...


def signature_path(model_path: Path | str) -> Path:
    """Where a model directory's signature lives: beside the directory, never inside it."""
    return Path(model_path).parent.parent / SIGNATURE_FILE


def _existing_signature(output: Path, signing_key: bytes) -> Any | None:
    """The signature a retry or rerun already made over these very files with this key, else None.

    Reused rather than made again: ECDSA signatures differ on every signing, so a fresh bundle over the same
    (deterministically trained) weights would differ from the one already published and released.
    """
    if not signature_path(output).is_file():
        return None
    try:
        return verify_model(Path(output).parent, signature_path(output), public_key_of(signing_key))
    except ModelSignatureError:
        return None


def checked_training(trained: Mapping[str, Any], output: Path, signing_key: bytes) -> dict[str, Any]:
    """Scan the model file on this worker, then sign its directory; its sha256 must be training's.

    `output` is the weights file (model.safetensors) in a directory that holds it and its JSON config only;
    the signature (a Sigstore bundle) goes beside that directory. `signing_key` is the PEM private key.
    """
    # The strict format check runs whoever wrote the file: a container's own scan and sha256 are claims,
    # not evidence.
    scan = assert_safe_model_file(output)
    if scan.sha256 != trained["sha256"]:
        raise GateFailure(f"{output} has sha256 {scan.sha256}, training reported {trained['sha256']}")
    signature = _existing_signature(output, signing_key) or sign_model(Path(output).parent, signature_path(output),
                                                                        signing_key)
    if signature.files.get(Path(output).name) != scan.sha256:
        raise GateFailure(f"{output} changed between the scan ({scan.sha256}) and signing "
                          f"({signature.files.get(Path(output).name)})")
    log.info("signed %s (files %s) with key %s: %s", Path(output).parent, sorted(signature.files),
             signature.key_id[:16], signature.path)
    # generate_boms inventories what trained: this interpreter, or the packages the training image reported.
    return {**trained, "model_scan": scan.to_dict(), "python": sys.executable, "model_dir": str(Path(output).parent),
            "signature": signature.to_dict()}


def evaluate_against_champion(
    spec: ModelSpec, trained: Mapping[str, Any], data_dir: Path | str, max_samples: int | None, champion: Any | None,
    public_key: bytes, digests: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The candidate's test metrics and, when there is a champion, the champion's on the very same images.

    Both load from private copies that verified against `public_key` (a shared run directory or a cache may
    be written by others): the bytes scored are the bytes signed. The test files must have `digests` (what
    validate_data checked), so data changed after validation is refused, not scored.
    """
    with verified_model(trained["model_dir"], trained["signature"]["path"], public_key) as candidate:
        if candidate.signature.files.get(Path(trained["model_path"]).name) != trained["sha256"]:
            raise GateFailure(f"{trained['model_dir']} verifies, but its weights are not the ones train_model wrote")
        result = spec.evaluate(candidate.directory, Path(data_dir), max_samples, digests)
    log.info("test accuracy %.4f on %d images, loss %.4f", result["accuracy"], result["num_samples"], result["loss"])
    compared = None
    if champion is not None:
        with verified_model(champion.model_dir, champion.signature, public_key) as verified:
            baseline = spec.evaluate(verified.directory, Path(data_dir), max_samples, digests)
        compared = {"version": champion.version, "accuracy": baseline["accuracy"], "loss": baseline["loss"],
                    "num_samples": baseline["num_samples"], "sha256": champion.sha256}
        log.info("champion version %s on the same %d images: accuracy %.4f, loss %.4f; candidate - champion = %+.4f",
                 champion.version, baseline["num_samples"], baseline["accuracy"], baseline["loss"],
                 result["accuracy"] - baseline["accuracy"])
    return {**result, "champion": compared}


def register(
    spec: ModelSpec, run: Mapping[str, Any], *, settings: Any, dag_id: str, run_id: str, code_version: str,
    public_key: bytes,
) -> dict[str, Any]:
    """Log the run to MLflow and register its model as `challenger`; returns the version and what to publish."""
    with verified_model(run["trained"]["model_dir"], run["trained"]["signature"]["path"], public_key) as verified:
        return _register(spec, run, verified, settings=settings, dag_id=dag_id, run_id=run_id,
                         code_version=code_version)


def _register(
    spec: ModelSpec, run: Mapping[str, Any], verified: Any, *, settings: Any, dag_id: str, run_id: str,
    code_version: str,
) -> dict[str, Any]:
    from include.mlops.lineage import package_versions
    from include.mlops.registry import pinned_requirements, register_training_run

    dataset, trained, evaluation = run["dataset"], run["trained"], run["evaluation"]
    signature = verified.signature
    compared, container = evaluation.get("champion"), trained.get("container") or {}
    eval_metrics = {k: v for k, v in evaluation.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if compared:  # the comparison with the champion, measured on the same images (evaluate_against_champion)
        eval_metrics["champion_accuracy"] = compared["accuracy"]
        eval_metrics["accuracy_delta_vs_champion"] = evaluation["accuracy"] - compared["accuracy"]
    registered = register_training_run(
        tracking_uri=settings.mlflow_tracking_uri,
        experiment_name=settings.experiment_name,
        artifact_root=settings.mlflow_artifact_root,
        model_name=settings.model_name,
        run_key=f"{dag_id}/{run_id}",
        model_path=verified.directory,
        signature_path=verified.directory.parent / SIGNATURE_FILE,
        load_model=spec.load,
        input_example=spec.example_input(),
        params={
            **trained["config"],
            **{k: trained[k] for k in ("device", "parameters", "architecture", "deterministic", "threads")},
            # (step, from, to) whenever the load changed the CPU thread count mid-run; a bit-for-bit rerun pins it
            "thread_changes": str([list(c) for c in trained.get("thread_changes") or []]),
            "amp_dtype": trained["amp_dtype"] or "none",
            "cuda_graph": trained["cuda_graph"],
        },
        epoch_metrics=trained["epochs"],
        eval_metrics=eval_metrics,
        datasets=dataset_refs(spec, dataset),
        tags={
            "airflow.dag_id": dag_id,
            "airflow.run_id": run_id,
            "model.sha256": trained["sha256"],
            "model.format": "safetensors",
            "signature.sha256": signature.sha256,
            "signature.key_id": signature.key_id,
            "data.version": dataset["data_version"],
            "data.source": dataset["data_source"],
            "champion.compared_version": compared["version"] if compared else "none",
            "training.image": container.get("image") or "none (in-process)",
            "training.image_id": container.get("image_id") or "none",
            "git.commit": code_version,
            "python": trained["python"],
            **{f"version.{k}": v for k, v in trained["versions"].items()},
            **{f"version.{k}": v for k, v in package_versions("mlflow", "apache-airflow").items()},
        },
        pip_requirements=pinned_requirements(*spec.runtime_packages),
    )
    log.info("MLflow run %s, model %s version %s", registered.run_id, registered.model_name, registered.version)
    # Artifactory paths derive from the model version, so a retried publish overwrites, never duplicates.
    target = f"{registered.model_name}/{registered.version}/{Path(trained['model_path']).name}"
    return {
        "registered": registered.to_dict(),
        "code_version": code_version,
        "model_path": trained["model_path"],
        "artifactory_repo": settings.artifactory_repo,
        "artifactory_release_repo": settings.artifactory_release_repo,
        "artifactory_model_path": target,
        "publish_properties": {
            "model.name": registered.model_name,
            "model.version": registered.version,
            "model.sha256": trained["sha256"],
            "model.format": "safetensors",
            "signature.sha256": signature.sha256,
            "signature.key_id": signature.key_id,
            "mlflow.run_id": registered.run_id,
            "airflow.dag_id": dag_id,
            "airflow.run_id": run_id,
            "test.accuracy": str(evaluation["accuracy"]),
            "dataset.version": dataset["data_version"],
            "dataset.sha256": sorted(dataset["digests"].values()),
        },
        "release_properties": {"model.version": registered.version},
        # the rest of the signed directory and its bundle travel with the weights to the release repository
        "release_companions": [*sorted(set(signature.files) - {Path(trained["model_path"]).name}), SIGNATURE_FILE],
    }


def dataset_refs(spec: ModelSpec, dataset: Mapping[str, Any]) -> list[Any]:
    """One MLflow dataset input per dataset of the model, its digest taken over all of its files."""
    import hashlib

    from include.mlops.registry import DatasetRef

    refs = []
    for item in spec.datasets(dataset["digests"], dataset["data_dir"], dataset.get("counts")):
        # sha256sum's own line format, so the digest can be recomputed from the dataset's SHA256SUMS lines.
        lines = "".join(f"{sha}  {name}\n" for name, sha in sorted(item.files))
        refs.append(DatasetRef(name=item.name, source=item.source, sha256=hashlib.sha256(lines.encode()).hexdigest()))
    return refs


def publish_signature(run: Mapping[str, Any], published: Mapping[str, Any], store: ArtifactStore,
                      public_key: bytes) -> dict[str, Any]:
    """Upload the model's JSON config and signature beside the published weights, from a verified copy."""
    trained, registered = run["trained"], run["registered"]
    if published["sha256"] != trained["sha256"]:
        raise GateFailure(f"Artifactory holds sha256 {published['sha256']} at {published['repo']}/{published['path']}, "
                          f"but train_model wrote and signed {trained['sha256']}")
    folder = published["path"].lstrip("/").rsplit("/", 1)[0]
    properties = {"model.version": registered["version"], "model.sha256": trained["sha256"]}
    uploaded = {}
    with verified_model(trained["model_dir"], trained["signature"]["path"], public_key) as verified:
        signature = verified.signature
        # The weights went up through publish_model; the rest of the signed directory and the bundle follow.
        for name in sorted(signature.files):
            if name != Path(published["path"]).name:
                result = store.deploy_artifact(verified.file(name), published["repo"], f"{folder}/{name}",
                                               properties=properties)
                uploaded[name] = f"{result.repo}/{result.path}"
        result = store.deploy_artifact(verified.directory.parent / SIGNATURE_FILE, published["repo"],
                                       f"{folder}/{SIGNATURE_FILE}", properties={
                                           **properties, "signature.sha256": signature.sha256,
                                           "signature.key_id": signature.key_id})
    return {**signature.to_dict(), "artifactory_path": f"{result.repo}/{result.path}", "uploaded": uploaded,
            "url": store.artifact_url(published["repo"], f"{folder}/{SIGNATURE_FILE}")}


def verify_published(run: Mapping[str, Any], store: Any, public_key: bytes) -> dict[str, Any]:
    """Download the published weights, config and signature from Artifactory and verify them; the signed digests."""
    import tempfile

    published, trained = run["published"], run["trained"]
    folder = published["path"].lstrip("/").rsplit("/", 1)[0]
    names = sorted(trained["signature"]["files"])
    with tempfile.TemporaryDirectory(prefix="published-model-") as private:
        model_dir = Path(private) / Path(trained["model_dir"]).name
        for name in names:
            store.download_artifact(published["repo"], f"{folder}/{name}", model_dir / name)
        store.download_artifact(published["repo"], f"{folder}/{SIGNATURE_FILE}", Path(private) / SIGNATURE_FILE)
        with verified_model(model_dir, Path(private) / SIGNATURE_FILE, public_key) as verified:
            signature = verified.signature
    if signature.sha256 != trained["signature"]["sha256"] or signature.files != trained["signature"]["files"]:
        raise GateFailure(f"{published['repo']}/{folder}/ verifies, but not as the model train_model signed "
                          f"(signature {signature.sha256}, expected {trained['signature']['sha256']})")
    log.info("published model %s/%s verifies with key %s", published["repo"], folder, signature.key_id[:16])
    return signature.to_dict()


def _with_signature(mlbom: dict[str, Any], signature: Mapping[str, Any]) -> dict[str, Any]:
    """The ML-BOM with the model's signature as an external reference and properties of the model component."""
    model = next(c for c in mlbom["components"] if c.get("type") == "machine-learning-model")
    model.setdefault("externalReferences", []).append({
        "type": "attestation", "url": signature["url"],
        "comment": "Sigstore bundle (OpenSSF model-signing, elliptic key) over the model directory",
        "hashes": [{"alg": "SHA-256", "content": signature["sha256"]}],
    })
    model.setdefault("properties", []).extend([
        {"name": "mlops:signature.sha256", "value": signature["sha256"]},
        {"name": "mlops:signature.key_id", "value": signature["key_id"]},
        *({"name": f"mlops:signed.{name}.sha256", "value": sha} for name, sha in sorted(signature["files"].items())),
    ])
    return mlbom


def generate_boms(
    spec: ModelSpec, run: Mapping[str, Any], published: Mapping[str, Any], store: ArtifactStore, *,
    sbom_tool: str, run_dir: Path, pipeline: str, public_key: bytes, sbom_cache: Path | None = None,
) -> dict[str, Any]:
    """The CycloneDX SBOM of what trained and the model's ML-BOM; both to MLflow and beside the model in Artifactory.

    The model's config and signature go up beside it first; the ML-BOM names the signature.
    """
    from include.mlops.mlbom import build_mlbom, write_mlbom
    from include.mlops.registry import log_artifact
    from include.mlops.sbom import generate_sbom

    dataset, trained, evaluation, registered = run["dataset"], run["trained"], run["evaluation"], run["registered"]
    packages = requires = None
    if trained.get("container"):
        packages, requires = trained["container"].get("packages"), trained["container"].get("requires")
        if not packages:  # never inventory the worker in place of the image that trained
            raise GateFailure(f"training image {trained['container']['image']} reported no packages")
    signature = publish_signature(run, published, store, public_key)
    sbom = generate_sbom(trained["python"], Path(run_dir) / "sbom.cdx.json", sbom_tool, packages=packages,
                         requires=requires, cache_dir=sbom_cache)
    mlbom = write_mlbom(Path(run_dir) / "mlbom.cdx.json", _with_signature(build_mlbom(
        model_name=registered["model_name"],
        model_version=registered["version"],
        model_sha256=trained["sha256"],
        card=spec.card(trained["architecture"]),
        pipeline=pipeline,
        sbom=json.loads(Path(sbom.path).read_text()),
        datasets=spec.datasets(dataset["digests"], dataset["data_dir"], dataset["counts"]),
        metrics=evaluation,
        mlflow_run_url=f"{registered['tracking_uri']}#/runs/{registered['run_id']}",
        artifactory_url=store.artifact_url(published["repo"], published["path"]),
        runtime_packages=spec.runtime_packages,
    ), signature))
    folder = published["path"].lstrip("/").rsplit("/", 1)[0]
    uploaded = {}
    for name, path, serial in (("sbom", sbom.path, sbom.serial_number), ("mlbom", mlbom.path, mlbom.serial_number)):
        log_artifact(registered["tracking_uri"], registered["run_id"], Path(path), "sbom")
        result = store.deploy_artifact(path, published["repo"], f"{folder}/{Path(path).name}",
                                       properties={"model.version": registered["version"], f"{name}.serial": serial})
        uploaded[name] = f"{result.repo}/{result.path}"
    log.info("SBOM %s: %d components in %ss%s; ML-BOM %s", sbom.path, sbom.components, sbom.seconds,
             " (environment unchanged: its validated inventory reused)" if sbom.reused else "", mlbom.path)
    return {**sbom.to_dict(), "artifactory_path": uploaded["sbom"],
            "mlbom": {**mlbom.to_dict(), "artifactory_path": uploaded["mlbom"]}, "signature": signature}
