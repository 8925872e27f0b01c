"""Local JFrog-compatible (Artifactory + Xray) HTTP server for tests and demos; NOT JFrog.

Follows the JFrog REST APIs (https://jfrog.com/help/r/jfrog-rest-apis) and the Xray REST APIs as summarised in
the project's docs/jfrog-rest-contract.md, including where real JFrog is less kind than a simple stand-in:
redirected downloads without checksum headers ("Direct Cloud Storage Download"), an OSS edition that refuses
AQL sort, escaped multi-value properties, lower-case copy/move message levels. Stdlib only, state kept in a
directory (content-addressed blobs + sqlite) so a restart over the same dir keeps artifacts.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import datetime as dt
import email.utils
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, unquote_plus

# with no token given, a random one is written here in the state directory, readable by its owner only
TOKEN_FILE = "access-token"
DEFAULT_REPOS = ("ml-models-local", "ml-models-release", "mnist-data-local")  # the pipeline's repositories
ARTIFACTORY_VERSION = "7.104.0-local"
XRAY_VERSION = "3.120.0-local"
CHUNK = 1024 * 1024
# Connection hygiene, after Tomcat's HTTP connector (Artifactory runs on Tomcat; "Apache Tomcat 9 Configuration
# Reference: The HTTP Connector"): connectionTimeout (20 s, also the keep-alive idle time), maxThreads, and
# maxSwallowSize (an unread body up to this size is read and dropped so the connection can serve the next
# request; a larger one is left unread and the connection closed).
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_WORKERS = 64
SWALLOW_LIMIT = 2 * 1024 * 1024
# Artifactory sets no REST upload limit; this one stops a runaway upload filling the disk (bench/bench_upload.py
# sends 200 MB)
DEFAULT_MAX_BODY_BYTES = 1024 * 1024 * 1024
# JSON and AQL nesting beyond this is refused (400) before parsing: the parsers and the AQL matcher recurse
MAX_NESTING = 64
_CHUNK_LINE_MAX = 1024
# status (+retry_after, body): answer that error; delay: sleep first (slow answer); reset: RST after the body;
# reset_after_bytes: RST after reading that many body bytes (a reset during the upload); truncate: declare a
# longer Content-Length than sent, then close; wrong_checksum: flip the SHA-256 the answer reports;
# report_checksums: a deploy answer's `checksums` entries replaced by these values (a malformed answer)
_FAULT_KEYS = {"status", "retry_after", "delay", "reset", "reset_after_bytes", "truncate", "wrong_checksum", "body",
               "report_checksums"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (key TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    repo TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, sha1 TEXT NOT NULL, md5 TEXT NOT NULL,
    size INTEGER NOT NULL, mime TEXT NOT NULL, created TEXT NOT NULL, created_by TEXT NOT NULL,
    modified TEXT NOT NULL, modified_by TEXT NOT NULL, orig TEXT NOT NULL,
    PRIMARY KEY (repo, path));
CREATE INDEX IF NOT EXISTS items_sha256 ON items (sha256);
CREATE INDEX IF NOT EXISTS items_sha1 ON items (sha1);
CREATE TABLE IF NOT EXISTS props (
    repo TEXT NOT NULL, path TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, ord INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS props_item ON props (repo, path);
CREATE TABLE IF NOT EXISTS scans (id TEXT PRIMARY KEY, polls_left INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS builds (
    project TEXT NOT NULL, name TEXT NOT NULL, number TEXT NOT NULL, started TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (project, name, number));
"""


class ApiError(Exception):
    """An error answered in the service's own error body (JFrog REST "Error Responses")."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _mime(name: str) -> str:
    if name.endswith(".json"):
        return "application/json"
    if name.endswith((".txt", ".md")):
        return "text/plain"
    return "application/octet-stream"


def checksum_kind(value: str) -> str | None:
    """Resolve the generic X-Checksum header type by hex length (JFrog REST "Deploy Artifact by Checksum")."""
    return {32: "md5", 40: "sha1", 64: "sha256"}.get(len(value.strip()))


# ---------------------------------------------------------------------------------------------------
# Property escaping (JFrog REST "Set Item Properties"; jfrog-client-go `artifactory/services/utils/properties.go`)


def _split_unescaped(text: str, seps: str) -> list[str]:
    """Split on any char in seps that is not preceded by a backslash; keep escapes in the parts."""
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch in seps:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _ant_regex(pattern: str) -> re.Pattern[str]:
    """An Ant-style path pattern (`**/*.tmp`, `mnist/*/SHA256SUMS`) as a regex on the repository path."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _pattern_allows(repo_config: dict[str, Any], path: str) -> bool:
    """The repository's `includesPattern` (default `**/*`) matches the path and its `excludesPattern` does not.

    JFrog "Repository Configuration JSON": comma-separated Ant-style patterns.
    """
    def matches(patterns: str) -> bool:
        return any(_ant_regex(p.strip()).match(path) for p in patterns.split(",") if p.strip())

    return matches(repo_config.get("includesPattern") or "**/*") and not matches(
        repo_config.get("excludesPattern") or "")


def with_all_props(include: Sequence[str] | None) -> bool:
    """True when include() asks for every property of an item."""
    return any(f in ("property", "property.*", "*") for f in include or [])


def _property_values(decoded: str) -> list[str]:
    """`v1,v2\\,still-v2` → values: split on unescaped commas, then drop the escaping backslashes."""
    return [_unescape(v) for v in _split_unescaped(decoded, ",")]


def parse_properties_param(raw_query_value: str) -> dict[str, list[str]]:
    """Parse Set Item Properties' `?properties=` value as Artifactory reads it (raw, not yet percent-decoded).

    A raw `;` separates properties before anything is decoded, which is why jfrog-client-go can send a
    semicolon inside a value as `%3B`; JFrog's "Set Item Properties" page names an escaped semicolon (`%5C;`)
    a separator too, so a backslash cannot protect a raw `;`. Each part is then decoded and split on an
    unescaped `|` (the doc's alternative separator, sent as `%7C`), then `=`, then unescaped commas.
    """
    out: dict[str, list[str]] = {}
    for raw_part in raw_query_value.split(";"):
        for part in _split_unescaped(unquote_plus(raw_part), "|"):
            if not part:
                continue
            kv = _split_unescaped(part, "=")
            key = _unescape(kv[0]).strip()
            if not key or len(kv) < 2:
                raise ApiError(400, f"Invalid property: {part!r} (expected key=value)")
            out.setdefault(key, []).extend(_property_values("=".join(kv[1:])))
    return out


def parse_matrix_params(matrix: Sequence[str]) -> dict[str, list[str]]:
    """Deploy matrix params `;k=v1,v2;k=v3`: a repeated key and an unescaped comma both add values.

    Artifactory splits the path on raw `;`, decodes each `key=value`, then splits the value on unescaped commas
    (JFrog "Using Properties in Deployment and Resolution"; JFrog's clients backslash-escape `, ; | = \\` in
    values, jfrog-client-go `properties.go`), so `a%2Cb` is two values and `a%5C%2Cb` one.
    """
    props: dict[str, list[str]] = {}
    for param in matrix:
        if not param:
            continue
        k, _, v = param.partition("=")
        key = unquote(k)
        if not key:
            raise ApiError(400, f"Property key '{unquote(param)}' is invalid")
        props.setdefault(key, []).extend(_property_values(unquote(v)))
    return props


# ---------------------------------------------------------------------------------------------------
# AQL (JFrog "Artifactory Query Language"): items.find(<json>).include(...).sort({...}).offset(n).limit(n)


_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}()]', re.DOTALL)


def check_nesting(text: str, what: str, limit: int = MAX_NESTING) -> None:
    """Refuse (400) text whose brackets, braces or parentheses nest deeper than `limit` outside JSON strings."""
    depth = 0
    for m in _STRUCTURE.finditer(text):
        token = m.group()
        if token in "[{(":
            depth += 1
            if depth > limit:
                raise ApiError(400, f"{what} nests deeper than {limit} levels")
        elif token in "]})":
            depth -= 1


def loads_json(raw: bytes | str, what: str) -> Any:
    """Parse a JSON request body: 400 for bad UTF-8, bad JSON or nesting deeper than MAX_NESTING."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"{what} must be UTF-8") from exc
    check_nesting(text, what)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ApiError(400, f"Failed to parse {what}: {exc}") from exc


def _scan_balanced(text: str, start: int) -> int:
    """Return the index just after the ')' closing the '(' at text[start], skipping JSON strings."""
    depth, i, in_str = 0, start, False
    while i < len(text):
        ch = text[i]
        if in_str:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ApiError(400, "Failed to parse query: unbalanced parentheses")


def parse_aql(query: str) -> dict[str, Any]:
    """Parse an items AQL query into criteria, include, sort, offset, limit."""
    check_nesting(query, "AQL query")
    q = query.strip()
    m = re.match(r"items\s*\.\s*find\s*\(", q)
    if not m:
        raise ApiError(400, "Failed to parse query: only the 'items' domain with find() is supported")
    parsed: dict[str, Any] = {"criteria": {}, "include": None, "sort": None, "offset": 0, "limit": None}
    pos = m.end() - 1
    while True:
        end = _scan_balanced(q, pos)
        arg = q[pos + 1 : end - 1].strip()
        name = parsed.get("_method", "find")
        try:
            if name == "find":
                parsed["criteria"] = json.loads(arg) if arg else {}
                if not isinstance(parsed["criteria"], dict):
                    raise ValueError("find() takes an object")
            elif name == "include":
                parsed["include"] = [str(x) for x in json.loads(f"[{arg}]")]
            elif name == "sort":
                spec = json.loads(arg)
                if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("$asc", "$desc"):
                    raise ValueError("sort takes {\"$asc\"|\"$desc\": [fields]}")
                parsed["sort"] = spec
            elif name in ("limit", "offset"):
                parsed[name] = int(arg)
                if parsed[name] < 0:
                    raise ValueError(f"{name} must be >= 0")
            else:
                raise ValueError(f"unsupported method {name}")
        except (ValueError, TypeError) as exc:
            raise ApiError(400, f"Failed to parse query: {exc}") from exc
        rest = q[end:].strip()
        if not rest:
            break
        m = re.match(r"\.\s*(\w+)\s*\(", rest)
        if not m:
            raise ApiError(400, f"Failed to parse query near: {rest[:40]!r}")
        parsed["_method"] = m.group(1)
        q = rest
        pos = m.end() - 1
    parsed.pop("_method", None)
    return parsed


def _wild(pattern: str, value: str) -> bool:
    # AQL wildcards are only * and ?; escape [ so fnmatch does not treat it as a class
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _cmp(op: str, actual: Any, expected: Any) -> bool:
    if actual is None:
        return op in ("$ne", "$nmatch")
    if isinstance(actual, int) and not isinstance(expected, int):
        with contextlib.suppress(TypeError, ValueError):
            expected = int(expected)
    if isinstance(expected, int) and isinstance(actual, str):
        expected = str(expected)
    try:
        match op:
            case "$eq":
                return actual == expected
            case "$ne":
                return actual != expected
            case "$gt":
                return actual > expected
            case "$gte":
                return actual >= expected
            case "$lt":
                return actual < expected
            case "$lte":
                return actual <= expected
            case "$match":
                return _wild(str(expected), str(actual))
            case "$nmatch":
                return not _wild(str(expected), str(actual))
    except TypeError:
        return False
    raise ApiError(400, f"Failed to parse query: unknown operator {op}")


def _ops(cond: Any) -> list[tuple[str, Any]]:
    if isinstance(cond, dict):
        return list(cond.items())
    return [("$eq", cond)]


def _uses_type(criteria: Any) -> bool:
    if isinstance(criteria, dict):
        return any(k == "type" or _uses_type(v) for k, v in criteria.items())
    if isinstance(criteria, list):
        return any(_uses_type(c) for c in criteria)
    return False


def aql_match(row: dict[str, Any], props: dict[str, list[str]], criteria: Any) -> bool:
    """Evaluate AQL criteria against one item row and its properties."""
    if isinstance(criteria, list):
        return all(aql_match(row, props, c) for c in criteria)
    if not isinstance(criteria, dict):
        raise ApiError(400, "Failed to parse query: criteria must be objects")
    for key, cond in criteria.items():
        if key == "$and":
            ok = all(aql_match(row, props, c) for c in _as_list(cond))
        elif key == "$or":
            ok = any(aql_match(row, props, c) for c in _as_list(cond))
        elif key.startswith("@"):
            values = props.get(key[1:], [])
            ok = True
            for op, expected in _ops(cond):
                if op in ("$ne", "$nmatch"):
                    ok = ok and all(_cmp(op, v, expected) for v in values)
                else:
                    ok = ok and any(_cmp(op, v, expected) for v in values)
        elif key.startswith("$"):
            raise ApiError(400, f"Failed to parse query: unknown operator {key}")
        else:
            if key not in row and key != "type":
                raise ApiError(400, f"Failed to parse query: unknown field {key}")
            if key == "type" and cond == "any":
                continue
            ok = all(_cmp(op, row.get(key), exp) for op, exp in _ops(cond))
        if not ok:
            return False
    return True


def _as_list(cond: Any) -> list[Any]:
    if isinstance(cond, list):
        return cond
    if isinstance(cond, dict):
        return [{k: v} for k, v in cond.items()]
    raise ApiError(400, "Failed to parse query: $and/$or take a list or object")


# ---------------------------------------------------------------------------------------------------
# Storage


class Store:
    """Blobs by sha256 under state_dir/blobs, metadata in state_dir/meta.sqlite."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.blobs = self.dir / "blobs"
        self.tmp = self.dir / "tmp"
        for d in (self.blobs, self.tmp, self.dir / "xray"):
            d.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(self.dir / "meta.sqlite", check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        # WAL without per-commit fsync: survives a process restart, which is all a local fake needs
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        for key in DEFAULT_REPOS:
            if not self.repo(key):
                self.create_repo(key, {"key": key, "rclass": "local", "packageType": "generic", "xrayIndex": True})

    # repos
    def repo(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT config FROM repos WHERE key=?", (key,)).fetchone()
        return json.loads(row["config"]) if row else None

    def create_repo(self, key: str, config: dict[str, Any]) -> None:
        with self.lock:
            if self.db.execute("SELECT 1 FROM repos WHERE lower(key)=lower(?)", (key,)).fetchone():
                raise ApiError(400, f"Case insensitive repository key already exists: '{key}'")
            cfg = {"rclass": "local", "packageType": "generic", "xrayIndex": False, **config, "key": key}
            self.db.execute("INSERT INTO repos VALUES (?, ?)", (key, json.dumps(cfg)))

    # blobs
    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def ingest(self, chunks: Iterable[bytes]) -> tuple[Path, dict[str, str], int]:
        """Write chunks to a temp file while hashing; return (tmp path, checksums, size)."""
        hashes = {"sha256": hashlib.sha256(), "sha1": hashlib.sha1(), "md5": hashlib.md5()}
        fd, name = tempfile.mkstemp(dir=self.tmp)
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:  # 1 MiB reads, each hashed once per algorithm, then written
                    for h in hashes.values():
                        h.update(chunk)
                    fh.write(chunk)
                    size += len(chunk)
        except BaseException:
            Path(name).unlink(missing_ok=True)  # a body cut short must leave no partial file behind
            raise
        return Path(name), {k: h.hexdigest() for k, h in hashes.items()}, size

    def commit_blob(self, tmp: Path, sha256: str) -> None:
        dest = self.blob_path(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, dest)

    def find_by_checksum(self, kind: str, value: str) -> sqlite3.Row | None:
        col = {"sha256": "sha256", "sha1": "sha1", "md5": "md5"}[kind]
        with self.lock:
            return self.db.execute(f"SELECT * FROM items WHERE {col}=? LIMIT 1", (value.lower(),)).fetchone()

    # items
    def item(self, repo: str, path: str) -> sqlite3.Row | None:
        with self.lock:
            return self.db.execute("SELECT * FROM items WHERE repo=? AND path=?", (repo, path)).fetchone()

    def items_under(self, repo: str, folder: str) -> list[sqlite3.Row]:
        prefix = f"{folder}/" if folder else ""
        with self.lock:
            rows = self.db.execute("SELECT * FROM items WHERE repo=? ORDER BY path", (repo,)).fetchall()
        return [r for r in rows if r["path"].startswith(prefix)]

    def is_folder(self, repo: str, path: str) -> bool:
        return path == "" or bool(self.items_under(repo, path))

    def put_item(self, repo: str, path: str, sums: dict[str, str], size: int, orig: dict[str, str | None],
                 user: str, props: dict[str, list[str]] | None) -> None:
        now = _now()
        with self.lock:
            old = self.item(repo, path)
            created = old["created"] if old else now
            self.db.execute("BEGIN")
            try:
                self.db.execute("DELETE FROM items WHERE repo=? AND path=?", (repo, path))
                self.db.execute(
                    "INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (repo, path, sums["sha256"], sums["sha1"], sums["md5"], size, _mime(path), created, user,
                     now, user, json.dumps(orig)),
                )
                if props is not None:
                    self._replace_props(repo, path, props)
                self.db.execute("COMMIT")
            except Exception:
                self.db.execute("ROLLBACK")
                raise

    def delete_path(self, repo: str, path: str) -> int:
        """Delete a file, or a folder recursively; return how many files went."""
        if not path:
            raise ApiError(400, "Deleting a repository root is not supported")
        with self.lock:
            if self.item(repo, path) is not None:
                victims = [path]
            else:
                victims = [r["path"] for r in self.items_under(repo, path)]
                if victims:
                    prefix = path + "/"
                    self.db.execute("DELETE FROM props WHERE repo=? AND (path=? OR substr(path, 1, ?)=?)",
                                    (repo, path, len(prefix), prefix))
            for p in victims:
                self.db.execute("DELETE FROM items WHERE repo=? AND path=?", (repo, p))
                self.db.execute("DELETE FROM props WHERE repo=? AND path=?", (repo, p))
            return len(victims)

    # properties
    def props(self, repo: str, path: str) -> dict[str, list[str]]:
        with self.lock:
            rows = self.db.execute(
                "SELECT key, value FROM props WHERE repo=? AND path=? ORDER BY key, ord", (repo, path)
            ).fetchall()
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["key"], []).append(r["value"])
        return out

    def _replace_props(self, repo: str, path: str, props: dict[str, list[str]]) -> None:
        self.db.execute("DELETE FROM props WHERE repo=? AND path=?", (repo, path))
        self._set_props(repo, path, props)

    def _set_props(self, repo: str, path: str, props: dict[str, list[str]]) -> None:
        for key, values in props.items():
            self.db.execute("DELETE FROM props WHERE repo=? AND path=? AND key=?", (repo, path, key))
            for i, v in enumerate(values):
                self.db.execute("INSERT INTO props VALUES (?,?,?,?,?)", (repo, path, key, v, i))

    def set_props(self, repo: str, paths: Sequence[str], props: dict[str, list[str]]) -> None:
        with self.lock:
            for p in paths:
                self._set_props(repo, p, props)

    def delete_props(self, repo: str, paths: Sequence[str], keys: Sequence[str]) -> None:
        with self.lock:
            for p in paths:
                for k in keys:
                    self.db.execute("DELETE FROM props WHERE repo=? AND path=? AND key=?", (repo, p, k))

    def copy_props(self, repo: str, path: str, dst_repo: str, dst_path: str) -> None:
        with self.lock:
            self._replace_props(dst_repo, dst_path, self.props(repo, path))

    def all_items(self) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute("SELECT * FROM items ORDER BY repo, path").fetchall()

    # scans
    def save_scan(self, scan_id: str, polls: int, data: dict[str, Any]) -> None:
        with self.lock:
            self.db.execute("INSERT INTO scans VALUES (?,?,?)", (scan_id, polls, json.dumps(data)))

    def poll_scan(self, scan_id: str) -> tuple[int, dict[str, Any]] | None:
        """Return (polls_left before this poll, data) and count the poll."""
        with self.lock:
            row = self.db.execute("SELECT polls_left, data FROM scans WHERE id=?", (scan_id,)).fetchone()
            if not row:
                return None
            if row["polls_left"] > 0:
                self.db.execute("UPDATE scans SET polls_left=polls_left-1 WHERE id=?", (scan_id,))
            return row["polls_left"], json.loads(row["data"])

    # builds ("Build Upload")
    def put_build(self, project: str, info: dict[str, Any]) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO builds VALUES (?,?,?,?,?)",
                            (project, str(info["name"]), str(info["number"]), str(info["started"]),
                             json.dumps(info)))

    def build(self, project: str, name: str, number: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT data FROM builds WHERE project=? AND name=? AND number=?",
                                  (project, name, number)).fetchone()
        return json.loads(row["data"]) if row else None

    def build_runs(self, project: str, name: str) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute("SELECT number, started FROM builds WHERE project=? AND name=? ORDER BY started",
                                   (project, name)).fetchall()

    def build_names(self, project: str) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute("SELECT name, max(started) AS last FROM builds WHERE project=? GROUP BY name "
                                   "ORDER BY name", (project,)).fetchall()

    def close(self) -> None:
        with self.lock:
            self.db.close()


# ---------------------------------------------------------------------------------------------------
# Xray findings: planted records that graph scans and artifact summaries report


def split_component_id(component_id: str) -> tuple[str, str, str | None]:
    """Split `type://name[:version]` into (type, lower-cased name, version) like jfrog-cli-security `SplitComponentIdRaw`."""
    if "://" not in component_id:
        return "", component_id.lower(), None
    kind, rest = component_id.split("://", 1)
    if kind == "generic":
        return kind, rest.rsplit("/", 1)[-1].lower(), None
    if ":" in rest:
        name, version = rest.rsplit(":", 1)
        return kind.lower(), name.lower(), version
    return kind.lower(), rest.lower(), None


def _walk_nodes(node: dict[str, Any], path: list[str]) -> Iterator[tuple[str, list[str]]]:
    for child in node.get("nodes") or []:
        if not isinstance(child, dict) or not isinstance(child.get("component_id"), str):
            raise ApiError(400, "every node needs a string component_id")
        cid = child["component_id"]
        yield cid, [*path, cid]
        yield from _walk_nodes(child, [*path, cid])


# ---------------------------------------------------------------------------------------------------
# HTTP layer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "JFrogCompatLocal/1.0"
    # headers and body go out in separate writes; with Nagle on, a client's delayed ACK adds ~40 ms per answer
    disable_nagle_algorithm = True
    server: _HTTPServer

    # -- plumbing -----------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.owner.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def setup(self) -> None:
        # every socket read (request line, headers, body, the keep-alive wait) gives up after read_timeout
        self.timeout = self.server.owner.read_timeout
        super().setup()

    def _handle(self) -> None:
        owner = self.server.owner
        self._fault: dict[str, Any] = {}
        self._body_consumed = False
        self._body_complete = False
        self._body_len = 0
        self._logged = False
        self.user: str | None = None
        raw_path, _, self.query_string = self.path.partition("?")
        self.raw_path = raw_path
        self.service = "xray" if raw_path.startswith("/xray/") else "artifactory"
        try:
            # framing and credentials are judged from the headers alone, before a byte of the body is read
            self._declared_length = self._body_framing()
            self.user = self._user()
            if self.user is None and not self._anonymous():
                raise ApiError(401, "Bad credentials" if self._sent_credentials() else "Authentication is required")
            fault = owner._take_fault(self.command, raw_path)
            if fault is not None and self._apply_fault(fault):
                return
            self._dispatch()
        except ApiError as exc:
            with contextlib.suppress(OSError, ConnectionError):
                self._send_error(exc)
        except TimeoutError:
            # a stalled upload: answer 408 and give the worker back (RFC 9110 "408 Request Timeout")
            self._body_consumed = True
            self.close_connection = True
            with contextlib.suppress(OSError, ConnectionError):
                self._send_error(ApiError(408, f"No request data for {owner.read_timeout:g} s"))
        except (OSError, ConnectionError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a fake must answer, not die
            with contextlib.suppress(OSError, ConnectionError):
                self._send_error(ApiError(500, f"Internal error: {type(exc).__name__}: {exc}"))
        finally:
            if not self._logged:
                owner._log(self.command, raw_path, self._body_len)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

    def _apply_fault(self, fault: dict[str, Any]) -> bool:
        """Act out an injected fault; True when the request is finished (answered or reset)."""
        owner = self.server.owner
        self._fault = fault
        if fault.get("delay"):
            time.sleep(float(fault["delay"]))
        if "reset_after_bytes" in fault:
            want = int(fault["reset_after_bytes"])
            for chunk in self._iter_body():
                if self._body_len >= want:
                    break
                del chunk
        elif fault.get("reset"):
            self._drain_body()
        else:
            if fault.get("status"):
                self._drain_body()
                headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
                raise ApiError(int(fault["status"]), fault.get("body", "Injected fault"), headers)
            return False
        owner._log(self.command, self.raw_path, self._body_len)
        self._logged = True
        self._reset()
        return True

    def _anonymous(self) -> bool:
        """Endpoints answered without credentials: Artifactory's ping and readiness, signed storage URLs."""
        p, m = self.raw_path, self.command
        return ((p == "/artifactory/api/system/ping" and m in ("GET", "HEAD"))
                or (p == "/artifactory/api/v1/system/readiness" and m == "GET")
                or (p.startswith("/_storage/") and m == "GET"))

    def _body_framing(self) -> int | None:
        """The declared body length (None for chunked); 400, 413 or 501 for a body this server will not read.

        RFC 9112 "Message Body Length": Content-Length is 1*DIGIT; a request with both Transfer-Encoding and
        Content-Length may be refused; an unknown transfer coding is 501.
        """
        owner = self.server.owner
        encodings = [e.strip().lower() for e in ",".join(self.headers.get_all("Transfer-Encoding") or []).split(",")
                     if e.strip()]
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if encodings:
            self._body_consumed = True  # never read a body whose framing is refused
            if lengths:
                raise ApiError(400, "Both Transfer-Encoding and Content-Length were sent")
            if encodings != ["chunked"]:
                raise ApiError(501, f"Transfer-Encoding {', '.join(encodings)} is not supported")
            self._body_consumed = False
            return None
        if not lengths:
            return 0
        value = lengths.pop()
        if lengths or not value.isdigit() or not value.isascii():
            self._body_consumed = True
            raise ApiError(400, "Malformed Content-Length header")
        length = int(value)
        if length > owner.max_body_bytes:
            self._body_consumed = True
            raise ApiError(413, f"Request body of {length} bytes exceeds the limit of {owner.max_body_bytes} bytes")
        return length

    def _reset(self) -> None:
        # fault "reset": close without answering; SO_LINGER 0 makes it an RST
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()

    def _iter_body(self) -> Iterator[bytes]:
        """Yield the request body (Content-Length or chunked) exactly once, within max_body_bytes."""
        if self._body_consumed:
            return
        self._body_consumed = True
        limit = self.server.owner.max_body_bytes
        if self._declared_length is None:
            yield from self._iter_chunked(limit)
        else:
            remaining = self._declared_length
            while remaining > 0:
                data = self.rfile.read(min(CHUNK, remaining))
                if not data:
                    raise ConnectionError("client closed during body")
                remaining -= len(data)
                self._body_len += len(data)
                yield data
        self._body_complete = True

    def _iter_chunked(self, limit: int) -> Iterator[bytes]:
        # RFC 9112 "Chunked Transfer Coding": chunk-size [;ext] CRLF data CRLF ... 0 CRLF trailers CRLF.
        # After a framing error the stream cannot be resynchronised, so the connection closes.
        while True:
            line = self.rfile.readline(_CHUNK_LINE_MAX + 1)
            if not line:
                raise ConnectionError("client closed during a chunked body")
            size_text = line.split(b";", 1)[0].strip()
            if len(line) > _CHUNK_LINE_MAX or not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size_text):
                self.close_connection = True
                raise ApiError(400, "Malformed chunk size in a chunked request body")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(100):
                    trailer = self.rfile.readline(_CHUNK_LINE_MAX + 1)
                    if trailer in (b"\r\n", b"\n", b""):
                        return
                self.close_connection = True
                raise ApiError(400, "Too many trailer fields in a chunked request body")
            if self._body_len + size > limit:
                self.close_connection = True
                raise ApiError(413, f"Request body exceeds the limit of {limit} bytes")
            while size > 0:
                data = self.rfile.read(min(CHUNK, size))
                if not data:
                    raise ConnectionError("client closed during a chunked body")
                size -= len(data)
                self._body_len += len(data)
                yield data
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                self.close_connection = True
                raise ApiError(400, "Chunk data not followed by CRLF in a chunked request body")

    def _read_body(self) -> bytes:
        return b"".join(self._iter_body())

    def _drain_body(self) -> None:
        for _ in self._iter_body():
            pass

    def _settle_body(self) -> None:
        """Before answering: read and drop a small unread body; leave a large, unframed or half-read one, and close."""
        if self._body_consumed:
            if not self._body_complete:
                self.close_connection = True
            return
        if self._declared_length is None or self._declared_length > SWALLOW_LIMIT:
            self._body_consumed = True
            self.close_connection = True
            return
        self._drain_body()

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self._settle_body()
        self.server.owner._log(self.command, self.raw_path, self._body_len)
        self._logged = True
        truncate = bool(self._fault.get("truncate"))
        self.send_response(status)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        declared = len(body) + (max(16, len(body)) if truncate else 0)
        if status != 204:
            self.send_header("Content-Length", str(declared))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body[: len(body) // 2] if truncate else body)
        if truncate:
            self._hard_close()

    def _hard_close(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def _json(self, status: int, obj: Any, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        if self.server.owner.echo_credentials and status < 400 and isinstance(obj, dict):
            obj = {**obj, "echo": self._echo()}
        self._send(status, json.dumps(obj, indent=2).encode(), content_type, headers)

    def _echo(self) -> str:
        """What a careless server reflects: the request line and every header, credentials included."""
        return f"{self.command} {self.path} " + "; ".join(f"{k}: {v}" for k, v in self.headers.items())

    def _echo_query(self, sep: str = "?") -> str:
        """`?echo=<the request, URL-encoded>` in echo_credentials mode, else ""."""
        return f"{sep}echo={quote(self._echo(), safe='')}" if self.server.owner.echo_credentials else ""

    def _send_error(self, exc: ApiError) -> None:
        headers = dict(exc.headers)
        message = exc.message
        if self.server.owner.echo_credentials:
            message = f"{message} [request: {self._echo()}]"
        if self.service == "xray":
            body: Any = {"error": message}
        else:
            body = {"errors": [{"status": exc.status, "message": message}]}
        if exc.status == 401:
            headers.setdefault("WWW-Authenticate", 'Basic realm="Artifactory Realm"')
        self._json(exc.status, body, headers=headers)

    # -- auth (JFrog "Authorization Headers": Bearer token, or Basic with the token as password) -------
    def _user(self) -> str | None:
        token = self.server.owner.token
        auth = self.headers.get("Authorization", "")
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(cred.strip().encode(), token.encode()):
            return "token-user"
        if scheme.lower() == "basic":
            try:
                user, _, pw = base64.b64decode(cred.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            if hmac.compare_digest(pw.encode(), token.encode()):
                return user or "token-user"
        if self.headers.get("X-JFrog-Art-Api") and hmac.compare_digest(
            self.headers["X-JFrog-Art-Api"].encode(), token.encode()
        ):
            return "api-key-user"
        return None

    def _sent_credentials(self) -> bool:
        return bool(self.headers.get("Authorization") or self.headers.get("X-JFrog-Art-Api"))

    def _require_user(self) -> str:
        if self.user is None:
            raise ApiError(401, "Bad credentials" if self._sent_credentials() else "Authentication is required")
        return self.user

    # -- routing ------------------------------------------------------------------------------------
    def _raw_query_value(self, name: str) -> str:
        """A query parameter's value exactly as sent, not yet percent-decoded ("" when absent)."""
        for pair in self.query_string.split("&"):
            key, _, value = pair.partition("=")
            if unquote_plus(key) == name:
                return value
        return ""

    def _query(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in parse_qsl(self.query_string, keep_blank_values=True):
            out.setdefault(k, []).append(v)
        return out

    def _dispatch(self) -> None:
        p, m = self.raw_path, self.command
        if p == "/_compat/stats" and m == "GET":
            # not a JFrog API: counters for benchmarks that run this server in another process
            self._require_user()
            return self._json(200, self.server.owner.stats())
        if p.startswith("/evidence/"):  # JFrog Evidence, modelled in evidence.py (imported when first used)
            from devtools.jfrog_compat.evidence import evidence_api

            return evidence_api(self, p[len("/evidence") :], m)
        if p.startswith("/xray/"):
            return self._xray(p[len("/xray") :], m)
        if p.startswith("/_storage/") and m == "GET":
            return self._signed_storage(p)
        if p.startswith("/ui/") and m in ("GET", "HEAD"):
            return self._ui_page(p)
        if not p.startswith("/artifactory/"):
            raise ApiError(404, "Not Found")
        sub = p[len("/artifactory") :]
        if sub in ("/api/system/ping",) and m in ("GET", "HEAD"):
            return self._send(200, b"OK", "text/plain")
        if sub == "/api/v1/system/readiness" and m == "GET":
            return self._json(200, {"code": "OK"})
        self.user = self._require_user()
        if sub == "/api/system/version" and m == "GET":
            return self._json(200, {"version": ARTIFACTORY_VERSION, "revision": "local", "addons": [],
                                    "license": "local-compat"})
        if sub == "/api/v1/uploads/config" and m == "GET":
            return self._json(200, {"supported": False})  # multipart upload (S3/GCS storage only) not modelled
        if sub.startswith("/api/repositories/"):
            return self._repositories(unquote(sub[len("/api/repositories/") :]), m)
        if sub.startswith("/api/storage/"):
            return self._storage(sub[len("/api/storage/") :], m)
        if sub == "/api/search/aql" and m == "POST":
            return self._aql()
        if sub == "/api/build" or sub.startswith("/api/build/"):
            return self._builds(sub[len("/api/build") :], m)
        if sub == "/api/security/keys/trusted":  # the keys JFrog verifies evidence with (evidence.py)
            from devtools.jfrog_compat.evidence import trusted_keys_api

            return trusted_keys_api(self, m)
        for op in ("copy", "move"):
            if sub.startswith(f"/api/{op}/") and m == "POST":
                return self._copy_move(op, sub[len(f"/api/{op}/") :])
        if sub.startswith("/api/"):
            raise ApiError(404, "Not Found")
        return self._artifact(sub[1:], m)

    def _ui_page(self, raw: str) -> None:
        """The JFrog UI paths the provider's links store, as small HTML pages (ui_pages.py)."""
        from devtools.jfrog_compat import ui_pages

        status, page = ui_pages.render(self.server.owner.store, unquote(raw), self._base(), lambda scan_id, data:
                                       build_scan_result(scan_id, data, True, False, self._base()[:-len("/artifactory")]))
        self._send(status, page, "text/html; charset=utf-8", {"Content-Security-Policy": ui_pages.CSP})

    @staticmethod
    def _split_repo_path(raw: str) -> tuple[str, str]:
        decoded = unquote(raw).strip("/")
        repo, _, path = decoded.partition("/")
        return repo, path.strip("/")

    def _need_repo(self, repo: str) -> dict[str, Any]:
        cfg = self.server.owner.store.repo(repo)
        if not cfg:
            raise ApiError(404, f"Repository {repo} not found")
        return cfg

    # -- repositories ("Create Repository"; `downloadRedirect`, `includesPattern`, `excludesPattern` honoured) --
    def _repositories(self, key: str, method: str) -> None:
        store = self.server.owner.store
        if method == "GET":
            cfg = store.repo(key)
            if not cfg:
                raise ApiError(404, f"Repository {key} not found")
            return self._json(200, cfg)
        if method == "PUT":
            body = self._read_body()
            cfg = loads_json(body, "repository configuration JSON") if body else {}
            if not isinstance(cfg, dict) or not key or "/" in key:
                raise ApiError(400, "Invalid repository configuration")
            store.create_repo(key, cfg)
            return self._send(200, f"Successfully created repository '{key}'".encode(), "text/plain")
        raise ApiError(405, "Method not allowed")

    # -- artifacts ("Deploy Artifact", "Deploy Artifact by Checksum", "Retrieve Artifact", "Delete Item") --
    def _artifact(self, raw: str, method: str) -> None:
        # a raw ';' starts matrix params; a literal ';' in the path travels as %3B (jfrog-client-go `BuildUrl`)
        raw_path, *matrix = raw.split(";")
        repo, path = self._split_repo_path(raw_path)
        if method == "PUT":
            return self._deploy(repo, path, matrix)
        cfg = self._need_repo(repo)
        store = self.server.owner.store
        if method in ("GET", "HEAD"):
            item = store.item(repo, path)
            if item is None:
                if store.is_folder(repo, path):
                    raise ApiError(400, "Expected file response but received a folder")
                raise ApiError(404, "File not found.")
            if cfg.get("downloadRedirect") and method == "GET":
                # "Direct Cloud Storage Download": 302 to a signed URL on another host, whose answer carries
                # no X-Checksum headers (JFrog "Specify Repositories for Direct Download using the REST API")
                return self._send(302, b"", "text/plain", {"Location": self.server.owner.signed_storage_url(item)
                                                                    + self._echo_query("&")})
            return self._download(item)
        if method == "DELETE":
            if not store.delete_path(repo, path) and not (path and store.item(repo, path)):
                raise ApiError(404, f"Could not locate artifact '{repo}:{path}'.")
            return self._send(204)
        raise ApiError(405, "Method not allowed")

    def _deploy(self, repo: str, path: str, matrix: list[str]) -> None:
        owner = self.server.owner
        store = owner.store
        props = parse_matrix_params(matrix)
        cfg = self._need_repo(repo)
        if not path or path.endswith("/"):
            raise ApiError(400, "Deploying folders is not supported by this local server")
        if not _pattern_allows(cfg, path):
            raise ApiError(403, f"Repository '{repo}' rejected the path '{path}' (include/exclude patterns)")
        supplied: dict[str, str] = {}
        for kind in ("sha256", "sha1", "md5"):
            value = self.headers.get(f"X-Checksum-{kind.capitalize()}")
            if value:
                supplied[kind] = value.strip().lower()
        generic = self.headers.get("X-Checksum")
        if generic:
            kind = checksum_kind(generic)
            if kind is None:
                raise ApiError(400, f"Unrecognised checksum length in X-Checksum: {len(generic.strip())}")
            supplied.setdefault(kind, generic.strip().lower())
        if self.headers.get("X-Checksum-Deploy", "").lower() == "true":
            self._drain_body()
            src = None
            for kind in ("sha256", "sha1"):
                if kind in supplied and src is None:
                    src = store.find_by_checksum(kind, supplied[kind])
            if src is None:
                if not ({"sha256", "sha1"} & supplied.keys()):
                    raise ApiError(400, "Checksum deploy requires a SHA-1 or SHA-256 checksum header")
                # "Deploy Artifact by Checksum": unknown checksum → 404, the client then uploads the bytes
                raise ApiError(404, "Checksum deploy failed: no artifact with this checksum. Upload is expected.")
            sums = {"sha256": src["sha256"], "sha1": src["sha1"], "md5": src["md5"]}
            for kind, value in supplied.items():
                if sums[kind] != value:
                    raise ApiError(409, f"Checksum deploy: {kind} '{value}' does not match stored content")
            size = src["size"]
        else:
            tmp, sums, size = store.ingest(self._iter_body())
            for kind, value in supplied.items():
                if sums[kind] != value:
                    tmp.unlink(missing_ok=True)
                    # the default client-checksums policy rejects with 409 ("Deploy Artifact" status table)
                    raise ApiError(409, f"Checksum policy 'LocalRepoChecksumPolicy: CLIENT' rejected the "
                                        f"artifact: {kind} received '{value}' but actual is '{sums[kind]}'")
            store.commit_blob(tmp, sums["sha256"])
        orig = {k: supplied.get(k) for k in ("sha256", "sha1", "md5")}
        store.put_item(repo, path, sums, size, orig, self.user, props)
        body = self._item_json(store.item(repo, path), created_shape=True)
        if self._fault.get("wrong_checksum"):
            body["checksums"]["sha256"] = _flip(body["checksums"]["sha256"])
        body["checksums"].update(self._fault.get("report_checksums") or {})
        self._json(201, body, "application/vnd.org.jfrog.artifactory.storage.ItemCreated+json")

    def _signed_storage(self, raw_path: str) -> None:
        """The cloud-storage side of a redirected download: signed URL, no Artifactory auth, no X-Checksum."""
        if self.headers.get("Authorization"):
            # what S3 answers when a presigned URL also carries an Authorization header
            raise ApiError(400, "InvalidArgument: Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                                "parameter, Signature query string parameter or the Authorization header should "
                                "be specified")
        q = self._query()
        sha256 = raw_path.rsplit("/", 1)[-1]
        expires = q.get("X-Amz-Expires", ["0"])[0]
        owner = self.server.owner
        if not hmac.compare_digest(q.get("X-Amz-Signature", [""])[0], owner.storage_signature(sha256, expires)):
            raise ApiError(403, "SignatureDoesNotMatch")
        if float(expires) < time.time():
            raise ApiError(403, "Request has expired")
        item = owner.store.find_by_checksum("sha256", sha256)
        if item is None:
            raise ApiError(404, "NoSuchKey")
        self._download(item, checksum_headers=False)

    def _download(self, item: sqlite3.Row, checksum_headers: bool = True) -> None:
        store = self.server.owner.store
        blob = store.blob_path(item["sha256"])
        sha256 = _flip(item["sha256"]) if self._fault.get("wrong_checksum") else item["sha256"]
        headers = {
            "X-Checksum-Sha1": item["sha1"], "X-Checksum-Sha256": sha256, "X-Checksum-Md5": item["md5"],
        } if checksum_headers else {"ETag": f'"{item["md5"]}"'}
        headers |= {
            "Accept-Ranges": "bytes", "Last-Modified": email.utils.format_datetime(
                dt.datetime.fromisoformat(item["modified"].replace("Z", "+00:00")), usegmt=True),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(item['path'].rsplit('/', 1)[-1])}",
        }
        self._settle_body()
        self.server.owner._log(self.command, self.raw_path, self._body_len)
        self._logged = True
        truncate = bool(self._fault.get("truncate"))
        size = item["size"]
        self.send_response(200)
        self.send_header("Content-Type", item["mime"])
        self.send_header("Content-Length", str(size + (16 if truncate and size == 0 else 0)))
        for k, v in headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        limit = size // 2 if truncate else size
        with open(blob, "rb") as fh:
            while limit > 0:
                data = fh.read(min(CHUNK, limit))
                if not data:
                    break
                self.wfile.write(data)
                limit -= len(data)
        if truncate:
            self._hard_close()

    def _base(self) -> str:
        host = self.headers.get("Host") or self.server.owner.netloc
        return f"http://{host}/artifactory"

    def _item_json(self, item: sqlite3.Row, created_shape: bool = False) -> dict[str, Any]:
        base = self._base()
        repo, path = item["repo"], item["path"]
        orig = json.loads(item["orig"])
        sums = {"sha1": item["sha1"], "md5": item["md5"], "sha256": item["sha256"]}
        body: dict[str, Any] = {
            "repo": repo, "path": "/" + path, "created": item["created"], "createdBy": item["created_by"],
            "downloadUri": f"{base}/{repo}/{quote(path)}{self._echo_query()}", "mimeType": item["mime"], "size": str(item["size"]),
            "checksums": sums,
            # originalChecksums echo what the client sent; Artifactory fills in only SHA-256 from the bytes (a
            # `curl -T` deploy with no checksum header is answered with SHA-256 alone there, as shown in
            # belitre/helm-push-artifactory-plugin issue 103), so SHA-1 and MD5 the client kept back stay out
            "originalChecksums": {**{k: orig[k] for k in ("sha1", "md5") if orig.get(k)},
                                  "sha256": orig.get("sha256") or sums["sha256"]},
            "uri": f"{base}/{'api/storage/' if not created_shape else ''}{repo}/{quote(path)}",
        }
        if not created_shape:
            body.update({"lastModified": item["modified"], "modifiedBy": item["modified_by"],
                         "lastUpdated": item["modified"]})
        return body

    # -- storage API ("File Info", "Folder Info", "File List", "Item Properties") -----------------------
    def _storage(self, raw: str, method: str) -> None:
        store = self.server.owner.store
        repo, path = self._split_repo_path(raw)
        self._need_repo(repo)
        q = self._query()
        item = store.item(repo, path)
        exists = item is not None or store.is_folder(repo, path)
        if "properties" in q:
            if not exists:
                raise ApiError(404, f"Unable to find item: {repo}:{path}")
            targets = [path]
            recursive = q.get("recursive", ["1"])[0] not in ("0", "false")
            if item is None and recursive:
                # "Set Item Properties": on a folder the default is recursive
                targets += [r["path"] for r in store.items_under(repo, path)]
            value = q["properties"][0]
            if method == "GET":
                props = store.props(repo, path)
                if value:
                    wanted = set(value.split(","))
                    props = {k: v for k, v in props.items() if k in wanted}
                if not props:
                    # no properties: 404 whose body says "No properties could be found" (jfrog-client-go `props.go`)
                    raise ApiError(404, "No properties could be found.")
                return self._json(200, {"uri": f"{self._base()}/api/storage/{repo}/{quote(path)}",
                                        "properties": props})
            if method == "PUT":
                props = parse_properties_param(self._raw_query_value("properties"))
                if not props:
                    raise ApiError(400, "No properties given")
                for key in props:
                    if re.search(r"[)(}{\]\[*+^$\\/~`!@#%&<>;=,±§ ]", key):
                        raise ApiError(400, f"Property key contains a forbidden character: {key!r}")
                store.set_props(repo, targets, props)
                return self._send(204)
            if method == "DELETE":
                keys = [k for k in value.split(",") if k]
                if not keys:
                    raise ApiError(400, "No property keys given")
                store.delete_props(repo, targets, keys)
                return self._send(204)
            raise ApiError(405, "Method not allowed")
        if method != "GET":
            raise ApiError(405, "Method not allowed")
        if not exists:
            raise ApiError(404, f"Unable to find item: {repo}:{path}")
        if item is not None:
            body = self._item_json(item)
            if self._fault.get("wrong_checksum"):
                body["checksums"]["sha256"] = _flip(body["checksums"]["sha256"])
            return self._json(200, body)
        rows = store.items_under(repo, path)
        prefix = f"{path}/" if path else ""
        base = f"{self._base()}/api/storage/{repo}/{quote(path)}".rstrip("/")
        if "list" in q:
            # JFrog REST "File List": folders are listed only with listFolders=1 (size "-1", no checksums)
            deep = q.get("deep", ["0"])[0] == "1"
            list_folders = q.get("listFolders", ["0"])[0] == "1"
            entries: dict[str, dict[str, Any]] = {}
            for r in rows:
                rel = r["path"][len(prefix):]
                parts = rel.split("/")
                if list_folders:
                    for depth in range(1, len(parts) if deep else min(2, len(parts))):
                        folder = "/".join(parts[:depth])
                        entries.setdefault(folder, {"uri": "/" + folder, "size": "-1",
                                                    "lastModified": r["modified"], "folder": True})
                if deep or len(parts) == 1:
                    entries[rel] = {"uri": "/" + rel, "size": str(r["size"]), "lastModified": r["modified"],
                                    "folder": False, "sha1": r["sha1"], "sha2": r["sha256"]}
            return self._json(200, {"uri": base, "created": _now(), "files": [entries[k] for k in sorted(entries)]})
        children: dict[str, bool] = {}
        for r in rows:
            rel = r["path"][len(prefix):]
            head, sep, _ = rel.partition("/")
            children[head] = children.get(head, False) or bool(sep)
        created = min((r["created"] for r in rows), default=_now())
        modified = max((r["modified"] for r in rows), default=created)
        return self._json(200, {
            "uri": base, "repo": repo, "path": "/" + path, "created": created, "createdBy": self.user,
            "lastModified": modified, "modifiedBy": self.user, "lastUpdated": modified,
            "children": [{"uri": "/" + k, "folder": v} for k, v in sorted(children.items())],
        })

    # -- AQL (JFrog REST "Artifactory Query Language") ------------------------------------------------
    def _aql(self) -> None:
        store = self.server.owner.store
        try:
            text = self._read_body().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, "AQL body must be UTF-8 text") from exc
        q = parse_aql(text)
        if q["sort"] and self.server.owner.edition == "oss":
            # Artifactory OSS and JCR (devopshq/artifactory-cleanup issue 59, jfrog-cli issue 957)
            raise ApiError(400, "Sorting is not supported by AQL in the open source version")
        include = q["include"]
        with_props = include is not None and any(
            f in ("property", "property.*", "*") or f.startswith(("@", "property.")) for f in include)
        # With sort/limit/offset, AQL leaves the properties of every row out instead of refusing the query
        # (JFrog "Artifactory Query Language", Limitations; jfrog-cli issues 957 and 1374)
        drop_props = with_props and bool(q["sort"] or q["limit"] is not None or q["offset"])
        rows: list[tuple[dict[str, Any], dict[str, list[str]]]] = []
        files = store.all_items()
        folders: set[tuple[str, str]] = set()
        for it in files:
            parts = it["path"].split("/")[:-1]
            for i in range(1, len(parts) + 1):
                folders.add((it["repo"], "/".join(parts[:i])))
            rows.append((self._aql_row(it["repo"], it["path"], it), store.props(it["repo"], it["path"])))
        for repo, folder in sorted(folders):
            rows.append((self._aql_row(repo, folder, None), store.props(repo, folder)))
        criteria = q["criteria"]
        if not _uses_type(criteria):
            criteria = {"$and": [criteria, {"type": "file"}]}  # AQL default: files only
        results = [(r, p) for r, p in rows if aql_match(r, p, criteria)]
        keys = {f[1:] for f in include or [] if f.startswith("@")}
        if keys and not with_all_props(include):
            # ".include will also filter out items that do not have this property" (JFrog "Filtering
            # Properties by Key")
            results = [(r, p) for r, p in results if keys & p.keys()]
        if q["sort"]:
            direction, fields = next(iter(q["sort"].items()))
            results.sort(key=lambda rp: tuple(("" if rp[0].get(f) is None else rp[0][f]) for f in fields),
                         reverse=direction == "$desc")
        total = len(results)
        off = q["offset"]
        results = results[off:]
        if q["limit"] is not None:
            results = results[: q["limit"]]
        out = [self._aql_project(r, p, include) for r, p in results]
        if drop_props:
            for row in out:
                row.pop("properties", None)
        rng: dict[str, Any] = {"start_pos": off, "end_pos": off + len(out), "total": len(out)}
        if q["limit"] is not None:
            rng["limit"] = q["limit"]
        del total
        self._json(200, {"results": out, "range": rng})

    @staticmethod
    def _aql_row(repo: str, path: str, it: sqlite3.Row | None) -> dict[str, Any]:
        folder, _, name = path.rpartition("/")
        row: dict[str, Any] = {
            "repo": repo, "path": folder or ".", "name": name, "type": "file" if it is not None else "folder",
            "size": it["size"] if it is not None else 0,
            "created": it["created"] if it is not None else None,
            "created_by": it["created_by"] if it is not None else None,
            "modified": it["modified"] if it is not None else None,
            "modified_by": it["modified_by"] if it is not None else None,
            "updated": it["modified"] if it is not None else None,
            "depth": path.count("/") + 1,
            "sha256": it["sha256"] if it is not None else None,
            "actual_sha1": it["sha1"] if it is not None else None,
            "actual_md5": it["md5"] if it is not None else None,
            "original_sha1": json.loads(it["orig"]).get("sha1") if it is not None else None,
            "original_md5": json.loads(it["orig"]).get("md5") if it is not None else None,
            # the virtual repositories that aggregate the item's repository; this server has none
            "virtual_repos": [],
        }
        return row

    @staticmethod
    def _aql_project(row: dict[str, Any], props: dict[str, list[str]], include: list[str] | None) -> dict[str, Any]:
        default = ["repo", "path", "name", "type", "size", "created", "created_by", "modified", "modified_by",
                   "updated"]
        if include is None or "*" in include:
            fields = default if include is None else list(row)
        else:
            fields = []
            for f in include:
                f = f.split(".", 1)[1] if f.startswith("item.") else f
                if f == "property" or f.startswith("@") or f.startswith("property."):
                    continue
                if f not in row:
                    raise ApiError(400, f"Failed to parse query: unknown field {f}")
                fields.append(f)
        out = {f: row[f] for f in fields}
        if include is not None:
            wanted_keys: set[str] | None = set()
            for f in include:
                if f in ("property", "property.*", "*"):
                    wanted_keys = None
                    break
                if f.startswith("@"):
                    wanted_keys.add(f[1:])  # type: ignore[union-attr]
            if wanted_keys is None or wanted_keys:
                out["properties"] = [{"key": k, "value": v} for k, vals in sorted(props.items())
                                     for v in vals if wanted_keys is None or k in wanted_keys]
        return out

    # -- copy / move (JFrog REST "Copy Item", "Move Item") --------------------------------------------
    def _copy_move(self, op: str, raw: str) -> None:
        store = self.server.owner.store
        q = self._query()
        src_repo, src_path = self._split_repo_path(raw)
        self._need_repo(src_repo)
        to = q.get("to", [""])[0]
        if not to:
            raise ApiError(400, "Missing 'to' parameter")
        # accept 'to' with or without a leading '/', form-encoded (jfrog-client-go `movecopy.go` sends it bare)
        dst_repo, _, dst_path = to.strip("/").partition("/")
        dst_cfg = self._need_repo(dst_repo)
        flags = {}
        for name in ("dry", "failFast", "suppressLayouts"):
            value = q.get(name, ["0"])[0].lower()
            if value not in ("0", "1", "true", "false"):
                raise ApiError(400, f"Invalid value for '{name}': {value!r} (expected 0 or 1)")
            flags[name] = value in ("1", "true")
        # suppressLayouts only matters between repositories with different layouts; generic ones have none
        dry, fail_fast = flags["dry"], flags["failFast"]
        src_item = store.item(src_repo, src_path)
        if src_item is None and not (src_path and store.is_folder(src_repo, src_path)):
            raise ApiError(404, f"Could not find item: {src_repo}:{src_path}")
        # unix cp/mv: an existing target folder receives the source inside it
        if dst_path == "" or (store.item(dst_repo, dst_path) is None and store.is_folder(dst_repo, dst_path)):
            dst_path = "/".join(p for p in (dst_path, src_path.rsplit("/", 1)[-1]) if p)
        if src_repo == dst_repo and (dst_path == src_path or dst_path.startswith(src_path + "/")):
            raise ApiError(400, "Cannot copy or move an item onto itself")
        pairs: list[tuple[sqlite3.Row, str]] = []
        if src_item is not None:
            pairs.append((src_item, dst_path))
        else:
            for r in store.items_under(src_repo, src_path):
                pairs.append((r, dst_path + r["path"][len(src_path):]))
        verb = "copying" if op == "copy" else "moving"
        # Levels are lower case, as in the "Move Item" sample answer; a refused item is an "error" message in a
        # 200 answer, and failFast stops at the first one (the rest stay where they are)
        messages: list[dict[str, str]] = []
        done: list[str] = []
        for row, target in pairs:
            if not _pattern_allows(dst_cfg, target):
                messages.append({"level": "error", "message": f"The repository '{dst_repo}' rejected the path "
                                                              f"'{target}' (include/exclude patterns)"})
                if fail_fast:
                    break
                continue
            messages.append({"level": "info", "message": f"{'[dry run] ' if dry else ''}{verb} "
                                                         f"{src_repo}:{row['path']} to {dst_repo}:{target} completed successfully"})
            done.append(row["path"])
            if dry:
                continue
            sums = {"sha256": row["sha256"], "sha1": row["sha1"], "md5": row["md5"]}
            store.put_item(dst_repo, target, sums, row["size"], json.loads(row["orig"]), self.user, None)
            store.copy_props(src_repo, row["path"], dst_repo, target)
        if not dry and src_item is None and len(done) == len(pairs):
            store.copy_props(src_repo, src_path, dst_repo, dst_path)
        if op == "move" and not dry:
            for path in [src_path] if len(done) == len(pairs) else done:
                store.delete_path(src_repo, path)
        self._json(200, {"messages": messages})

    # -- build-info ("Build Upload", "Build Info") and promotion ("Build Promotion") -------------------
    def _builds(self, rest: str, method: str) -> None:
        # name and number are path-escaped (jfrog-client-go `buildUrlWithEscapingSlash`), so split the raw path
        # before unquoting ('/' = %2F)
        parts = [unquote(p) for p in rest.strip("/").split("/")] if rest.strip("/") else []
        project = self._query().get("project", [""])[0]
        if not parts and method == "PUT":
            return self._build_put(project)
        if not parts and method == "GET":
            names = self.server.owner.store.build_names(project)
            return self._json(200, {"uri": f"{self._base()}/api/build", "builds": [
                {"uri": "/" + quote(r["name"], safe=""), "lastStarted": r["last"]} for r in names]})
        if len(parts) == 3 and parts[0] == "promote" and method == "POST":
            return self._build_promote(parts[1], parts[2], project)
        if len(parts) == 2 and method == "GET":
            info = self.server.owner.store.build(project, parts[0], parts[1])
            if info is None:
                raise ApiError(404, f"No build was found for build name: {parts[0]}, build number: {parts[1]}")
            uri = f"{self._base()}/api/build/{quote(parts[0], safe='')}/{quote(parts[1], safe='')}"
            return self._json(200, {"uri": uri, "buildInfo": info})
        if len(parts) == 1 and method == "GET":
            runs = self.server.owner.store.build_runs(project, parts[0])
            if not runs:
                raise ApiError(404, f"No build was found for build name: {parts[0]}")
            return self._json(200, {"uri": f"{self._base()}/api/build/{quote(parts[0], safe='')}",
                                    "buildsNumbers": [{"uri": "/" + quote(r["number"], safe=""),
                                                       "started": r["started"]} for r in runs]})
        raise ApiError(404 if method in ("GET", "POST") else 405, "Not Found")

    def _json_body(self) -> Any:
        return loads_json(self._read_body(), "JSON body")

    def _build_put(self, project: str) -> None:
        # accept any JSON content type (jfrog-client-go sends application/vnd.org.jfrog.artifactory+json)
        ctype = self.headers.get("Content-Type", "")
        if ctype and "json" not in ctype.lower():
            raise ApiError(415, f"Unsupported media type: {ctype}")
        raw = self._read_body()
        info = loads_json(raw, "build-info JSON")
        if not isinstance(info, dict):
            raise ApiError(400, "build-info must be a JSON object")
        for key in ("name", "number", "started"):  # `version` is not required: the JFrog CLI omits it
            if not isinstance(info.get(key), str | int) or not str(info[key]):
                raise ApiError(400, f"Build-info is missing the required field '{key}'")
        if not isinstance(info.get("modules", []), list):
            raise ApiError(400, "Build-info 'modules' must be a list")
        old = self.server.owner.store.build(project, str(info["name"]), str(info["number"]))
        if old and old.get("statuses") and "statuses" not in info:
            info["statuses"] = old["statuses"]  # a re-publish keeps earlier promotion records
        self.server.owner.store.put_build(project, info)
        sha256 = hashlib.sha256(raw).hexdigest()
        if self._fault.get("wrong_checksum"):
            sha256 = _flip(sha256)
        # jfrog-client-go reads X-Checksum-Sha256 from the answer; 204 is one of the codes it accepts
        self._send(204, headers={"X-Checksum-Sha256": sha256})

    def _build_promote(self, name: str, number: str, project: str) -> None:
        store = self.server.owner.store
        req = self._json_body()
        if not isinstance(req, dict):
            raise ApiError(400, "Promotion request must be a JSON object")
        info = store.build(project, name, number)
        if info is None:
            raise ApiError(404, f"Cannot find build '{name}' number '{number}'")
        target_repo = req.get("targetRepo")
        source_repo = req.get("sourceRepo")
        dry = bool(req.get("dryRun", False))
        copy = bool(req.get("copy", False))  # "Build Promotion": copy defaults to false, i.e. a move
        fail_fast = bool(req.get("failFast", True))
        props = req.get("properties") or {}
        if not isinstance(props, dict) or not all(isinstance(v, list) for v in props.values()):
            raise ApiError(400, "'properties' must map keys to lists of values")
        if target_repo and not store.repo(str(target_repo)):
            raise ApiError(400, f"Cannot find target repository '{target_repo}'")
        if source_repo and not store.repo(str(source_repo)):
            raise ApiError(400, f"Cannot find source repository '{source_repo}'")
        # "Build Upload" linking rule: items carrying build.name/build.number, or matching module checksums
        wanted: set[str] = set()
        for module in info.get("modules") or []:
            kinds = ["artifacts"] if req.get("artifacts", True) else []
            if req.get("dependencies"):
                kinds.append("dependencies")
            for kind in kinds:
                for art in module.get(kind) or []:
                    wanted.update(str(art[k]).lower() for k in ("sha1", "sha256") if art.get(k))
        sources: list[sqlite3.Row] = []
        for row in store.all_items():
            if source_repo and row["repo"] != source_repo:
                continue
            if target_repo and row["repo"] == target_repo and not source_repo:
                continue  # already promoted copies are not sources
            p = store.props(row["repo"], row["path"])
            linked = name in p.get("build.name", []) and number in p.get("build.number", [])
            if linked or row["sha1"] in wanted or row["sha256"] in wanted:
                sources.append(row)
        messages: list[dict[str, str]] = []
        plan: list[tuple[sqlite3.Row, str]] = []
        for row in sources:
            if not target_repo:
                break
            existing = store.item(target_repo, row["path"])
            if existing is not None and existing["sha256"] != row["sha256"]:
                # 409 when the target exists with other content; nothing is overwritten
                raise ApiError(409, f"Target '{target_repo}:{row['path']}' already exists with different content")
            if existing is not None and row["repo"] == target_repo:
                continue
            plan.append((row, row["path"]))
        # "Build Promotion" message levels are INFO, WARN and ERROR (upper case, unlike copy/move)
        if target_repo and not sources:
            messages.append({"level": "WARN", "message": f"No artifacts found for build '{name}' #{number}"})
        verb = "copying" if copy else "moving"
        target_cfg = store.repo(str(target_repo)) if target_repo else None
        for row, path in plan:
            if target_cfg is not None and not _pattern_allows(target_cfg, path):
                messages.append({"level": "ERROR", "message": f"The repository '{target_repo}' rejected the path "
                                                              f"'{path}' (include/exclude patterns)"})
                if fail_fast:
                    break
                continue
            messages.append({"level": "INFO", "message": f"{'[dry run] ' if dry else ''}{verb} "
                                                         f"{row['repo']}:{row['path']} to {target_repo}:{path}"})
            if dry:
                continue
            sums = {"sha256": row["sha256"], "sha1": row["sha1"], "md5": row["md5"]}
            if store.item(target_repo, path) is None:
                store.put_item(target_repo, path, sums, row["size"], json.loads(row["orig"]), self.user, None)
                store.copy_props(row["repo"], row["path"], target_repo, path)
            if props:
                store.set_props(target_repo, [path], {str(k): [str(x) for x in v] for k, v in props.items()})
            if not copy:
                store.delete_path(row["repo"], row["path"])
        if not dry:
            statuses = list(info.get("statuses") or [])
            statuses.append({"status": str(req.get("status", "")), "comment": str(req.get("comment", "")),
                             "repository": target_repo or "", "timestamp": req.get("timestamp") or _now(),
                             "user": self.user, "ciUser": req.get("ciUser") or self.user})
            info["statuses"] = statuses
            store.put_build(project, info)
        self._json(200, {"messages": messages})

    # -- Xray: ping, version, artifact summary, graph scan ----------------------------------------------
    def _xray(self, sub: str, method: str) -> None:
        # Xray REST "Ping" requires a valid user (https://jfrog.com/help/r/xray-rest-apis/ping-request)
        self.user = self._require_user()
        if sub == "/api/v1/system/ping" and method == "GET":
            return self._json(200, {"status": "pong"})
        if sub == "/api/v1/system/version" and method == "GET":
            return self._json(200, {"xray_version": XRAY_VERSION, "xray_revision": "local"})
        if sub == "/api/v1/scan/graph" and method == "POST":
            return self._scan_graph_post()
        m_sum = re.fullmatch(r"/api/(v1|v2)/summary/artifact", sub)
        if m_sum and method == "POST":
            return self._summary_artifact(m_sum.group(1))
        if sub == "/api/v1/summary/component" and method == "POST":
            return self._summary_component()
        m = re.fullmatch(r"/api/v1/scan/graph/([^/]+)", sub)
        if m and method == "GET":
            return self._scan_graph_get(unquote(m.group(1)))
        raise ApiError(404, "Not Found")

    def _summary_artifact(self, version: str) -> None:
        owner = self.server.owner
        store = owner.store
        req = self._json_body()
        if not isinstance(req, dict) or not (req.get("paths") or req.get("checksums")):
            raise ApiError(400, "request must contain 'paths' or 'checksums'")
        findings = owner.load_vulnerabilities()
        artifacts: list[dict[str, Any]] = []
        errors: list[dict[str, str]] = []
        # if both are given, checksums are ignored (Xray REST "Artifact Summary",
        # https://docs.jfrog.com/security/reference/artifact-summary_artifacts-v2-openapi)
        if req.get("paths"):
            for ident in req["paths"]:
                aid, _, rest = str(ident).partition("/")
                repo, _, path = rest.partition("/")
                row = store.item(repo, path) if aid == "default" and path else None
                if row is None or not owner._indexed(row["sha256"]):
                    errors.append({"identifier": str(ident),
                                   "error": "Artifact doesn't exist or not indexed/cached in Xray"})
                else:
                    artifacts.append(_summary_artifact(row, findings, version == "v2"))
        else:
            for ident in req["checksums"]:
                value = str(ident).strip().lower()
                kind = checksum_kind(value)
                row = store.find_by_checksum(kind, value) if kind in ("sha1", "sha256") else None
                if row is None or not owner._indexed(row["sha256"]):
                    errors.append({"identifier": str(ident),
                                   "error": "Artifact doesn't exist or not indexed/cached in Xray"})
                else:
                    artifacts.append(_summary_artifact(row, findings, version == "v2"))
        self._json(200, {"artifacts": artifacts, "errors": errors})

    def _summary_component(self) -> None:
        # Xray REST "Component Summary" (https://jfrog.com/help/r/xray-rest-apis): {"component_details":
        # [{"component_id": "pypi://requests:2.32.3"}]} → {artifacts[{general, issues, licenses}], errors[]}
        # (jfrog-client-js `src/Xray/XraySummaryClient.ts`, `model/Xray/Summary/*.ts`)
        req = self._json_body()
        details = req.get("component_details") if isinstance(req, dict) else None
        if not isinstance(details, list) or not details:
            raise ApiError(400, "request must contain a non-empty 'component_details' list")
        findings = self.server.owner.load_vulnerabilities()
        artifacts: list[dict[str, Any]] = []
        errors: list[dict[str, str]] = []
        for i, entry in enumerate(details):
            cid = entry.get("component_id") if isinstance(entry, dict) else None
            if not isinstance(cid, str) or not cid.strip():
                raise ApiError(400, f"component_details[{i}] needs a string component_id")
            kind, name, version = split_component_id(cid)
            if not kind or not name:
                errors.append({"identifier": cid, "error": "Invalid component id: expected <type>://<name>[:<version>]"})
                continue
            issues = [_summary_issue(rec, idx, [cid], cid, v2=True) for idx, rec in enumerate(findings)
                      if _finding_applies(rec, kind, name, version)]
            artifacts.append({"general": {"component_id": cid, "name": name, "pkg_type": kind, "path": "",
                                          "sha256": "", "sha1": "", "parent_sha256": []},
                              "issues": issues, "licenses": []})
        self._json(200, {"artifacts": artifacts, "errors": errors})

    def _scan_graph_post(self) -> None:
        owner = self.server.owner
        q = self._query()
        root = loads_json(self._read_body(), "request body")
        if not isinstance(root, dict) or not isinstance(root.get("component_id", ""), str):
            raise ApiError(400, "request body must be a graph node object")
        if not root.get("nodes") and not root.get("component_id"):
            raise ApiError(400, "graph is empty")
        root_id = root.get("component_id") or "root"
        components: dict[str, list[str]] = {}
        for cid, path in _walk_nodes(root, [root_id]):
            components.setdefault(cid, path)
        # at most one context, in order project, repo_path, watches (jfrog-client-go `createScanGraphQueryParams`)
        context: dict[str, Any] = {}
        if q.get("project"):
            context = {"project": q["project"][0]}
        elif q.get("repo_path"):
            context = {"repo_path": q["repo_path"][0]}
        elif q.get("watch"):
            context = {"watches": q["watch"]}
        findings = owner.load_vulnerabilities()
        scan_id = str(uuid.uuid4())
        data = {"root": root_id, "components": components, "context": context, "findings": findings}
        owner.store.save_scan(scan_id, owner.scan_polls_before_done, data)
        self._json(201, {"scan_id": scan_id})

    def _scan_graph_get(self, scan_id: str) -> None:
        owner = self.server.owner
        q = self._query()
        polled = owner.store.poll_scan(scan_id)
        if polled is None:
            raise ApiError(404, f"scan id {scan_id} not found")
        polls_left, data = polled
        if polls_left > 0:
            total = max(1, owner.scan_polls_before_done)
            pct = int(100 * (total - polls_left) / (total + 1))
            return self._json(202, {"scan_id": scan_id, "progress_percentage": pct})
        want_vulns = q.get("include_vulnerabilities", ["false"])[0].lower() == "true"
        want_licenses = q.get("include_licenses", ["false"])[0].lower() == "true"
        self._json(200, build_scan_result(scan_id, data, want_vulns, want_licenses,
                                          f"http://{self.headers.get('Host') or owner.netloc}"))


def _cvss(score: Any, vector: Any) -> str:
    # summary CVSS fields are combined "<score>/<vector>" strings (jfrog-client-go `summary.go` SummaryCve)
    score, vector = str(score or ""), str(vector or "")
    return f"{score}/{vector}" if score and vector else score


def _finding_applies(rec: dict[str, Any], kind: str, name: str, version: str | None) -> bool:
    """A planted finding for `type://name[:version]` applies to a component of that type and name (any version
    when the finding names none)."""
    rkind, rname, rversion = split_component_id(str(rec.get("component", "")))
    return (rkind, rname) == (kind, name) and (rversion is None or rversion == version)


def _summary_issue(rec: dict[str, Any], idx: int, impact_path: list[str], component_id: str,
                   v2: bool) -> dict[str, Any]:
    """One summary `issues[]` entry (Artifact Summary / Component Summary) for a planted finding."""
    issue: dict[str, Any] = {
        "issue_id": rec.get("issue_id", f"XRAY-LOCAL-{idx}"), "summary": rec.get("summary", ""),
        "description": rec.get("description", rec.get("summary", "")),
        "issue_type": rec.get("issue_type", "security"), "severity": rec.get("severity", "Unknown"),
        "provider": "JFrog", "created": _now(),
        "cves": [{"cve": c.get("cve", ""), "cvss_v2": _cvss(c.get("cvss_v2_score"), c.get("cvss_v2_vector")),
                  "cvss_v3": _cvss(c.get("cvss_v3_score"), c.get("cvss_v3_vector")), "cwe": c.get("cwe", [])}
                 for c in rec.get("cves", [])],
        "impact_path": impact_path,
    }
    if v2:  # the v2 summary adds per-issue component details (Artifact Summary v2)
        issue["components"] = [{"component_id": component_id, "version": split_component_id(component_id)[2] or "",
                                "pkg_type": split_component_id(component_id)[0] or "generic",
                                "fixed_versions": list(rec.get("fixed_versions", []))}]
    return issue


def _summary_artifact(row: sqlite3.Row, findings: list[dict[str, Any]], v2: bool) -> dict[str, Any]:
    """One Artifact Summary `artifacts[]` entry for a stored item, with the planted findings that apply to it."""
    repo, path = row["repo"], row["path"]
    name = path.rsplit("/", 1)[-1]
    component_id = f"generic://sha256:{row['sha256']}/{name}"  # Xray's component id of a generic file
    issues = []
    for idx, rec in enumerate(findings):
        applies = (rec.get("sha256") == row["sha256"] or rec.get("path") == f"{repo}/{path}"
                   or _finding_applies(rec, "generic", name.lower(), None))
        if applies:
            issue = _summary_issue(rec, idx, [f"default/{repo}/{path}"], component_id, v2)
            issue["component_physical_paths"] = [path]
            issues.append(issue)
    return {"general": {"component_id": component_id, "name": name, "path": f"default/{repo}/{path}",
                        "pkg_type": "Generic", "sha256": row["sha256"], "sha1": row["sha1"]},
            "issues": issues, "licenses": []}


def _flip(hexdigest: str) -> str:
    return ("0" if hexdigest[0] != "0" else "1") + hexdigest[1:]


def build_scan_result(scan_id: str, data: dict[str, Any], want_vulns: bool, want_licenses: bool,
                      base: str) -> dict[str, Any]:
    """Build the final 200 body of a graph scan poll (jfrog-client-go `ScanResponse`) from stored scan data."""
    components: dict[str, list[str]] = data["components"]
    issues: list[dict[str, Any]] = []
    for idx, rec in enumerate(data["findings"]):
        kind, name, version = split_component_id(str(rec.get("component", "")))
        matched: dict[str, Any] = {}
        for cid, path in components.items():
            ckind, cname, cver = split_component_id(cid)
            if ckind == kind and cname == name and (version is None or cver == version):
                matched[cid] = {
                    "fixed_versions": list(rec.get("fixed_versions", [])),
                    "infected_versions": list(rec.get("infected_versions", [f"(,{cver}]" if cver else "(,)"])),
                    "impact_paths": [[{"component_id": c, "full_path": c} for c in path]],
                    "package_name": cname, "package_version": cver or "", "package_type": ckind,
                    "cpes": [],
                }
        if not matched:
            continue
        cves = []
        for cve in rec.get("cves", []):
            cves.append({"cve": cve.get("cve", ""), "cvss_v2_score": cve.get("cvss_v2_score", ""),
                         "cvss_v2_vector": cve.get("cvss_v2_vector", ""),
                         "cvss_v3_score": cve.get("cvss_v3_score", ""),
                         "cvss_v3_vector": cve.get("cvss_v3_vector", ""), "cwe": cve.get("cwe", []),
                         "cwe_details": {}})
        issues.append({
            "issue_id": rec.get("issue_id", f"XRAY-LOCAL-{idx}"), "summary": rec.get("summary", ""),
            "severity": rec.get("severity", "Unknown"), "cves": cves, "components": matched,
            "references": rec.get("references", []),
            "extended_information": {"short_description": rec.get("summary", ""), "full_description": "",
                                     "jfrog_research_severity": "", "jfrog_research_severity_reasons": [],
                                     "remediation": ""},
            "edited": _now(), "_fail_build": bool(rec.get("fail_build", False)),
            "_watch": rec.get("watch_name"), "_policy": rec.get("policy", "local-security-policy"),
        })
    context = data["context"]
    kinds = {split_component_id(c)[0] for c in components} - {""}
    result: dict[str, Any] = {
        "scan_id": scan_id, "package_type": kinds.pop() if len(kinds) == 1 else "generic",
        "component_id": data["root"], "status": "completed", "progress_percentage": 100,
        "xray_data_url": f"{base}/ui/scans-list/graph/{scan_id}",
    }
    if want_vulns:
        result["vulnerabilities"] = [{k: v for k, v in i.items() if not k.startswith("_")} for i in issues]
    if context:
        # violations only when a context is given (jfrog-cli-security `commands/audit/audit.go`)
        watches = context.get("watches") or [None]
        violations = []
        for issue in issues:
            for watch in watches:
                name = watch or issue["_watch"] or f"{next(iter(context.values()))}-watch"
                v = {k: val for k, val in issue.items() if not k.startswith("_")}
                v.update({"type": "security", "watch_name": name, "fail_build": issue["_fail_build"],
                          "fail_pull_request": False, "ignore_url": "",
                          "policies": [{"policy": issue["_policy"], "rule": "local-severity-rule",
                                        "is_blocking": issue["_fail_build"], "ignore_rule_id": "",
                                        "is_skip_not_applicable": False}]})
                violations.append(v)
        result["violations"] = violations
    if want_licenses:
        result["licenses"] = []
    return result


_BUSY_BODY = b'{"errors": [{"status": 503, "message": "Too many connections; retry later"}]}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


class _HTTPServer(HTTPServer):
    """HTTPServer whose connections are served by a fixed pool of worker threads.

    As many connections as there are workers may wait for one; a connection beyond that is answered 503 at
    once, so neither threads nor queued sockets grow without bound.
    """

    allow_reuse_address = True
    owner: JFrogCompatServer

    def __init__(self, address: tuple[str, int], workers: int) -> None:
        super().__init__(address, _Handler)
        self.pool = ThreadPoolExecutor(max_workers=workers,
                                       thread_name_prefix=f"jfrog-compat-{self.server_address[1]}-worker")
        self.slots = threading.BoundedSemaphore(2 * workers)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.owner._lock:
            self.owner.connections_accepted += 1
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        self.owner._conns.add(request)
        try:
            self.pool.submit(self._serve, request, client_address)
        except RuntimeError:  # the pool has shut down: the server is stopping
            self.slots.release()
            self.shutdown_request(request)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - socketserver's own handling: print it, keep serving
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.slots.release()

    def shutdown_request(self, request: Any) -> None:
        self.owner._conns.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        # the open connections were shut down first, so every worker is about to return
        self.pool.shutdown(wait=True)


def _stored_token(path: Path) -> str:
    """The token in `path`, or a new random one written there readable by its owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"{path} is empty; delete it to get a new token") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


class JFrogCompatServer:
    """JFrog-compatible local server (not JFrog) with fault injection and a request log."""

    def __init__(self, state_dir: Path | str, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, scan_polls_before_done: int = 1, verbose: bool = False,
                 summary_polls_before_indexed: int = 0, edition: str = "pro", *,
                 read_timeout: float = DEFAULT_READ_TIMEOUT, workers: int = DEFAULT_WORKERS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, echo_credentials: bool = False) -> None:
        if workers < 1 or read_timeout <= 0 or max_body_bytes < 0:
            raise ValueError(f"workers must be >= 1, read_timeout > 0 and max_body_bytes >= 0; got {workers}, "
                             f"{read_timeout}, {max_body_bytes}")
        self.state_dir = Path(state_dir)
        # token None: a random one in state_dir/access-token (owner-only), kept across restarts over that dir
        self.token_file: Path | None = None if token else self.state_dir / TOKEN_FILE
        self.token = token or _stored_token(self.state_dir / TOKEN_FILE)
        self.read_timeout = float(read_timeout)
        self.workers = int(workers)
        self.max_body_bytes = int(max_body_bytes)
        # a hostile server for secret-scrubbing tests: error messages and JSON answers echo the credentials
        self.echo_credentials = echo_credentials
        # "oss" models Artifactory OSS / JCR: AQL refuses any sort (devopshq/artifactory-cleanup issue 59)
        self.edition = edition
        # redirected downloads go to this host name: another host than the one the client talks to, so a
        # client that forwards its Authorization header to the storage URL is caught (S3 refuses it)
        self.storage_host = "localhost"
        self._storage_key = os.urandom(16)
        self.host = host
        self.port = port
        self.scan_polls_before_done = scan_polls_before_done
        # Xray indexes a deployed file asynchronously: the artifact summary answers "not indexed" for the first
        # N summary requests that name a file (per sha256), as a real Xray does until indexing ends
        self.summary_polls_before_indexed = summary_polls_before_indexed
        self._summary_polls: collections.Counter[str] = collections.Counter()
        self.verbose = verbose
        self.request_log: list[tuple[str, str, int]] = []
        self._faults: list[tuple[re.Pattern[str], str | None, collections.deque[dict[str, Any]]]] = []
        self._lock = threading.Lock()
        self._conns: set[Any] = set()
        self.connections_accepted = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.store: Store | None = None  # type: ignore[assignment]

    # lifecycle
    def start(self) -> JFrogCompatServer:
        """Start serving in a background thread."""
        self.store = Store(self.state_dir)
        self._httpd = _HTTPServer((self.host, self.port), self.workers)
        self._httpd.timeout = 0.5
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="jfrog-compat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open keep-alive connections and the database."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._httpd = None
        if self.store is not None:
            self.store.close()

    def serve_forever(self) -> None:
        """Run in the foreground until stop() is called from another thread or a signal."""
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def __enter__(self) -> JFrogCompatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Platform URL; Artifactory under /artifactory and Xray under /xray, as on the JFrog Platform."""
        return f"http://{self.netloc}"

    # redirected downloads ("Direct Cloud Storage Download")
    def storage_signature(self, sha256: str, expires: str) -> str:
        """HMAC of a storage object and its expiry, like the signature of a presigned URL."""
        return hmac.new(self._storage_key, f"{sha256}:{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_storage_url(self, item: sqlite3.Row, ttl: float = 60.0) -> str:
        """A presigned-style URL of an item's bytes on the storage host, valid for `ttl` seconds."""
        expires = str(int(time.time() + ttl))
        return (f"http://{self.storage_host}:{self.port}/_storage/{item['sha256'][:2]}/{item['sha256']}"
                f"?X-Amz-Expires={expires}&X-Amz-Signature={self.storage_signature(item['sha256'], expires)}")

    # faults and request log
    def inject_faults(self, path_regex: str, specs: Sequence[dict[str, Any]], method: str | None = None) -> None:
        """Queue faults for requests whose raw path (no query) matches path_regex; one spec per request."""
        for spec in specs:
            unknown = set(spec) - _FAULT_KEYS
            if unknown:
                raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        with self._lock:
            self._faults.append((re.compile(path_regex), method.upper() if method else None,
                                 collections.deque(dict(s) for s in specs)))

    def clear_faults(self) -> None:
        """Drop all queued faults."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> int:
        """Number of queued, not yet used fault specs."""
        with self._lock:
            return sum(len(q) for _, _, q in self._faults)

    def _take_fault(self, method: str, path: str) -> dict[str, Any] | None:
        with self._lock:
            for regex, want, queue in self._faults:
                if queue and (want is None or want == method) and regex.search(path):
                    return queue.popleft()
        return None

    def _log(self, method: str, path: str, body_bytes: int) -> None:
        with self._lock:
            self.request_log.append((method, path, body_bytes))

    def stats(self) -> dict[str, int]:
        """Accepted TCP connections, logged requests and request-body bytes so far."""
        with self._lock:
            return {"connections_accepted": self.connections_accepted, "requests": len(self.request_log),
                    "body_bytes_received": sum(e[2] for e in self.request_log)}

    @property
    def body_bytes_received(self) -> int:
        """Request-body bytes read across all logged requests."""
        with self._lock:
            return sum(e[2] for e in self.request_log)

    def requests_matching(self, method: str | None = None, path_regex: str = "") -> list[tuple[str, str, int]]:
        """Request-log entries filtered by method and a path regex."""
        rx = re.compile(path_regex)
        with self._lock:
            return [e for e in self.request_log if (method is None or e[0] == method) and rx.search(e[1])]

    # xray indexing and findings
    def _indexed(self, sha256: str) -> bool:
        with self._lock:
            self._summary_polls[sha256] += 1
            return self._summary_polls[sha256] > self.summary_polls_before_indexed

    @property
    def vulnerabilities_file(self) -> Path:
        return self.state_dir / "xray" / "vulnerabilities.json"

    def plant_vulnerabilities(self, records: Sequence[dict[str, Any]]) -> None:
        """Write the findings file read by the next graph scan or summary.

        A record: {component (`pypi://torch` or `pypi://torch:2.5.1`) | sha256 | path, issue_id, severity,
        summary, cves [{cve, cvss_v3_score, ...}], fixed_versions, fail_build}. The severity is passed on as
        given, so tests can plant Xray's `Pending`, lower-case names, or null (no rating yet).
        """
        self.vulnerabilities_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.vulnerabilities_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(records), indent=2))
        os.replace(tmp, self.vulnerabilities_file)

    def load_vulnerabilities(self) -> list[dict[str, Any]]:
        """Read the findings file (fresh on every scan so tests can plant records between scans)."""
        try:
            data = json.loads(self.vulnerabilities_file.read_text())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise ApiError(500, f"vulnerabilities.json is not valid JSON: {exc}") from exc
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ApiError(500, "vulnerabilities.json must be a list of objects")
        return data


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: serve until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(description="JFrog-compatible LOCAL server (not JFrog).")
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--token", default=os.environ.get("JFROG_COMPAT_TOKEN") or None,
                    help="the access token (default: $JFROG_COMPAT_TOKEN, else a random one kept in "
                         f"STATE_DIR/{TOKEN_FILE}); prefer the variable: a command line is visible to every user")
    ap.add_argument("--scan-polls-before-done", type=int, default=1)
    ap.add_argument("--summary-polls-before-indexed", type=int, default=0,
                    help="answer 'not indexed' to the first N artifact summaries of each file")
    ap.add_argument("--edition", choices=("pro", "oss"), default="pro",
                    help="oss: refuse AQL sort as Artifactory OSS / JCR do")
    ap.add_argument("--url-file", type=Path, help="write the chosen URL here (useful with --port 0)")
    ap.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT,
                    help="seconds a socket read may wait (a stalled request is answered 408)")
    ap.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="worker threads (connections served at once)")
    ap.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                    help="larger request bodies are refused with 413")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    server = JFrogCompatServer(args.state_dir, args.host, args.port, args.token, args.scan_polls_before_done,
                               args.verbose, args.summary_polls_before_indexed, args.edition,
                               read_timeout=args.read_timeout, workers=args.workers,
                               max_body_bytes=args.max_body_bytes).start()
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.url_file:
        tmp = args.url_file.with_suffix(args.url_file.suffix + ".tmp")
        tmp.write_text(server.url + "\n")
        os.replace(tmp, args.url_file)
    print(f"JFrog-compatible LOCAL server (not JFrog) listening on {server.url}", flush=True)
    if server.token_file is not None:
        print(f"Access token (owner-only file): {server.token_file}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
