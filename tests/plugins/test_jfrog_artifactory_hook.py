"""ArtifactoryHook against the local server: deploy, download, properties, AQL, copy/move, delete."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
from jfrog_provider.exceptions import ChecksumMismatchError, JFrogApiError
from jfrog_provider.hooks.artifactory import (
    ArtifactoryHook,
    DeployResult,
    file_checksums,
    quote_repo_path,
)

REPO = "ml-models-local"
PUT_MODEL = r"^/artifactory/ml-models-local/m/1/model\.pt"


@pytest.fixture
def hook(jfrog_conn) -> ArtifactoryHook:
    return ArtifactoryHook(backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
def big_file(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(os.urandom(64 * 1024))
    return path


@pytest.fixture
def small_file(tmp_path) -> Path:
    path = tmp_path / "metrics.json"
    path.write_bytes(b'{"accuracy": 0.99}')
    return path


# -- pure helpers ----------------------------------------------------------------------------------


def test_file_checksums_match_hashlib(big_file):
    data = big_file.read_bytes()
    assert file_checksums(big_file) == (
        type(file_checksums(big_file))(hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest(),
                                       hashlib.md5(data).hexdigest(), len(data)))


def test_quote_repo_path_escapes_semicolon_and_space():
    assert quote_repo_path(REPO, "/a;b/c d.pt") == f"/{REPO}/a%3Bb/c%20d.pt"
    with pytest.raises(ValueError):
        quote_repo_path("a/b", "x")


# -- deploy ----------------------------------------------------------------------------------------


def test_small_file_is_one_streamed_put_with_checksum_headers(hook, jfrog_server, small_file):
    result = hook.deploy_artifact(small_file, REPO, "m/1/metrics.json", {"model.name": "mnist cnn"})
    data = small_file.read_bytes()
    assert result == DeployResult(
        repo=REPO, path="m/1/metrics.json", sha256=hashlib.sha256(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(), md5=hashlib.md5(data).hexdigest(), size=len(data),
        uri=result.uri, download_uri=f"{jfrog_server.url}/artifactory/{REPO}/m/1/metrics.json",
        checksum_deployed=False)
    # below 10 KiB there is no checksum-deploy attempt (jfrog-client-go DefaultMinChecksumDeploy)
    assert jfrog_server.requests_matching("PUT") == [
        ("PUT", f"/artifactory/{REPO}/m/1/metrics.json;model.name=mnist%20cnn", len(data))]
    assert hook.get_item_properties(REPO, "m/1/metrics.json") == {"model.name": ["mnist cnn"]}
    assert json.loads(json.dumps(result.to_dict()))["size"] == len(data)


def test_large_file_tries_checksum_deploy_then_uploads_then_republishes_with_zero_bytes(hook, jfrog_server, big_file):
    first = hook.deploy_artifact(big_file, REPO, "m/1/model.pt")
    assert first.checksum_deployed is False
    assert [b for _, _, b in jfrog_server.requests_matching("PUT", PUT_MODEL)] == [0, big_file.stat().st_size]
    again = hook.deploy_artifact(big_file, REPO, "m/2/model.pt", {"model.version": "2"})
    assert again.checksum_deployed is True and again.sha256 == first.sha256
    assert jfrog_server.requests_matching("PUT", r"/m/2/model\.pt") == [
        ("PUT", f"/artifactory/{REPO}/m/2/model.pt;model.version=2", 0)]
    assert hook.get_item_properties(REPO, "m/2/model.pt") == {"model.version": ["2"]}


def test_multi_slice_file_sends_its_sha256_and_takes_sha1_and_md5_from_the_answer(hook, jfrog_server, tmp_path):
    # 9 MiB: nine 1 MiB send slices
    (path := tmp_path / "big.pt").write_bytes(data := os.urandom(9 * 1024 * 1024))
    result = hook.deploy_artifact(path, REPO, "m/9/model.pt")
    assert (result.sha256, result.sha1, result.md5, result.size) == (
        hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest(), hashlib.md5(data).hexdigest(), len(data))
    assert [b for _, _, b in jfrog_server.requests_matching("PUT", r"/m/9/model\.pt")] == [0, len(data)]
    # the checksum the client sent with the bytes, which the server checked against them: SHA-256 alone
    assert hook.get_file_info(REPO, "m/9/model.pt")["originalChecksums"] == {"sha256": result.sha256}


@pytest.mark.parametrize("kind,reported", [("sha1", "f" * 39), ("sha1", None), ("md5", "x" * 32), ("md5", 5)])
def test_a_sha1_or_md5_in_the_answer_that_is_no_digest_fails_the_upload(hook, jfrog_server, small_file, kind,
                                                                         reported):
    jfrog_server.inject_faults(r"/m/1/metrics\.json", [{"report_checksums": {kind: reported}}])
    with pytest.raises(ChecksumMismatchError, match=f"server reported {kind} .* not a {kind.upper()} digest"):
        hook.deploy_artifact(small_file, REPO, "m/1/metrics.json")


def test_streamed_put_is_resent_in_full_after_503(hook, jfrog_server, big_file):
    jfrog_server.inject_faults(PUT_MODEL, [{"status": 503}, {"reset": True}], method="PUT")
    # no checksum-deploy try here, so every PUT carries bytes: the file is re-opened per attempt
    hook.deploy_artifact(big_file, REPO, "m/1/model.pt", checksum_deploy_min_size=1 << 40)
    size = big_file.stat().st_size
    assert [b for _, _, b in jfrog_server.requests_matching("PUT", PUT_MODEL)] == [size, size, size]
    assert hook.download_artifact(REPO, "m/1/model.pt", big_file.with_suffix(".dl")) == file_checksums(big_file).sha256


def test_wrong_server_checksum_fails_the_upload(hook, jfrog_server, small_file):
    jfrog_server.inject_faults(r"/m/1/metrics\.json", [{"wrong_checksum": True}])
    with pytest.raises(ChecksumMismatchError, match="expected"):
        hook.deploy_artifact(small_file, REPO, "m/1/metrics.json")


# A big file bound for a path that holds nothing goes up in one read pass, hashed as it is sent
ONE_PASS = {"single_pass_min_size": 1024 * 1024}


@pytest.fixture
def three_mib_file(tmp_path) -> Path:
    (path := tmp_path / "weights.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    return path


def test_big_file_to_a_new_path_is_one_put_hashed_as_it_is_sent(hook, jfrog_server, three_mib_file):
    data = three_mib_file.read_bytes()
    result = hook.deploy_artifact(three_mib_file, REPO, "m/3/weights.bin", {"model.version": "3"}, **ONE_PASS)
    assert (result.sha256, result.sha1, result.md5, result.size, result.checksum_deployed) == (
        hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest(), hashlib.md5(data).hexdigest(), len(data),
        False)
    # the storage check, then the bytes with no checksum-deploy try before them
    assert jfrog_server.requests_matching(path_regex=r"/m/3/weights\.bin") == [
        ("GET", f"/artifactory/api/storage/{REPO}/m/3/weights.bin", 0),
        ("PUT", f"/artifactory/{REPO}/m/3/weights.bin;model.version=3", len(data))]
    assert hook.download_artifact(REPO, "m/3/weights.bin", three_mib_file.with_suffix(".dl")) == result.sha256
    assert hook.get_item_properties(REPO, "m/3/weights.bin") == {"model.version": ["3"]}


def test_big_file_republished_to_its_path_goes_by_checksum_with_zero_bytes(hook, jfrog_server, three_mib_file):
    first = hook.deploy_artifact(three_mib_file, REPO, "m/3/weights.bin", **ONE_PASS)
    before = len(jfrog_server.request_log)
    again = hook.deploy_artifact(three_mib_file, REPO, "m/3/weights.bin", **ONE_PASS)
    assert again.checksum_deployed is True and again.sha256 == first.sha256
    assert jfrog_server.request_log[before:] == [
        ("GET", f"/artifactory/api/storage/{REPO}/m/3/weights.bin", 0),
        ("PUT", f"/artifactory/{REPO}/m/3/weights.bin", 0)]


def test_big_file_over_an_existing_artifact_is_hashed_first_so_artifactory_checks_it_before_storing(
        hook, jfrog_server, three_mib_file, small_file):
    hook.deploy_artifact(small_file, REPO, "m/3/weights.bin")
    before = len(jfrog_server.request_log)
    hook.deploy_artifact(three_mib_file, REPO, "m/3/weights.bin", **ONE_PASS)
    # the checksum-deploy try proves the SHA-256 was known before the bytes, which carry it in their header
    assert jfrog_server.request_log[before:] == [
        ("GET", f"/artifactory/api/storage/{REPO}/m/3/weights.bin", 0),
        ("PUT", f"/artifactory/{REPO}/m/3/weights.bin", 0),
        ("PUT", f"/artifactory/{REPO}/m/3/weights.bin", three_mib_file.stat().st_size)]


def test_storage_check_that_is_refused_falls_back_to_hashing_first(hook, jfrog_server, three_mib_file):
    jfrog_server.inject_faults(r"^/artifactory/api/storage/", [{"status": 403}], method="GET")
    hook.deploy_artifact(three_mib_file, REPO, "m/3/weights.bin", **ONE_PASS)
    assert [b for _, _, b in jfrog_server.requests_matching("PUT")] == [0, three_mib_file.stat().st_size]


def test_one_pass_put_is_resent_and_rehashed_in_full_after_503(hook, jfrog_server, three_mib_file):
    jfrog_server.inject_faults(r"/m/3/weights\.bin", [{"status": 503}, {"reset": True}], method="PUT")
    result = hook.deploy_artifact(three_mib_file, REPO, "m/3/weights.bin", **ONE_PASS)
    size = three_mib_file.stat().st_size
    assert [b for _, _, b in jfrog_server.requests_matching("PUT")] == [size, size, size]
    assert result.sha256 == file_checksums(three_mib_file).sha256


def test_one_pass_upload_the_server_stored_wrongly_is_removed_again(hook, jfrog_server, three_mib_file):
    jfrog_server.inject_faults(r"/m/3/weights\.bin", [{"wrong_checksum": True}], method="PUT")
    with pytest.raises(ChecksumMismatchError, match=r"expected .*what was stored at ml-models-local/m/3/weights"
                                                    r"\.bin was removed"):
        hook.deploy_artifact(three_mib_file, REPO, "m/3/weights.bin", **ONE_PASS)
    with pytest.raises(JFrogApiError) as err:
        hook.get_file_info(REPO, "m/3/weights.bin")
    assert err.value.status == 404


def test_one_pass_upload_that_cannot_be_removed_says_so(hook, jfrog_server, three_mib_file):
    jfrog_server.inject_faults(r"/m/3/weights\.bin", [{"report_checksums": {"md5": "not-an-md5"}}], method="PUT")
    jfrog_server.inject_faults(r"/m/3/weights\.bin", [{"status": 403}], method="DELETE")
    with pytest.raises(ChecksumMismatchError, match=r"not a MD5 digest; removing what was stored failed, delete "
                                                    r"ml-models-local/m/3/weights\.bin by hand"):
        hook.deploy_artifact(three_mib_file, REPO, "m/3/weights.bin", **ONE_PASS)


def test_one_pass_upload_of_a_file_written_meanwhile_is_removed_again(hook, jfrog_server, three_mib_file):
    # the server holds its answer for a second; the file is written to well inside that time
    jfrog_server.inject_faults(r"/m/3/weights\.bin", [{"delay": 1.0}], method="PUT")

    def write_into_it() -> None:
        with open(three_mib_file, "r+b") as fh:
            fh.write(b"changed")

    writer = threading.Timer(0.2, write_into_it)
    writer.start()
    try:
        with pytest.raises(ChecksumMismatchError, match="written to while it was uploaded; what was stored at"):
            hook.deploy_artifact(three_mib_file, REPO, "m/3/weights.bin", **ONE_PASS)
    finally:
        writer.join()
    with pytest.raises(JFrogApiError, match="404"):
        hook.get_file_info(REPO, "m/3/weights.bin")


def test_deploy_to_missing_repo_raises_404(hook, small_file):
    with pytest.raises(JFrogApiError) as err:
        hook.deploy_artifact(small_file, "no-such-repo", "x.json")
    assert err.value.status == 404 and "no-such-repo" in err.value.message


def test_empty_file_deploys(hook, tmp_path):
    (empty := tmp_path / "empty").write_bytes(b"")
    assert hook.deploy_artifact(empty, REPO, "e/empty").size == 0
    assert hook.get_file_info(REPO, "e/empty")["size"] == "0"


# -- download --------------------------------------------------------------------------------------


def test_download_verifies_and_renames(hook, big_file, tmp_path):
    result = hook.deploy_artifact(big_file, REPO, "m/1/model.pt")
    out = tmp_path / "dl" / "model.pt"
    assert hook.download_artifact(REPO, "m/1/model.pt", out) == result.sha256
    assert out.read_bytes() == big_file.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["model.pt"]


@pytest.mark.parametrize("fault,error", [({"wrong_checksum": True}, ChecksumMismatchError),
                                         ({"truncate": True}, JFrogApiError)])
def test_bad_download_leaves_no_file(hook, jfrog_server, big_file, tmp_path, fault, error):
    hook.deploy_artifact(big_file, REPO, "m/1/model.pt")
    jfrog_server.inject_faults(PUT_MODEL, [fault], method="GET")
    out = tmp_path / "dl" / "model.pt"
    with pytest.raises(error):
        hook.download_artifact(REPO, "m/1/model.pt", out)
    assert list(out.parent.iterdir()) == []


def test_download_missing_is_404(hook, tmp_path):
    with pytest.raises(JFrogApiError) as err:
        hook.download_artifact(REPO, "nope.pt", tmp_path / "x")
    assert err.value.status == 404 and not (tmp_path / "x").exists()


# -- info, properties ------------------------------------------------------------------------------


def test_get_file_info_file_and_folder(hook, small_file):
    hook.deploy_artifact(small_file, REPO, "i/f.json")
    assert hook.get_file_info(REPO, "i/f.json")["checksums"]["sha256"] == file_checksums(small_file).sha256
    assert hook.get_file_info(REPO, "i")["children"] == [{"uri": "/f.json", "folder": False}]


SPECIAL_VALUES = ["a=b", "x,y", "p;q", "with space", "ünïcødé ✓", "back\\slash", "pipe|d", "plus+sign", "50%"]


def test_properties_round_trip_with_special_characters(hook, small_file):
    hook.deploy_artifact(small_file, REPO, "p/f.json")
    assert hook.get_item_properties(REPO, "p/f.json") == {}
    hook.set_item_properties(REPO, "p/f.json", {"special": SPECIAL_VALUES, "single": "a=b;c,d"})
    assert hook.get_item_properties(REPO, "p/f.json") == {"special": SPECIAL_VALUES, "single": ["a=b;c,d"]}
    hook.set_item_properties(REPO, "p/f.json", {"single": "new"})  # listed keys replaced, others untouched
    assert hook.get_item_properties(REPO, "p/f.json")["single"] == ["new"]
    hook.delete_item_properties(REPO, "p/f.json", ["special"])
    assert hook.get_item_properties(REPO, "p/f.json") == {"single": ["new"]}


def test_matrix_properties_with_special_characters_round_trip(hook, small_file):
    hook.deploy_artifact(small_file, REPO, "p/m.json", {"special": SPECIAL_VALUES})
    assert hook.get_item_properties(REPO, "p/m.json") == {"special": SPECIAL_VALUES}


def test_a_comma_joined_string_stays_one_value_and_a_list_is_several(hook, small_file):
    digests = ["a" * 64, "b" * 64]
    hook.deploy_artifact(small_file, REPO, "p/d.json", {"joined": ",".join(digests), "listed": digests})
    assert hook.get_item_properties(REPO, "p/d.json") == {"joined": [",".join(digests)], "listed": digests}


def test_set_properties_keeps_a_semicolon_inside_a_value(hook, jfrog_server, small_file):
    hook.deploy_artifact(small_file, REPO, "p/s.json")
    hook.set_item_properties(REPO, "p/s.json", {"note": "first;second=2", "other": "x"})
    assert hook.get_item_properties(REPO, "p/s.json") == {"note": ["first;second=2"], "other": ["x"]}


def test_get_properties_of_missing_item_raises(hook):
    with pytest.raises(JFrogApiError) as err:
        hook.get_item_properties(REPO, "missing.json")
    assert err.value.status == 404


def test_recursive_set_on_folder(hook, small_file):
    hook.deploy_artifact(small_file, REPO, "rec/a/f.json")
    hook.set_item_properties(REPO, "rec", {"stage": "released"}, recursive=True)
    assert hook.get_item_properties(REPO, "rec/a/f.json") == {"stage": ["released"]}


# -- redirected downloads ("Direct Cloud Storage Download") ---------------------------------------------


@pytest.fixture
def cloud_repo(hook, jfrog_server) -> str:
    hook._request("PUT", "/api/repositories/cloud-local", json={"rclass": "local", "packageType": "generic",
                                                                 "downloadRedirect": True})
    return "cloud-local"


def test_redirected_download_is_verified_against_the_stored_checksum(hook, jfrog_server, cloud_repo, big_file,
                                                                     tmp_path):
    deployed = hook.deploy_artifact(big_file, cloud_repo, "m/model.pt")
    out = tmp_path / "dl" / "model.pt"
    assert hook.download_artifact(cloud_repo, "m/model.pt", out) == deployed.sha256
    assert out.read_bytes() == big_file.read_bytes()
    # Artifactory answered 302, the storage host served the bytes (it answers 400 to a forwarded Authorization
    # header, so reaching it once means the token stayed behind); the checksum came from the storage API
    assert [m for m, _, _ in jfrog_server.requests_matching(None, r"^/artifactory/cloud-local/m/model\.pt$")] == [
        "PUT", "PUT", "GET"]
    assert len(jfrog_server.requests_matching("GET", r"^/_storage/")) == 1
    assert len(jfrog_server.requests_matching("GET", r"^/artifactory/api/storage/cloud-local/m/model\.pt$")) == 1


def test_redirected_download_that_does_not_match_the_stored_checksum_is_refused(hook, jfrog_server, cloud_repo,
                                                                               big_file, tmp_path):
    hook.deploy_artifact(big_file, cloud_repo, "m/model.pt")
    jfrog_server.inject_faults(r"^/artifactory/api/storage/cloud-local/m/model\.pt$", [{"wrong_checksum": True}],
                               method="GET")
    out = tmp_path / "dl" / "model.pt"
    with pytest.raises(ChecksumMismatchError, match="storage API"):
        hook.download_artifact(cloud_repo, "m/model.pt", out)
    assert list(out.parent.iterdir()) == []


def test_the_token_is_not_sent_to_the_storage_host(hook, jfrog_server, cloud_repo, small_file):
    import requests as plain

    hook.deploy_artifact(small_file, cloud_repo, "m/metrics.json")
    resp = hook.session.get(hook.artifact_url(cloud_repo, "m/metrics.json"))
    assert [r.status_code for r in resp.history] == [302] and resp.status_code == 200
    assert "Authorization" not in resp.request.headers  # requests dropped it when the host changed
    assert resp.content == small_file.read_bytes()
    # and the storage host would have refused it
    forwarded = plain.get(resp.url, headers={"Authorization": f"Bearer {jfrog_server.token}"})
    assert forwarded.status_code == 400


# -- AQL, copy/move, delete ------------------------------------------------------------------------


def test_search_aql_latest_candidate(hook, small_file, big_file):
    hook.deploy_artifact(small_file, REPO, "m/1/model.pt", {"model.name": "mnist", "model.stage": "candidate"})
    hook.deploy_artifact(big_file, REPO, "m/2/model.pt", {"model.name": "mnist", "model.stage": "candidate"})
    rows = hook.search_aql(
        'items.find({"repo":"ml-models-local","name":"model.pt","@model.name":"mnist","@model.stage":"candidate"})'
        '.include("repo","path","name","created","sha256").sort({"$desc":["created"]}).limit(1)')
    assert [(r["path"], r["sha256"]) for r in rows] == [("m/2", file_checksums(big_file).sha256)]


def test_search_aql_refuses_property_include_with_sort_or_paging(hook, jfrog_server):
    with pytest.raises(ValueError, match="drops properties"):
        hook.search_aql('items.find({"repo":"r"}).include("name","property").sort({"$asc":["name"]})')
    with pytest.raises(ValueError, match="drops properties"):
        hook.search_aql('items.find({"repo":"r"}).include("name","@model.name").limit(1)')
    assert jfrog_server.requests_matching("POST", r"/api/search/aql$") == []
    assert hook.search_aql('items.find({"repo":"r"}).include("name","property")') == []


def test_search_aql_bad_query_raises_400(hook):
    with pytest.raises(JFrogApiError) as err:
        hook.search_aql("items.find(")
    assert err.value.status == 400


def test_search_aql_is_retried_on_429(hook, jfrog_server):
    jfrog_server.inject_faults(r"/api/search/aql$", [{"status": 429}])
    assert hook.search_aql('items.find({"name":"none"})') == []
    assert len(jfrog_server.requests_matching("POST", r"/api/search/aql$")) == 2


def test_copy_move_delete(hook, jfrog_server, small_file):
    hook.deploy_artifact(small_file, REPO, "c/f.json", {"k": "v"})
    dry = hook.copy_item(REPO, "c/f.json", "ml-models-release", "c/f.json", dry_run=True)
    assert dry["messages"] and "dry run" in dry["messages"][0]["message"]
    with pytest.raises(JFrogApiError):
        hook.get_file_info("ml-models-release", "c/f.json")
    hook.copy_item(REPO, "c/f.json", "ml-models-release", "c/f.json")
    assert hook.get_item_properties("ml-models-release", "c/f.json") == {"k": ["v"]}
    hook.move_item("ml-models-release", "c/f.json", "ml-models-release", "moved/f.json")
    assert hook.get_file_info("ml-models-release", "moved/f.json")["size"] == str(small_file.stat().st_size)
    hook.delete_item("ml-models-release", "moved")
    with pytest.raises(JFrogApiError) as err:
        hook.delete_item("ml-models-release", "moved")
    assert err.value.status == 404
    with pytest.raises(ValueError):
        hook.delete_item(REPO, "/")


@pytest.fixture
def strict_repo(hook) -> str:
    hook._request("PUT", "/api/repositories/strict-release", json={"rclass": "local", "packageType": "generic",
                                                                    "excludesPattern": "**/*.tmp"})
    return "strict-release"


def test_copy_reporting_a_lower_case_error_fails(hook, small_file, strict_repo):
    hook.deploy_artifact(small_file, REPO, "e/f.tmp")
    with pytest.raises(JFrogApiError, match="rejected the path") as err:
        hook.copy_item(REPO, "e/f.tmp", strict_repo, "e/f.tmp")
    assert err.value.status == 200  # Artifactory said 200; the message level said otherwise
    with pytest.raises(JFrogApiError, match="rejected the path"):
        hook.move_item(REPO, "e/f.tmp", strict_repo, "e/f.tmp")
    assert hook.get_file_info(REPO, "e/f.tmp")  # the failed move left the source where it was


def test_folder_copy_fails_fast_and_copies_nothing_after_the_first_error(hook, small_file, strict_repo):
    for name in ("a.tmp", "b.json", "c.json"):
        hook.deploy_artifact(small_file, REPO, f"ff/{name}")
    with pytest.raises(JFrogApiError):
        hook.copy_item(REPO, "ff", strict_repo, "ff")
    with pytest.raises(JFrogApiError) as err:
        hook.get_file_info(strict_repo, "ff/b.json")
    assert err.value.status == 404


def test_create_repository_and_duplicate(hook):
    hook.create_local_repository("extra-local")
    with pytest.raises(JFrogApiError) as err:
        hook.create_local_repository("extra-local")
    assert err.value.status == 400


def test_urls(hook, jfrog_server):
    assert hook.artifact_url(REPO, "m/1/model.pt") == f"{jfrog_server.url}/artifactory/{REPO}/m/1/model.pt"
    assert hook.ui_url(REPO, "m/1/model.pt") == f"{jfrog_server.url}/ui/repos/tree/General/{REPO}/m/1/model.pt"
    assert hook.get_version()["version"]
