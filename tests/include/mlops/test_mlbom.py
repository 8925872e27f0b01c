"""ML-BOM: valid CycloneDX 1.6 with a model card, data components and the runtime closure; mutants rejected."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from include.mlops.mlbom import (
    DatasetSpec,
    build_mlbom,
    check_mlbom,
    runtime_closure,
    sha256_file,
    write_mlbom,
)
from include.mlops.sbom import SbomError
from include.mnist.spec import datasets, model_card

DIGESTS = {
    "train-images-idx3-ubyte.gz": "1" * 64, "train-labels-idx1-ubyte.gz": "2" * 64,
    "t10k-images-idx3-ubyte.gz": "3" * 64, "t10k-labels-idx1-ubyte.gz": "4" * 64,
}
METRICS = {"accuracy": 0.9912, "loss": 0.031, "num_samples": 10000,
           "per_class_accuracy": {str(i): 0.98 + i / 1000 for i in range(10)}}


def _lib(name: str, version: str) -> dict:
    return {"type": "library", "bom-ref": f"{name}=={version}", "name": name, "version": version,
            "purl": f"pkg:pypi/{name.lower()}@{version}"}


@pytest.fixture
def sbom() -> dict:
    """A small environment SBOM: torch → filelock, typing_extensions; numpy; an unrelated apache-airflow."""
    libs = [_lib("torch", "2.14.1"), _lib("filelock", "3.0"), _lib("typing_extensions", "4.16.0"),
            _lib("numpy", "2.4.6"), _lib("apache-airflow", "3.3.2")]
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "serialNumber": "urn:uuid:9f1c1b9e-0d5e-4a55-9d59-0c1d2b3a4f50", "components": libs,
        "dependencies": [
            {"ref": "torch==2.14.1", "dependsOn": ["filelock==3.0", "typing_extensions==4.16.0"]},
            {"ref": "filelock==3.0", "dependsOn": []}, {"ref": "typing_extensions==4.16.0", "dependsOn": []},
            {"ref": "numpy==2.4.6", "dependsOn": []}, {"ref": "apache-airflow==3.3.2", "dependsOn": []},
        ],
    }


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    return path


@pytest.fixture
def mlbom(sbom, model_file) -> dict:
    return build_mlbom(
        model_name="mnist-cnn", model_version="7", model_path=model_file, card=model_card("fast99-cnn"),
        pipeline="mnist_training", sbom=sbom,
        datasets=datasets(DIGESTS, "file:///data/mnist", {"train": 60000, "test": 10000}),
        metrics=METRICS, mlflow_run_url="http://127.0.0.1:5000/#/experiments/1/runs/0123abcd",
        artifactory_url="http://127.0.0.1:8081/artifactory/ml-models-local/mnist-cnn/7/model.pt",
    )


def _model(doc: dict) -> dict:
    return next(c for c in doc["components"] if c["type"] == "machine-learning-model")


def test_model_component_and_card(mlbom, model_file):
    model = _model(mlbom)
    assert model["name"] == "mnist-cnn" and model["version"] == "7"
    assert model["hashes"] == [{"alg": "SHA-256", "content": sha256_file(model_file)}]
    card = model["modelCard"]
    assert card["modelParameters"]["approach"] == {"type": "supervised"}
    assert card["modelParameters"]["modelArchitecture"] == "fast99-cnn"
    assert card["modelParameters"]["datasets"] == [{"ref": "dataset:mnist-test"}, {"ref": "dataset:mnist-train"}]
    metrics = card["quantitativeAnalysis"]["performanceMetrics"]
    assert metrics[0] == {"type": "accuracy", "value": "0.991200", "slice": "test set (10000 images)"}
    assert sum(m["slice"].startswith("class ") for m in metrics) == 10
    assert card["considerations"]["technicalLimitations"]
    refs = {r["type"]: r["url"] for r in model["externalReferences"]}
    assert refs["bom"] == "urn:cdx:9f1c1b9e-0d5e-4a55-9d59-0c1d2b3a4f50/1"
    assert refs["distribution"].endswith("/ml-models-local/mnist-cnn/7/model.pt")
    assert "runs/0123abcd" in refs["build-meta"]


def test_data_components_carry_every_file_digest(mlbom):
    data = {c["name"]: c for c in mlbom["components"] if c["type"] == "data"}
    assert set(data) == {"mnist-train", "mnist-test"}
    assert [h["content"] for h in data["mnist-train"]["hashes"]] == ["1" * 64, "2" * 64]
    files = {d["name"]: d for d in data["mnist-test"]["data"]}
    assert files["t10k-images-idx3-ubyte.gz"]["type"] == "dataset"
    assert files["t10k-images-idx3-ubyte.gz"]["contents"]["properties"] == [{"name": "sha256", "value": "3" * 64}]


def test_dependencies_reach_the_runtime_closure_only(mlbom, sbom):
    deps = {d["ref"]: d["dependsOn"] for d in mlbom["dependencies"]}
    assert deps["model:mnist-cnn@7"] == ["dataset:mnist-test", "dataset:mnist-train", "numpy==2.4.6",
                                         "torch==2.14.1"]
    assert deps["torch==2.14.1"] == ["filelock==3.0", "typing_extensions==4.16.0"]
    libs = {c["bom-ref"] for c in mlbom["components"] if c["type"] == "library"}
    assert libs == set(runtime_closure(sbom, ["torch", "numpy"])) and "apache-airflow==3.3.2" not in libs


def test_missing_runtime_package_is_named(sbom, model_file):
    with pytest.raises(SbomError, match="scikit-learn"):
        build_mlbom(model_name="m", model_version="1", model_path=model_file, card=model_card("a"), pipeline="p",
                    sbom=sbom, datasets=[DatasetSpec("train", (("f", "1" * 64),), "file:///d")], metrics=METRICS,
                    mlflow_run_url="http://x", artifactory_url="http://y", runtime_packages=["scikit-learn"])


def test_write_is_atomic_and_reports_serial(mlbom, tmp_path):
    result = write_mlbom(tmp_path / "out" / "mlbom.cdx.json", mlbom)
    assert json.loads(Path(result.path).read_text()) == mlbom
    assert result.serial_number == mlbom["serialNumber"] and result.model_bom_ref == "model:mnist-cnn@7"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mlbom.cdx.json"]


MUTANTS = [
    # missing required fields
    ("no bomFormat", lambda d: d.pop("bomFormat"), "bomFormat"),
    ("model without name", lambda d: _model(d).pop("name"), "components/0"),
    ("model without type", lambda d: _model(d).pop("type"), "components/0"),
    ("hash without content", lambda d: _model(d)["hashes"][0].pop("content"), "components/0/hashes/0"),
    ("dataset entry without type", lambda d: d["components"][1]["data"][0].pop("type"), "components/1/data/0"),
    ("external reference without url", lambda d: _model(d)["externalReferences"][0].pop("url"),
     "components/0/externalReferences/0"),
    # bad enums
    ("bad component type", lambda d: _model(d).__setitem__("type", "ml-model"), "components/0"),
    ("bad approach", lambda d: _model(d)["modelCard"]["modelParameters"]["approach"].__setitem__("type", "magic"),
     "components/0/modelCard/modelParameters/approach/type"),
    ("bad data type", lambda d: d["components"][1]["data"][0].__setitem__("type", "images"), "components/1/data/0"),
    ("bad external reference type", lambda d: _model(d)["externalReferences"][0].__setitem__("type", "mlflow"),
     "components/0/externalReferences/0/type"),
    # wrong spec version
    ("specVersion 1.5", lambda d: d.__setitem__("specVersion", "1.5"), "specVersion"),
    ("specVersion 2.0", lambda d: d.__setitem__("specVersion", "2.0"), "specVersion"),
    # bad hash algorithm / length
    ("hash alg sha256", lambda d: _model(d)["hashes"][0].__setitem__("alg", "sha256"), "components/0/hashes/0/alg"),
    ("hash 63 hex digits", lambda d: _model(d)["hashes"][0].__setitem__("content", "a" * 63),
     "components/0/hashes/0/content"),
    ("hash not hex", lambda d: _model(d)["hashes"][0].__setitem__("content", "z" * 64),
     "components/0/hashes/0/content"),
    # shape and referential integrity (the latter checked beyond the schema)
    ("metric value as number", lambda d: _model(d)["modelCard"]["quantitativeAnalysis"]["performanceMetrics"][0]
     .__setitem__("value", 0.99), "components/0/modelCard/quantitativeAnalysis/performanceMetrics/0/value"),
    ("unknown modelCard field", lambda d: _model(d)["modelCard"].__setitem__("accuracy", "0.99"),
     "components/0/modelCard"),
    ("dangling dependsOn", lambda d: d["dependencies"][0]["dependsOn"].append("torch==0.0"), "unknown bom-ref"),
    ("duplicate bom-ref", lambda d: d["components"][2].__setitem__("bom-ref", "model:mnist-cnn@7"),
     "duplicate bom-ref"),
    ("two models", lambda d: d["components"].append({**copy.deepcopy(_model(d)), "bom-ref": "model:x"}),
     "exactly one machine-learning-model"),
]


@pytest.mark.parametrize(("label", "mutate", "where"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_mutants_are_rejected(mlbom, label, mutate, where):
    mutant = copy.deepcopy(mlbom)
    mutate(mutant)
    with pytest.raises(SbomError, match=where.split("/")[0]) as caught:
        check_mlbom(mutant, source="mlbom-mutant.json")
    assert where in str(caught.value)  # the message names the field, not just the document


def test_the_original_is_valid(mlbom):
    check_mlbom(mlbom)  # the mutants above fail only because of their mutation
    assert len(MUTANTS) == 20
