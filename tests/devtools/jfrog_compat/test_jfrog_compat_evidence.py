"""The stand-in's JFrog Evidence: deploy verified against trusted keys, tampering or another key refused, search.

Envelopes here are built with `cryptography` directly (DSSE PAE written out), not with the pipeline's
include/mlops/jfrog_evidence.py, so the stand-in is checked against the DSSE spec, not against the client.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from devtools.jfrog_compat.evidence import predicate_slug

REPO = "ml-models-local"
PATH = "mnist-cnn/7/model.safetensors"
CONTENT = b"model bytes"
SHA = hashlib.sha256(CONTENT).hexdigest()
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def _pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def envelope(key, alias: str, sha256: str = SHA, predicate_type: str = "https://example.test/code-review/v0.1",
             statement: dict | None = None) -> dict:
    statement = statement or {"_type": "https://in-toto.io/Statement/v1", "subject": [{"digest": {"sha256": sha256}}],
                              "predicateType": predicate_type, "predicate": {"ok": True}}
    payload = json.dumps(statement).encode()
    message = b"DSSEv1 %d %b %d %b" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)
    sig = key.sign(message) if isinstance(key, ed25519.Ed25519PrivateKey) else key.sign(message, ec.ECDSA(hashes.SHA256()))
    return {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
            "signatures": [{"keyid": alias, "sig": base64.b64encode(sig).decode()}]}


@pytest.fixture
def key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def subject(api, jfrog_server):
    assert api.put(f"{jfrog_server.url}/artifactory/{REPO}/{PATH}", data=CONTENT).status_code == 201


def trust(api, server, alias: str, key) -> requests.Response:
    return api.post(f"{server.url}/artifactory/api/security/keys/trusted", json={"alias": alias, "key": _pem(key)})


def deploy(api, server, body, path: str = PATH) -> requests.Response:
    return api.post(f"{server.url}/evidence/api/v1/subject/{REPO}/{path}", data=json.dumps(body),
                    headers={"Content-Type": "application/json"})


def test_verified_evidence_is_stored_listed_and_downloadable(api, jfrog_server, subject, key):
    resp = trust(api, jfrog_server, "ci-key", key)
    assert resp.status_code == 201 and resp.json()["alias"] == "ci-key" and resp.json()["type"] == "ecdsa"
    assert [k["alias"] for k in api.get(f"{jfrog_server.url}/artifactory/api/security/keys/trusted").json()["keys"]] \
        == ["ci-key"]
    body = envelope(key, "ci-key")
    resp = deploy(api, jfrog_server, body)
    assert resp.status_code == 201, resp.text
    record = resp.json()
    # the fields of JFrog's Deploy Evidence sample answer, plus `verified`
    assert {k: record[k] for k in ("repository", "path", "predicate_type", "predicate_slug", "verified",
                                   "created_by")} == {
        "repository": REPO, "path": PATH, "predicate_type": "https://example.test/code-review/v0.1",
        "predicate_slug": "code-review", "verified": True, "created_by": "token-user"}
    assert record["uri"].startswith(f"{REPO}/.evidence/") and record["uri"].endswith(record["name"])
    assert record["signing_key"] == {"alias": "ci-key"}
    # the evidence file is where the uri says, byte-identical to what was deployed
    stored = api.get(f"{jfrog_server.url}/artifactory/{record['uri']}")
    assert stored.status_code == 200 and json.loads(stored.content) == body
    assert hashlib.sha256(stored.content).hexdigest() == record["sha256"]
    search = api.get(f"{jfrog_server.url}/evidence/api/v1/evidence-search",
                     params={"repository_key": REPO, "path": "mnist-cnn/7", "sha256": SHA})
    assert search.status_code == 200 and search.json()["evidence"] == [record]
    by_id = api.get(f"{jfrog_server.url}/evidence/api/v1/evidence-by-id/{record['id']}")
    assert by_id.json() == record


def test_evidence_survives_a_restart_over_the_same_state(api, jfrog_server, subject, key):
    trust(api, jfrog_server, "ci-key", key)
    record = deploy(api, jfrog_server, envelope(key, "ci-key")).json()
    jfrog_server.stop()
    jfrog_server.start()
    found = api.get(f"{jfrog_server.url}/evidence/api/v1/evidence-search", params={"repository_key": REPO})
    assert found.json()["evidence"] == [record]


def _tampered(key) -> dict:
    body = envelope(key, "ci-key")
    statement = json.loads(base64.b64decode(body["payload"]))
    statement["predicate"]["ok"] = False
    return {**body, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}


@pytest.mark.parametrize("make", [
    _tampered,
    lambda key: envelope(ec.generate_private_key(ec.SECP256R1()), "ci-key"),  # another key under the alias
    lambda key: {**envelope(key, "ci-key"), "signatures": [{"keyid": "ci-key", "sig": "AAAA"}]},
])
def test_a_changed_payload_or_another_key_is_refused_and_not_stored(api, jfrog_server, subject, key, make):
    trust(api, jfrog_server, "ci-key", key)
    resp = deploy(api, jfrog_server, make(key))
    assert resp.status_code == 400
    assert "invalid signature for key alias 'ci-key'" in resp.json()["errors"][0]["message"]
    assert api.get(f"{jfrog_server.url}/evidence/api/v1/evidence-search",
                   params={"repository_key": REPO}).json()["evidence"] == []


def test_an_alias_without_a_trusted_key_is_stored_unverified(api, jfrog_server, subject, key):
    resp = deploy(api, jfrog_server, envelope(key, "not-uploaded"))
    assert resp.status_code == 201 and resp.json()["verified"] is False and resp.json()["signing_key"] is None


def test_ed25519_keys_verify_too(api, jfrog_server, subject):
    key = ed25519.Ed25519PrivateKey.generate()
    trust(api, jfrog_server, "ed", key)
    assert deploy(api, jfrog_server, envelope(key, "ed")).json()["verified"] is True


@pytest.mark.parametrize(("make", "status", "message"), [
    (lambda key: envelope(key, "ci-key", sha256="00" * 32), 400, "does not match"),
    (lambda key: {**envelope(key, "ci-key"), "payloadType": "text/plain"}, 400, "payloadType"),
    (lambda key: {**envelope(key, "ci-key"), "payload": "%%%"}, 400, "base64"),
    (lambda key: {**envelope(key, "ci-key"), "signatures": []}, 400, "signatures"),
    (lambda key: envelope(key, "ci-key", statement={"_type": "x", "subject": []}), 400, "in-toto"),
    (lambda key: [], 400, "JSON object"),
])
def test_malformed_evidence_is_refused_with_a_reason(api, jfrog_server, subject, key, make, status, message):
    trust(api, jfrog_server, "ci-key", key)
    resp = deploy(api, jfrog_server, make(key))
    assert resp.status_code == status and message in resp.json()["errors"][0]["message"]


def test_unknown_subject_repository_and_credentials(api, jfrog_server, subject, key):
    assert deploy(api, jfrog_server, envelope(key, "k"), path="mnist-cnn/7/missing").status_code == 404
    resp = api.post(f"{jfrog_server.url}/evidence/api/v1/subject/no-such-repo/a.bin", json=envelope(key, "k"))
    assert resp.status_code == 404 and "no-such-repo" in resp.json()["errors"][0]["message"]
    anonymous = requests.post(f"{jfrog_server.url}/evidence/api/v1/subject/{REPO}/{PATH}", json=envelope(key, "k"))
    assert anonymous.status_code == 401
    assert api.get(f"{jfrog_server.url}/evidence/api/v1/evidence-search").status_code == 400  # repository_key


def test_trusted_keys_refuse_duplicates_and_non_keys(api, jfrog_server, key):
    assert trust(api, jfrog_server, "k", key).status_code == 201
    assert trust(api, jfrog_server, "k", key).status_code == 409
    url = f"{jfrog_server.url}/artifactory/api/security/keys/trusted"
    assert api.post(url, json={"alias": "x", "key": "not a key"}).status_code == 400
    assert api.post(url, json={"key": _pem(key)}).status_code == 400


def test_search_filters_by_path_folder_name_and_sha256(api, jfrog_server, key):
    trust(api, jfrog_server, "ci-key", key)
    for path, content in (("a/1/model.bin", b"one"), ("a/2/model.bin", b"two"), ("b/other.bin", b"three")):
        api.put(f"{jfrog_server.url}/artifactory/{REPO}/{path}", data=content)
        assert deploy(api, jfrog_server, envelope(key, "ci-key", hashlib.sha256(content).hexdigest()),
                      path=path).status_code == 201

    def paths(**params):
        found = api.get(f"{jfrog_server.url}/evidence/api/v1/evidence-search",
                        params={"repository_key": REPO, **params}).json()["evidence"]
        return sorted(r["path"] for r in found)

    assert paths() == ["a/1/model.bin", "a/2/model.bin", "b/other.bin"]
    assert paths(path="a") == ["a/1/model.bin", "a/2/model.bin"]
    assert paths(path="a/2/model.bin") == ["a/2/model.bin"]
    assert paths(name="other") == ["b/other.bin"]
    assert paths(sha256=hashlib.sha256(b"one").hexdigest()) == ["a/1/model.bin"]


def test_predicate_slug_follows_jfrogs_example():
    assert predicate_slug("https://jfrog.com/evidence/code-review/v0.1") == "code-review"
    assert predicate_slug("https://slsa.dev/provenance/v1") == "provenance"
    assert predicate_slug("https://in-toto.io/attestation/test-result") == "test-result"
