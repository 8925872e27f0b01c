"""JFrog Evidence for a model version: an in-toto Statement v1 in a DSSE envelope, signed with the model-signing key.

The statement's subject is the model file in Artifactory (its `repo/path` and sha256); its predicate names the
evidence pack (folder and manifest sha256), the gate decision, the Xray verdict and the model's signature. The
envelope is signed over the DSSE pre-authentication encoding (PAE) with the same P-256 key that signs the model
(ECDSA, SHA-256, ASN.1 DER signature, as JFrog's CLI signs evidence); its `keyid` is the alias under which the
public key is uploaded to the platform's trusted keys, which is what JFrog verifies the evidence with.

Sources: in-toto Attestation Framework, Statement v1 (https://github.com/in-toto/attestation/blob/main/spec/v1/
statement.md); DSSE protocol and envelope (https://github.com/secure-systems-lab/dsse/blob/master/protocol.md,
envelope.md); JFrog "Evidence Envelope" and "Evidence Payload" (https://jfrog.com/help/r/jfrog-artifactory-
documentation/evidence-envelope); JFrog REST "Deploy Evidence" (https://jfrog.com/help/r/jfrog-rest-apis/
deploy-evidence); jfrog/jfrog-cli-evidence `evidence/intoto/intoto_statement_v1.go` and
`evidence/cryptox/cryptox_ecdsa.go`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from include.mlops.gates import GateFailure

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# A URL-style identifier, as JFrog asks of predicate types ("Prepare Evidence"); `.local` is a special-use
# domain (RFC 6762), so the identifier cannot collide with anyone's real schema URL.
PREDICATE_TYPE = "https://mnist-mlops-airflow.local/evidence/model-promotion/v1"
DEFAULT_KEY_ALIAS = "mnist-model-signing"
# An envelope is a few kilobytes; anything far larger is refused before it is parsed.
MAX_ENVELOPE_BYTES = 4 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


class EvidenceError(GateFailure):
    """A statement or envelope is malformed, its signature does not verify, or JFrog did not verify it."""


class EvidenceClient(Protocol):
    """The JFrog Evidence calls this module makes (jfrog_provider's EvidenceHook has them)."""

    def deploy_evidence(self, repo: str, path: str, envelope: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class EvidenceTarget:
    """Where and how evidence goes out: the client, the signing key (never shown) and its trusted-key alias."""

    client: EvidenceClient
    private_key: bytes = field(repr=False)
    key_alias: str = DEFAULT_KEY_ALIAS


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether JFrog Evidence is on (MLOPS_JFROG_EVIDENCE; off unless set, since it needs JFrog Enterprise+)."""
    env = os.environ if env is None else env
    value = env.get("MLOPS_JFROG_EVIDENCE", "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"MLOPS_JFROG_EVIDENCE must be true or false, got {value!r}")


def evidence_target(client_factory: Callable[[], EvidenceClient], private_key: Callable[[], bytes],
                    env: Mapping[str, str] | None = None) -> EvidenceTarget | None:
    """The target when JFrog Evidence is on, else None; the key is read only when it is on."""
    env = os.environ if env is None else env
    if not enabled(env):
        return None
    alias = env.get("MLOPS_JFROG_EVIDENCE_KEY_ALIAS", "").strip() or DEFAULT_KEY_ALIAS
    return EvidenceTarget(client_factory(), private_key(), alias)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body (byte lengths)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _sha256(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise EvidenceError(f"{name} must be a lower-case hex SHA-256, got {value!r}")
    return value


def build_statement(*, subject_name: str, subject_sha256: str, predicate: Mapping[str, Any],
                    predicate_type: str = PREDICATE_TYPE, created_by: str | None = None,
                    created_at: str | None = None) -> dict[str, Any]:
    """An in-toto Statement v1 about one file, with the `createdAt`/`createdBy` fields JFrog's CLI adds."""
    if not subject_name:
        raise EvidenceError("statement subject name is empty: name the file as repo/path")
    if not predicate_type or not isinstance(predicate, Mapping):
        raise EvidenceError("statement needs a predicate type and a JSON object predicate")
    statement: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": _sha256(subject_sha256, "subject sha256")}}],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
        # jfrog-cli-evidence's time layout: milliseconds, UTC, "Z"
        "createdAt": created_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }
    if created_by:
        statement["createdBy"] = created_by
    return statement


def _private_key(private_pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(bytes(private_pem), None)
    except (ValueError, TypeError) as exc:
        # the message names the kind of problem only, never the key's bytes
        raise EvidenceError(f"the evidence signing key is not an unencrypted PEM private key "
                            f"({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise EvidenceError("the evidence signing key is not a P-256 elliptic-curve key")
    return key


def _public_key(public_pem: bytes | str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = public_pem.encode() if isinstance(public_pem, str) else bytes(public_pem)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise EvidenceError(f"the evidence public key is not a PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise EvidenceError("the evidence public key is not a P-256 elliptic-curve key")
    return key


def sign_statement(statement: Mapping[str, Any], private_pem: bytes, key_alias: str) -> dict[str, Any]:
    """The DSSE envelope of a statement, signed over its PAE with ECDSA P-256 / SHA-256."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if not key_alias:
        raise EvidenceError("the evidence key alias is empty: JFrog finds the public key by it")
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")
    signature = _private_key(private_pem).sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": key_alias, "sig": base64.b64encode(signature).decode("ascii")}],
    }


def _b64(value: Any, name: str) -> bytes:
    # DSSE: "Either standard or URL-safe encoding is allowed"; anything else is refused, not skipped over
    if not isinstance(value, str) or not value:
        raise EvidenceError(f"envelope {name} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode(value.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise EvidenceError(f"envelope {name} is not valid base64") from None


def parse_envelope(envelope: Mapping[str, Any] | bytes | str) -> tuple[bytes, list[dict[str, str]], dict[str, Any]]:
    """(payload bytes, signatures, statement) of a DSSE envelope, each field checked; EvidenceError otherwise."""
    if isinstance(envelope, bytes | str):
        if len(envelope) > MAX_ENVELOPE_BYTES:
            raise EvidenceError(f"evidence envelope is {len(envelope)} bytes, over the {MAX_ENVELOPE_BYTES} limit")
        try:
            envelope = json.loads(envelope)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EvidenceError(f"evidence envelope is not JSON ({exc})") from None
    if not isinstance(envelope, Mapping):
        raise EvidenceError("evidence envelope is not a JSON object")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise EvidenceError(f"envelope payloadType is {envelope.get('payloadType')!r}, expected {PAYLOAD_TYPE!r}")
    payload = _b64(envelope.get("payload"), "payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise EvidenceError("envelope has no signatures")
    checked = []
    for i, sig in enumerate(signatures):
        if not isinstance(sig, Mapping) or not isinstance(sig.get("keyid"), str) or not sig.get("keyid"):
            raise EvidenceError(f"envelope signatures[{i}] has no keyid (the trusted-key alias)")
        checked.append({"keyid": sig["keyid"], "sig": sig.get("sig")})
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvidenceError(f"envelope payload is not JSON ({exc})") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise EvidenceError(f"envelope payload is not an in-toto Statement v1 (_type "
                            f"{statement.get('_type') if isinstance(statement, dict) else None!r})")
    subjects = statement.get("subject")
    if (not isinstance(subjects, list) or not subjects
            or not all(isinstance(s, dict) and isinstance(s.get("digest"), dict) for s in subjects)):
        raise EvidenceError("statement subject must be a non-empty list of {name, digest}")
    for i, subject in enumerate(subjects):
        _sha256(subject["digest"].get("sha256"), f"statement subject[{i}].digest.sha256")
    if not isinstance(statement.get("predicateType"), str) or not isinstance(statement.get("predicate"), dict):
        raise EvidenceError("statement needs a predicateType string and a predicate object")
    return payload, checked, statement


def verify_envelope(envelope: Mapping[str, Any] | bytes | str, public_pem: bytes | str,
                    key_alias: str | None = None) -> dict[str, Any]:
    """The statement, if a signature (with `key_alias`, when given) verifies with the public key; else EvidenceError."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    payload, signatures, statement = parse_envelope(envelope)
    key = _public_key(public_pem)
    message = pae(PAYLOAD_TYPE, payload)
    candidates = [s for s in signatures if key_alias is None or s["keyid"] == key_alias]
    if not candidates:
        raise EvidenceError(f"envelope has no signature with keyid {key_alias!r} "
                            f"(it has {[s['keyid'] for s in signatures]})")
    for sig in candidates:
        try:
            key.verify(_b64(sig["sig"], f"signature {sig['keyid']!r} sig"), message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, EvidenceError):
            continue
        return statement
    raise EvidenceError(f"no signature in the envelope verifies with the public key (keyids "
                        f"{[s['keyid'] for s in candidates]}): the payload was changed or another key signed it")


def promotion_predicate(run: Mapping[str, Any], scan: Mapping[str, Any], decision: Mapping[str, Any], *,
                        evidence_path: str, manifest_sha256: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """What the evidence claims: the pack's manifest, the gate decision, the Xray verdict, the model's signature."""
    registered, published, trained = run["registered"], run["published"], run["trained"]
    signature = (run.get("sbom") or {}).get("signature") or trained.get("signature") or {}
    if not signature.get("sha256"):
        raise EvidenceError(f"{registered['model_name']} version {registered['version']} has no model signature "
                            "to attest: train_model signs the model before anything is published")
    return {
        "model": {"name": registered["model_name"], "version": str(registered["version"]),
                  "mlflow_run_id": registered.get("run_id")},
        "evidence_pack": {"path": evidence_path, "manifest_sha256": _sha256(manifest_sha256, "manifest sha256")},
        "gate_decision": {"promote": bool(decision.get("promote")), "reasons": list(decision.get("reasons", [])),
                          "gates": [{"name": g.get("name"), "passed": bool(g.get("passed"))}
                                    for g in decision.get("gates", [])]},
        "xray": {"scan_id": str(scan.get("scan_id")), "passed": bool(scan.get("passed")),
                 "severity_threshold": scan.get("severity_threshold"), "counts": dict(scan.get("counts") or {}),
                 "blocking": len(scan.get("blocking") or [])},
        "model_signature": {"sha256": _sha256(signature["sha256"], "model signature sha256"),
                            "key_id": signature.get("key_id"), "path": signature.get("artifactory_path"),
                            "files": dict(signature.get("files") or {})},
        "pipeline": {"dag_id": dag_id, "run_id": run_id},
        "subject": {"repo_path": f"{published['repo']}/{published['path'].lstrip('/')}"},
    }


def deploy_promotion_evidence(run: Mapping[str, Any], scan: Mapping[str, Any], decision: Mapping[str, Any],
                              target: EvidenceTarget, *, evidence_path: str, manifest_sha256: str, dag_id: str,
                              run_id: str) -> dict[str, Any]:
    """Sign the promotion statement about the model file and deploy it; EvidenceError unless JFrog verified it."""
    published = run["published"]
    repo, path = published["repo"], published["path"].lstrip("/")
    predicate = promotion_predicate(run, scan, decision, evidence_path=evidence_path,
                                    manifest_sha256=manifest_sha256, dag_id=dag_id, run_id=run_id)
    statement = build_statement(subject_name=f"{repo}/{path}", subject_sha256=published["sha256"],
                                predicate=predicate, created_by=f"airflow/{dag_id}")
    answer = target.client.deploy_evidence(repo, path, sign_statement(statement, target.private_key,
                                                                      target.key_alias))
    if answer.get("verified") is not True:
        # JFrog stores evidence it cannot verify (no trusted key under that alias) and says so: fail closed
        raise EvidenceError(f"JFrog stored the evidence for {repo}/{path} ({answer.get('uri')}) but did not verify "
                            f"it: upload the model-signing public key as trusted key {target.key_alias!r}")
    return {"uri": answer.get("uri"), "sha256": answer.get("sha256"), "predicate_type": PREDICATE_TYPE,
            "key_alias": target.key_alias, "verified": True, "manifest_sha256": manifest_sha256}
