"""The local server's model of JFrog Evidence and of the trusted keys it verifies evidence with; NOT JFrog.

Evidence service (under `/evidence`):
- `POST /api/v1/subject/{repo}/{path}` deploys a DSSE envelope whose payload is an in-toto Statement v1 about
  that file (JFrog REST "Deploy Evidence", https://jfrog.com/help/r/jfrog-rest-apis/deploy-evidence; the body
  is the envelope as jfrog-client-go `evidence/services/create.go` sends it). The subject must exist and the
  statement's subject digest must be its sha256. Each signature's `keyid` is looked up as a trusted-key alias:
  a signature that verifies marks the evidence verified; a signature under a registered alias that does not
  verify is refused (400), as jfrog-client-go's own tests expect ("invalid signature"); an alias with no key
  registered is stored unverified, as JFrog's CLI reports it ("created but not verified due to missing/invalid
  public key", jfrog-cli-evidence `create/create_base.go`). Answers 201 with the Deploy Evidence sample's fields
  plus `verified`. The envelope is also stored as a file at `{repo}/.evidence/...`, where JFrog keeps it and
  where `jf evd verify` downloads it from (jfrog-cli-evidence `verify/verifiers/evidence_parser.go`).
- `GET /api/v1/evidence-search?repository_key=&path=&name=&sha256=` lists evidence ("Search Evidence (REST
  API)", https://jfrog.com/help/r/jfrog-rest-apis/search-evidence-rest-api): `path` matches the subject's path
  or a folder above it, `name` a part of its file name, `sha256` its digest exactly.
- `GET /api/v1/evidence-by-id/{id}` answers one record ("Get Evidence by ID (REST API)").

Trusted keys (Artifactory, `/artifactory/api/security/keys/trusted`): `POST {"alias", "key"}` registers a public
key, `GET` lists `{"keys": [...]}` (jfrog-client-go `artifactory/services/trustedkeys.go`, used by
`jf evd generate-key-pair --upload-public-key`). JFrog documents no status for a duplicate alias; 409 is used.

Where JFrog does not say: the first hash in an evidence `uri` is modelled as the sha256 of the subject path, and a
predicate type JFrog has no category for is in category "Other".
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import secrets
from typing import Any
from urllib.parse import unquote

from devtools.jfrog_compat.server import ApiError, _now

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
_SCHEMA = """
CREATE TABLE IF NOT EXISTS evidence (
    id TEXT PRIMARY KEY, repo TEXT NOT NULL, path TEXT NOT NULL, subject_sha256 TEXT NOT NULL,
    created TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS evidence_subject ON evidence (repo, path);
CREATE TABLE IF NOT EXISTS trusted_keys (alias TEXT PRIMARY KEY, pem TEXT NOT NULL, record TEXT NOT NULL);
"""
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _db(store: Any) -> Any:
    # the tables live in the server's own database, so they share its lock, its restarts and its close()
    with store.lock:
        if not getattr(store, "_evidence_tables", False):
            store.db.executescript(_SCHEMA)
            store._evidence_tables = True
    return store.db


def _body(handler: Any) -> bytes:
    data = bytearray()
    for chunk in handler._iter_body():
        data += chunk
        if len(data) > MAX_ENVELOPE_BYTES:
            handler.close_connection = True
            raise ApiError(413, f"Evidence file exceeds {MAX_ENVELOPE_BYTES} bytes")
    return bytes(data)


def _b64(value: Any, what: str) -> bytes:
    # DSSE envelope.md: standard or URL-safe base64
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"Invalid evidence file: {what} is not base64")
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(value.encode("ascii"), altchars=altchars, validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            continue
    raise ApiError(400, f"Invalid evidence file: {what} is not base64")


def _pae(payload_type: str, payload: bytes) -> bytes:
    # DSSE protocol.md, written out here rather than imported, so the stand-in does not share the client's code
    kind = payload_type.encode()
    return b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" " + str(len(payload)).encode() + b" " + payload


def _load_public_key(pem: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ApiError(400, "The key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise ApiError(400, "Unsupported key type: use ECDSA, RSA or ED25519")
    return key


def _signature_verifies(pem: str, message: bytes, sig: bytes) -> bool:
    """The key types and schemes of jfrog-cli-evidence `cryptox`: ECDSA (hash by curve size), RSA-PSS, Ed25519."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

    key = _load_public_key(pem)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = key.curve.key_size
            digest = hashes.SHA256() if size <= 256 else hashes.SHA384() if size <= 384 else hashes.SHA512()
            key.verify(sig, message, ec.ECDSA(digest))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, message)
        else:
            key.verify(sig, message, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO),
                       hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _parse(body: bytes) -> tuple[bytes, list[dict[str, Any]], dict[str, Any]]:
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Invalid evidence file: not JSON") from None
    if not isinstance(envelope, dict):
        raise ApiError(400, "Invalid evidence file: not a JSON object")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise ApiError(400, f"Invalid evidence file: payloadType must be {PAYLOAD_TYPE}")
    payload = _b64(envelope.get("payload"), "payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures or not all(
            isinstance(s, dict) and isinstance(s.get("keyid"), str) and s.get("keyid") for s in signatures):
        raise ApiError(400, "Invalid evidence file: signatures must list {keyid, sig}")
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Invalid evidence file: the payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise ApiError(400, f"Invalid evidence file: the payload is not an in-toto statement ({STATEMENT_TYPE})")
    if not isinstance(statement.get("predicateType"), str) or not statement["predicateType"]:
        raise ApiError(400, "Invalid evidence file: the statement has no predicateType")
    if not isinstance(statement.get("subject"), list) or not statement["subject"]:
        raise ApiError(400, "Invalid evidence file: the statement has no subject")
    return payload, signatures, statement


def predicate_slug(predicate_type: str) -> str:
    """JFrog's short name of a predicate type: https://jfrog.com/evidence/code-review/v0.1 -> code-review."""
    parts = [p for p in re.split(r"[/:]", predicate_type) if p]
    if len(parts) > 1 and re.fullmatch(r"v\d[\w.]*", parts[-1]):
        parts.pop()
    return re.sub(r"[^A-Za-z0-9._-]+", "-", parts[-1] if parts else "evidence")


def evidence_api(handler: Any, sub: str, method: str) -> None:
    """Answer a request under /evidence (sub is the path after it)."""
    handler._require_user()
    if sub.startswith("/api/v1/subject/") and method == "POST":
        return _deploy(handler, sub[len("/api/v1/subject/"):])
    if sub == "/api/v1/evidence-search" and method == "GET":
        return _search(handler)
    if sub.startswith("/api/v1/evidence-by-id/") and method == "GET":
        row = _db(handler.server.owner.store).execute(
            "SELECT record FROM evidence WHERE id=?", (unquote(sub.rsplit("/", 1)[1]),)).fetchone()
        if row is None:
            raise ApiError(404, "Evidence not found")
        return handler._json(200, json.loads(row["record"]))
    raise ApiError(404, "Not Found")


def _deploy(handler: Any, raw_subject: str) -> None:
    store = handler.server.owner.store
    repo, path = handler._split_repo_path(raw_subject)
    if not repo or not path:
        raise ApiError(400, "Subject must be <repo>/<path>/<name> or <repo>/<name>")
    handler._need_repo(repo)
    item = store.item(repo, path)
    if item is None:
        raise ApiError(404, f"Subject '{repo}/{path}' not found")
    body = _body(handler)
    payload, signatures, statement = _parse(body)
    digests = [s.get("digest", {}).get("sha256") for s in statement["subject"] if isinstance(s, dict)]
    if item["sha256"] not in digests:
        raise ApiError(400, f"The statement's subject sha256 {digests} does not match '{repo}/{path}' "
                            f"(sha256 {item['sha256']})")
    message = _pae(PAYLOAD_TYPE, payload)
    db = _db(store)
    alias, refused = None, []
    for sig in signatures:
        row = db.execute("SELECT pem FROM trusted_keys WHERE alias=?", (sig["keyid"],)).fetchone()
        if row is None:
            continue
        if _signature_verifies(row["pem"], message, _b64(sig.get("sig"), f"signature {sig['keyid']}")):
            alias = sig["keyid"]
            break
        refused.append(sig["keyid"])
    if alias is None and refused:
        raise ApiError(400, f"Evidence signature verification failed: invalid signature for key alias "
                            f"'{refused[0]}'")
    created = _now()
    slug = predicate_slug(statement["predicateType"])
    millis = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    name = f"{slug}-{millis}-{secrets.token_hex(4)}.json"
    evidence_path = f".evidence/{hashlib.sha256(path.encode()).hexdigest()}/{item['sha256']}/{name}"
    tmp, sums, size = store.ingest([body])
    store.commit_blob(tmp, sums["sha256"])
    store.put_item(repo, evidence_path, sums, size, {"sha256": None, "sha1": None, "md5": None}, handler.user,
                   None)
    record = {
        "id": hashlib.sha256(f"{repo}/{evidence_path}".encode()).hexdigest(),
        "repository": repo, "path": path, "subject": {"name": "", "version": ""}, "name": name,
        "uri": f"{repo}/{evidence_path}", "sha256": sums["sha256"],
        "predicate_category": "Other", "predicate_type": statement["predicateType"], "predicate_slug": slug,
        "created_at": created, "created_by": handler.user, "verified": alias is not None,
        "signing_key": {"alias": alias} if alias else None,
    }
    with store.lock:
        db.execute("INSERT INTO evidence VALUES (?,?,?,?,?,?)",
                   (record["id"], repo, path, item["sha256"], created, json.dumps(record)))
    handler._json(201, record)


def _search(handler: Any) -> None:
    query = {k: v[-1] for k, v in handler._query().items()}
    repo = query.get("repository_key", "")
    if not repo:
        raise ApiError(400, "repository_key is required")
    handler._need_repo(repo)
    folder = query.get("path", "").strip("/")
    name, sha256 = query.get("name", ""), query.get("sha256", "").lower()
    if sha256 and not _SHA256.fullmatch(sha256):
        raise ApiError(400, "sha256 must be a SHA-256 hex digest")
    rows = _db(handler.server.owner.store).execute(
        "SELECT path, subject_sha256, record FROM evidence WHERE repo=? ORDER BY created, id", (repo,)).fetchall()
    found = [json.loads(r["record"]) for r in rows
             if (not folder or r["path"] == folder or r["path"].startswith(folder + "/"))
             and (not name or name in r["path"].rsplit("/", 1)[-1])
             and (not sha256 or r["subject_sha256"] == sha256)]
    handler._json(200, {"evidence": found})


def trusted_keys_api(handler: Any, method: str) -> None:
    """Answer /artifactory/api/security/keys/trusted: register (POST) or list (GET) trusted public keys."""
    handler._require_user()
    store = handler.server.owner.store
    db = _db(store)
    if method == "GET":
        rows = db.execute("SELECT record FROM trusted_keys ORDER BY alias").fetchall()
        return handler._json(200, {"keys": [json.loads(r["record"]) for r in rows]})
    if method != "POST":
        raise ApiError(405, "Method not allowed")
    try:
        body = json.loads(_body(handler))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not JSON") from None
    alias, pem = (body.get("alias"), body.get("key")) if isinstance(body, dict) else (None, None)
    if not isinstance(alias, str) or not alias.strip() or not isinstance(pem, str):
        raise ApiError(400, "Both 'alias' and 'key' (a PEM public key) are required")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key = _load_public_key(pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    fingerprint = hashlib.sha256(der).hexdigest()
    kind = ("ecdsa" if isinstance(key, ec.EllipticCurvePublicKey)
            else "ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "rsa")  # jfrog-cli-evidence key types
    record = {"kid": fingerprint[:16], "type": kind,
              "alias": alias, "fingerprint": fingerprint, "issuedBy": handler.user,
              "issued": int(dt.datetime.now(dt.UTC).timestamp() * 1000), "expiry": 0}
    with store.lock:
        if db.execute("SELECT 1 FROM trusted_keys WHERE alias=?", (alias,)).fetchone():
            raise ApiError(409, f"A trusted key with alias '{alias}' already exists")
        db.execute("INSERT INTO trusted_keys VALUES (?,?,?)", (alias, pem, json.dumps(record)))
    handler._json(201, record)
