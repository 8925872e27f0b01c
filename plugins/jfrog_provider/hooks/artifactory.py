"""ArtifactoryHook: one method per Artifactory REST operation (contract A1–A12)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from jfrog_provider.exceptions import ChecksumMismatchError, JFrogApiError
from jfrog_provider.hooks.base import JFrogHook

# contract A5: the JFrog CLI tries checksum deploy only for files of at least 10 KiB
CHECKSUM_DEPLOY_MIN_SIZE = 10 * 1024
_READ_CHUNK = 1024 * 1024
# contract A9: characters Artifactory refuses in property keys
_FORBIDDEN_KEY_CHARS = set(")(}{][*+^$\\/~`!@#%&<>;=,±§ ")

PropertyValues = str | Sequence[str]


@dataclass(frozen=True)
class FileChecksums:
    """SHA-256, SHA-1 and MD5 of a file, with its size."""

    sha256: str
    sha1: str
    md5: str
    size: int


@dataclass(frozen=True)
class DeployResult:
    """Where an artifact landed and what it hashes to."""

    repo: str
    path: str
    sha256: str
    sha1: str
    md5: str
    size: int
    uri: str
    download_uri: str
    checksum_deployed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for XCom."""
        return asdict(self)


def file_checksums(local_path: str | os.PathLike[str]) -> FileChecksums:
    """Hash a file once, feeding SHA-256, SHA-1 and MD5 from the same read."""
    sha256, sha1, md5 = hashlib.sha256(), hashlib.sha1(), hashlib.md5()
    size = 0
    with open(local_path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return FileChecksums(sha256.hexdigest(), sha1.hexdigest(), md5.hexdigest(), size)


def quote_repo_path(repo: str, path: str) -> str:
    """`/{repo}/{path}` path-escaped; a literal ';' becomes %3B so it cannot start a matrix param (§0)."""
    if not repo or "/" in repo:
        raise ValueError(f"Invalid repository key: {repo!r}")
    clean = path.strip("/")
    return f"/{quote(repo, safe='')}/{quote(clean, safe='/')}" if clean else f"/{quote(repo, safe='')}"


def _values(value: PropertyValues) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return [str(value)]
    return [str(v) for v in value]


def _check_key(key: str) -> str:
    if not key or _FORBIDDEN_KEY_CHARS & set(key):
        raise ValueError(f"Invalid Artifactory property key {key!r} (contract A9 forbidden characters)")
    return key


def matrix_params(properties: Mapping[str, PropertyValues] | None) -> str:
    """`;k=v` matrix params, key and value percent-encoded (RFC 3986), multi-values as repeated keys (A3)."""
    if not properties:
        return ""
    return "".join(
        f";{quote(_check_key(k), safe='')}={quote(v, safe='')}"
        for k, value in properties.items()
        for v in _values(value)
    )


def _escape_prop(text: str) -> str:
    # contract A9: a literal , \ | = (and ;, our separator) inside a key/value is backslash-escaped
    return "".join("\\" + ch if ch in "\\,|=;" else ch for ch in text)


def encode_properties_param(properties: Mapping[str, PropertyValues]) -> str:
    """Percent-encoded `k1=v1,v2;k2=v3` for `?properties=` (contract A9)."""
    if not properties:
        raise ValueError("properties must not be empty")
    raw = ";".join(
        f"{_escape_prop(_check_key(k))}={','.join(_escape_prop(v) for v in _values(value))}"
        for k, value in properties.items()
    )
    return quote(raw, safe="")


class ArtifactoryHook(JFrogHook):
    """Artifactory REST operations: deploy, download, storage info, properties, AQL, copy/move, delete."""

    hook_name = "JFrog Artifactory"

    def deploy_artifact(self, local_path: str | os.PathLike[str], repo: str, target_path: str,
                        properties: Mapping[str, PropertyValues] | None = None, *,
                        checksum_deploy_min_size: int = CHECKSUM_DEPLOY_MIN_SIZE) -> DeployResult:
        """Deploy a file: checksum deploy first (≥10 KiB), else one streamed PUT with checksum headers."""
        sums = file_checksums(local_path)
        url_path = quote_repo_path(repo, target_path) + matrix_params(properties)
        headers = {"X-Checksum-Sha256": sums.sha256, "X-Checksum-Sha1": sums.sha1, "X-Checksum-Md5": sums.md5}
        body: dict[str, Any] | None = None
        deployed_by_checksum = False
        if sums.size >= checksum_deploy_min_size:
            try:
                resp = self._request("PUT", url_path, headers={**headers, "X-Checksum-Deploy": "true"},
                                     data=b"")
                body, deployed_by_checksum = self._json(resp, url_path), True
            except JFrogApiError as exc:
                if exc.status != 404:  # contract A4: unknown checksum → 404, then upload the bytes
                    raise
        if body is None:
            if sums.size == 0:  # requests would switch an empty file object to chunked encoding
                resp = self._request("PUT", url_path, headers=headers, data=b"")
            else:
                resp = self._request(
                    "PUT", url_path, headers=headers,
                    data_opener=lambda: open(local_path, "rb"),  # noqa: SIM115 - closed by _request per attempt
                )
            body = self._json(resp, url_path)
        checksums = body.get("checksums") if isinstance(body, dict) else None
        server_sha256 = checksums.get("sha256") if isinstance(checksums, dict) else None
        if server_sha256 != sums.sha256:
            # contract A3: client-go reads checksums.sha256 from the ItemCreated body; it must be ours
            raise ChecksumMismatchError(
                None, f"server stored sha256 {server_sha256!r} for {repo}/{target_path}, expected {sums.sha256}",
                method="PUT", url_path=url_path)
        path = str(body.get("path") or target_path).lstrip("/")
        return DeployResult(
            repo=str(body.get("repo") or repo), path=path, sha256=sums.sha256, sha1=sums.sha1, md5=sums.md5,
            size=sums.size, uri=str(body.get("uri") or ""),
            download_uri=str(body.get("downloadUri") or self.artifact_url(repo, path)),
            checksum_deployed=deployed_by_checksum,
        )

    def download_artifact(self, repo: str, path: str, local_path: str | os.PathLike[str]) -> str:
        """Download to local_path atomically after verifying X-Checksum-Sha256; return the sha256."""
        url_path = quote_repo_path(repo, path)
        dest = Path(local_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        resp = self._request("GET", url_path, stream=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with resp, os.fdopen(fd, "wb") as fh:
                expected = (resp.headers.get("X-Checksum-Sha256") or "").lower()
                digest = hashlib.sha256()
                try:
                    for chunk in resp.iter_content(_READ_CHUNK):
                        digest.update(chunk)
                        fh.write(chunk)
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                    raise JFrogApiError(None, f"download interrupted: {type(exc).__name__}", method="GET",
                                        url_path=url_path) from exc
                fh.flush()
                os.fsync(fh.fileno())
            actual = digest.hexdigest()
            if not expected:
                raise ChecksumMismatchError(None, "server sent no X-Checksum-Sha256; refusing unverified file",
                                            method="GET", url_path=url_path)
            if actual != expected:
                raise ChecksumMismatchError(None, f"downloaded sha256 {actual} != X-Checksum-Sha256 {expected}",
                                            method="GET", url_path=url_path)
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return actual

    def get_file_info(self, repo: str, path: str) -> dict[str, Any]:
        """File or folder info (contract A7)."""
        url_path = "/api/storage" + quote_repo_path(repo, path)
        return self._json(self._request("GET", url_path), url_path)

    def get_item_properties(self, repo: str, path: str) -> dict[str, list[str]]:
        """Properties of an item; {} when it has none (contract A9)."""
        url_path = "/api/storage" + quote_repo_path(repo, path) + "?properties"
        try:
            resp = self._request("GET", url_path)
        except JFrogApiError as exc:
            # contract A9: "No properties could be found" is empty, "Unable to find item" is an error
            if exc.status == 404 and "no properties" in exc.message.lower():
                return {}
            raise
        props = self._json(resp, url_path).get("properties") or {}
        return {str(k): [str(v) for v in _values(vals)] for k, vals in props.items()}

    def set_item_properties(self, repo: str, path: str, properties: Mapping[str, PropertyValues],
                            recursive: bool = False) -> None:
        """Set properties (listed keys replaced, others untouched) on an item (contract A9)."""
        url_path = (f"/api/storage{quote_repo_path(repo, path)}?properties={encode_properties_param(properties)}"
                    f"&recursive={int(recursive)}")
        self._request("PUT", url_path)

    def delete_item_properties(self, repo: str, path: str, keys: Sequence[str], recursive: bool = False) -> None:
        """Delete property keys from an item (contract A9)."""
        if isinstance(keys, str) or not keys:
            raise ValueError("keys must be a non-empty sequence of property keys")
        joined = ",".join(quote(_check_key(k), safe="") for k in keys)
        self._request("DELETE", f"/api/storage{quote_repo_path(repo, path)}?properties={joined}"
                                f"&recursive={int(recursive)}")

    def search_aql(self, query: str) -> list[dict[str, Any]]:
        """Run an AQL query and return its `results` (contract A10)."""
        url_path = "/api/search/aql"
        resp = self._request("POST", url_path, data=query.encode("utf-8"),
                             headers={"Content-Type": "text/plain"}, idempotent=True)  # AQL only reads
        results = self._json(resp, url_path).get("results")
        if not isinstance(results, list):
            raise JFrogApiError(resp.status_code, "AQL answer has no results list", method="POST",
                                url_path=url_path)
        return results

    def copy_item(self, src_repo: str, src_path: str, dst_repo: str, dst_path: str,
                  dry_run: bool = False) -> dict[str, Any]:
        """Copy an item (contract A11); returns the `messages` body."""
        # copying the same source onto the same target twice yields the same state: safe to retry
        return self._copy_or_move("copy", src_repo, src_path, dst_repo, dst_path, dry_run, idempotent=True)

    def move_item(self, src_repo: str, src_path: str, dst_repo: str, dst_path: str,
                  dry_run: bool = False) -> dict[str, Any]:
        """Move an item (contract A11); returns the `messages` body."""
        return self._copy_or_move("move", src_repo, src_path, dst_repo, dst_path, dry_run, idempotent=dry_run)

    def _copy_or_move(self, op: str, src_repo: str, src_path: str, dst_repo: str, dst_path: str, dry_run: bool,
                      idempotent: bool) -> dict[str, Any]:
        url_path = f"/api/{op}{quote_repo_path(src_repo, src_path)}"
        target = quote_repo_path(dst_repo, dst_path)
        resp = self._request("POST", url_path, params={"to": target, "dry": int(dry_run)}, idempotent=idempotent)
        body = self._json(resp, url_path)
        errors = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("level") == "ERROR"]
        if errors:
            raise JFrogApiError(resp.status_code, str(errors[0].get("message")), method="POST", url_path=url_path)
        return body

    def delete_item(self, repo: str, path: str) -> None:
        """Delete a file or folder (contract A12)."""
        if not path.strip("/"):
            raise ValueError("refusing to delete a repository root")
        self._request("DELETE", quote_repo_path(repo, path))

    def create_local_repository(self, key: str, *, package_type: str = "generic", xray_index: bool = True,
                                description: str = "") -> None:
        """Create a local repository (contract A15)."""
        self._request("PUT", f"/api/repositories/{quote(key, safe='')}", json={
            "key": key, "rclass": "local", "packageType": package_type, "xrayIndex": xray_index,
            "description": description})

    def get_version(self) -> dict[str, Any]:
        """Artifactory version (contract A2)."""
        return self._json(self._request("GET", "/api/system/version"), "/api/system/version")

    def artifact_url(self, repo: str, path: str) -> str:
        """Download URL of an artifact."""
        return self.config.artifactory_url + quote_repo_path(repo, path)

    def ui_url(self, repo: str, path: str) -> str:
        """Artifactory UI tree URL of an artifact."""
        return f"{self.config.platform_url}/ui/repos/tree/General/{quote(repo, safe='')}/{quote(path.strip('/'))}"

    @staticmethod
    def _json(resp: requests.Response, url_path: str) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError as exc:
            raise JFrogApiError(resp.status_code, f"expected JSON, got {resp.text[:200]!r}",
                                method=resp.request.method, url_path=url_path) from exc
        if not isinstance(body, dict):
            raise JFrogApiError(resp.status_code, "expected a JSON object", method=resp.request.method,
                                url_path=url_path)
        return body
