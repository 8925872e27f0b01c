"""SBOM of the real training environment: same content as cyclonedx-py, valid CycloneDX 1.6, validation that bites."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from include.mlops import sbom as sbom_module
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
        (lambda d: d["components"].append(copy.deepcopy(d["components"][0])), "components"),
        (lambda d: d["components"][0].__setitem__("licenses", [{"license": {"id": "Not-A-License"}}]),
         "components/0/licenses"),
        (lambda d: d["dependencies"][0].__setitem__("dependsOn", ["a", "a"]), "dependencies/0/dependsOn"),
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


def test_fast_validator_agrees_with_stock_draft7(sbom_doc):
    """The O(n) uniqueItems/enum overrides give the same verdicts as jsonschema's own Draft7Validator."""
    from jsonschema import Draft7Validator

    fast = sbom_module._validator()
    stock = Draft7Validator(fast.schema, registry=fast._registry)
    mutants = [copy.deepcopy(sbom_doc) for _ in range(4)]
    mutants[1]["components"].append(copy.deepcopy(mutants[1]["components"][3]))
    mutants[2]["components"][1]["licenses"] = [{"license": {"id": "mit-ish"}}]
    mutants[3]["dependencies"][2]["dependsOn"] = ["x", "x"]
    assert [fast.is_valid(m) for m in mutants] == [stock.is_valid(m) for m in mutants] == [True, False, False, False]


def test_tool_failure_names_the_interpreter(tmp_path: Path):
    with pytest.raises(SbomError, match="no-such-python"):
        generate_sbom(str(tmp_path / "no-such-python"), tmp_path / "x.json", PipelineSettings.from_env().sbom_tool)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("packages", [[], ["torch>=2"], ["torch==2.14.1", "-r /etc/passwd"], ["git+https://x/y"]])
def test_reported_packages_must_be_exact_pins(tmp_path: Path, packages):
    with pytest.raises(SbomError, match="name==version"):
        generate_sbom("unused", tmp_path / "x.json", PipelineSettings.from_env().sbom_tool, packages=packages)
    assert list(tmp_path.iterdir()) == []  # no SBOM, no requirements file left behind


def test_reported_requirements_become_the_dependency_graph(tmp_path: Path):
    tool = PipelineSettings.from_env().sbom_tool
    pins = ["Jinja2==3.1.6", "MarkupSafe==3.0.3", "torch==2.14.1"]
    result = generate_sbom("unused", tmp_path / "s.json", tool, packages=pins,
                           requires={"torch": ["jinja2"], "jinja2": ["markupsafe"], "markupsafe": []})
    doc = json.loads(Path(result.path).read_text())
    name = {c["bom-ref"]: c["name"] for c in doc["components"]}
    edges = {name[d["ref"]]: sorted(name[r] for r in d.get("dependsOn", [])) for d in doc["dependencies"]}
    assert edges == {"torch": ["Jinja2"], "Jinja2": ["MarkupSafe"], "MarkupSafe": []}
    with pytest.raises(SbomError, match="inventory lacks"):
        generate_sbom("unused", tmp_path / "t.json", tool, packages=pins, requires={"numpy": []})


def plant_distribution(venv: Path, name: str, version: str) -> None:
    """A minimal installed distribution (what pip leaves in site-packages) in a bare venv."""
    [site] = venv.glob("lib/python*/site-packages")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("")


def test_an_unchanged_environment_reuses_its_validated_inventory_as_a_new_bom(tmp_path: Path):
    import subprocess

    venv, cache, tool = tmp_path / "venv", tmp_path / "cache", PipelineSettings.from_env().sbom_tool
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    plant_distribution(venv, "alpha", "1.0")
    first = generate_sbom(python, tmp_path / "1.json", tool, cache_dir=cache)
    again = generate_sbom(python, tmp_path / "2.json", tool, cache_dir=cache)
    assert (first.reused, again.reused) == (False, True) and len(list(cache.iterdir())) == 1
    one, two = json.loads((tmp_path / "1.json").read_text()), json.loads((tmp_path / "2.json").read_text())
    assert one["serialNumber"] != two["serialNumber"] and two["metadata"]["timestamp"]
    assert one["components"] == two["components"] and library_purls(two) == ["pkg:pypi/alpha@1.0"]
    plant_distribution(venv, "beta", "2.0")  # the environment changed: a new inventory, not the cached one
    changed = generate_sbom(python, tmp_path / "3.json", tool, cache_dir=cache)
    assert changed.reused is False and len(list(cache.iterdir())) == 2
    assert library_purls(json.loads((tmp_path / "3.json").read_text())) == ["pkg:pypi/alpha@1.0", "pkg:pypi/beta@2.0"]
    for bad, message in ((b"{not json", "not readable JSON"), (b'{"metadata": {}}', "not valid CycloneDX|specVersion")):
        [entry] = [p for p in cache.iterdir() if p.stat().st_mtime == max(q.stat().st_mtime for q in cache.iterdir())]
        entry.write_bytes(bad)
        with pytest.raises(SbomError, match=message) as info:
            generate_sbom(python, tmp_path / "4.json", tool, cache_dir=cache)
        assert entry.name in str(info.value)
    assert not (tmp_path / "4.json").exists()
