"""ML-BOM: a CycloneDX 1.6 document for one model version, with its model card, datasets and runtime libraries.

Model-agnostic: the model package describes its model (`ModelCard`) and its datasets (`DatasetSpec`).

Dependencies: CycloneDX `dependsOn` holds refLinkType values, i.e. bom-refs *in the same document*
(a BOM-Link there would be outside the schema's meaning). So the ML-BOM copies, from the environment
SBOM, the components the model needs at run time (the closure of `runtime_packages`, torch and numpy by
default) under the SBOM's own bom-refs, and the model `dependsOn` them and its datasets. The full SBOM is
linked by an external reference of type `bom` whose URL is the BOM-Link `urn:cdx:<serial>/<version>`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from include.mlops.files import sha256_file, write_json
from include.mlops.sbom import SPEC_VERSION, SbomError, normalize_name, validate_cyclonedx

MLBOM_TOOL = "mlops-mlbom"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset (e.g. a train or test split) made of files known by name and SHA-256."""

    name: str
    files: tuple[tuple[str, str], ...]
    source: str
    records: int | None = None
    description: str = ""

    @property
    def bom_ref(self) -> str:
        """The dataset's bom-ref in the ML-BOM."""
        return f"dataset:{self.name}"


@dataclass(frozen=True)
class ModelCard:
    """What the model package says about its model; the ML-BOM adds the metrics and datasets."""

    architecture: str
    description: str
    task: str
    architecture_family: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    approach: str = "supervised"
    users: tuple[str, ...] = ()
    use_cases: tuple[str, ...] = ()
    limitations: tuple[str, ...] = ()
    tradeoffs: tuple[str, ...] = ()
    ethical: tuple[tuple[str, str], ...] = ()  # (consideration, mitigation strategy)

    def to_cyclonedx(self, datasets: Sequence[DatasetSpec], performance: list[dict[str, str]]) -> dict[str, Any]:
        """The CycloneDX 1.6 `modelCard` object."""
        considerations: dict[str, Any] = {
            key: list(value)
            for key, value in (("users", self.users), ("useCases", self.use_cases),
                               ("technicalLimitations", self.limitations),
                               ("performanceTradeoffs", self.tradeoffs))
            if value
        }
        if self.ethical:
            considerations["ethicalConsiderations"] = [
                {"name": name, "mitigationStrategy": mitigation} for name, mitigation in self.ethical
            ]
        return {
            "modelParameters": {
                "approach": {"type": self.approach},
                "task": self.task,
                "architectureFamily": self.architecture_family,
                "modelArchitecture": self.architecture,
                "datasets": [{"ref": d.bom_ref} for d in datasets],
                "inputs": [{"format": f} for f in self.inputs],
                "outputs": [{"format": f} for f in self.outputs],
            },
            "quantitativeAnalysis": {"performanceMetrics": performance},
            **({"considerations": considerations} if considerations else {}),
        }


@dataclass(frozen=True)
class MlbomResult:
    """Where the ML-BOM is and what identifies it, small enough for XCom."""

    path: str
    sha256: str
    serial_number: str
    model_bom_ref: str
    components: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def runtime_closure(sbom: Mapping[str, Any], packages: Sequence[str]) -> list[str]:
    """bom-refs of `packages` and everything they depend on, following the SBOM's dependency graph."""
    by_name = {normalize_name(c["name"]): c["bom-ref"] for c in sbom.get("components", []) if "bom-ref" in c}
    graph = {d["ref"]: d.get("dependsOn", []) for d in sbom.get("dependencies", [])}
    missing = [p for p in packages if normalize_name(p) not in by_name]
    if missing:
        raise SbomError(f"SBOM {sbom.get('serialNumber')} has no component for runtime package(s) {missing}")
    seen: list[str] = []
    todo = [by_name[normalize_name(p)] for p in packages]
    while todo:
        ref = todo.pop(0)
        if ref not in seen:
            seen.append(ref)
            todo.extend(graph.get(ref, []))
    return seen


def _metric(value: Any) -> str:
    return f"{float(value):.6f}" if isinstance(value, int | float) else str(value)


def build_mlbom(
    *,
    model_name: str,
    model_version: str,
    model_path: Path | None = None,
    model_sha256: str | None = None,
    card: ModelCard,
    pipeline: str,
    sbom: Mapping[str, Any],
    datasets: Sequence[DatasetSpec],
    metrics: Mapping[str, Any],
    mlflow_run_url: str,
    artifactory_url: str,
    runtime_packages: Sequence[str] = ("torch", "numpy"),
    serial_number: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A validated CycloneDX 1.6 ML-BOM for one registered model version, made by the pipeline `pipeline`."""
    if model_sha256 is None:
        if model_path is None:
            raise ValueError("give model_path or model_sha256")
        model_sha256 = sha256_file(Path(model_path))
    if not re.fullmatch(r"[0-9a-f]{64}", model_sha256 or ""):
        raise ValueError(f"model_sha256 must be 64 lower-case hex digits, got {model_sha256!r}")
    if not datasets:
        raise ValueError("an ML-BOM needs the training and test datasets")
    sbom_serial = str(sbom.get("serialNumber") or "")
    if not sbom_serial.startswith("urn:uuid:"):
        raise SbomError(f"SBOM serialNumber {sbom_serial!r} is not a urn:uuid: the ML-BOM could not link it")
    model_ref = f"model:{model_name}@{model_version}"
    closure = runtime_closure(sbom, runtime_packages)
    libraries = {c["bom-ref"]: c for c in sbom.get("components", []) if c.get("bom-ref") in closure}
    sbom_graph = {d["ref"]: d.get("dependsOn", []) for d in sbom.get("dependencies", [])}

    performance = [{"type": "accuracy", "value": _metric(metrics["accuracy"]),
                    "slice": f"test set ({metrics.get('num_samples', '?')} images)"}]
    if "loss" in metrics:
        performance.append({"type": "cross-entropy loss", "value": _metric(metrics["loss"]), "slice": "test set"})
    for label, value in sorted((metrics.get("per_class_accuracy") or {}).items(), key=lambda kv: str(kv[0])):
        performance.append({"type": "accuracy", "value": _metric(value), "slice": f"class {label}"})

    model = {
        "type": "machine-learning-model",
        "bom-ref": model_ref,
        "name": model_name,
        "version": str(model_version),
        "description": card.description,
        "hashes": [{"alg": "SHA-256", "content": model_sha256}],
        "modelCard": card.to_cyclonedx(datasets, performance),
        "externalReferences": [
            {"type": "build-meta", "url": mlflow_run_url, "comment": "MLflow run that trained and registered it"},
            {"type": "distribution", "url": artifactory_url, "comment": "Artifactory location of the model file",
             "hashes": [{"alg": "SHA-256", "content": model_sha256}]},
            {"type": "bom", "url": f"{sbom_serial.replace('urn:uuid:', 'urn:cdx:')}/{sbom.get('version', 1)}",
             "comment": "CycloneDX SBOM of the training environment"},
        ],
    }
    data_components = []
    for d in datasets:
        data_components.append({
            "type": "data",
            "bom-ref": d.bom_ref,
            "name": d.name,
            "description": (d.description or d.name) + (f", {d.records} records" if d.records else ""),
            "hashes": [{"alg": "SHA-256", "content": sha} for _, sha in d.files],
            "data": [{
                "type": "dataset",
                "name": file_name,
                "contents": {
                    "url": f"{d.source.rstrip('/')}/{file_name}",
                    "properties": [{"name": "sha256", "value": sha}],
                },
                "classification": "public",
            } for file_name, sha in d.files],
        })
    dependencies = [{"ref": model_ref, "dependsOn": sorted([*closure_roots(closure, runtime_packages, libraries),
                                                            *(d.bom_ref for d in datasets)])}]
    dependencies += [{"ref": d.bom_ref, "dependsOn": []} for d in datasets]
    dependencies += [{"ref": ref, "dependsOn": [r for r in sbom_graph.get(ref, []) if r in libraries]}
                     for ref in sorted(libraries)]
    doc = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number or f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": timestamp or datetime.now(UTC).isoformat(),
            "tools": {"components": [{"type": "application", "name": MLBOM_TOOL, "version": "1.0.0"}]},
            "component": {"type": "application", "bom-ref": f"pipeline:{pipeline}", "name": pipeline},
            "properties": [{"name": "sbom.serial", "value": sbom_serial}],
        },
        "components": [model, *data_components, *(libraries[r] for r in sorted(libraries))],
        "dependencies": dependencies,
    }
    check_mlbom(doc)
    return doc


def closure_roots(closure: Sequence[str], packages: Sequence[str], libraries: Mapping[str, Any]) -> list[str]:
    """The bom-refs of the directly named runtime packages (the model's direct dependencies)."""
    wanted = {normalize_name(p) for p in packages}
    return [r for r in closure if normalize_name(libraries[r]["name"]) in wanted]


def check_mlbom(doc: Mapping[str, Any], source: str = "ML-BOM") -> None:
    """Schema-validate and check what the schema cannot: unique bom-refs, resolvable refs, one model."""
    validate_cyclonedx(dict(doc), source=source)
    refs = [c.get("bom-ref") for c in doc.get("components", []) if c.get("bom-ref")]
    meta_ref = (doc.get("metadata", {}).get("component") or {}).get("bom-ref")
    all_refs = refs + ([meta_ref] if meta_ref else [])
    duplicates = sorted({r for r in all_refs if all_refs.count(r) > 1})
    if duplicates:
        raise SbomError(f"{source}: duplicate bom-ref(s) {duplicates}")
    known = set(all_refs)
    for dep in doc.get("dependencies", []):
        for ref in [dep["ref"], *dep.get("dependsOn", [])]:
            if ref not in known:
                raise SbomError(f"{source}: dependencies reference unknown bom-ref {ref!r}")
    models = [c for c in doc.get("components", []) if c.get("type") == "machine-learning-model"]
    if len(models) != 1:
        raise SbomError(f"{source}: expected exactly one machine-learning-model component, found {len(models)}")
    for ds in models[0].get("modelCard", {}).get("modelParameters", {}).get("datasets", []):
        if "ref" in ds and ds["ref"] not in known:
            raise SbomError(f"{source}: modelCard dataset ref {ds['ref']!r} names no component")


def write_mlbom(path: Path, doc: Mapping[str, Any]) -> MlbomResult:
    """Check and atomically write an ML-BOM; returns its location, sha256 and serial."""
    check_mlbom(doc, source=str(path))
    write_json(Path(path), doc)
    model = next(c for c in doc["components"] if c.get("type") == "machine-learning-model")
    return MlbomResult(path=str(path), sha256=sha256_file(Path(path)), serial_number=str(doc["serialNumber"]),
                       model_bom_ref=str(model["bom-ref"]), components=len(doc["components"]))
