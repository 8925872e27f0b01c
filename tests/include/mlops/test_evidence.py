"""Evidence pack and lineage: files written atomically with a manifest; one AQL query finds champion's lineage."""

from __future__ import annotations

import json

import pytest

from include.mlops.evidence import (
    PACK_FILES,
    build_lineage,
    champion_properties,
    champion_query,
    evidence_properties,
    properties_of,
    verify_evidence_pack,
    write_evidence_pack,
)
from include.mlops.files import sha256_file

DIGESTS = {"train-images-idx3-ubyte.gz": "1" * 64, "t10k-images-idx3-ubyte.gz": "3" * 64}
PURLS = ["pkg:pypi/numpy@2.4.6", "pkg:pypi/torch@2.14.1"]


def _lineage(version: str, model_sha: str, digests: dict[str, str] = DIGESTS, **changes) -> dict:
    args = dict(
        dataset_digests=digests, dag_id="mnist_training", run_id=f"manual__{version}", mlflow_run_id=f"run{version}",
        model_name="mnist-cnn", model_version=version, artifactory_repo="ml-models-local",
        artifactory_path=f"mnist-cnn/{version}/model.safetensors", model_sha256=model_sha,
        sbom_serial=f"urn:uuid:00000000-0000-4000-8000-00000000000{version}", sbom_sha256="e" * 64,
        mlbom_serial=f"urn:uuid:00000000-0000-4000-8000-10000000000{version}",
        model_scan={"safe": True, "sha256": model_sha, "globals": ["collections.OrderedDict"], "refused": []},
        xray_verdict={"scan_id": f"scan-{version}", "passed": True, "severity_threshold": "High", "blocking": []},
        decision={"promote": True, "reasons": []}, runtime_purls=PURLS, code_version="abc123",
    )
    args.update(changes)
    return build_lineage(**args)


def test_lineage_chain_links_every_step():
    lineage = _lineage("3", "a" * 64)
    assert [d["sha256"] for d in lineage["datasets"]] == ["3" * 64, "1" * 64]
    assert lineage["airflow"]["run_id"] == "manual__3" and lineage["mlflow"]["model_version"] == "3"
    assert lineage["artifactory"] == {"repo": "ml-models-local", "path": "mnist-cnn/3/model.safetensors", "sha256": "a" * 64}
    assert lineage["sbom"]["serial"].startswith("urn:uuid:") and lineage["xray"]["scan_id"] == "scan-3"
    assert lineage["decision"]["promote"] is True


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model_sha256": "A" * 64}, "model_sha256"),
        ({"dataset_digests": {"x": "short"}}, r"dataset_digests\[x\]"),
        ({"dataset_digests": {}}, "dataset_digests"),
        ({"xray_verdict": {"passed": True}}, "xray_verdict"),
        ({"model_scan": {"safe": True, "sha256": "b" * 64}}, "model_scan.sha256"),
    ],
)
def test_lineage_refuses_broken_links(changes, field):
    with pytest.raises(ValueError, match=field):
        _lineage("3", "a" * 64, **changes)


def test_evidence_pack_is_complete_and_verifiable(tmp_path):
    sbom = tmp_path / "sbom.cdx.json"
    sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6"}))
    lineage = _lineage("3", "a" * 64)
    pack = write_evidence_pack(
        tmp_path / "evidence", sbom_path=sbom, mlbom={"bomFormat": "CycloneDX"}, model_scan={"safe": True},
        xray_verdict={"scan_id": "scan-3", "passed": True}, decision={"promote": True},
        metrics={"accuracy": 0.99}, lineage=lineage,
    )
    assert set(pack.files) == set(PACK_FILES)
    assert sorted(p.name for p in (tmp_path / "evidence").iterdir()) == sorted([*PACK_FILES, "manifest.json"])
    assert json.loads((tmp_path / "evidence" / "lineage.json").read_text()) == lineage
    assert verify_evidence_pack(tmp_path / "evidence") == pack.files
    (tmp_path / "evidence" / "metrics.json").write_text('{"accuracy": 1.0}\n')
    with pytest.raises(ValueError, match="metrics.json changed"):
        verify_evidence_pack(tmp_path / "evidence")
    # a retry rewrites the pack in place: no second copy, manifest consistent again
    again = write_evidence_pack(
        tmp_path / "evidence", sbom_path=sbom, mlbom={"bomFormat": "CycloneDX"}, model_scan={"safe": True},
        xray_verdict={"scan_id": "scan-3", "passed": True}, decision={"promote": True},
        metrics={"accuracy": 0.99}, lineage=lineage,
    )
    assert again.files == pack.files and verify_evidence_pack(tmp_path / "evidence") == pack.files


def test_properties_are_multi_valued_where_plural():
    props = evidence_properties(_lineage("3", "a" * 64), sbom_path="ml-models-local/mnist-cnn/3/sbom.cdx.json")
    assert props["dataset.sha256"] == ["3" * 64, "1" * 64] and props["model.dependency"] == PURLS
    assert props["sbom.serial"].startswith("urn:uuid:") and props["model.version"] == "3"
    assert props["xray.verdict"] == "passed" and props["gate.decision"] == "promote"
    assert all(isinstance(v, str) or all(isinstance(x, str) for x in v) for v in props.values())
    with pytest.raises(ValueError, match="lineage schema"):
        evidence_properties({"schema": "other"})


def test_one_aql_query_answers_which_data_and_dependencies_produced_champion(jfrog_conn, tmp_path):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    hook = ArtifactoryHook()
    versions = {"1": {"train-images-idx3-ubyte.gz": "5" * 64}, "2": DIGESTS}
    for version, digests in versions.items():
        model = tmp_path / f"model-{version}.pt"
        model.write_bytes(f"weights of version {version}".encode())
        lineage = _lineage(version, sha256_file(model), digests)
        props = evidence_properties(lineage, sbom_path=f"ml-models-local/mnist-cnn/{version}/sbom.cdx.json")
        hook.deploy_artifact(model, "ml-models-local", f"mnist-cnn/{version}/model.safetensors", properties=props)
        # release step: copy to the release repo (properties travel with the copy), then stamp the alias
        hook.copy_item("ml-models-local", f"mnist-cnn/{version}/model.safetensors", "ml-models-release",
                       f"mnist-cnn/{version}/model.safetensors")
    # version 2 is champion; version 1 was champion before and lost the stamp
    hook.set_item_properties("ml-models-release", "mnist-cnn/2/model.safetensors", champion_properties())

    rows = hook.search_aql(champion_query("ml-models-release"))
    assert len(rows) == 1
    row = rows[0]
    props = properties_of(row)
    assert row["path"] == "mnist-cnn/2" and row["sha256"] == props["model.sha256"][0]
    assert sorted(props["dataset.sha256"]) == sorted(DIGESTS.values())  # which data
    assert sorted(props["model.dependency"]) == PURLS  # which dependencies (runtime closure)
    assert props["sbom.serial"] == ["urn:uuid:00000000-0000-4000-8000-000000000002"]  # the full SBOM
    assert props["sbom.path"] == ["ml-models-local/mnist-cnn/2/sbom.cdx.json"]
    assert props["mlflow.run_id"] == ["run2"] and props["xray.scan_id"] == ["scan-2"]
    # the reverse question from the same properties: which models did this training file produce?
    by_data = hook.search_aql('items.find({"repo":"ml-models-local","@dataset.sha256":"' + "5" * 64 + '"})')
    assert [r["path"] for r in by_data] == ["mnist-cnn/1"]


def test_champion_query_is_plain_aql():
    query = champion_query("ml-models-release")
    assert query.startswith('items.find({"repo": "ml-models-release", "name": "model.safetensors", "@mlflow.alias": '
                            '"champion"})')
    assert query.endswith('.include("repo","path","name","sha256","property")')
