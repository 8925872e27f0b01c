"""Endpoint contract tests: always against the local server, also against a live JFrog when configured."""

# Live run: JFROG_URL=https://acme.jfrog.io JFROG_ACCESS_TOKEN=... [JFROG_TEST_REPO=...] pytest -m live_jfrog ...
# Everything a test writes lives under a unique `contract-tests/<id>/` folder that is deleted afterwards.

from __future__ import annotations

import contextlib
import hashlib
import json
import os

import pytest
from jfrog_provider.exceptions import JFrogApiError, XraySummaryError
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.hooks.base import JFrogHook
from jfrog_provider.hooks.xray import XrayHook

from devtools.jfrog_compat.pytest_fixtures import JFrogTarget


@pytest.fixture
def art(jfrog_target: JFrogTarget):
    hook = ArtifactoryHook(backoff_base=0.05, backoff_max=0.5)
    yield hook
    with contextlib.suppress(JFrogApiError):
        hook.delete_item(jfrog_target.repo, jfrog_target.prefix)
    if jfrog_target.release_repo:
        with contextlib.suppress(JFrogApiError):
            hook.delete_item(jfrog_target.release_repo, jfrog_target.prefix)


@pytest.fixture
def model(tmp_path):
    (path := tmp_path / "model.pt").write_bytes(os.urandom(48 * 1024))
    return path


def test_ping_and_versions(jfrog_target, art):
    assert art.ping("artifactory") and art.get_version()["version"]
    xray = XrayHook()
    assert xray.ping("xray") and xray.get_version()["xray_version"]


def test_bad_token_is_401(jfrog_target, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps(
        {"conn_type": "jfrog", "host": jfrog_target.url, "password": "not-a-valid-token-0000"}))
    with pytest.raises(JFrogApiError) as err:
        JFrogHook(max_retries=0)._request("GET", "/api/system/version")
    assert err.value.status == 401 and "not-a-valid-token-0000" not in str(err.value)


def test_deploy_info_properties_download_with_semicolon_in_path(jfrog_target, art, model, tmp_path):
    path = f"{jfrog_target.prefix}/a;b/model v1.pt"
    deployed = art.deploy_artifact(model, jfrog_target.repo, path, {"model.name": "mnist cnn", "k": ["1", "2"]})
    assert deployed.sha256 == hashlib.sha256(model.read_bytes()).hexdigest() and not deployed.checksum_deployed
    info = art.get_file_info(jfrog_target.repo, path)
    assert info["size"] == str(model.stat().st_size) and info["checksums"]["sha1"] == deployed.sha1
    props = art.get_item_properties(jfrog_target.repo, path)
    assert props["model.name"] == ["mnist cnn"] and sorted(props["k"]) == ["1", "2"]
    assert art.download_artifact(jfrog_target.repo, path, tmp_path / "dl.pt") == deployed.sha256
    if jfrog_target.is_local:
        [put] = [p for m, p, b in jfrog_target.server.request_log if m == "PUT" and b]
        assert "/a%3Bb/model%20v1.pt;model.name=mnist%20cnn;k=1,2" in put


# values with every separator Artifactory knows: each must come back as exactly one value
TRICKY = ["a,b", "p;q", "x|y", "k=v", "back\\slash", "plain"]


def test_property_values_with_separators_round_trip_at_deploy_and_set(jfrog_target, art, model):
    path = f"{jfrog_target.prefix}/props/model.pt"
    art.deploy_artifact(model, jfrog_target.repo, path, {"tricky": TRICKY, "joined": "d1,d2"})
    assert art.get_item_properties(jfrog_target.repo, path) == {"tricky": TRICKY, "joined": ["d1,d2"]}
    art.set_item_properties(jfrog_target.repo, path, {"tricky": list(reversed(TRICKY)), "note": "a;b=c"})
    props = art.get_item_properties(jfrog_target.repo, path)
    assert sorted(props["tricky"]) == sorted(TRICKY) and props["note"] == ["a;b=c"]


def test_republish_is_a_checksum_deploy(jfrog_target, art, model):
    first = art.deploy_artifact(model, jfrog_target.repo, f"{jfrog_target.prefix}/1/model.pt")
    again = art.deploy_artifact(model, jfrog_target.repo, f"{jfrog_target.prefix}/2/model.pt")
    assert again.checksum_deployed and (again.sha256, again.sha1, again.md5) == (first.sha256, first.sha1, first.md5)
    if jfrog_target.is_local:
        assert [b for _, _, b in jfrog_target.server.requests_matching("PUT", r"/2/model\.pt")] == [0]


def test_one_pass_deploy_to_a_new_path_then_republish_to_it(jfrog_target, art, model):
    # what a big file does (SINGLE_PASS_MIN_SIZE), on a small one: the storage check answers 404 for a new path,
    # and with no client checksum the deploy answer still carries the SHA-256 the server computed
    path = f"{jfrog_target.prefix}/one-pass/model.pt"
    first = art.deploy_artifact(model, jfrog_target.repo, path, single_pass_min_size=1)
    assert first.sha256 == hashlib.sha256(model.read_bytes()).hexdigest() and not first.checksum_deployed
    assert art.get_file_info(jfrog_target.repo, path)["checksums"]["sha1"] == first.sha1
    again = art.deploy_artifact(model, jfrog_target.repo, path, single_pass_min_size=1)
    assert again.checksum_deployed and again.sha256 == first.sha256


def test_missing_item_is_404(jfrog_target, art):
    with pytest.raises(JFrogApiError) as err:
        art.get_file_info(jfrog_target.repo, f"{jfrog_target.prefix}/missing.pt")
    assert err.value.status == 404


def test_aql_latest_by_property(jfrog_target, art, tmp_path):
    name = f"ct-{jfrog_target.prefix.rsplit('/', 1)[-1]}"
    for version in ("1", "2"):
        (f := tmp_path / f"m{version}").write_bytes(os.urandom(64))
        art.deploy_artifact(f, jfrog_target.repo, f"{jfrog_target.prefix}/{version}/model.pt",
                            {"model.name": name, "model.version": version})
    latest = art.find_latest_artifact(jfrog_target.repo, {"model.name": name}, name="model.pt")
    assert latest["full_path"] == f"{jfrog_target.prefix}/2/model.pt"
    assert latest["properties"]["model.version"] == ["2"]


def test_copy_then_delete(jfrog_target, art, model):
    src = f"{jfrog_target.prefix}/src/model.pt"
    art.deploy_artifact(model, jfrog_target.repo, src)
    dry = art.copy_item(jfrog_target.repo, src, jfrog_target.repo, f"{jfrog_target.prefix}/dst/model.pt",
                        dry_run=True)
    assert dry["messages"]
    art.copy_item(jfrog_target.repo, src, jfrog_target.repo, f"{jfrog_target.prefix}/dst/model.pt")
    assert art.get_file_info(jfrog_target.repo, f"{jfrog_target.prefix}/dst/model.pt")
    art.delete_item(jfrog_target.repo, f"{jfrog_target.prefix}/dst")
    with pytest.raises(JFrogApiError) as err:
        art.get_file_info(jfrog_target.repo, f"{jfrog_target.prefix}/dst/model.pt")
    assert err.value.status == 404


def test_build_info_with_slash_in_name_and_promotion(jfrog_target, art, model):
    build = f"contract/{jfrog_target.prefix.rsplit('/', 1)[-1]}"
    deployed = art.deploy_artifact(model, jfrog_target.repo, f"{jfrog_target.prefix}/b/model.pt",
                                   {"build.name": build, "build.number": "1"})
    art.publish_build_info({"name": build, "number": "1", "started": "2026-05-01T12:00:00.000+0000",
                            "modules": [{"id": "m", "artifacts": [{"name": "model.pt", "sha1": deployed.sha1,
                                                                   "sha256": deployed.sha256, "md5": deployed.md5}]}]})
    assert art.get_build_info(build, "1")["name"] == build
    assert "1" in art.get_build_runs(build)
    target = jfrog_target.release_repo or jfrog_target.repo
    result = art.promote_build(build, "1", status="released", target_repo=target, comment="contract test",
                               dry_run=jfrog_target.release_repo is None)
    assert isinstance(result.get("messages"), list)
    if jfrog_target.is_local:
        assert jfrog_target.server.requests_matching("POST", r"/api/build/promote/contract%2F")


def test_xray_graph_scan_and_summary_errors(jfrog_target):
    xray = XrayHook()
    result = xray.wait_for_graph_scan(xray.scan_graph(["pypi://requests:2.32.3"]), poll_interval=0.2
                                      if jfrog_target.is_local else 5.0, timeout=300)
    assert result.status.lower() != "failed"
    with pytest.raises(XraySummaryError) as err:
        xray.get_artifact_summary(checksums=["0" * 64])
    assert "0" * 64 in err.value.message
