"""ArtifactoryHook: one method per Artifactory REST operation, named after its page in the JFrog REST APIs.

Reference: JFrog REST APIs, https://jfrog.com/help/r/jfrog-rest-apis (Deploy Artifact, Deploy Artifact by
Checksum, Retrieve Artifact, File Info, Item Properties, Artifactory Query Language, Copy Item, Move Item,
Delete Item, Build Upload, Build Promotion, Create Repository). Where the docs are silent or disagree with
JFrog's own clients, the comment at the spot says which reading is followed and why.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import mmap
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from jfrog_provider.exceptions import ChecksumMismatchError, JFrogApiError
from jfrog_provider.hooks.base import JFrogHook, Response
from jfrog_provider.properties import (
    PropertyValues,
    check_property_key,
    encode_properties_param,
    matrix_params,
    property_values,
)

# the JFrog CLI tries checksum deploy only for files of at least 10 KiB (jfrog-client-go
# `artifactory/services/upload.go`, DefaultMinChecksumDeploy)
CHECKSUM_DEPLOY_MIN_SIZE = 10 * 1024
_READ_CHUNK = 1024 * 1024
# One slice per send call, no copy out of the mapping. urllib3 sends the body under the connect timeout
# (at most 10 s), so a slice must fit a slow link in that time: 1 MiB needs about 1 Mbit/s.
_SEND_CHUNK = 1024 * 1024
# From this size a deploy to a path that holds nothing yet hashes the slices as it sends them: one read pass,
# where hashing first added 0.15 s to a 0.64-0.9 s upload of 200 MB on loopback (bench/bench_upload.py). Smaller
# files, and any path that exists (a retried or repeated publish), still hash first for checksum deploy.
SINGLE_PASS_MIN_SIZE = 64 * 1024 * 1024
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")
# AQL drops the properties of every row when include() names them and the query sorts or pages (JFrog
# "Artifactory Query Language", Limitations; jfrog-cli issues 957 and 1374)
AQL_PATH = "/api/search/aql"
_AQL_PROPERTY_INCLUDE = re.compile(r'\.include\([^)]*"(?:property(?:\.[^"]*)?|@[^"]*)"')
_AQL_SORT_OR_PAGE = re.compile(r"\.(?:sort|limit|offset)\s*\(")

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


class _MappedFile:
    """A read-only mapping of a file: hashing and the upload read the same pages, so the file is read once."""

    def __init__(self, local_path: str | os.PathLike[str]) -> None:
        self._file = open(local_path, "rb")  # held open: `changed` asks about this inode
        try:
            self._written = self._written_stamp()
            # mmap refuses empty files. Truncating a mapped file in place would fault the reader: deploy files
            # written by rename, as the DAGs do (include/mlops/files.py); a rewrite of the path leaves the
            # mapped inode intact.
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self._written[0] else None
        except BaseException:
            self._file.close()
            raise
        self.size = len(self._map) if self._map is not None else 0  # the length mapped, should it have grown
        self.view = memoryview(self._map) if self._map is not None else memoryview(b"")

    def _written_stamp(self) -> tuple[int, int]:
        # size and mtime move when the content is written; ctime also moves when another file is renamed over
        # the path (the mapped inode loses a link), which leaves these bytes as they were
        stat = os.fstat(self._file.fileno())
        return stat.st_size, stat.st_mtime_ns

    def changed(self) -> bool:
        """Whether the file's content was written to since it was mapped."""
        return self._written_stamp() != self._written

    def chunks(self) -> Iterator[memoryview]:
        """The content in large zero-copy slices, from byte 0 on every call (a retry re-sends it all)."""
        for start in range(0, self.size, _SEND_CHUNK):
            with self.view[start : start + _SEND_CHUNK] as part:
                yield part

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # never mask the error that brought us here
            self.view.release()
        if self._map is not None:
            # a slice still held by a failed request keeps the mapping open; it closes when that is collected
            with contextlib.suppress(BufferError):
                self._map.close()
        self._file.close()


class _StreamBody:
    """A request body of known length that requests sends with Content-Length, slice by slice."""

    def __init__(self, mapped: _MappedFile) -> None:
        self._mapped = mapped

    def __len__(self) -> int:
        return self._mapped.size

    def __iter__(self) -> Iterator[memoryview]:
        return self._mapped.chunks()


class _HashingBody(_StreamBody):
    """A streamed body that hashes the very slices it sends: `sha256` is set once the last one went out."""

    def __init__(self, mapped: _MappedFile) -> None:
        super().__init__(mapped)
        self.sha256: str | None = None

    def __iter__(self) -> Iterator[memoryview]:
        self.sha256 = None  # a retry sends, and hashes, from byte 0 again
        digest = hashlib.sha256()
        for part in self._mapped.chunks():
            digest.update(part)
            yield part
        self.sha256 = digest.hexdigest()


def file_checksums(local_path: str | os.PathLike[str]) -> FileChecksums:
    """SHA-256, SHA-1 and MD5 of a file, hashed from one mapping of it."""
    mapped = _MappedFile(local_path)
    try:
        view = mapped.view
        return FileChecksums(hashlib.sha256(view).hexdigest(), hashlib.sha1(view).hexdigest(),
                             hashlib.md5(view).hexdigest(), mapped.size)
    finally:
        mapped.close()


def quote_build_segment(value: str | int) -> str:
    """Path-escape a build name/number: '/' → %2F, ';' → %3B (jfrog-client-go `buildUrlWithEscapingSlash`)."""
    text = str(value)
    if not text:
        raise ValueError("build name and number must not be empty")
    return quote(text, safe="")


def quote_repo_path(repo: str, path: str) -> str:
    """`/{repo}/{path}` path-escaped; a literal ';' becomes %3B so it cannot start a matrix param.

    jfrog-client-go `utils/utils.go` `BuildUrl` escapes the same way.
    """
    if not repo or "/" in repo:
        raise ValueError(f"Invalid repository key: {repo!r}")
    clean = path.strip("/")
    return f"/{quote(repo, safe='')}/{quote(clean, safe='/')}" if clean else f"/{quote(repo, safe='')}"


def aql_time(value: Any) -> dt.datetime:
    """An AQL `created`/`modified` value as an aware datetime (the epoch when absent), for client-side sorting."""
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            when = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise JFrogApiError(None, f"AQL time {value!r} is not ISO-8601") from None
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(0, dt.UTC)


def _check_aql(query: str) -> None:
    if _AQL_PROPERTY_INCLUDE.search(query) and _AQL_SORT_OR_PAGE.search(query):
        raise ValueError("AQL drops properties from every row when include() names them and the query uses sort, "
                         "limit or offset; include item fields only and read properties with get_item_properties")


def _aql_results(body: Any, status: int) -> list[dict[str, Any]]:
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise JFrogApiError(status, "AQL answer has no results list", method="POST", url_path=AQL_PATH)
    return results


def _no_error_messages(body: dict[str, Any], status: int, url_path: str) -> dict[str, Any]:
    """The body, unless a message has level error: copy, move and promotion may answer 200 and still fail.

    Levels are compared case-insensitively: the Build Promotion doc uses INFO/WARN/ERROR, the Move Item sample
    a lower-case "error".
    """
    errors = [m for m in body.get("messages") or [] if isinstance(m, dict)
              and str(m.get("level", "")).strip().upper() == "ERROR"]
    if errors:
        raise JFrogApiError(status, "; ".join(str(m.get("message")) for m in errors), method="POST",
                            url_path=url_path)
    return body


class ArtifactoryHook(JFrogHook):
    """Artifactory REST operations: deploy, download, storage info, properties, AQL, copy/move, delete."""

    hook_name = "JFrog Artifactory"

    def deploy_artifact(self, local_path: str | os.PathLike[str], repo: str, target_path: str,
                        properties: Mapping[str, PropertyValues] | None = None, *,
                        checksum_deploy_min_size: int = CHECKSUM_DEPLOY_MIN_SIZE,
                        single_pass_min_size: int | None = SINGLE_PASS_MIN_SIZE) -> DeployResult:
        """Deploy a file: checksum deploy first (≥10 KiB), else one streamed PUT; big files to new paths in one pass."""
        url_path = quote_repo_path(repo, target_path) + matrix_params(properties)
        mapped = _MappedFile(local_path)
        try:
            if (single_pass_min_size is not None and mapped.size >= single_pass_min_size
                    and not self._holds(repo, target_path)):
                return self._deploy_single_pass(mapped, url_path, repo, target_path)
            # Hash before any byte is sent, as the JFrog CLI does. SHA-256 goes in the header: with the default
            # client-checksum policy Artifactory answers 409 when a client checksum differs from the bytes it got
            # ("Deploy Artifact"), so an existing artifact is never replaced by bytes that went wrong on the way.
            # SHA-1 and MD5 prove nothing more, so they come from Artifactory's answer, as JFrog's own ML SDK
            # (frogml) sends SHA-256 alone: hashing SHA-1 here too took a core the server needed, about 0.3 ms of
            # a 1 MB deploy (bench/bench_upload.py).
            sha256 = hashlib.sha256(mapped.view).hexdigest()
            checksum_deployed = mapped.size >= checksum_deploy_min_size
            resp = None
            if checksum_deployed:
                probe = {"X-Checksum-Sha256": sha256, "X-Checksum-Deploy": "true"}
                try:
                    resp = self._request("PUT", url_path, data=b"", headers=probe, lean=True)
                except JFrogApiError as exc:
                    # "Deploy Artifact by Checksum": an unknown checksum is 404, then the bytes go up
                    if exc.status != 404:
                        raise
                    checksum_deployed = False
            if resp is None:
                # requests (which takes a redirected or proxied call) sends an empty iterable chunked: send b""
                data = _StreamBody(mapped) if mapped.size else b""
                resp = self._request("PUT", url_path, headers={"X-Checksum-Sha256": sha256}, data=data, lean=True)
            return self._deploy_result(resp, url_path, repo, target_path, sha256, mapped.size,
                                       checksum_deployed=checksum_deployed)
        finally:
            mapped.close()

    def _holds(self, repo: str, path: str) -> bool:
        """Whether Artifactory holds anything at repo/path ("File Info"); only a 404 counts as nothing."""
        try:
            # lean: bounded at LEAN_ANSWER_LIMIT, and a folder listing too long for that still counts as held
            self._request("GET", "/api/storage" + quote_repo_path(repo, path), headers={}, data=b"", lean=True)
        except JFrogApiError as exc:
            return exc.status != 404
        return True

    def _deploy_single_pass(self, mapped: _MappedFile, url_path: str, repo: str, target_path: str) -> DeployResult:
        """PUT a file to a path that held nothing, hashing as it goes; remove what was stored if it does not match."""
        # With no client checksum Artifactory computes all three and answers with them (jfrog-client-go reads
        # `checksums.sha256` from that answer). The bytes it stored must hash to the bytes sent, and the file
        # must not have been written to meanwhile; otherwise the new path is deleted again, so nothing stands
        # there that this file did not hold. Nothing was there before, so nothing is lost.
        body = _HashingBody(mapped)
        resp = self._request("PUT", url_path, headers={}, data=body, lean=True)
        try:
            if mapped.changed():
                raise ChecksumMismatchError(resp.status_code, "the local file was written to while it was uploaded",
                                            method="PUT", url_path=url_path)
            # urllib3 sends the whole body before it reads an answer, so the digest is there
            return self._deploy_result(resp, url_path, repo, target_path, body.sha256 or "", mapped.size,
                                       checksum_deployed=False)
        except JFrogApiError as exc:
            try:
                self.delete_item(repo, target_path)
            except JFrogApiError as cleanup:
                raise type(exc)(exc.status, f"{exc.message}; removing what was stored failed, delete {repo}/"
                                            f"{target_path} by hand: {cleanup.message}",
                                method="PUT", url_path=url_path) from exc
            raise type(exc)(exc.status, f"{exc.message}; what was stored at {repo}/{target_path} was removed",
                            method="PUT", url_path=url_path) from exc

    def _deploy_result(self, resp: Response, url_path: str, repo: str, target_path: str, sha256: str, size: int,
                       *, checksum_deployed: bool) -> DeployResult:
        body = self._json(resp, url_path)
        checksums = body.get("checksums") if isinstance(body.get("checksums"), dict) else {}
        # jfrog-client-go reads the checksums from the ItemCreated answer: the stored SHA-256 must be ours, and
        # the SHA-1 and MD5 reported beside it must at least be digests of their kind
        if checksums.get("sha256") != sha256:
            raise ChecksumMismatchError(
                None, f"server stored sha256 {checksums.get('sha256')!r} for {repo}/{target_path}, expected "
                      f"{sha256!r}", method="PUT", url_path=url_path)
        for kind, pattern in (("sha1", _SHA1_HEX), ("md5", _MD5_HEX)):
            value = checksums.get(kind)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise ChecksumMismatchError(None, f"server reported {kind} {value!r} for {repo}/{target_path}, not "
                                                  f"a {kind.upper()} digest", method="PUT", url_path=url_path)
        path = str(body.get("path") or target_path).lstrip("/")
        return DeployResult(
            repo=str(body.get("repo") or repo), path=path, sha256=sha256, sha1=checksums["sha1"],
            md5=checksums["md5"], size=size, uri=str(body.get("uri") or ""),
            download_uri=str(body.get("downloadUri") or self.artifact_url(repo, path)),
            checksum_deployed=checksum_deployed,
        )

    def download_artifact(self, repo: str, path: str, local_path: str | os.PathLike[str]) -> str:
        """Download to local_path atomically after verifying its SHA-256; return the sha256.

        The expected SHA-256 is the answer's X-Checksum-Sha256, or the item's stored checksum from the storage
        API when the answer has none: a repository with "Direct Cloud Storage Download" answers 302 to a signed
        storage URL whose answer carries no X-Checksum headers (JFrog "Direct Cloud Storage Download";
        jfrog-client-go `artifactory/services/download.go` takes the expected checksum from the item's metadata).
        requests follows the redirect and drops Authorization when it leaves the Artifactory host.
        """
        url_path = quote_repo_path(repo, path)
        dest = Path(local_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        resp = self._request("GET", url_path, stream=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with resp, os.fdopen(fd, "wb") as fh:
                expected = (resp.headers.get("X-Checksum-Sha256") or "").lower()
                source = "X-Checksum-Sha256"
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
                expected, source = self._stored_sha256(repo, path), "the storage API's checksums.sha256"
            if actual != expected:
                raise ChecksumMismatchError(None, f"downloaded sha256 {actual} != {source} {expected}",
                                            method="GET", url_path=url_path)
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return actual

    def _stored_sha256(self, repo: str, path: str) -> str:
        sha256 = (self.get_file_info(repo, path).get("checksums") or {}).get("sha256")
        if not isinstance(sha256, str) or len(sha256) != 64:
            raise ChecksumMismatchError(None, f"{repo}/{path}: the download carried no X-Checksum-Sha256 and the "
                                              f"storage API lists no sha256; refusing an unverified file",
                                        method="GET", url_path="/api/storage" + quote_repo_path(repo, path))
        return sha256.lower()

    def get_file_info(self, repo: str, path: str) -> dict[str, Any]:
        """File or folder info (JFrog REST "File Info" / "Folder Info")."""
        url_path = "/api/storage" + quote_repo_path(repo, path)
        return self._json(self._request("GET", url_path), url_path)

    def get_item_properties(self, repo: str, path: str) -> dict[str, list[str]]:
        """Properties of an item; {} when it has none (JFrog REST "Item Properties")."""
        url_path = "/api/storage" + quote_repo_path(repo, path) + "?properties"
        try:
            resp = self._request("GET", url_path)
        except JFrogApiError as exc:
            # "No properties could be found" means none (jfrog-client-go `props.go`); a missing item is an error
            if exc.status == 404 and "no properties" in exc.message.lower():
                return {}
            raise
        props = self._json(resp, url_path).get("properties") or {}
        return {str(k): [str(v) for v in property_values(vals)] for k, vals in props.items()}

    def set_item_properties(self, repo: str, path: str, properties: Mapping[str, PropertyValues],
                            recursive: bool = False) -> None:
        """Set properties (listed keys replaced, others untouched) on an item (JFrog REST "Set Item Properties")."""
        url_path = (f"/api/storage{quote_repo_path(repo, path)}?properties={encode_properties_param(properties)}"
                    f"&recursive={int(recursive)}")
        self._request("PUT", url_path)

    def delete_item_properties(self, repo: str, path: str, keys: Sequence[str], recursive: bool = False) -> None:
        """Delete property keys from an item (JFrog REST "Delete Item Properties")."""
        if isinstance(keys, str) or not keys:
            raise ValueError("keys must be a non-empty sequence of property keys")
        joined = ",".join(quote(check_property_key(k), safe="") for k in keys)
        self._request("DELETE", f"/api/storage{quote_repo_path(repo, path)}?properties={joined}"
                                f"&recursive={int(recursive)}")

    def search_aql(self, query: str) -> list[dict[str, Any]]:
        """Run an AQL query and return its `results` (JFrog REST "Artifactory Query Language").

        Refuses, before sending, a query whose include() names properties while it sorts or pages: Artifactory
        answers it with rows stripped of their properties, which would read as "no properties".
        """
        _check_aql(query)
        # AQL only reads: safe to resend
        resp = self._request("POST", AQL_PATH, data=query.encode("utf-8"), headers={"Content-Type": "text/plain"},
                             idempotent=True)
        return _aql_results(self._json(resp, AQL_PATH), resp.status_code)

    async def asearch_aql(self, query: str) -> list[dict[str, Any]]:
        """`search_aql` on the async client, for triggers."""
        _check_aql(query)
        resp = await self._arequest("POST", AQL_PATH, content=query.encode("utf-8"),
                                    headers={"Content-Type": "text/plain"}, idempotent=True)
        try:
            body = resp.json()
        except ValueError as exc:
            raise JFrogApiError(resp.status_code, f"expected JSON, got {self._excerpt(resp.text, 200)!r}",
                                method="POST", url_path=AQL_PATH) from exc
        return _aql_results(body, resp.status_code)

    def copy_item(self, src_repo: str, src_path: str, dst_repo: str, dst_path: str,
                  dry_run: bool = False) -> dict[str, Any]:
        """Copy an item (JFrog REST "Copy Item"); returns the `messages` body."""
        # copying the same source onto the same target twice yields the same state: safe to retry
        return self._copy_or_move("copy", src_repo, src_path, dst_repo, dst_path, dry_run, idempotent=True)

    def move_item(self, src_repo: str, src_path: str, dst_repo: str, dst_path: str,
                  dry_run: bool = False) -> dict[str, Any]:
        """Move an item (JFrog REST "Move Item"); returns the `messages` body."""
        return self._copy_or_move("move", src_repo, src_path, dst_repo, dst_path, dry_run, idempotent=dry_run)

    def _copy_or_move(self, op: str, src_repo: str, src_path: str, dst_repo: str, dst_path: str, dry_run: bool,
                      idempotent: bool) -> dict[str, Any]:
        url_path = f"/api/{op}{quote_repo_path(src_repo, src_path)}"
        quote_repo_path(dst_repo, dst_path)  # validates the repo key
        # requests form-encodes the query value itself; pre-quoting it would double-encode ';' and spaces
        target = f"/{dst_repo}/{dst_path.strip('/')}"
        # failFast: stop at the first item that fails rather than leave a half-copied folder behind;
        # suppressLayouts: keep the path as given (no translation between repository layouts)
        params = {"to": target, "dry": int(dry_run), "failFast": 1, "suppressLayouts": 1}
        resp = self._request("POST", url_path, params=params, idempotent=idempotent)
        return _no_error_messages(self._json(resp, url_path), resp.status_code, url_path)

    def delete_item(self, repo: str, path: str) -> None:
        """Delete a file or folder (JFrog REST "Delete Item")."""
        if not path.strip("/"):
            raise ValueError("refusing to delete a repository root")
        self._request("DELETE", quote_repo_path(repo, path))

    # -- build-info ------------------------------------------------------------------------------------
    def publish_build_info(self, build_info: Mapping[str, Any], project: str | None = None) -> str | None:
        """Publish build-info JSON (JFrog REST "Build Upload"); return the answer's X-Checksum-Sha256, if any."""
        for key in ("name", "number", "started"):
            if not build_info.get(key):
                # the fields jfrog-client-go always sends and Artifactory requires (build-info-go `BuildInfo`)
                raise ValueError(f"build_info needs {key!r}: name, number and started are required")
        # PUT of the same build-info replaces it with itself: safe to retry
        resp = self._request("PUT", "/api/build", params={"project": project} if project else None,
                             data=json.dumps(build_info).encode("utf-8"),
                             headers={"Content-Type": "application/vnd.org.jfrog.artifactory+json"})
        return resp.headers.get("X-Checksum-Sha256")

    def get_build_info(self, name: str, number: str | int, project: str | None = None) -> dict[str, Any] | None:
        """The published build-info (the `buildInfo` object), or None if there is no such build."""
        url_path = f"/api/build/{quote_build_segment(name)}/{quote_build_segment(number)}"
        try:
            resp = self._request("GET", url_path, params={"project": project} if project else None)
        except JFrogApiError as exc:
            if exc.status == 404:  # client-go treats a missing build as "not found", not an error
                return None
            raise
        info = self._json(resp, url_path).get("buildInfo")
        if not isinstance(info, dict):
            raise JFrogApiError(resp.status_code, "build answer has no buildInfo object", method="GET",
                                url_path=url_path)
        return info

    def get_build_runs(self, name: str, project: str | None = None) -> list[str]:
        """Published numbers of a build (its `buildsNumbers`), [] if the build has none."""
        url_path = f"/api/build/{quote_build_segment(name)}"
        try:
            resp = self._request("GET", url_path, params={"project": project} if project else None)
        except JFrogApiError as exc:
            if exc.status == 404:
                return []
            raise
        runs = self._json(resp, url_path).get("buildsNumbers") or []
        return [str(r.get("uri", "")).lstrip("/") for r in runs if isinstance(r, dict)]

    def promote_build(self, name: str, number: str | int, *, status: str, target_repo: str,
                      source_repo: str | None = None, copy: bool = True, dependencies: bool = False,
                      properties: Mapping[str, PropertyValues] | None = None, comment: str | None = None,
                      dry_run: bool = False, project: str | None = None) -> dict[str, Any]:
        """Promote a build's artifacts to target_repo (JFrog REST "Build Promotion"); returns the `messages` body."""
        url_path = f"/api/build/promote/{quote_build_segment(name)}/{quote_build_segment(number)}"
        body: dict[str, Any] = {"status": status, "targetRepo": target_repo, "copy": copy, "artifacts": True,
                                "dependencies": dependencies, "dryRun": dry_run, "failFast": True}
        if source_repo:
            body["sourceRepo"] = source_repo
        if comment:
            body["comment"] = comment
        if properties:
            # Build Promotion takes properties as a map of key to a list of values
            body["properties"] = {check_property_key(k): property_values(v) for k, v in properties.items()}
        # a copy re-run yields the same state (the server skips identical targets); a move is not re-runnable
        resp = self._request("POST", url_path, params={"project": project} if project else None, json=body,
                             headers={"Content-Type": "application/vnd.org.jfrog.artifactory.build.PromotionRequest+json"},
                             idempotent=copy or dry_run)
        return _no_error_messages(self._json(resp, url_path), resp.status_code, url_path)

    # -- search helpers --------------------------------------------------------------------------------
    def find_latest_artifact(self, repo: str, properties: Mapping[str, str], *, name: str | None = None,
                             path_match: str | None = None) -> dict[str, Any] | None:
        """Newest file (by `created`) in repo carrying all `properties`, with its properties; None if none."""
        criteria: dict[str, Any] = {"repo": repo, "type": "file"}
        if name:
            criteria["name"] = name
        if path_match:
            criteria["path"] = {"$match": path_match}
        for key, value in properties.items():
            criteria[f"@{check_property_key(key)}"] = str(value)
        # No AQL sort: Artifactory OSS and JCR refuse any ("Sorting is not supported by AQL in the open source
        # version", devopshq/artifactory-cleanup issue 59), so the newest row is picked here. The properties
        # come from a second call, as include() of properties would not mix with sort/limit anyway.
        rows = self.search_aql(f"items.find({json.dumps(criteria)})"
                               '.include("repo","path","name","created","size","sha256")')
        if not rows:
            return None
        row = dict(max(rows, key=lambda r: (aql_time(r.get("created")), str(r.get("path")), str(r.get("name")))))
        folder = "" if row.get("path") in (None, ".") else str(row["path"])
        full = f"{folder}/{row['name']}" if folder else str(row["name"])
        row["full_path"] = full
        row["properties"] = self.get_item_properties(str(row["repo"]), full)
        return row

    def promote_artifact(self, src_repo: str, src_path: str, dst_repo: str, dst_path: str | None = None, *,
                         move: bool = False, properties: Mapping[str, PropertyValues] | None = None,
                         dry_run: bool = False) -> dict[str, Any]:
        """Copy (or move) one item from a staging to a release repo, then set properties on it."""
        target = dst_path if dst_path is not None else src_path
        op = self.move_item if move else self.copy_item
        result = op(src_repo, src_path, dst_repo, target, dry_run=dry_run)
        if properties and not dry_run:
            self.set_item_properties(dst_repo, target, properties, recursive=True)
        return result

    def create_local_repository(self, key: str, *, package_type: str = "generic", xray_index: bool = True,
                                description: str = "") -> None:
        """Create a local repository (JFrog REST "Create Repository")."""
        self._request("PUT", f"/api/repositories/{quote(key, safe='')}", json={
            "key": key, "rclass": "local", "packageType": package_type, "xrayIndex": xray_index,
            "description": description})

    def get_version(self) -> dict[str, Any]:
        """Artifactory version (JFrog REST "Version and Add-ons information")."""
        return self._json(self._request("GET", "/api/system/version"), "/api/system/version")

    def artifact_url(self, repo: str, path: str) -> str:
        """Download URL of an artifact."""
        return self.config.artifactory_url + quote_repo_path(repo, path)

    def ui_url(self, repo: str, path: str) -> str:
        """Artifactory UI tree URL of an artifact."""
        return f"{self.config.platform_url}/ui/repos/tree/General/{quote(repo, safe='')}/{quote(path.strip('/'))}"
