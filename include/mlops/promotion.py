"""Promotion after the Xray gate: the model gates, the evidence pack, and the commit point that moves `champion`.

`promote` decides and records: each gate's verdict goes to the MLflow version, and the evidence pack goes next
to the model in Artifactory whatever the decision; a blocked version keeps `challenger` and GateFailure names
the gate and its figures. `commit_champion` is the only place `champion` moves, after the release copy exists;
both are idempotent per model version, so a rerun after a crash adds nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from include.mlops import audit, gates, registry
from include.mlops.evidence import (
    build_lineage,
    champion_properties,
    champion_query,
    evidence_properties,
    runtime_purls_of,
    write_evidence_pack,
)
from include.mlops.files import sha256_file, write_json
from include.mlops.gates import GateFailure, GateResult
from include.mlops.jfrog_evidence import EvidenceTarget, deploy_promotion_evidence

log = logging.getLogger(__name__)


class ArtifactStore(Protocol):
    """The Artifactory calls promotion makes (jfrog_provider's ArtifactoryHook has them)."""

    def deploy_artifact(self, local_path: Any, repo: str, target_path: str, properties: Any = None) -> Any: ...

    def set_item_properties(self, repo: str, path: str, properties: Mapping[str, Any]) -> None: ...

    def delete_item_properties(self, repo: str, path: str, keys: list[str]) -> None: ...

    def search_aql(self, query: str) -> list[dict[str, Any]]: ...


def champion_gate(current: str | None, version: str, evaluation: Mapping[str, Any], max_regression: float) -> GateResult:
    """The champion gate on evaluate_model's same-images comparison; blocks when the champion moved since then."""
    compared = evaluation.get("champion") or {}
    if current is None or current == version:
        return gates.champion_gate(evaluation["accuracy"], None, max_regression)
    if compared.get("version") == current:
        return gates.champion_gate(evaluation["accuracy"], compared["accuracy"], max_regression,
                                   f"both on the same {compared['num_samples']} test images")
    # The champion moved after evaluate_model scored it: a figure logged on other images is no comparison.
    return GateResult("champion", False, f"champion is version {current} but evaluate_model compared against "
                                         f"{compared.get('version') or 'none'}: rerun the DAG to compare on the same images")


def registry_gate(tags: Mapping[str, str]) -> GateResult:
    """A demoted version, or one with a blocking security finding, never becomes champion again."""
    reason = registry.promotion_bar(tags)
    return GateResult("registry", reason is None, reason or "never demoted, no blocking security finding")


def promote(
    run: Mapping[str, Any], scan: Mapping[str, Any], store: ArtifactStore, *, run_dir: Path, min_accuracy: float,
    max_regression: float, dag_id: str, run_id: str, actor: audit.Actor | Mapping[str, str] | None = None,
    jfrog_evidence: EvidenceTarget | None = None,
) -> dict[str, Any]:
    """Gate the version, tag MLflow, upload the evidence pack and write release.json; GateFailure when blocked.

    The decision goes to the audit trail as `gate.decision` (by `actor`, default the scheduler in this run). With
    `jfrog_evidence`, the pack is also attested as JFrog Evidence on the model file, whatever the decision.
    """
    registered, published, trained, evaluation = run["registered"], run["published"], run["trained"], run["evaluation"]
    uri, name, version = registered["tracking_uri"], registered["model_name"], registered["version"]
    if published["sha256"] != trained["sha256"]:
        raise GateFailure(f"Artifactory holds sha256 {published['sha256']} at {published['repo']}/{published['path']}, "
                          f"but train_model wrote {trained['sha256']}")
    current = registry.champion(uri, name)
    previous = current[0] if current else None
    decision = gates.decide_promotion([
        gates.accuracy_gate(evaluation["accuracy"], min_accuracy),
        champion_gate(previous, version, evaluation, max_regression),
        registry_gate(registry.version_tags(uri, name, version)),
    ])
    for gate in decision.gates:
        # a block is a WARNING here; the task's one ERROR line names every blocking gate
        log.log(logging.INFO if gate.passed else logging.WARNING, "gate %s: %s - %s", gate.name,
                "PASS" if gate.passed else "BLOCK", gate.reason)
    log.info("gate xray: PASS - %s (threshold %s, scan %s)", scan["counts"], scan["severity_threshold"], scan["scan_id"])
    registry.set_version_tags(uri, name, version, {
        "gate.decision": "promote" if decision.promote else "blocked",
        "xray.scan_id": scan["scan_id"],
        "artifactory.path": f"{published['repo']}/{published['path'].lstrip('/')}",
        "artifactory.sha256": published["sha256"],
    })
    # The evidence pack goes next to the model whatever the decision; `champion` moves only in commit_champion.
    record_evidence(run, scan, decision.to_dict(), store, run_dir=Path(run_dir), dag_id=dag_id, run_id=run_id)
    evidence_sha256 = sha256_file(Path(run_dir) / "evidence" / "manifest.json")
    jfrog = record_jfrog_evidence(run, scan, decision.to_dict(), jfrog_evidence, evidence_sha256=evidence_sha256,
                                  dag_id=dag_id, run_id=run_id) if jfrog_evidence is not None else None
    audit.record(uri, name, version, event="gate.decision", outcome="promote" if decision.promote else "blocked",
                 actor=actor or audit.Actor("scheduler", dag_id, run_id, "promote_model"),
                 reason=" | ".join(decision.reasons) or "every gate passed", evidence_sha256=evidence_sha256,
                 details={"gates": decision.to_dict()["gates"], "xray_scan_id": scan["scan_id"],
                          "previous_champion": previous}, store=store, repo=published["repo"])
    write_json(Path(run_dir) / "release.json", {
        "mlflow": registered, "test_accuracy": evaluation["accuracy"], "artifactory": published, "sbom": run["sbom"],
        "xray": scan, "decision": decision.to_dict(), "previous_champion": previous,
        "data_version": run["dataset"]["data_version"],
    })
    if not decision.promote:
        raise GateFailure(f"{name} version {version} stays '{registry.CHALLENGER}', champion unchanged "
                          f"({previous or 'none'}): " + " | ".join(decision.reasons))
    log.info("%s version %s passed every gate; set_champion moves '%s' after the release", name, version,
             registry.CHAMPION)
    return {"promote": True, "version": version, "previous_champion": previous, "decision": decision.to_dict(),
            "evidence_sha256": evidence_sha256, "jfrog_evidence": jfrog}


def record_jfrog_evidence(
    run: Mapping[str, Any], scan: Mapping[str, Any], decision: Mapping[str, Any], target: EvidenceTarget, *,
    evidence_sha256: str, dag_id: str, run_id: str,
) -> dict[str, Any]:
    """Attest this try's evidence pack as JFrog Evidence on the model file and tag its uri on the MLflow version.

    JFrog Evidence is append-only: a retried promote rewrites the pack, so its record names that pack's manifest.
    """
    registered, published = run["registered"], run["published"]
    folder = published["path"].lstrip("/").rsplit("/", 1)[0]
    done = deploy_promotion_evidence(run, scan, decision, target, evidence_path=f"{published['repo']}/{folder}/evidence/",
                                     manifest_sha256=evidence_sha256, dag_id=dag_id, run_id=run_id)
    registry.set_version_tags(registered["tracking_uri"], registered["model_name"], registered["version"],
                              {"jfrog.evidence.uri": done["uri"]})
    log.info("JFrog Evidence %s on %s/%s, verified with trusted key %s", done["uri"], published["repo"],
             published["path"].lstrip("/"), done["key_alias"])
    return done


def record_evidence(
    run: Mapping[str, Any], scan: Mapping[str, Any], decision: Mapping[str, Any], store: ArtifactStore, *,
    run_dir: Path, dag_id: str, run_id: str,
) -> str:
    """Write the evidence pack, upload it beside the model, stamp the lineage on the model file; returns its folder."""
    registered, published, trained, sbom = run["registered"], run["published"], run["trained"], run["sbom"]
    uri, name, version = registered["tracking_uri"], registered["model_name"], registered["version"]
    mlbom_doc = json.loads(Path(sbom["mlbom"]["path"]).read_text())
    # The model-file scan and the model's signature (bundle digest, key id, signed file digests) travel together.
    signed_scan = {**trained["model_scan"], "signature": trained.get("signature")}
    lineage = build_lineage(
        dataset_digests=run["dataset"]["digests"], data_version=run["dataset"]["data_version"],
        dag_id=dag_id, run_id=run_id, mlflow_run_id=registered["run_id"], model_name=name, model_version=version,
        artifactory_repo=published["repo"], artifactory_path=published["path"], model_sha256=published["sha256"],
        sbom_serial=sbom["serial_number"], sbom_sha256=sbom["sha256"], mlbom_serial=sbom["mlbom"]["serial_number"],
        model_scan=signed_scan, xray_verdict=scan, decision=decision,
        runtime_purls=runtime_purls_of(mlbom_doc), code_version=run["code_version"],
    )
    pack = write_evidence_pack(
        run_dir / "evidence", sbom_path=Path(sbom["path"]), mlbom=mlbom_doc, model_scan=signed_scan,
        xray_verdict=scan, decision=decision, metrics=run["evaluation"], lineage=lineage,
    )
    folder = published["path"].lstrip("/").rsplit("/", 1)[0]
    # The manifest goes last: a pack with a manifest is complete, in Artifactory as on disk.
    for file_name in sorted(pack.files) + [Path(pack.manifest).name]:
        store.deploy_artifact(Path(pack.directory) / file_name, published["repo"], f"{folder}/evidence/{file_name}",
                              properties={"model.version": version})
    store.set_item_properties(published["repo"], published["path"].lstrip("/"),
                              evidence_properties(lineage, sbom["artifactory_path"]))
    evidence = f"{published['repo']}/{folder}/evidence/"
    registry.set_version_tags(uri, name, version, {"evidence.path": evidence})
    return evidence


def commit_champion(
    run: Mapping[str, Any], released: Mapping[str, Any], store: ArtifactStore, *,
    actor: audit.Actor | Mapping[str, str], approval: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The commit point: move `champion` to this version, record who and why, then mirror it on the release copy.

    Refused (GateFailure, recorded as `champion.refused`) when the release copy differs, when `champion` is no
    longer the version promote gated against (moved or removed since), when the version was demoted or has a
    blocking finding, or when a required approval was not given. `approval` is the approval task's result.
    """
    registered, published, promotion = run["registered"], run["published"], run["promotion"]
    uri, name, version = registered["tracking_uri"], registered["model_name"], registered["version"]
    evidence, approved_by = promotion.get("evidence_sha256"), (approval or {}).get("approved_by")
    current = registry.champion(uri, name)
    previous = current[0] if current else None

    def refuse(reason: str) -> GateFailure:
        audit.record(uri, name, version, event="champion.refused", outcome="refused", actor=actor, reason=reason,
                     evidence_sha256=evidence, details={"champion": previous}, store=store, repo=published["repo"])
        return GateFailure(f"{name} version {version} stays '{registry.CHALLENGER}': {reason}")

    if released["sha256"] != published["sha256"]:
        raise refuse(f"release copy {released['repo']}/{released['path']} has sha256 {released['sha256']}, "
                     f"but the gated file {published['repo']}/{published['path']} has {published['sha256']}")
    if approval is not None and approval.get("required") and not approval.get("approved"):
        raise refuse(f"approval was required and not given ({approval.get('outcome') or 'no answer'})")
    if previous not in (promotion["previous_champion"], version):
        # `champion` moved (another run promoted) or was removed (a demotion) since promote gated this version
        # against the previous champion: never roll either back.
        raise refuse(f"champion is now {f'version {previous}' if previous else 'unset'}, not "
                     f"{promotion['previous_champion'] or 'unset'} as when it was gated (trigger a new run to compare)")
    if bar := registry.promotion_bar(registry.version_tags(uri, name, version)):
        raise refuse(bar)
    # The commit point. It runs only when every upstream task succeeded (model-file scan, SBOM and ML-BOM
    # validity, Xray, model gates, release copy, approval when required), each idempotent per model version, so
    # a crash anywhere before this call leaves `champion` where it was and a cleared rerun adds nothing. The
    # alias move is one call; registry.promote checks the bar again right before it.
    moved = registry.promote(uri, name, version)
    audit.record(uri, name, version, event="champion.set", outcome="champion", actor=actor,
                 reason=f"passed every gate{f', approved by {approved_by}' if approved_by else ''}",
                 evidence_sha256=evidence, store=store, repo=published["repo"],
                 details={"alias": registry.CHAMPION, "previous_champion": promotion["previous_champion"],
                          "approved_by": approved_by, "moved_by_this_try": moved})
    # After the commit, Artifactory's mirror of the alias follows; a crash in between is repaired by a rerun,
    # which finds `champion` already here and re-stamps.
    store.set_item_properties(released["repo"], released["path"], champion_properties())
    for row in store.search_aql(champion_query(released["repo"])):
        stale = f"{row['path']}/{row['name']}"
        if stale != released["path"]:
            store.delete_item_properties(released["repo"], stale, list(champion_properties()))
    log.info("%s version %s is now '%s' (was %s)", name, version, registry.CHAMPION, previous or "none")
    return {"promoted": True, "model_name": name, "version": version, "previous_champion": previous,
            "sha256": published["sha256"], "approved_by": approved_by}


def demote_champion(
    tracking_uri: str, model_name: str, version: str, *, reason: str, actor: audit.Actor | Mapping[str, str],
    evidence_sha256: str | None, store: ArtifactStore, repo: str,
) -> bool:
    """Take `champion` off a version for a blocking finding, for good, and record it; False if it was not champion."""
    demoted = registry.demote(tracking_uri, model_name, version)
    if demoted or registry.version_tags(tracking_uri, model_name, version).get("promoted") == "false":
        # Recorded also when a crash came between the demotion and this record (the retry finds it demoted).
        audit.record(tracking_uri, model_name, version, event="champion.demoted", outcome="demoted", actor=actor,
                     reason=reason, evidence_sha256=evidence_sha256, details={"alias": registry.CHAMPION},
                     store=store, repo=repo)
    return demoted
