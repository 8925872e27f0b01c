"""SBOM of the real training environment through the real cyclonedx-py, and schema validation that bites."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from include.mlops.sbom import SbomError, generate_sbom, library_purls, validate_cyclonedx
from include.settings import PipelineSettings


@pytest.fixture(scope="module")
def sbom_doc(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sbom") / "sbom.cdx.json"
    result = generate_sbom(sys.executable, out, PipelineSettings.from_env().sbom_tool)
    assert result.spec_version == "1.6"
    assert result.serial_number.startswith("urn:uuid:")
    assert result.components > 100
    return json.loads(out.read_text())


def test_sbom_lists_the_training_stack(sbom_doc):
    names = {c["name"].lower() for c in sbom_doc["components"]}
    assert {"torch", "mlflow", "apache-airflow", "evidently"} <= names
    # The SBOM tool lives in its own venv and must not be reported as part of the training environment.
    assert "cyclonedx-bom" not in names


def test_purls_are_pypi(sbom_doc):
    purls = library_purls(sbom_doc)
    assert any(p.startswith("pkg:pypi/torch@") for p in purls)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.pop("bomFormat"), "bomFormat"),
        (lambda d: d.__setitem__("specVersion", "1.5"), "specVersion"),
        (lambda d: d["components"][0].__setitem__("type", "spaceship"), "components/0/type"),
        (lambda d: d["components"][0].pop("name"), "components/0"),
        (lambda d: d.__setitem__("unexpected", 1), "unexpected"),
    ],
)
def test_mutants_are_rejected(sbom_doc, mutate, where):
    mutant = copy.deepcopy(sbom_doc)
    mutate(mutant)
    with pytest.raises(SbomError, match=where.split("/")[0]):
        validate_cyclonedx(mutant, source="mutant.json")


def test_missing_tool_names_the_fix(tmp_path: Path):
    with pytest.raises(SbomError, match="scripts/setup"):
        generate_sbom(sys.executable, tmp_path / "x.json", str(tmp_path / "no-such-tool"))
    assert not (tmp_path / "x.json").exists()
