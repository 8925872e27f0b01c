"""The local server defends itself: random token, auth before bodies, read timeouts, size and nesting limits,
a bounded worker pool; malformed framing is a 400, never a 500 or a hang."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devtools.jfrog_compat.server import MAX_NESTING, TOKEN_FILE, JFrogCompatServer

REPO_ROOT = Path(__file__).resolve().parents[3]
# a client socket waits this long for an answer; the server under test answers in milliseconds
ANSWER_WAIT = 10.0


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[JFrogCompatServer]:
    """Two workers, a 1 KiB body limit and a 0.5 s read timeout, so the limits are quick to reach."""
    with JFrogCompatServer(tmp_path / "state", token="hardening-token", workers=2, max_body_bytes=1024,
                           read_timeout=0.5) as server:
        yield server


def connect(server: JFrogCompatServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=ANSWER_WAIT)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP answer from a raw socket."""
    resp = http.client.HTTPResponse(sock, method="PUT")
    resp.begin()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def raw(server: JFrogCompatServer, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send a hand-written request (head without the final blank line) and read the answer."""
    with connect(server) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body)
        return answer(sock)


def auth_head(server: JFrogCompatServer, method: str, path: str, *lines: str) -> str:
    return "\n".join([f"{method} {path} HTTP/1.1", f"Host: {server.netloc}",
                      f"Authorization: Bearer {server.token}", *lines])


# -- the token -----------------------------------------------------------------------------------------


def test_default_token_is_random_owner_only_and_kept_across_restarts(tmp_path: Path):
    with JFrogCompatServer(tmp_path / "a") as first, JFrogCompatServer(tmp_path / "b") as other:
        token = first.token
        assert token != other.token and len(token) >= 32
        token_file = tmp_path / "a" / TOKEN_FILE
        assert first.token_file == token_file and token_file.read_text().strip() == token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        url = f"{first.url}/artifactory/api/system/version"
        assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=ANSWER_WAIT).ok
    with JFrogCompatServer(tmp_path / "a") as again:
        assert again.token == token


def test_given_token_writes_no_token_file(tmp_path: Path):
    with JFrogCompatServer(tmp_path, token="given-token") as server:
        assert server.token == "given-token" and server.token_file is None
    assert not (tmp_path / TOKEN_FILE).exists()


def test_cli_alone_prints_where_the_token_is_not_the_token(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "JFROG_COMPAT_TOKEN"}
    url_file = tmp_path / "url.txt"
    proc = subprocess.Popen([sys.executable, "-m", "devtools.jfrog_compat.server", "--state-dir", str(tmp_path / "s"),
                             "--port", "0", "--url-file", str(url_file)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
    try:
        started = proc.stdout.readline()  # the first line comes once the URL file is written
        assert started.startswith("JFrog-compatible LOCAL server (not JFrog) listening on ")
        url = url_file.read_text().strip()
        token_file = tmp_path / "s" / TOKEN_FILE
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        version = f"{url}/artifactory/api/system/version"
        assert requests.get(version, headers={"Authorization": "Bearer local-test-token"},
                            timeout=ANSWER_WAIT).status_code == 401
        assert requests.get(version, headers={"Authorization": f"Bearer {token}"}, timeout=ANSWER_WAIT).ok
    finally:
        proc.terminate()
        proc.wait(timeout=ANSWER_WAIT)
        rest = proc.stdout.read()  # the pipe's writer has exited: read() ends
        proc.stdout.close()
    assert f"Access token (owner-only file): {token_file}" in rest.splitlines()
    assert token not in started + rest


# -- authentication before the body --------------------------------------------------------------------


@pytest.mark.parametrize("credentials", [None, "Bearer wrong-token"])
def test_unauthenticated_64_mib_put_is_refused_before_its_body(jfrog_server, credentials):
    """Only the headers are sent: the 401 must come without waiting for (or reading) 64 MiB."""
    lines = ["PUT /artifactory/ml-models-local/big.bin HTTP/1.1", f"Host: {jfrog_server.netloc}",
             f"Content-Length: {64 * 1024 * 1024}"]
    if credentials:
        lines.append(f"Authorization: {credentials}")
    status, headers, body = raw(jfrog_server, "\n".join(lines))
    assert status == 401 and headers["connection"] == "close"
    assert json.loads(body)["errors"][0]["status"] == 401
    assert jfrog_server.requests_matching("PUT", "big.bin") == [("PUT", "/artifactory/ml-models-local/big.bin", 0)]


def test_unauthenticated_small_body_is_drained_and_the_connection_kept(jfrog_server):
    with requests.Session() as session:
        refused = session.put(f"{jfrog_server.url}/artifactory/ml-models-local/a.txt", data=b"x" * 100,
                              timeout=ANSWER_WAIT)
        assert refused.status_code == 401
        ping = session.get(f"{jfrog_server.url}/artifactory/api/system/ping", timeout=ANSWER_WAIT)
    assert ping.text == "OK" and jfrog_server.stats()["connections_accepted"] == 1


# -- timeouts, limits and framing ----------------------------------------------------------------------


def test_stalled_upload_is_answered_408_and_frees_its_worker(tmp_path: Path):
    with JFrogCompatServer(tmp_path, token="t", workers=1, read_timeout=0.5) as server, connect(server) as stalled:
        stalled.sendall(auth_head(server, "PUT", "/artifactory/ml-models-local/slow.bin",
                                  "Content-Length: 100").replace("\n", "\r\n").encode() + b"\r\n\r\n" + b"x" * 10)
        status, headers, _ = answer(stalled)
        assert status == 408 and headers["connection"] == "close"
        # the only worker is free again
        assert requests.get(f"{server.url}/artifactory/api/system/ping", timeout=ANSWER_WAIT).text == "OK"
        assert server.store.item("ml-models-local", "slow.bin") is None


def test_body_over_the_limit_is_413_before_reading(small_server):
    status, headers, body = raw(small_server, auth_head(small_server, "PUT", "/artifactory/ml-models-local/x.bin",
                                                        "Content-Length: 1025"))
    assert status == 413 and headers["connection"] == "close" and "1024" in body.decode()
    ok = requests.put(f"{small_server.url}/artifactory/ml-models-local/y.bin", data=b"y" * 1024,
                      headers={"Authorization": f"Bearer {small_server.token}"}, timeout=ANSWER_WAIT)
    assert ok.status_code == 201


def test_chunked_body_over_the_limit_is_413(small_server):
    head = auth_head(small_server, "PUT", "/artifactory/ml-models-local/x.bin", "Transfer-Encoding: chunked")
    status, _, _ = raw(small_server, head, b"400\r\n" + b"x" * 1024 + b"\r\n1\r\nx\r\n0\r\n\r\n")
    assert status == 413
    assert small_server.store.item("ml-models-local", "x.bin") is None


@pytest.mark.parametrize("length", ["abc", "-1", "+5", "1e3", "0x10", "5, 6", "٣"])
def test_malformed_content_length_is_400(jfrog_server, length):
    status, headers, body = raw(jfrog_server, auth_head(jfrog_server, "PUT", "/artifactory/ml-models-local/x.bin",
                                                        f"Content-Length: {length}"))
    assert (status, headers["connection"]) == (400, "close")
    assert "Content-Length" in json.loads(body)["errors"][0]["message"]


def test_conflicting_content_lengths_and_both_framings_are_400(jfrog_server):
    path = "/artifactory/ml-models-local/x.bin"
    assert raw(jfrog_server, auth_head(jfrog_server, "PUT", path, "Content-Length: 1", "Content-Length: 2"))[0] == 400
    assert raw(jfrog_server, auth_head(jfrog_server, "PUT", path, "Content-Length: 1",
                                       "Transfer-Encoding: chunked"), b"0\r\n\r\n")[0] == 400


@pytest.mark.parametrize("chunks", [b"zz\r\nabc\r\n0\r\n\r\n", b"\r\n", b"-3\r\nabc\r\n0\r\n\r\n",
                                    b"3\r\nabcX\r\n0\r\n\r\n", b"f" * 2000 + b"\r\n"])
def test_malformed_chunked_body_is_400(jfrog_server, chunks):
    head = auth_head(jfrog_server, "PUT", "/artifactory/ml-models-local/x.bin", "Transfer-Encoding: chunked")
    status, headers, _ = raw(jfrog_server, head, chunks)
    assert (status, headers["connection"]) == (400, "close")
    assert jfrog_server.store.item("ml-models-local", "x.bin") is None


def test_well_formed_chunked_body_is_stored(jfrog_server):
    head = auth_head(jfrog_server, "PUT", "/artifactory/ml-models-local/c.txt", "Transfer-Encoding: chunked")
    status, _, _ = raw(jfrog_server, head, b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert status == 201 and jfrog_server.store.item("ml-models-local", "c.txt")["size"] == 5


def _nested_aql(depth: int) -> str:
    """items.find() around criteria `depth` objects deep: {"$and": [{"$and": [... {"name": "x"} ...]}]}."""
    return "items.find(" + '{"$and": [' * (depth - 1) + '{"name": "x"}' + "]}" * (depth - 1) + ")"


def test_aql_nesting_beyond_the_bound_is_400(jfrog_server, api):
    url = f"{jfrog_server.url}/artifactory/api/search/aql"
    # one level for find(), two per $and (object + list)
    within = api.post(url, data=_nested_aql(MAX_NESTING // 2 - 1), headers={"Content-Type": "text/plain"})
    assert within.status_code == 200
    for depth in (MAX_NESTING // 2 + 1, 5000):
        refused = api.post(url, data=_nested_aql(depth), headers={"Content-Type": "text/plain"})
        assert refused.status_code == 400, (depth, refused.text)
        assert f"deeper than {MAX_NESTING} levels" in refused.json()["errors"][0]["message"]


@pytest.mark.parametrize("path", ["/artifactory/api/build", "/xray/api/v1/scan/graph",
                                  "/xray/api/v2/summary/artifact"])
def test_deeply_nested_json_bodies_are_400(jfrog_server, api, path):
    body = "[" * 5000 + "]" * 5000
    resp = (api.put if path.endswith("/build") else api.post)(
        f"{jfrog_server.url}{path}", data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text


# -- the worker pool -----------------------------------------------------------------------------------


def _workers(server: JFrogCompatServer) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"jfrog-compat-{server.port}-worker")]


def test_worker_threads_are_bounded_and_overflow_is_503(tmp_path: Path):
    with JFrogCompatServer(tmp_path, token="t", workers=2, read_timeout=30) as server:
        idle = [connect(server) for _ in range(4)]  # 2 held by workers, 2 waiting for one
        try:
            with connect(server) as extra:
                status, headers, _ = answer(extra)
            assert status == 503 and headers["retry-after"] == "1"
            assert len(_workers(server)) == 2
        finally:
            for sock in idle:
                sock.close()
        assert requests.get(f"{server.url}/artifactory/api/system/ping", timeout=ANSWER_WAIT).text == "OK"
        assert len(_workers(server)) == 2
