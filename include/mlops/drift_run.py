"""The drift DAG's steps: ingest, the champion's reference profile, one batch measured, history, retrain decision.

Model-agnostic: the model comes as a ModelSpec (image shape, classes, its view of images, training images).
The verdict comes from the fast statistics (drift_stats); the report a person reads comes from Evidently on the
same features, and `report_agreement` checks, per column, that both say the same: the result is kept in
decision.json and the batch record, and a disagreement is logged as a WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from include.mlops.drift_policy import RetrainDecision, retrain_decision
from include.mlops.drift_store import DriftStore, IngestResult, ingest, write_history
from include.mlops.files import sha256_file, write_json
from include.mlops.model_spec import ModelSpec

log = logging.getLogger(__name__)


class ArtifactStore(Protocol):
    """The Artifactory call the drift steps make (jfrog_provider's ArtifactoryHook has it)."""

    def deploy_artifact(self, local_path: Any, repo: str, target_path: str, properties: Any = None) -> Any: ...


def batch_loader(spec: ModelSpec) -> Callable[[Path], tuple[np.ndarray, np.ndarray | None]]:
    """Read and validate a landed batch for this model's image shape and classes."""
    from include.mlops.drift import load_batch

    return partial(load_batch, image_shape=spec.image_shape, num_classes=spec.num_classes)


def ingest_landed(spec: ModelSpec, store: DriftStore) -> IngestResult:
    """Quarantine bad files with a reason and claim good ones by sha256."""
    result = ingest(store, batch_loader(spec), sha256_file)
    for bad in result.quarantined:
        log.info("quarantined %s -> %s: %s", bad.name, bad.path, bad.reason)
    log.info("claimed %s; pending %s", [b.name for b in result.claimed], [b.name for b in result.pending])
    return result


def quarantine_alert(result: IngestResult) -> str | None:
    """The alert text for quarantined files, or None when there were none."""
    if not result.quarantined:
        return None
    lines = "; ".join(f"{q.name}: {q.reason}" for q in result.quarantined)
    return f"{len(result.quarantined)} batch(es) quarantined: {lines}"


def prepare_reference(spec: ModelSpec, settings: Any, size: int, public_key: bytes) -> dict[str, Any]:
    """The champion's reference profile, built once per signed model and stored with its version in MLflow.

    The champion loads only from a copy that verified against `public_key` (include.mlops.signing); the profile
    folder is keyed by the signature's digest, so a reset registry's new v1 never reuses an old v1's profile.
    """
    from include.mlops.drift import build_reference_profile, save_profile
    from include.mlops.registry import champion_model, log_reference
    from include.mlops.signing import verified_model

    champion = champion_model(settings.mlflow_tracking_uri, settings.model_name, settings.champions_dir, public_key)
    version = champion.version if champion else "none"
    key = f"v{version}-{champion.signature_sha256[:16]}" if champion else "none"
    directory = settings.reports_dir / "drift" / "reference" / f"{settings.model_name}-{key}-n{size}"
    if (directory / "profile.json").exists():
        log.info("reference profile of v%s reused from %s", version, directory)
    else:
        images = spec.training_images(settings.data_dir)
        pick = np.sort(np.random.default_rng(0).choice(len(images), size, replace=False))
        meta = {"model_name": settings.model_name, "reference": f"train split, {size} images, seed 0"}
        if champion:
            with verified_model(champion.model_dir, champion.signature, public_key) as verified:
                profile = build_reference_profile(images[pick], spec.viewer(verified.directory), version, meta=meta)
        else:
            profile = build_reference_profile(images[pick], None, version, meta=meta)
        save_profile(profile, directory)
        if champion:
            uri = log_reference(settings.mlflow_tracking_uri, champion.run_id, directory)
            log.info("reference profile of v%s stored at %s and %s", version, directory, uri)
    if champion is None:
        log.info("no champion model yet: drift is measured on image features only")
    return {"model_version": version, "model_path": champion.model_dir if champion else None,
            "signature": champion.signature if champion else None, "profile_dir": str(directory)}


def report_agreement(batch: str, verdict_flags: Mapping[str, bool], report_flags: Mapping[str, bool],
                     drift_share: float, verdict: bool, sample_rows: int) -> dict[str, Any]:
    """Whether Evidently's report says what the verdict said, column by column and for the batch; WARNING if not."""
    report_share = sum(report_flags.values()) / len(report_flags) if report_flags else 0.0
    report_verdict = bool(report_flags) and report_share >= drift_share
    differing = sorted(c for c in set(verdict_flags) | set(report_flags) if verdict_flags.get(c) != report_flags.get(c))
    agreement = {"agree": not differing and report_verdict == verdict, "differing_columns": differing,
                 "verdict": verdict, "report_verdict": report_verdict, "report_drift_share": report_share,
                 "report_rows": sample_rows}
    if not agreement["agree"]:
        log.warning("batch %s: the Evidently report (%d sampled rows) disagrees with the drift verdict on %s "
                    "(verdict %s, report %s)", batch, sample_rows, differing, verdict, report_verdict)
    return agreement


def measure_batch(
    spec: ModelSpec, batch: Mapping[str, Any], reference: Mapping[str, Any], *, settings: Any, store: DriftStore,
    artifacts: ArtifactStore, drift_share: float, run_id: str, public_key: bytes,
) -> dict[str, Any]:
    """Decide drift on one batch, keep Evidently's reports, log one MLflow run, then write the processed marker."""
    from include.mlops.drift import CATEGORICAL, batch_features, load_profile, write_reports
    from include.mlops.drift_stats import decide, summarize_reference
    from include.mlops.registry import log_batch_run

    done = store.record(batch["sha256"])
    if done is not None:
        log.info("batch %s was already processed at %s: not measured again", batch["name"], done["measured_at"])
        return summary(done)
    images, labels = batch_loader(spec)(Path(batch["path"]))
    profile = load_profile(Path(reference["profile_dir"]))
    if reference["model_path"]:
        # The champion's cached copy is verified again here: this task may run on another worker, later.
        from include.mlops.signing import verified_model

        with verified_model(reference["model_path"], reference["signature"], public_key) as verified:
            current = batch_features(images, profile, spec.viewer(verified.directory))
    else:
        current = batch_features(images, profile, None)
    decision = decide(summarize_reference(profile.columns, CATEGORICAL), current, drift_share)
    key = f"{batch['name']}-{batch['sha256'][:12]}"
    report_dir = settings.reports_dir / "drift" / key
    report = write_reports(profile.columns, current, report_dir, drift_share, labels=labels)
    agreement = report_agreement(batch["name"], {k: c.drifted for k, c in decision.columns.items()},
                                 report.evidently_flags, drift_share, decision.drift_detected, report.sample_rows)
    write_json(report_dir / "decision.json", {**decision.to_dict(), "report_agreement": agreement})
    files = [Path(p) for p in (report.html_path, report.json_path, report.classification_html,
                               report.classification_json, report_dir / "decision.json") if p]
    mlflow_run = log_batch_run(
        tracking_uri=settings.mlflow_tracking_uri, experiment_name=f"{spec.name}-drift",
        artifact_root=settings.mlflow_artifact_root, batch_sha256=batch["sha256"], run_name=batch["name"],
        params={"batch": batch["name"], "model_version": reference["model_version"], "rows": decision.current_rows},
        metrics={"drift_share": decision.drift_share, **{f"score.{k}": v.score for k, v in decision.columns.items()}},
        tags={"drift_detected": decision.drift_detected, "report.agrees": agreement["agree"], "airflow.run_id": run_id},
        files=files,
    )
    # The reports also go to Artifactory, keyed by the batch digest so a retry overwrites them.
    folder = f"drift-reports/{key}"
    for path in files:
        artifacts.deploy_artifact(path, settings.artifactory_repo, f"{folder}/{path.name}", properties={
            "drift.batch_sha256": batch["sha256"], "drift.detected": str(decision.drift_detected)})
    record = {
        "batch": dict(batch), "measured_at": datetime.now(UTC).isoformat(), "run_id": run_id,
        "model_version": reference["model_version"], "drift_detected": decision.drift_detected,
        "drift_share": decision.drift_share, "threshold": decision.threshold,
        "drifted_columns": decision.drifted_columns, "total_columns": len(decision.columns),
        "scores": {k: v.score for k, v in decision.columns.items()}, "report": report.to_dict(),
        "report_agreement": agreement, "mlflow_run_id": mlflow_run,
        "artifactory_path": f"{settings.artifactory_repo}/{folder}/", "signal": None,
    }
    store.mark_processed(batch["sha256"], record)
    log.info("batch %s: %d/%d features drifted (share %.2f, threshold %s) %s; report %s", batch["name"],
             len(decision.drifted_columns), len(decision.columns), decision.drift_share, decision.threshold,
             decision.drifted_columns, report.html_path)
    return summary(record)


def summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """The short form of a batch record that goes to XCom and drift.json."""
    return {
        "batch": record["batch"]["name"], "sha256": record["batch"]["sha256"],
        "drift_detected": record["drift_detected"], "drift_share": record["drift_share"],
        "threshold": record["threshold"], "drifted_columns": record["drifted_columns"],
        "total_columns": record["total_columns"], "html_path": record["report"]["html_path"],
        "json_path": record["report"]["json_path"], "mlflow_run_id": record["mlflow_run_id"],
        "report_agrees": (record.get("report_agreement") or {}).get("agree"),
    }


def report_history(settings: Any, store: DriftStore, run_dir: Path, run_id: str) -> dict[str, Any]:
    """Redraw the drift history (PNG, CSV, HTML) and keep this run's summary as drift.json in its run directory."""
    records = store.records()
    paths = write_history(records, settings.reports_dir / "drift")
    result = {"batches": [summary(r) for r in records if r["run_id"] == run_id], "history": paths}
    write_json(Path(run_dir) / "drift.json", result)
    log.info("drift history %s (plot %s)", paths["html"], paths["png"])
    return result


@dataclass(frozen=True)
class RetrainOutcome:
    """What decide_retrain did with the drifted batches, and the drift event's facts when it emits one."""

    decision: RetrainDecision
    record: dict[str, Any]
    event_extra: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy."""
        return asdict(self)


def decide_retrain(
    store: DriftStore, run_id: str, *, run_dir: Path, cooldown: timedelta, last_request_at: datetime | None,
    last_start_at: datetime | None, now: datetime | None = None,
) -> RetrainOutcome:
    """One retrain request for the unhandled drifted batches, unless one is pending or in cooldown; recorded."""
    now = now or datetime.now(UTC)
    pending = store.unsignalled_drift(run_id)
    decision = retrain_decision([r["batch"]["name"] for r in pending], now, cooldown, last_request_at, last_start_at)
    record = {**decision.to_dict(), "batches": [r["batch"]["sha256"] for r in pending], "run_id": run_id,
              "at": now.isoformat()}
    write_json(Path(run_dir) / "decision.json", record)
    if decision.action != "none":
        store.mark_signal([r["batch"]["sha256"] for r in pending], record)
    extra = None
    if decision.emit:
        worst = max(pending, key=lambda r: r["drift_share"])
        # Facts for the training run's trigger, no secrets: which batches, how strong, where the report is.
        extra = {"batches": [r["batch"]["name"] for r in pending], "batch_sha256": [r["batch"]["sha256"] for r in pending],
                 "drift_share": worst["drift_share"], "drifted_columns": worst["drifted_columns"],
                 "report": worst["report"]["json_path"]}
    return RetrainOutcome(decision, record, extra)
