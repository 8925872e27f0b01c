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

from include.mlops import gates, registry
from include.mlops.evidence import (
    build_lineage,
    champion_properties,
    champion_query,
    evidence_properties,
    runtime_purls_of,
    write_evidence_pack,
)
from include.mlops.files import write_json
from include.mlops.gates import GateFailure, GateResult

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


def promote(
    run: Mapping[str, Any], scan: Mapping[str, Any], store: ArtifactStore, *, run_dir: Path, min_accuracy: float,
    max_regression: float, dag_id: str, run_id: str,
) -> dict[str, Any]:
    """Gate the version, tag MLflow, upload the evidence pack and write release.json; GateFailure when blocked."""
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
    ])
    for gate in decision.gates:
        log.info("gate %s: %s - %s", gate.name, "PASS" if gate.passed else "BLOCK", gate.reason)
    log.info("gate xray: PASS - %s (threshold %s, scan %s)", scan["counts"], scan["severity_threshold"], scan["scan_id"])
    registry.set_version_tags(uri, name, version, {
        "gate.decision": "promote" if decision.promote else "blocked",
        "xray.scan_id": scan["scan_id"],
        "artifactory.path": f"{published['repo']}/{published['path'].lstrip('/')}",
        "artifactory.sha256": published["sha256"],
    })
    # The evidence pack goes next to the model whatever the decision; `champion` moves only in commit_champion.
    record_evidence(run, scan, decision.to_dict(), store, run_dir=Path(run_dir), dag_id=dag_id, run_id=run_id)
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
    return {"promote": True, "version": version, "previous_champion": previous, "decision": decision.to_dict()}


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


def commit_champion(run: Mapping[str, Any], released: Mapping[str, Any], store: ArtifactStore) -> dict[str, Any]:
    """The commit point: move `champion` to this version, then mirror the alias on its release copy only."""
    registered, published, promotion = run["registered"], run["published"], run["promotion"]
    uri, name, version = registered["tracking_uri"], registered["model_name"], registered["version"]
    if released["sha256"] != published["sha256"]:
        raise GateFailure(f"release copy {released['repo']}/{released['path']} has sha256 {released['sha256']}, "
                          f"but the gated file {published['repo']}/{published['path']} has {published['sha256']}")
    current = registry.champion(uri, name)
    if current is not None and current[0] not in (promotion["previous_champion"], version):
        # Another run promoted since promote gated against the previous champion: never roll it back.
        raise GateFailure(f"champion is now version {current[0]}, not {promotion['previous_champion']} that {name} "
                          f"version {version} was gated against; it stays '{registry.CHALLENGER}' "
                          "(trigger a new run to compare)")
    # The commit point. It runs only when every upstream task succeeded (model-file scan, SBOM and ML-BOM
    # validity, Xray, model gates, release copy), each idempotent per model version, so a crash anywhere before
    # this call leaves `champion` where it was and a cleared rerun adds nothing. The alias move is one call.
    registry.promote(uri, name, version)
    # After the commit, Artifactory's mirror of the alias follows; a crash in between is repaired by a rerun,
    # which finds `champion` already here and re-stamps.
    store.set_item_properties(released["repo"], released["path"], champion_properties())
    for row in store.search_aql(champion_query(released["repo"])):
        stale = f"{row['path']}/{row['name']}"
        if stale != released["path"]:
            store.delete_item_properties(released["repo"], stale, list(champion_properties()))
    previous = current[0] if current else None
    log.info("%s version %s is now '%s' (was %s)", name, version, registry.CHAMPION, previous or "none")
    return {"promoted": True, "model_name": name, "version": version, "previous_champion": previous,
            "sha256": published["sha256"]}
