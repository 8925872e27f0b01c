"""JFrog Evidence statements: in-toto Statement v1 in a DSSE envelope; PAE bytes, round trip, tampering refused."""

from __future__ import annotations

import base64
import json

import pytest

from include.mlops import jfrog_evidence as ev
from include.mlops.gates import GateFailure
from include.mlops.signing import generate_key_pair

SHA = "ab" * 32


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


def _statement() -> dict:
    return ev.build_statement(subject_name="ml-models-local/mnist-cnn/1/model.safetensors", subject_sha256=SHA,
                              predicate={"evidence_pack": {"manifest_sha256": "cd" * 32}}, created_by="airflow/t")


def test_pae_matches_the_dsse_specification_example():
    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert ev.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    # lengths are byte lengths, not character counts
    assert ev.pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_statement_is_in_toto_v1_with_one_named_subject():
    statement = _statement()
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [{"name": "ml-models-local/mnist-cnn/1/model.safetensors",
                                     "digest": {"sha256": SHA}}]
    assert statement["predicateType"] == ev.PREDICATE_TYPE
    assert statement["createdAt"].endswith("Z") and statement["createdBy"] == "airflow/t"


def test_envelope_round_trip_and_signature_over_the_pae(keys):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    envelope = ev.sign_statement(_statement(), keys[0], "mnist-model-signing")
    assert set(envelope) == {"payload", "payloadType", "signatures"}
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert envelope["signatures"][0]["keyid"] == "mnist-model-signing"
    payload = base64.b64decode(envelope["payload"])
    assert json.loads(payload) == _statement() | {"createdAt": json.loads(payload)["createdAt"]}
    assert ev.verify_envelope(envelope, keys[1], "mnist-model-signing") == json.loads(payload)
    # an independent check: the signature is ECDSA P-256/SHA-256 (DER) over exactly the PAE bytes
    public = serialization.load_pem_public_key(keys[1])
    public.verify(base64.b64decode(envelope["signatures"][0]["sig"]),
                  b"DSSEv1 28 application/vnd.in-toto+json %d %b" % (len(payload), payload),
                  ec.ECDSA(hashes.SHA256()))
    # the envelope as JSON text verifies too
    assert ev.verify_envelope(json.dumps(envelope), keys[1])["subject"][0]["digest"]["sha256"] == SHA


def _tampered_payload(envelope: dict) -> dict:
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "ef" * 32
    return {**envelope, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}


@pytest.mark.parametrize("change", [
    _tampered_payload,
    lambda e: {**e, "payloadType": "application/json"},
    lambda e: {**e, "signatures": [{"keyid": "mnist-model-signing", "sig": base64.b64encode(b"\x00" * 70).decode()}]},
    lambda e: {**e, "signatures": []},
    lambda e: {**e, "payload": "not base64!"},
])
def test_a_changed_envelope_is_refused(keys, change):
    envelope = ev.sign_statement(_statement(), keys[0], "mnist-model-signing")
    with pytest.raises(ev.EvidenceError):
        ev.verify_envelope(change(envelope), keys[1])


def test_another_key_or_alias_is_refused(keys):
    envelope = ev.sign_statement(_statement(), keys[0], "mnist-model-signing")
    other_private, other_public = generate_key_pair()
    with pytest.raises(ev.EvidenceError, match="payload was changed or another key signed it"):
        ev.verify_envelope(envelope, other_public)
    with pytest.raises(ev.EvidenceError, match="no signature with keyid 'someone-else'"):
        ev.verify_envelope(envelope, keys[1], "someone-else")
    # an envelope signed by another key under our alias is refused as well
    forged = ev.sign_statement(_statement(), other_private, "mnist-model-signing")
    with pytest.raises(ev.EvidenceError):
        ev.verify_envelope(forged, keys[1], "mnist-model-signing")


def test_bad_inputs_name_the_field_and_never_show_the_key(keys):
    assert issubclass(ev.EvidenceError, GateFailure)
    with pytest.raises(ev.EvidenceError, match="subject sha256"):
        ev.build_statement(subject_name="r/p", subject_sha256="ABC", predicate={})
    with pytest.raises(ev.EvidenceError, match="not an unencrypted PEM private key") as info:
        ev.sign_statement(_statement(), keys[0][:-40] + b"\n", "alias")
    assert keys[0].decode().splitlines()[1] not in str(info.value)
    with pytest.raises(ev.EvidenceError, match="key alias is empty"):
        ev.sign_statement(_statement(), keys[0], "")
    with pytest.raises(ev.EvidenceError, match="not JSON"):
        ev.verify_envelope(b"{", keys[1])
    target = ev.EvidenceTarget(client=object(), private_key=keys[0], key_alias="a")
    assert keys[0].decode().splitlines()[1] not in repr(target)


@pytest.mark.parametrize(("value", "expected"), [("", False), ("false", False), ("true", True), ("1", True)])
def test_evidence_is_off_unless_switched_on(value, expected, keys):
    reads = []
    target = ev.evidence_target(lambda: "client", lambda: reads.append(1) or keys[0],
                                {"MLOPS_JFROG_EVIDENCE": value, "MLOPS_JFROG_EVIDENCE_KEY_ALIAS": "k1"})
    assert (target is not None) is expected
    assert reads == ([1] if expected else [])  # the private key is read only when evidence is on
    if expected:
        assert (target.client, target.key_alias) == ("client", "k1")
    with pytest.raises(ValueError, match="MLOPS_JFROG_EVIDENCE"):
        ev.enabled({"MLOPS_JFROG_EVIDENCE": "maybe"})
