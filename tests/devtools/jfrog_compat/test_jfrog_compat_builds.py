"""Local server: "Build Upload", "Build Promotion", Xray "Artifact Summary", counters; plain requests."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from devtools.jfrog_compat.server import JFrogCompatServer

REPO, RELEASE = "ml-models-local", "ml-models-release"
STARTED = "2026-05-01T12:00:00.000+0000"



def art(server: JFrogCompatServer, path: str) -> str:
    return f"{server.url}/artifactory{path}"


def put_build(api, server, name="a/b", number="1", **extra):
    body = json.dumps({"name": name, "number": number, "started": STARTED, **extra}).encode()
    return api.put(art(server, "/api/build"), data=body,
                   headers={"Content-Type": "application/vnd.org.jfrog.artifactory+json"}), body


def test_build_put_answers_204_with_sha256_and_get_by_escaped_name(jfrog_server, api):
    resp, body = put_build(api, jfrog_server)
    assert resp.status_code == 204 and resp.headers["X-Checksum-Sha256"] == hashlib.sha256(body).hexdigest()
    got = api.get(art(jfrog_server, "/api/build/a%2Fb/1"))
    assert got.status_code == 200 and got.json()["buildInfo"]["name"] == "a/b"
    assert got.json()["uri"].endswith("/api/build/a%2Fb/1")
    runs = api.get(art(jfrog_server, "/api/build/a%2Fb")).json()
    assert runs["buildsNumbers"] == [{"uri": "/1", "started": STARTED}]
    assert [b["uri"] for b in api.get(art(jfrog_server, "/api/build")).json()["builds"]] == ["/a%2Fb"]


@pytest.mark.parametrize("body,status", [
    (b"{not json", 400), (b'{"name":"x","number":"1"}', 400), (b'["list"]', 400),
])
def test_build_put_rejects_malformed(jfrog_server, api, body, status):
    resp = api.put(art(jfrog_server, "/api/build"), data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status and resp.json()["errors"][0]["status"] == status


def test_build_put_accepts_plain_json_and_no_version(jfrog_server, api):
    resp = api.put(art(jfrog_server, "/api/build"), json={"name": "n", "number": 2, "started": STARTED})
    assert resp.status_code == 204
    assert api.get(art(jfrog_server, "/api/build/n/2")).status_code == 200


def test_unknown_build_is_404_in_envelope(jfrog_server, api):
    resp = api.get(art(jfrog_server, "/api/build/none/1"))
    assert resp.status_code == 404 and "none" in resp.json()["errors"][0]["message"]


def _deploy(api, server, path, data, **props):
    matrix = "".join(f";{k}={v}" for k, v in props.items())
    resp = api.put(art(server, f"/{REPO}/{path}{matrix}"), data=data)
    assert resp.status_code == 201
    return resp.json()["checksums"]


def test_promote_by_module_checksum_copy_move_and_conflict(jfrog_server, api):
    sums = _deploy(api, jfrog_server, "x/model.pt", b"model-bytes")
    put_build(api, jfrog_server, modules=[{"id": "m", "artifacts": [{"name": "model.pt", "sha1": sums["sha1"]}]}])
    url = art(jfrog_server, "/api/build/promote/a%2Fb/1")
    dry = api.post(url, json={"status": "released", "targetRepo": RELEASE, "copy": True, "dryRun": True})
    assert dry.status_code == 200 and "[dry run]" in dry.json()["messages"][0]["message"]
    assert api.get(art(jfrog_server, f"/api/storage/{RELEASE}/x/model.pt")).status_code == 404
    ok = api.post(url, json={"status": "released", "targetRepo": RELEASE, "copy": True,
                             "properties": {"stage": ["released"]}})
    assert ok.status_code == 200
    props = api.get(art(jfrog_server, f"/api/storage/{RELEASE}/x/model.pt?properties")).json()["properties"]
    assert props == {"stage": ["released"]}
    # a different file already at the target path → 409, nothing changes
    api.put(art(jfrog_server, f"/{RELEASE}/x/model.pt"), data=b"other")
    conflict = api.post(url, json={"status": "released", "targetRepo": RELEASE, "copy": False})
    assert conflict.status_code == 409
    assert api.get(art(jfrog_server, f"/api/storage/{REPO}/x/model.pt")).status_code == 200


def test_promote_defaults_to_move_and_404_for_unknown_build(jfrog_server, api):
    _deploy(api, jfrog_server, "y/model.pt", b"y", **{"build.name": "b", "build.number": "3"})
    put_build(api, jfrog_server, name="b", number="3")
    assert api.post(art(jfrog_server, "/api/build/promote/b/3"), json={"status": "s", "targetRepo": RELEASE}).ok
    assert api.get(art(jfrog_server, f"/api/storage/{REPO}/y/model.pt")).status_code == 404
    assert api.get(art(jfrog_server, f"/api/storage/{RELEASE}/y/model.pt")).status_code == 200
    statuses = api.get(art(jfrog_server, "/api/build/b/3")).json()["buildInfo"]["statuses"]
    assert [s["status"] for s in statuses] == ["s"]
    missing = api.post(art(jfrog_server, "/api/build/promote/b/4"), json={"status": "s", "targetRepo": RELEASE})
    assert missing.status_code == 404


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_summary_artifact_paths_checksums_errors_and_cvss(jfrog_server, api, version):
    sums = _deploy(api, jfrog_server, "s/model.pt", b"summary")
    jfrog_server.plant_vulnerabilities([{"sha256": sums["sha256"], "issue_id": "X-1", "severity": "High",
                                         "cves": [{"cve": "CVE-1", "cvss_v3_score": "7.5",
                                                   "cvss_v3_vector": "CVSS:3.1/AV:N"}]}])
    url = f"{jfrog_server.url}/xray/api/{version}/summary/artifact"
    body = api.post(url, json={"paths": [f"default/{REPO}/s/model.pt", f"{REPO}/s/model.pt"]}).json()
    assert [a["general"]["sha256"] for a in body["artifacts"]] == [sums["sha256"]]
    assert body["errors"] == [{"identifier": f"{REPO}/s/model.pt",
                               "error": "Artifact doesn't exist or not indexed/cached in Xray"}]
    [issue] = body["artifacts"][0]["issues"]
    assert issue["cves"][0]["cvss_v3"] == "7.5/CVSS:3.1/AV:N"
    assert ("components" in issue) == (version == "v2")
    by_sum = api.post(url, json={"checksums": [sums["sha1"], "f" * 64]}).json()
    assert len(by_sum["artifacts"]) == 1 and by_sum["errors"][0]["identifier"] == "f" * 64
    assert api.post(url, json={}).status_code == 400


def test_connection_counter_stats_and_reset_mid_body(jfrog_server, api):
    before = jfrog_server.connections_accepted
    for _ in range(3):
        api.get(art(jfrog_server, "/api/system/version"))
    assert jfrog_server.connections_accepted == before + 1  # keep-alive: one TCP connection
    jfrog_server.inject_faults(r"/r\.bin$", [{"reset_after_bytes": 1}], method="PUT")
    with pytest.raises(requests.ConnectionError):
        requests.put(art(jfrog_server, f"/{REPO}/r.bin"), data=b"z" * (3 << 20),
                     headers={"Authorization": f"Bearer {jfrog_server.token}"})
    assert api.get(art(jfrog_server, f"/api/storage/{REPO}/r.bin")).status_code == 404
    assert list((jfrog_server.state_dir / "tmp").iterdir()) == []
    stats = api.get(f"{jfrog_server.url}/_compat/stats").json()
    assert stats["body_bytes_received"] == jfrog_server.body_bytes_received > 0
    assert requests.get(f"{jfrog_server.url}/_compat/stats").status_code == 401
