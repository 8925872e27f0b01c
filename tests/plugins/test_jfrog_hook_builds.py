"""ArtifactoryHook build-info, promotion, AQL latest and copy/move; XrayHook summary and violations."""

from __future__ import annotations

import json
import os

import pytest
from jfrog_provider.exceptions import JFrogApiError, XraySummaryError
from jfrog_provider.hooks.artifactory import ArtifactoryHook, quote_build_segment
from jfrog_provider.hooks.xray import XrayHook
from jfrog_provider.xray_results import Severity

STAGING, RELEASE = "ml-models-local", "ml-models-release"
BUILD = "mnist/nightly"  # a '/' in the name must travel as %2F (jfrog-client-go `buildUrlWithEscapingSlash`)
STARTED = "2026-05-01T12:00:00.000+0000"


@pytest.fixture
def hook(jfrog_conn) -> ArtifactoryHook:
    return ArtifactoryHook(backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
def xray(jfrog_conn) -> XrayHook:
    return XrayHook(backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
def model(tmp_path):
    (path := tmp_path / "model.pt").write_bytes(os.urandom(32 * 1024))
    return path


def build_info(number: str, *artifacts) -> dict:
    return {"name": BUILD, "number": number, "started": STARTED, "buildAgent": {"name": "GENERIC", "version": "1"},
            "modules": [{"id": "mnist", "type": "generic", "artifacts": [
                {"name": a.path.rsplit("/", 1)[-1], "path": a.path, "sha1": a.sha1, "sha256": a.sha256, "md5": a.md5}
                for a in artifacts]}]}


def published(hook, model, number="7", path="mnist/7/model.pt", props=None):
    deployed = hook.deploy_artifact(model, STAGING, path, props)
    hook.publish_build_info(build_info(number, deployed))
    return deployed


# -- build-info --------------------------------------------------------------------------------


def test_quote_build_segment_escapes_slash_and_semicolon():
    assert quote_build_segment("a/b;c d") == "a%2Fb%3Bc%20d"
    assert quote_build_segment(12) == "12"
    with pytest.raises(ValueError):
        quote_build_segment("")


def test_publish_get_and_runs_with_slash_in_name(hook, jfrog_server, model):
    deployed = hook.deploy_artifact(model, STAGING, "mnist/7/model.pt")
    checksum = hook.publish_build_info(build_info("7", deployed))
    assert checksum and len(checksum) == 64
    [(_, path, size)] = jfrog_server.requests_matching("PUT", r"/api/build$")
    assert path == "/artifactory/api/build" and size > 0
    info = hook.get_build_info(BUILD, "7")
    assert info["modules"][0]["artifacts"][0]["sha256"] == deployed.sha256
    assert hook.get_build_runs(BUILD) == ["7"]
    assert jfrog_server.requests_matching("GET", r"/api/build/")[0][1] == "/artifactory/api/build/mnist%2Fnightly/7"


def test_missing_build_is_none_and_empty_runs(hook):
    assert hook.get_build_info(BUILD, "404") is None
    assert hook.get_build_runs("never-built") == []


def test_project_scopes_builds(hook, model):
    deployed = hook.deploy_artifact(model, STAGING, "p/model.pt")
    hook.publish_build_info(build_info("1", deployed), project="mlp")
    assert hook.get_build_info(BUILD, "1") is None
    assert hook.get_build_info(BUILD, "1", project="mlp")["number"] == "1"


@pytest.mark.parametrize("missing", ["name", "number", "started"])
def test_publish_without_required_field_is_value_error(hook, missing):
    info = {"name": BUILD, "number": "1", "started": STARTED}
    info.pop(missing)
    with pytest.raises(ValueError, match=missing):
        hook.publish_build_info(info)


# -- promotion ("Build Promotion") -------------------------------------------------------------------


def test_promote_copy_sets_properties_and_records_status(hook, jfrog_server, model):
    deployed = published(hook, model)
    result = hook.promote_build(BUILD, "7", status="released", target_repo=RELEASE, source_repo=STAGING,
                                properties={"model.stage": "released"}, comment="nightly ok")
    assert [m["level"] for m in result["messages"]] == ["INFO"]
    assert hook.get_file_info(RELEASE, "mnist/7/model.pt")["checksums"]["sha256"] == deployed.sha256
    assert hook.get_item_properties(RELEASE, "mnist/7/model.pt") == {"model.stage": ["released"]}
    assert hook.get_file_info(STAGING, "mnist/7/model.pt")  # copy keeps the source
    [status] = hook.get_build_info(BUILD, "7")["statuses"]
    assert (status["status"], status["repository"], status["comment"]) == ("released", RELEASE, "nightly ok")
    [(_, path, _)] = jfrog_server.requests_matching("POST", r"/api/build/promote/")
    assert path == "/artifactory/api/build/promote/mnist%2Fnightly/7"


def test_promote_links_by_build_properties_without_module_checksums(hook, model):
    hook.deploy_artifact(model, STAGING, "byprop/model.pt", {"build.name": BUILD, "build.number": "9"})
    hook.publish_build_info({"name": BUILD, "number": "9", "started": STARTED, "modules": []})
    hook.promote_build(BUILD, "9", status="released", target_repo=RELEASE)
    assert hook.get_file_info(RELEASE, "byprop/model.pt")


def test_promote_move_removes_source(hook, model):
    published(hook, model)
    hook.promote_build(BUILD, "7", status="released", target_repo=RELEASE, copy=False)
    with pytest.raises(JFrogApiError) as err:
        hook.get_file_info(STAGING, "mnist/7/model.pt")
    assert err.value.status == 404
    assert hook.get_file_info(RELEASE, "mnist/7/model.pt")


def test_promote_dry_run_changes_nothing(hook, model):
    published(hook, model)
    result = hook.promote_build(BUILD, "7", status="released", target_repo=RELEASE, dry_run=True)
    assert "[dry run]" in result["messages"][0]["message"]
    with pytest.raises(JFrogApiError):
        hook.get_file_info(RELEASE, "mnist/7/model.pt")
    assert "statuses" not in hook.get_build_info(BUILD, "7")


def test_promote_copy_twice_is_idempotent(hook, model):
    published(hook, model)
    for _ in range(2):
        hook.promote_build(BUILD, "7", status="released", target_repo=RELEASE)
    assert len(hook.get_build_info(BUILD, "7")["statuses"]) == 2


def test_promote_unknown_build_is_404(hook):
    with pytest.raises(JFrogApiError) as err:
        hook.promote_build(BUILD, "999", status="released", target_repo=RELEASE)
    assert err.value.status == 404 and "999" in err.value.message


def test_promote_onto_different_existing_target_is_409(hook, model, tmp_path):
    published(hook, model)
    (other := tmp_path / "other.pt").write_bytes(b"different bytes")
    hook.deploy_artifact(other, RELEASE, "mnist/7/model.pt")
    with pytest.raises(JFrogApiError) as err:
        hook.promote_build(BUILD, "7", status="released", target_repo=RELEASE)
    assert err.value.status == 409 and "already exists" in err.value.message


def test_promote_to_missing_repo_is_400(hook, model):
    published(hook, model)
    with pytest.raises(JFrogApiError) as err:
        hook.promote_build(BUILD, "7", status="released", target_repo="no-such-repo")
    assert err.value.status == 400


# -- AQL latest, copy/move promotion -----------------------------------------------------


def test_find_latest_artifact_by_property(hook, jfrog_server, model, tmp_path):
    for version in ("1", "2", "3"):
        (f := tmp_path / f"m{version}.pt").write_bytes(os.urandom(100))
        stage = "candidate" if version != "3" else "archived"
        hook.deploy_artifact(f, STAGING, f"mnist/{version}/model.pt",
                             {"model.name": "mnist", "model.stage": stage, "model.version": version})
    latest = hook.find_latest_artifact(STAGING, {"model.name": "mnist", "model.stage": "candidate"},
                                       name="model.pt")
    assert latest["full_path"] == "mnist/2/model.pt" and latest["properties"]["model.version"] == ["2"]
    [(_, _, aql_bytes)] = jfrog_server.requests_matching("POST", r"/api/search/aql$")
    assert aql_bytes > 0
    assert hook.find_latest_artifact(STAGING, {"model.name": "nope"}) is None


def test_find_latest_artifact_needs_no_aql_sort(hook, jfrog_server, tmp_path):
    jfrog_server.edition = "oss"  # Artifactory OSS / JCR: any AQL sort is a 400
    for version in ("1", "2", "3"):
        (f := tmp_path / f"m{version}.pt").write_bytes(os.urandom(100))
        hook.deploy_artifact(f, STAGING, f"oss/{version}/model.pt", {"model.name": "mnist"})
    assert hook.find_latest_artifact(STAGING, {"model.name": "mnist"})["full_path"] == "oss/3/model.pt"
    with pytest.raises(JFrogApiError, match="Sorting is not supported"):
        hook.search_aql('items.find({"name":"model.pt"}).sort({"$desc":["created"]})')


def test_promotion_reporting_an_error_level_fails(hook, jfrog_server, model):
    hook._request("PUT", "/api/repositories/strict-release", json={"rclass": "local", "packageType": "generic",
                                                                    "excludesPattern": "**/*.pt"})
    published(hook, model)
    with pytest.raises(JFrogApiError, match="rejected the path"):
        hook.promote_build(BUILD, "7", status="released", target_repo="strict-release")


def test_find_latest_artifact_escapes_quotes_in_values(hook, tmp_path):
    (f := tmp_path / "q.pt").write_bytes(b"q")
    hook.deploy_artifact(f, STAGING, "q/q.pt", {"note": 'say "hi"'})
    assert hook.find_latest_artifact(STAGING, {"note": 'say "hi"'})["name"] == "q.pt"


def test_copy_with_semicolon_and_space_in_target_path(hook, jfrog_server, model):
    hook.deploy_artifact(model, STAGING, "a;b/model.pt")
    hook.copy_item(STAGING, "a;b/model.pt", RELEASE, "c d;e/model.pt")
    assert hook.get_file_info(RELEASE, "c d;e/model.pt")["path"] == "/c d;e/model.pt"
    [(_, path, _)] = jfrog_server.requests_matching("POST", r"/api/copy/")
    assert path == "/artifactory/api/copy/ml-models-local/a%3Bb/model.pt"


def test_promote_artifact_copy_then_properties(hook, model):
    hook.deploy_artifact(model, STAGING, "s/model.pt", {"model.stage": "candidate"})
    hook.promote_artifact(STAGING, "s/model.pt", RELEASE, properties={"model.stage": "released"})
    assert hook.get_item_properties(RELEASE, "s/model.pt") == {"model.stage": ["released"]}
    assert hook.get_item_properties(STAGING, "s/model.pt") == {"model.stage": ["candidate"]}
    hook.promote_artifact(STAGING, "s/model.pt", RELEASE, "moved/model.pt", move=True)
    with pytest.raises(JFrogApiError):
        hook.get_file_info(STAGING, "s/model.pt")


# -- Xray artifact summary and violations (context-scoped graph scans) ----------------------------------

MODEL_VULN = {"issue_id": "XRAY-9", "severity": "High", "summary": "unsafe pickle",
              "cves": [{"cve": "CVE-2099-0009", "cvss_v3_score": "8.1", "cvss_v3_vector": "CVSS:3.1/AV:N/AC:H"}],
              "fixed_versions": ["[2.0.0]"]}


def test_artifact_summary_by_path_uses_v2_and_default_prefix(xray, hook, jfrog_server, model):
    deployed = hook.deploy_artifact(model, STAGING, "sum/model.pt")
    jfrog_server.plant_vulnerabilities([{**MODEL_VULN, "sha256": deployed.sha256}])
    summary = xray.get_artifact_summary(paths=[f"{STAGING}/sum/model.pt"])
    [artifact] = summary["artifacts"]
    assert artifact["general"]["path"] == f"default/{STAGING}/sum/model.pt"
    [issue] = artifact["issues"]
    assert Severity.parse(issue["severity"]) is Severity.HIGH
    assert issue["cves"][0]["cvss_v3"] == "8.1/CVSS:3.1/AV:N/AC:H"  # a combined string in summaries, unlike graph scans
    assert issue["components"][0]["fixed_versions"] == ["[2.0.0]"]  # v2-only detail
    [(_, path, _)] = jfrog_server.requests_matching("POST", r"/summary/artifact$")
    assert path == "/xray/api/v2/summary/artifact"


def test_artifact_summary_by_checksum(xray, hook, model):
    deployed = hook.deploy_artifact(model, STAGING, "sum/model.pt")
    summary = xray.get_artifact_summary(checksums=[deployed.sha256.upper()])
    assert summary["artifacts"][0]["general"]["sha256"] == deployed.sha256
    assert summary["artifacts"][0]["issues"] == []


def test_artifact_summary_unknown_id_raises_with_identifier(xray, hook, model):
    hook.deploy_artifact(model, STAGING, "sum/model.pt")
    with pytest.raises(XraySummaryError) as err:
        xray.get_artifact_summary(paths=[f"{STAGING}/sum/model.pt", f"{STAGING}/missing.pt"])
    assert err.value.status == 200 and f"default/{STAGING}/missing.pt" in err.value.message


@pytest.mark.parametrize("kwargs", [{}, {"paths": "one/string"}])
def test_artifact_summary_bad_arguments(xray, kwargs):
    with pytest.raises(ValueError):
        xray.get_artifact_summary(**kwargs)


def test_get_violations_needs_exactly_one_context_and_returns_them(xray, jfrog_server):
    jfrog_server.plant_vulnerabilities([{"component": "pypi://torch", "issue_id": "XRAY-1", "severity": "Critical",
                                         "fail_build": True}])
    with pytest.raises(ValueError):
        xray.get_violations(["pypi://torch:2.0.0"])
    with pytest.raises(ValueError):
        xray.get_violations(["pypi://torch:2.0.0"], project="p", watches=["w"])
    [violation] = xray.get_violations(["pypi://torch:2.0.0"], project="ml", poll_interval=0.01, timeout=5)
    assert violation.fail_build is True and violation.severity is Severity.CRITICAL
    [(_, _, _)] = jfrog_server.requests_matching("POST", r"/scan/graph$")


def test_summary_result_is_json_serialisable(xray, hook, model):
    hook.deploy_artifact(model, STAGING, "sum/model.pt")
    json.dumps(xray.get_artifact_summary(paths=[f"{STAGING}/sum/model.pt"]))
