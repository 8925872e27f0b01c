"""EvidenceHook against the local server: trusted key upload, deploy, search, evidence file read back and verified."""

from __future__ import annotations

import hashlib

import pytest
from jfrog_provider.exceptions import JFrogApiError
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.hooks.evidence import EvidenceHook

from include.mlops import jfrog_evidence as ev
from include.mlops.signing import generate_key_pair

REPO = "ml-models-local"
PATH = "mnist-cnn/3/model.safetensors"


@pytest.fixture
def hook(conn) -> EvidenceHook:
    return EvidenceHook()


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture
def model(conn, tmp_path) -> str:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights" * 100)
    return ArtifactoryHook().deploy_artifact(path, REPO, PATH).sha256


def _envelope(keys, sha256: str, alias: str = "mnist-model-signing") -> dict:
    statement = ev.build_statement(subject_name=f"{REPO}/{PATH}", subject_sha256=sha256, predicate={"x": 1})
    return ev.sign_statement(statement, keys[0], alias)


def test_evidence_url_is_under_the_platform(hook, jfrog_server):
    assert hook.service_url("evidence") == f"{jfrog_server.url}/evidence"


def test_deploy_then_list_then_read_back_and_verify(hook, keys, model, jfrog_server):
    uploaded = hook.upload_trusted_key("mnist-model-signing", keys[1])
    assert uploaded["alias"] == "mnist-model-signing"
    assert [k["alias"] for k in hook.get_trusted_keys()] == ["mnist-model-signing"]
    record = hook.deploy_evidence(REPO, PATH, _envelope(keys, model))
    assert record["verified"] is True and record["path"] == PATH
    # one POST, no retry
    assert [r for r in jfrog_server.request_log if r[0] == "POST" and r[1].startswith("/evidence/")] == [
        ("POST", f"/evidence/api/v1/subject/{REPO}/{PATH}", jfrog_server.request_log[-1][2])]
    listed = hook.search_evidence(REPO, PATH, sha256=model)
    assert listed == [record]
    assert hook.search_evidence(REPO, "mnist-cnn/3/other.bin") == []
    envelope = hook.get_evidence_file(record["uri"])
    statement = ev.verify_envelope(envelope, keys[1], "mnist-model-signing")
    assert statement["subject"][0]["digest"]["sha256"] == model


def test_a_wrong_key_is_refused_by_the_server(hook, keys, model):
    hook.upload_trusted_key("mnist-model-signing", keys[1])
    other = generate_key_pair()
    with pytest.raises(JFrogApiError) as info:
        hook.deploy_evidence(REPO, PATH, _envelope(other, model))
    assert info.value.status == 400 and "invalid signature" in info.value.message
    assert hook.search_evidence(REPO, PATH) == []


def test_a_digest_that_is_not_the_files_is_refused(hook, keys, model):
    hook.upload_trusted_key("mnist-model-signing", keys[1])
    with pytest.raises(JFrogApiError) as info:
        hook.deploy_evidence(REPO, PATH, _envelope(keys, hashlib.sha256(b"other").hexdigest()))
    assert info.value.status == 400 and "does not match" in info.value.message


def test_promotion_evidence_fails_closed_when_jfrog_did_not_verify(hook, keys, model):
    # no trusted key under the alias: JFrog stores the evidence unverified, and the pipeline refuses that
    run = {"registered": {"model_name": "mnist-cnn", "version": "3", "run_id": "r"},
           "published": {"repo": REPO, "path": PATH, "sha256": model},
           "trained": {"signature": {"sha256": "aa" * 32, "key_id": "k", "files": {}}}}
    target = ev.EvidenceTarget(hook, keys[0], "mnist-model-signing")
    with pytest.raises(ev.EvidenceError, match="did not verify it: upload the model-signing public key"):
        ev.deploy_promotion_evidence(run, {"scan_id": "s", "passed": True}, {"promote": True}, target,
                                     evidence_path=f"{REPO}/mnist-cnn/3/evidence/", manifest_sha256="bb" * 32,
                                     dag_id="d", run_id="r")
    hook.upload_trusted_key("mnist-model-signing", keys[1])
    done = ev.deploy_promotion_evidence(run, {"scan_id": "s", "passed": True}, {"promote": True}, target,
                                        evidence_path=f"{REPO}/mnist-cnn/3/evidence/", manifest_sha256="bb" * 32,
                                        dag_id="d", run_id="r")
    assert done["verified"] is True and done["uri"] in [r["uri"] for r in hook.search_evidence(REPO, PATH)]


def test_a_private_key_is_never_uploaded(hook, keys, jfrog_server):
    with pytest.raises(ValueError, match="public key"):
        hook.upload_trusted_key("k", keys[0])
    assert not [r for r in jfrog_server.request_log if "trusted" in r[1]]
