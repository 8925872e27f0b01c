"""Evidence pack per model version: lineage.json plus the SBOM, ML-BOM, scans, gate decision and metrics.

The pack lives next to the model in Artifactory (`<repo>/<model>/<version>/evidence/`) and is linked from
MLflow. `evidence_properties` turns the lineage into Artifactory properties on the model file, so that one
AQL query on the released champion answers "which data and which dependencies produced it?":

    items.find({"repo": "ml-models-release", "name": "model.safetensors", "@mlflow.alias": "champion"})
         .include("repo", "path", "name", "sha256", "property")

Each row carries `dataset.version`, `dataset.sha256` (one value per dataset file), `model.dependency` (the purls of the
model's runtime closure), `sbom.serial` / `sbom.path` (the full environment SBOM), `mlflow.run_id`,
`model.version` and the Xray scan id and verdict. `mlflow.alias=champion` (`champion_properties()`) is
moved onto the release copy by the training DAG's `set_champion` right after the MLflow alias, and taken off
the earlier champion's; staging copies keep everything except that stamp.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from include.mlops.files import atomic_write_text, sha256_file, write_json
from include.mlops.sbom import library_purls

LINEAGE_SCHEMA = "mnist-mlops/lineage/1"
CHAMPION_ALIAS = "champion"
PACK_FILES = ("sbom.cdx.json", "mlbom.cdx.json", "model-scan.json", "xray-verdict.json", "gate-decision.json",
              "metrics.json", "lineage.json")


@dataclass(frozen=True)
class EvidencePack:
    """The files of one evidence pack and their SHA-256, small enough for XCom."""

    directory: str
    files: dict[str, str]
    manifest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_lineage(
    *,
    dataset_digests: Mapping[str, str],
    dag_id: str,
    run_id: str,
    mlflow_run_id: str,
    model_name: str,
    model_version: str,
    artifactory_repo: str,
    artifactory_path: str,
    model_sha256: str,
    sbom_serial: str,
    sbom_sha256: str,
    mlbom_serial: str,
    model_scan: Mapping[str, Any],
    xray_verdict: Mapping[str, Any],
    decision: Mapping[str, Any],
    runtime_purls: Sequence[str] = (),
    code_version: str = "unknown",
    data_version: str = "unknown",
    created: str | None = None,
) -> dict[str, Any]:
    """The chain data → Airflow run → MLflow run/version → Artifactory sha256 → SBOM → Xray → gate decision."""
    for name, value in (("model_sha256", model_sha256), ("sbom_sha256", sbom_sha256),
                        *((f"dataset_digests[{k}]", v) for k, v in dataset_digests.items())):
        if len(str(value)) != 64 or any(ch not in "0123456789abcdef" for ch in str(value)):
            raise ValueError(f"lineage field {name} must be a lower-case SHA-256, got {value!r}")
    if not dataset_digests:
        raise ValueError("lineage field dataset_digests is empty: a model without data has no lineage")
    if "scan_id" not in xray_verdict or "passed" not in xray_verdict:
        raise ValueError("lineage field xray_verdict needs scan_id and passed (the XrayScanGateOperator XCom)")
    if "safe" not in model_scan or "sha256" not in model_scan:
        raise ValueError("lineage field model_scan needs safe and sha256 (ModelScanResult.to_dict())")
    if model_scan["sha256"] != model_sha256:
        raise ValueError(f"lineage field model_scan.sha256 {model_scan['sha256']} is not the published "
                         f"model's {model_sha256}: the scan was of another file")
    return {
        "schema": LINEAGE_SCHEMA,
        "created": created or datetime.now(UTC).isoformat(),
        "data_version": data_version,
        "datasets": [{"file": name, "sha256": sha} for name, sha in sorted(dataset_digests.items())],
        "airflow": {"dag_id": dag_id, "run_id": run_id, "code_version": code_version},
        "mlflow": {"run_id": mlflow_run_id, "model_name": model_name, "model_version": str(model_version)},
        "artifactory": {"repo": artifactory_repo, "path": artifactory_path.lstrip("/"), "sha256": model_sha256},
        "model_scan": {"safe": bool(model_scan["safe"]), "sha256": model_scan["sha256"],
                       "globals": list(model_scan.get("globals", [])), "refused": list(model_scan.get("refused", []))},
        "sbom": {"serial": sbom_serial, "sha256": sbom_sha256, "runtime_purls": sorted(runtime_purls)},
        "mlbom": {"serial": mlbom_serial},
        "xray": {"scan_id": str(xray_verdict["scan_id"]), "passed": bool(xray_verdict["passed"]),
                 "severity_threshold": xray_verdict.get("severity_threshold"),
                 "blocking": len(xray_verdict.get("blocking", []))},
        "decision": {"promote": bool(decision.get("promote")), "reasons": list(decision.get("reasons", []))},
    }


def runtime_purls_of(mlbom: Mapping[str, Any]) -> list[str]:
    """purls of the library components an ML-BOM carries (the model's runtime closure), canonical form."""
    return library_purls(mlbom)


def evidence_properties(lineage: Mapping[str, Any], sbom_path: str | None = None) -> dict[str, str | list[str]]:
    """Artifactory properties for the model file, derived from lineage.json (multi-valued where plural)."""
    if lineage.get("schema") != LINEAGE_SCHEMA:
        raise ValueError(f"lineage schema is {lineage.get('schema')!r}, expected {LINEAGE_SCHEMA!r}")
    props: dict[str, str | list[str]] = {
        "model.name": lineage["mlflow"]["model_name"],
        "model.version": lineage["mlflow"]["model_version"],
        "model.sha256": lineage["artifactory"]["sha256"],
        "mlflow.run_id": lineage["mlflow"]["run_id"],
        "airflow.dag_id": lineage["airflow"]["dag_id"],
        "airflow.run_id": lineage["airflow"]["run_id"],
        "dataset.sha256": [d["sha256"] for d in lineage["datasets"]],
        "dataset.file": [d["file"] for d in lineage["datasets"]],
        "dataset.version": str(lineage.get("data_version", "unknown")),
        "sbom.serial": lineage["sbom"]["serial"],
        "sbom.sha256": lineage["sbom"]["sha256"],
        "mlbom.serial": lineage["mlbom"]["serial"],
        "xray.scan_id": lineage["xray"]["scan_id"],
        "xray.verdict": "passed" if lineage["xray"]["passed"] else "blocked",
        "model_scan.verdict": "safe" if lineage["model_scan"]["safe"] else "refused",
        "gate.decision": "promote" if lineage["decision"]["promote"] else "blocked",
    }
    if lineage["sbom"].get("runtime_purls"):
        props["model.dependency"] = list(lineage["sbom"]["runtime_purls"])
    if sbom_path:
        props["sbom.path"] = sbom_path
    return props


def champion_properties() -> dict[str, str]:
    """The stamp the release step puts on the champion's file (the AQL above filters on it)."""
    return {"mlflow.alias": CHAMPION_ALIAS}


def champion_query(release_repo: str, file_name: str = "model.safetensors") -> str:
    """The one AQL query: the champion's file with every lineage property."""
    criteria = json.dumps({"repo": release_repo, "name": file_name, "@mlflow.alias": CHAMPION_ALIAS})
    return f'items.find({criteria}).include("repo","path","name","sha256","property")'


def properties_of(row: Mapping[str, Any]) -> dict[str, list[str]]:
    """Fold an AQL row's `properties: [{key, value}]` into {key: [values]}."""
    out: dict[str, list[str]] = {}
    for prop in row.get("properties", []):
        out.setdefault(prop["key"], []).append(prop.get("value", ""))
    return out


def write_evidence_pack(
    directory: Path,
    *,
    sbom_path: Path,
    mlbom: Mapping[str, Any],
    model_scan: Mapping[str, Any],
    xray_verdict: Mapping[str, Any],
    decision: Mapping[str, Any],
    metrics: Mapping[str, Any],
    lineage: Mapping[str, Any],
) -> EvidencePack:
    """Write the pack file by file (each atomic), then manifest.json last: a pack with a manifest is complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.json"
    manifest.unlink(missing_ok=True)  # a retry rewrites the pack; until the new manifest lands it is incomplete
    tmp_sbom = directory / ".sbom.cdx.json.copy"
    shutil.copyfile(sbom_path, tmp_sbom)
    tmp_sbom.replace(directory / "sbom.cdx.json")
    write_json(directory / "mlbom.cdx.json", mlbom)
    write_json(directory / "model-scan.json", model_scan)
    write_json(directory / "xray-verdict.json", xray_verdict)
    write_json(directory / "gate-decision.json", decision)
    write_json(directory / "metrics.json", metrics)
    write_json(directory / "lineage.json", lineage)
    files = {name: sha256_file(directory / name) for name in PACK_FILES}
    atomic_write_text(manifest, json.dumps({"schema": LINEAGE_SCHEMA, "files": files}, indent=2, sort_keys=True)
                      + "\n")
    return EvidencePack(directory=str(directory), files=files, manifest=str(manifest))


def verify_evidence_pack(directory: Path) -> dict[str, str]:
    """Check every file against manifest.json; raise ValueError naming the first missing or changed file."""
    directory = Path(directory)
    manifest = directory / "manifest.json"
    if not manifest.exists():
        raise ValueError(f"{manifest} is missing: the evidence pack is incomplete")
    files = json.loads(manifest.read_text())["files"]
    for name, sha in files.items():
        path = directory / name
        if not path.exists():
            raise ValueError(f"evidence file {path} is missing")
        if sha256_file(path) != sha:
            raise ValueError(f"evidence file {path} changed: sha256 {sha256_file(path)} != manifest {sha}")
    return files


