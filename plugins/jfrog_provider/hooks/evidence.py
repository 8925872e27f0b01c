"""EvidenceHook: JFrog Evidence (signed in-toto statements attached to an artifact) and the trusted keys behind it.

Reference: JFrog REST APIs "Deploy Evidence" (https://jfrog.com/help/r/jfrog-rest-apis/deploy-evidence),
"Search Evidence (REST API)" (https://jfrog.com/help/r/jfrog-rest-apis/search-evidence-rest-api) and "Get
Evidence by ID (REST API)"; the Evidence service lives at `<platform>/evidence`. Trusted keys, the public keys
JFrog verifies evidence with, are uploaded to Artifactory's `api/security/keys/trusted` as jfrog-client-go
`artifactory/services/trustedkeys.go` does (`jf evd generate-key-pair --upload-public-key`). Evidence needs an
Enterprise+ subscription and Artifactory 7.104.2 or later (7.129.1 for the search and by-id REST calls).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from jfrog_provider.exceptions import JFrogApiError
from jfrog_provider.hooks.artifactory import quote_repo_path
from jfrog_provider.hooks.base import JFrogHook

DEPLOY_PATH = "/api/v1/subject"
SEARCH_PATH = "/api/v1/evidence-search"
TRUSTED_KEYS_PATH = "/api/security/keys/trusted"


class EvidenceHook(JFrogHook):
    """JFrog Evidence REST operations: deploy evidence for a file, search it, read an evidence file back."""

    hook_name = "JFrog Evidence"

    def deploy_evidence(self, repo: str, path: str, envelope: Mapping[str, Any], *,
                        provider_id: str | None = None) -> dict[str, Any]:
        """Attach a DSSE envelope to `repo/path` (JFrog REST "Deploy Evidence"); JFrog's answer, with `verified`.

        A POST: resent only when the server cannot have processed it (429, 503, refused connect), so a retry
        never files the same evidence twice.
        """
        url_path = DEPLOY_PATH + quote_repo_path(repo, path)
        if provider_id:  # jfrog-client-go sends the provider as a query parameter
            url_path += "?" + urlencode({"providerId": provider_id})
        resp = self._request("POST", url_path, service="evidence", data=json.dumps(dict(envelope)).encode(),
                             headers={"Content-Type": "application/json"})
        return self._json(resp, url_path)

    def search_evidence(self, repo: str, path: str | None = None, *, sha256: str | None = None) -> list[dict[str, Any]]:
        """Evidence whose subject is the file `repo/path` (and has `sha256`, when given), oldest first.

        "Search Evidence (REST API)" takes `repository_key`, `path`, `name` and `sha256`, but does not say whether
        `path` is the subject's folder or its full path. Only the unambiguous filters go to the server
        (repository and sha256); the subject's path is then matched exactly here, so either reading of `path`
        could not widen the answer to another file's evidence.
        """
        query = {"repository_key": repo, **({"sha256": sha256.lower()} if sha256 else {})}
        url_path = f"{SEARCH_PATH}?{urlencode(query)}"
        body = self._json(self._request("GET", url_path, service="evidence"), url_path)
        records = body.get("evidence")
        if not isinstance(records, list):
            raise JFrogApiError(200, "Search Evidence answer has no evidence list", method="GET", url_path=url_path)
        wanted = path.strip("/") if path is not None else None
        return [r for r in records if isinstance(r, dict) and r.get("repository", repo) == repo
                and (wanted is None or str(r.get("path", "")).strip("/") == wanted)]

    def get_evidence_file(self, uri: str) -> dict[str, Any]:
        """The evidence file (the DSSE envelope) at a record's `uri` (`<repo>/.evidence/...`), read from Artifactory.

        `jf evd verify` reads the envelope the same way, from the record's download path
        (jfrog-cli-evidence `verify/verifiers/evidence_parser.go`).
        """
        repo, _, path = uri.strip("/").partition("/")
        url_path = quote_repo_path(repo, path)
        return self._json(self._request("GET", url_path), url_path)

    def upload_trusted_key(self, alias: str, public_key_pem: str | bytes) -> dict[str, Any]:
        """Register a public key under `alias` as a trusted key, which JFrog verifies evidence signed by `alias` with."""
        if not alias:
            raise ValueError("a trusted key needs an alias: evidence names its signing key by it")
        key = public_key_pem.decode() if isinstance(public_key_pem, bytes) else public_key_pem
        if "PRIVATE KEY" in key:
            # refuse before sending: a private key must never leave the worker
            raise ValueError("upload_trusted_key takes a public key; a private key was given")
        resp = self._request("POST", TRUSTED_KEYS_PATH, json={"alias": alias, "key": key})
        return self._json(resp, TRUSTED_KEYS_PATH) if resp.content else {"alias": alias}

    def get_trusted_keys(self) -> list[dict[str, Any]]:
        """The trusted keys (alias, kid, fingerprint, type), without key material."""
        keys = self._json(self._request("GET", TRUSTED_KEYS_PATH), TRUSTED_KEYS_PATH).get("keys")
        return [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []
