"""The local server follows JFrog's REST APIs (docs/jfrog-rest-contract.md), checked with plain requests."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devtools.jfrog_compat.server import (
    ApiError,
    JFrogCompatServer,
    checksum_kind,
    parse_aql,
    parse_properties_param,
)

REPO = "ml-models-local"



def art(server: JFrogCompatServer, path: str) -> str:
    return f"{server.url}/artifactory{path}"


def deploy(api: requests.Session, server: JFrogCompatServer, path: str, data: bytes, **headers: str):
    return api.put(art(server, f"/{REPO}/{path}"), data=data, headers=headers)


# -- auth and system ("Authorization Headers", "System Health Ping", "Version", Xray "Ping") -------------


def test_artifactory_ping_is_anonymous_text_ok(jfrog_server):
    resp = requests.get(art(jfrog_server, "/api/system/ping"))
    assert (resp.status_code, resp.text, resp.headers["Content-Type"]) == (200, "OK", "text/plain")


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic " + base64.b64encode(b"u:wrong").decode()])
def test_bad_or_missing_credentials_are_401_in_envelope(jfrog_server, auth):
    headers = {"Authorization": auth} if auth else {}
    resp = requests.get(art(jfrog_server, "/api/system/version"), headers=headers)
    assert resp.status_code == 401
    assert resp.json()["errors"][0]["status"] == 401


def test_basic_auth_with_token_as_password(jfrog_server):
    resp = requests.get(art(jfrog_server, "/api/system/version"), auth=("alice", jfrog_server.token))
    assert resp.status_code == 200 and resp.json()["version"]


def test_xray_ping_requires_auth(jfrog_server, api):
    anon = requests.get(f"{jfrog_server.url}/xray/api/v1/system/ping")
    assert anon.status_code == 401 and "error" in anon.json()
    assert api.get(f"{jfrog_server.url}/xray/api/v1/system/ping").json() == {"status": "pong"}
    assert api.get(f"{jfrog_server.url}/xray/api/v1/system/version").json()["xray_version"]


def test_unknown_endpoint_is_404(jfrog_server, api):
    assert api.get(art(jfrog_server, "/api/nope")).status_code == 404


# -- deploy ("Deploy Artifact", "Deploy Artifact by Checksum") ------------------------------------------


def test_deploy_answers_item_created_with_string_size(jfrog_server, api):
    data = b"model-bytes"
    resp = deploy(api, jfrog_server, "m/1/model.pt", data, **{"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()})
    assert resp.status_code == 201
    assert resp.headers["Content-Type"].startswith("application/vnd.org.jfrog.artifactory.storage.ItemCreated+json")
    body = resp.json()
    assert body["size"] == str(len(data))
    assert body["path"] == "/m/1/model.pt" and body["repo"] == REPO
    assert body["checksums"] == {"sha1": hashlib.sha1(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
                                 "sha256": hashlib.sha256(data).hexdigest()}
    assert body["originalChecksums"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["downloadUri"].endswith(f"/artifactory/{REPO}/m/1/model.pt")


@pytest.mark.parametrize("header,value", [
    ("X-Checksum-Sha256", "0" * 64), ("X-Checksum-Sha1", "0" * 40), ("X-Checksum-Md5", "0" * 32),
    ("X-Checksum", "0" * 64), ("X-Checksum", "0" * 40), ("X-Checksum", "0" * 32),
])
def test_deploy_with_wrong_checksum_is_409_and_stores_nothing(jfrog_server, api, header, value):
    resp = deploy(api, jfrog_server, "bad.bin", b"abc", **{header: value})
    assert resp.status_code == 409
    assert "Checksum" in resp.json()["errors"][0]["message"]
    assert api.get(art(jfrog_server, f"/{REPO}/bad.bin")).status_code == 404


def test_generic_x_checksum_is_resolved_by_length():
    assert [checksum_kind("a" * n) for n in (32, 40, 64, 10)] == ["md5", "sha1", "sha256", None]


def test_deploy_to_unknown_repo_is_404(jfrog_server, api):
    resp = api.put(art(jfrog_server, "/no-such-repo/x.bin"), data=b"x")
    assert resp.status_code == 404 and resp.json()["errors"][0]["status"] == 404


def test_matrix_params_become_properties_and_encoded_semicolon_is_not_a_separator(jfrog_server, api):
    resp = api.put(art(jfrog_server, f"/{REPO}/a%3Bb/f.bin;k=v%20x;k=2;other=p%3Bq"), data=b"x")
    assert resp.status_code == 201
    assert resp.json()["path"] == "/a;b/f.bin"
    props = api.get(art(jfrog_server, f"/api/storage/{REPO}/a%3Bb/f.bin?properties")).json()["properties"]
    assert props == {"k": ["v x", "2"], "other": ["p;q"]}


def test_checksum_deploy_known_copies_and_unknown_is_404(jfrog_server, api):
    data = os.urandom(2048)
    sha256 = hashlib.sha256(data).hexdigest()
    unknown = deploy(api, jfrog_server, "copy.bin", b"", **{"X-Checksum-Deploy": "true", "X-Checksum-Sha256": sha256})
    assert unknown.status_code == 404
    assert deploy(api, jfrog_server, "orig.bin", data).status_code == 201
    by_sha1 = deploy(api, jfrog_server, "copy.bin", b"",
                     **{"X-Checksum-Deploy": "true", "X-Checksum": hashlib.sha1(data).hexdigest()})
    assert by_sha1.status_code == 201 and by_sha1.json()["checksums"]["sha256"] == sha256
    assert api.get(art(jfrog_server, f"/{REPO}/copy.bin")).content == data


# -- download, info, delete ("Retrieve Artifact", "File Info", "Delete Item") -----------------------------


def test_download_and_head_carry_checksum_headers(jfrog_server, api):
    data = b"hello world"
    deploy(api, jfrog_server, "d/f.txt", data)
    get = api.get(art(jfrog_server, f"/{REPO}/d/f.txt"))
    assert get.content == data
    assert get.headers["X-Checksum-Sha256"] == hashlib.sha256(data).hexdigest()
    assert get.headers["X-Checksum-Sha1"] == hashlib.sha1(data).hexdigest()
    assert get.headers["X-Checksum-Md5"] == hashlib.md5(data).hexdigest()
    head = api.head(art(jfrog_server, f"/{REPO}/d/f.txt"))
    assert head.status_code == 200 and head.content == b"" and head.headers["Content-Length"] == str(len(data))
    assert api.get(art(jfrog_server, f"/{REPO}/d/missing.txt")).status_code == 404


def test_storage_info_for_file_folder_and_missing(jfrog_server, api):
    deploy(api, jfrog_server, "d/sub/f.bin", b"12345")
    deploy(api, jfrog_server, "d/g.bin", b"1")
    info = api.get(art(jfrog_server, f"/api/storage/{REPO}/d/sub/f.bin")).json()
    assert info["size"] == "5" and info["checksums"]["sha256"] == hashlib.sha256(b"12345").hexdigest()
    assert {"lastModified", "modifiedBy", "created", "downloadUri"} <= info.keys()
    folder = api.get(art(jfrog_server, f"/api/storage/{REPO}/d")).json()
    assert folder["children"] == [{"uri": "/g.bin", "folder": False}, {"uri": "/sub", "folder": True}]
    missing = api.get(art(jfrog_server, f"/api/storage/{REPO}/nope"))
    assert missing.status_code == 404


def test_delete_item_and_folder(jfrog_server, api):
    deploy(api, jfrog_server, "x/a.bin", b"a")
    deploy(api, jfrog_server, "x/y/b.bin", b"b")
    assert api.delete(art(jfrog_server, f"/{REPO}/x/a.bin")).status_code == 204
    assert api.delete(art(jfrog_server, f"/{REPO}/x")).status_code == 204
    assert api.get(art(jfrog_server, f"/{REPO}/x/y/b.bin")).status_code == 404
    assert api.delete(art(jfrog_server, f"/{REPO}/x")).status_code == 404


# -- properties ("Set Item Properties", "Item Properties", "Delete Item Properties") ---------------------


@pytest.mark.parametrize("raw,expected", [
    ("a=1", {"a": ["1"]}),
    ("a=1,2;b=3", {"a": ["1", "2"], "b": ["3"]}),
    ("a=1%2C2;b=3", {"a": ["1", "2"], "b": ["3"]}),  # jfrog-client-go joins values with an encoded comma
    ("a=1|b=2", {"a": ["1"], "b": ["2"]}),
    ("a=1%7Cb=2", {"a": ["1"], "b": ["2"]}),  # the doc's pipe separator, sent encoded
    ("a=x%5C%2Cy", {"a": ["x,y"]}),
    ("a=k%5C%3Dv", {"a": ["k=v"]}),
    ("a=k=v", {"a": ["k=v"]}),
    ("a=p%3Bq%5C%7Cr%5C%5Cs", {"a": ["p;q|r\\s"]}),  # an encoded ';' stays inside the value
    ("a=1%5C;b=2", {"a": ["1\\"], "b": ["2"]}),  # the doc: an escaped semicolon (%5C;) still separates
    ("a=p%5C%3Bq%3Bb%3D2", {"a": ["p;q;b=2"]}),  # no raw ';': one property, whatever it decodes to
    ("a=", {"a": [""]}),
    ("a=x+y", {"a": ["x y"]}),  # query decoding: '+' is a space
])
def test_parse_properties_param(raw, expected):
    assert parse_properties_param(raw) == expected


@pytest.mark.parametrize("raw", ["=1", "novalue", "a=1;=2"])
def test_parse_properties_param_refuses_a_property_without_key_or_value(raw):
    with pytest.raises(ApiError) as err:
        parse_properties_param(raw)
    assert err.value.status == 400


def test_properties_get_set_delete(jfrog_server, api):
    deploy(api, jfrog_server, "p/f.bin", b"x")
    url = art(jfrog_server, f"/api/storage/{REPO}/p/f.bin")
    none = api.get(url + "?properties")
    assert none.status_code == 404 and "No properties could be found" in none.text
    # a raw ';' separates properties; inside a value '=' and ',' are backslash-escaped, all percent-encoded
    assert api.put(url + "?properties=k=a%5C%3Db%2Cc;z=1").status_code == 204
    assert api.get(url + "?properties").json()["properties"] == {"k": ["a=b", "c"], "z": ["1"]}
    assert api.get(url + "?properties=z").json()["properties"] == {"z": ["1"]}
    assert api.delete(url + "?properties=k").status_code == 204
    assert api.get(url + "?properties").json()["properties"] == {"z": ["1"]}
    missing = api.get(art(jfrog_server, f"/api/storage/{REPO}/p/none.bin?properties"))
    assert missing.status_code == 404 and "No properties" not in missing.text


def test_properties_on_folder_are_recursive_by_default(jfrog_server, api):
    deploy(api, jfrog_server, "r/a/f.bin", b"x")
    assert api.put(art(jfrog_server, f"/api/storage/{REPO}/r?properties=s=1")).status_code == 204
    assert api.get(art(jfrog_server, f"/api/storage/{REPO}/r/a/f.bin?properties")).json()["properties"] == {"s": ["1"]}
    assert api.put(art(jfrog_server, f"/api/storage/{REPO}/r?properties=t=1&recursive=0")).status_code == 204
    assert "t" not in api.get(art(jfrog_server, f"/api/storage/{REPO}/r/a/f.bin?properties")).json()["properties"]


def test_property_key_with_forbidden_char_is_400(jfrog_server, api):
    deploy(api, jfrog_server, "p/f.bin", b"x")
    assert api.put(art(jfrog_server, f"/api/storage/{REPO}/p/f.bin?properties=a%20b=1")).status_code == 400


# -- AQL ("Artifactory Query Language") --------------------------------------------------------------


@pytest.fixture
def aql_items(jfrog_server, api):
    for name, version, stage in [("m/1/model.pt", "1", "candidate"), ("m/2/model.pt", "2", "candidate"),
                                 ("m/3/model.pt", "3", "released"), ("m/3/sbom.cdx.json", "3", "released")]:
        deploy(api, jfrog_server, f"{name};model.version={version};model.stage={stage}", name.encode())
        time.sleep(0.002)  # distinct created timestamps for sorting

    def run(query: str) -> requests.Response:
        return api.post(art(jfrog_server, "/api/search/aql"), data=query, headers={"Content-Type": "text/plain"})

    return run


def test_aql_eq_match_and_prop_criteria(aql_items):
    body = aql_items('items.find({"repo":"ml-models-local","name":{"$match":"*.pt"},"@model.stage":"candidate"})').json()
    assert sorted(r["path"] for r in body["results"]) == ["m/1", "m/2"]
    assert body["range"] == {"start_pos": 0, "end_pos": 2, "total": 2}
    assert set(body["results"][0]) == {"repo", "path", "name", "type", "size", "created", "created_by", "modified",
                                       "modified_by", "updated"}


def test_aql_or_ne_and_include_sha256_and_property(aql_items):
    q = ('items.find({"$or":[{"@model.version":"1"},{"@model.version":{"$gt":"2"}}],"name":{"$ne":"sbom.cdx.json"}})'
         '.include("name","path","sha256","property")')
    rows = aql_items(q).json()["results"]
    assert sorted(r["path"] for r in rows) == ["m/1", "m/3"]
    row = next(r for r in rows if r["path"] == "m/1")
    assert row["sha256"] == hashlib.sha256(b"m/1/model.pt").hexdigest()
    assert {"key": "model.version", "value": "1"} in row["properties"]
    assert "created" not in row


def test_aql_sort_offset_limit(aql_items):
    q = 'items.find({"name":"model.pt"}).include("path","created").sort({"$desc":["created"]}).offset(1).limit(1)'
    body = aql_items(q).json()
    assert [r["path"] for r in body["results"]] == ["m/2"]
    assert body["range"] == {"start_pos": 1, "end_pos": 2, "total": 1, "limit": 1}


def test_aql_folders_only_when_asked(aql_items):
    rows = aql_items('items.find({"type":"folder","name":"3"})').json()["results"]
    assert [(r["path"], r["name"], r["type"]) for r in rows] == [("m", "3", "folder")]


@pytest.mark.parametrize("query", [
    "builds.find({})", 'items.find({"name":})', 'items.find({"nope":"x"})', 'items.find({}).bogus(1)',
    'items.find({"name":{"$regex":"x"}})',
])
def test_aql_bad_queries_are_400(aql_items, query):
    resp = aql_items(query)
    assert resp.status_code == 400 and "errors" in resp.json()


def test_parse_aql_handles_parens_inside_strings():
    q = parse_aql('items.find({"name":{"$match":"a(b)*"}}).include("name").limit(3)')
    assert q["criteria"] == {"name": {"$match": "a(b)*"}} and q["limit"] == 3 and q["include"] == ["name"]


# -- copy / move ("Copy Item", "Move Item"), repositories ("Create Repository") ---------------------------


def test_copy_dry_run_copy_and_move(jfrog_server, api):
    deploy(api, jfrog_server, "c/f.bin;k=v", b"content")
    dry = api.post(art(jfrog_server, f"/api/copy/{REPO}/c/f.bin"), params={"to": "/ml-models-release/c/f.bin", "dry": 1})
    assert dry.status_code == 200 and dry.json()["messages"][0]["level"] == "info"  # lower case, as in the docs
    assert api.get(art(jfrog_server, "/ml-models-release/c/f.bin")).status_code == 404
    # `to` accepted without a leading slash too (jfrog-client-go sends it so)
    assert api.post(art(jfrog_server, f"/api/copy/{REPO}/c/f.bin"), params={"to": "ml-models-release/c/f.bin"}).ok
    assert api.get(art(jfrog_server, "/api/storage/ml-models-release/c/f.bin?properties")).json()["properties"] == {
        "k": ["v"]}
    assert api.post(art(jfrog_server, f"/api/move/{REPO}/c/f.bin"), params={"to": "/ml-models-release/moved/f.bin"}).ok
    assert api.get(art(jfrog_server, f"/{REPO}/c/f.bin")).status_code == 404
    assert api.get(art(jfrog_server, "/ml-models-release/moved/f.bin")).content == b"content"
    missing = api.post(art(jfrog_server, f"/api/move/{REPO}/c/f.bin"), params={"to": "/ml-models-release/x"})
    assert missing.status_code == 404


def test_create_repository_and_duplicate_is_400(jfrog_server, api):
    url = art(jfrog_server, "/api/repositories/extra-local")
    assert api.put(url, json={"rclass": "local", "packageType": "generic"}).status_code == 200
    dup = api.put(url, json={"rclass": "local"})
    assert dup.status_code == 400 and "already exists" in dup.json()["errors"][0]["message"]
    assert api.get(url).json()["key"] == "extra-local"
    assert api.put(art(jfrog_server, "/api/repositories/ML-MODELS-LOCAL"), json={}).status_code == 400


def test_restart_over_same_state_dir_keeps_artifacts(tmp_path):
    with JFrogCompatServer(tmp_path, token="t0ken") as first:
        requests.put(f"{first.url}/artifactory/{REPO}/keep.bin;a=1", data=b"persist",
                     headers={"Authorization": "Bearer t0ken"}).raise_for_status()
    with JFrogCompatServer(tmp_path, token="t0ken") as second:
        h = {"Authorization": "Bearer t0ken"}
        assert requests.get(f"{second.url}/artifactory/{REPO}/keep.bin", headers=h).content == b"persist"
        assert requests.get(f"{second.url}/artifactory/api/storage/{REPO}/keep.bin?properties",
                            headers=h).json()["properties"] == {"a": ["1"]}


# -- fault injection and request log ---------------------------------------------------------------


def test_status_faults_are_consumed_in_order_and_logged(jfrog_server, api):
    jfrog_server.inject_faults(r"/api/system/version$", [{"status": 503}, {"status": 429, "retry_after": "7"}])
    url = art(jfrog_server, "/api/system/version")
    first, second, third = api.get(url), api.get(url), api.get(url)
    assert first.status_code == 503 and first.json()["errors"][0]["status"] == 503
    assert second.status_code == 429 and second.headers["Retry-After"] == "7"
    assert third.status_code == 200
    assert jfrog_server.requests_matching("GET", r"/api/system/version$") == [
        ("GET", "/artifactory/api/system/version", 0)] * 3
    assert jfrog_server.pending_faults() == 0


def test_method_filtered_fault_and_unknown_fault_key(jfrog_server, api):
    jfrog_server.inject_faults(r"/f\.bin", [{"status": 500}], method="PUT")
    assert api.get(art(jfrog_server, f"/{REPO}/f.bin")).status_code == 404  # GET does not consume it
    assert deploy(api, jfrog_server, "f.bin", b"x").status_code == 500
    with pytest.raises(ValueError):
        jfrog_server.inject_faults(".*", [{"explode": True}])


def test_reset_and_truncate_faults_break_the_connection(jfrog_server, api):
    jfrog_server.inject_faults(r"/api/system/version$", [{"reset": True}, {"truncate": True}])
    url = art(jfrog_server, "/api/system/version")
    with pytest.raises(requests.ConnectionError):
        api.get(url)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.get(url)
    assert api.get(url).status_code == 200


def test_delay_fault_delays(jfrog_server, api):
    jfrog_server.inject_faults(r"/api/system/version$", [{"delay": 0.3}])
    start = time.monotonic()
    assert api.get(art(jfrog_server, "/api/system/version")).ok
    assert time.monotonic() - start >= 0.3


def test_wrong_checksum_fault_corrupts_deploy_answer(jfrog_server, api):
    jfrog_server.inject_faults(r"/w\.bin", [{"wrong_checksum": True}])
    body = deploy(api, jfrog_server, "w.bin", b"abc").json()
    assert body["checksums"]["sha256"] != hashlib.sha256(b"abc").hexdigest()


# -- Xray graph scan (jfrog-client-go `xray/services/scan.go`) ------------------------------------------

TORCH_VULN = {"component": "pypi://torch", "issue_id": "XRAY-1", "severity": "Critical", "summary": "RCE in torch.load",
              "cves": [{"cve": "CVE-2099-0001", "cvss_v3_score": "9.8"}], "fixed_versions": ["[2.15.0]"],
              "fail_build": True}


def _graph(*ids: str) -> dict:
    return {"component_id": "root", "nodes": [{"component_id": i} for i in ids]}


def test_graph_scan_202_then_200_with_vulnerabilities(jfrog_server, api):
    jfrog_server.scan_polls_before_done = 2
    jfrog_server.plant_vulnerabilities([TORCH_VULN, {**TORCH_VULN, "component": "pypi://numpy:1.0", "issue_id": "X-2"}])
    xray = f"{jfrog_server.url}/xray/api/v1/scan/graph"
    post = api.post(xray, json=_graph("pypi://torch:2.14.1", "pypi://numpy:2.0"))
    assert post.status_code == 201
    url = f"{xray}/{post.json()['scan_id']}?include_vulnerabilities=true&include_licenses=true"
    assert [api.get(url).status_code for _ in range(2)] == [202, 202]
    final = api.get(url)
    assert final.status_code == 200
    body = final.json()
    assert body["status"] == "completed" and body["licenses"] == [] and "violations" not in body
    [vuln] = body["vulnerabilities"]  # numpy 1.0 record is version-specific and does not match 2.0
    assert vuln["severity"] == "Critical" and vuln["cves"][0]["cve"] == "CVE-2099-0001"
    assert vuln["components"]["pypi://torch:2.14.1"]["fixed_versions"] == ["[2.15.0]"]


def test_graph_scan_without_include_flag_has_no_vulnerabilities(jfrog_server, api):
    jfrog_server.scan_polls_before_done = 0
    jfrog_server.plant_vulnerabilities([TORCH_VULN])
    xray = f"{jfrog_server.url}/xray/api/v1/scan/graph"
    scan_id = api.post(xray, json=_graph("pypi://torch:2.14.1")).json()["scan_id"]
    assert "vulnerabilities" not in api.get(f"{xray}/{scan_id}").json()


@pytest.mark.parametrize("query,watch_names", [
    ("", None), ("?watch=w1&watch=w2", ["w1", "w2"]), ("?project=ml", ["ml-watch"]),
])
def test_violations_only_with_context(jfrog_server, api, query, watch_names):
    jfrog_server.scan_polls_before_done = 0
    jfrog_server.plant_vulnerabilities([TORCH_VULN])
    xray = f"{jfrog_server.url}/xray/api/v1/scan/graph"
    scan_id = api.post(xray + query, json=_graph("pypi://Torch:2.14.1")).json()["scan_id"]
    body = api.get(f"{xray}/{scan_id}?include_vulnerabilities=true").json()
    if watch_names is None:
        assert "violations" not in body
    else:
        assert [v["watch_name"] for v in body["violations"]] == watch_names
        assert all(v["fail_build"] is True and v["type"] == "security" for v in body["violations"])


def test_findings_file_is_read_per_scan(jfrog_server, api):
    jfrog_server.scan_polls_before_done = 0
    xray = f"{jfrog_server.url}/xray/api/v1/scan/graph"
    before = api.post(xray, json=_graph("pypi://torch:2.14.1")).json()["scan_id"]
    jfrog_server.plant_vulnerabilities([TORCH_VULN])
    after = api.post(xray, json=_graph("pypi://torch:2.14.1")).json()["scan_id"]
    q = "?include_vulnerabilities=true"
    assert api.get(f"{xray}/{before}{q}").json()["vulnerabilities"] == []
    assert len(api.get(f"{xray}/{after}{q}").json()["vulnerabilities"]) == 1


def test_graph_scan_errors_use_xray_error_body(jfrog_server, api):
    xray = f"{jfrog_server.url}/xray/api/v1/scan/graph"
    bad = api.post(xray, data=b"not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "error" in bad.json()
    unknown = api.get(f"{xray}/does-not-exist")
    assert unknown.status_code == 404 and "error" in unknown.json()


def test_component_summary_lists_each_component_with_its_findings(jfrog_server, api):
    jfrog_server.plant_vulnerabilities([TORCH_VULN, {**TORCH_VULN, "component": "pypi://numpy:1.0", "issue_id": "X-2"}])
    resp = api.post(f"{jfrog_server.url}/xray/api/v1/summary/component", json={"component_details": [
        {"component_id": "pypi://Torch:2.14.1"}, {"component_id": "pypi://numpy:2.0"}, {"component_id": "torch"}]})
    assert resp.status_code == 200
    body = resp.json()
    torch, numpy = body["artifacts"]
    assert torch["general"]["component_id"] == "pypi://Torch:2.14.1" and torch["general"]["pkg_type"] == "pypi"
    [issue] = torch["issues"]
    assert (issue["issue_id"], issue["severity"], issue["cves"][0]["cve"]) == ("XRAY-1", "Critical", "CVE-2099-0001")
    assert issue["components"] == [{"component_id": "pypi://Torch:2.14.1", "version": "2.14.1", "pkg_type": "pypi",
                                    "fixed_versions": ["[2.15.0]"]}]
    assert numpy["issues"] == []  # the numpy finding names version 1.0 only
    assert body["errors"] == [{"identifier": "torch",
                               "error": "Invalid component id: expected <type>://<name>[:<version>]"}]


@pytest.mark.parametrize("body", [{}, {"component_details": []}, {"component_details": [{"component_id": 3}]}, []])
def test_component_summary_refuses_a_malformed_request(jfrog_server, api, body):
    resp = api.post(f"{jfrog_server.url}/xray/api/v1/summary/component", json=body)
    assert resp.status_code == 400 and "component_details" in resp.json()["error"]


def test_component_summary_requires_a_user(jfrog_server):
    resp = requests.post(f"{jfrog_server.url}/xray/api/v1/summary/component",
                         json={"component_details": [{"component_id": "pypi://torch:2.0"}]})
    assert resp.status_code == 401


# -- CLI -------------------------------------------------------------------------------------------


def test_cli_port_0_url_file_and_sigterm(tmp_path: Path):
    url_file = tmp_path / "url.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.jfrog_compat.server", "--state-dir", str(tmp_path / "s"), "--port", "0",
         "--token", "cli-token", "--url-file", str(url_file)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[3])
    try:
        line = proc.stdout.readline()
        assert line.startswith("JFrog-compatible LOCAL server (not JFrog) listening on http://127.0.0.1:")
        url = url_file.read_text().strip()
        assert line.strip().endswith(url)
        assert requests.get(f"{url}/artifactory/api/system/ping", timeout=5).text == "OK"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def test_scan_state_json_is_plain_json(jfrog_server, api):
    jfrog_server.plant_vulnerabilities([TORCH_VULN])
    assert json.loads(jfrog_server.vulnerabilities_file.read_text())[0]["issue_id"] == "XRAY-1"
