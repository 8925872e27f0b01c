"""JFrogHook: connection resolution, auth, the retry policy and error mapping of `_request`."""

from __future__ import annotations

import base64
import email.utils
import gzip
import hashlib
import json
import logging
import os
import pickle
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jfrog_provider.exceptions import JFrogApiError
from jfrog_provider.hooks import base
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.hooks.base import JFrogHook, parse_retry_after

from devtools.jfrog_compat.server import JFrogCompatServer

VERSION = r"/artifactory/api/system/version$"


def fast_hook(cls=JFrogHook, **kw) -> JFrogHook:
    """A hook with tiny backoff so retry tests stay fast."""
    return cls(**{"backoff_base": 0.01, "backoff_max": 0.05, **kw})


def set_conn(monkeypatch, **fields) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps({"conn_type": "jfrog", **fields}))


# -- connection -------------------------------------------------------------------------------------


def test_connection_resolves_from_env_var_outside_a_task(jfrog_conn, jfrog_server):
    hook = JFrogHook()
    assert hook.config.artifactory_url == f"{jfrog_server.url}/artifactory"
    assert hook.config.xray_url == f"{jfrog_server.url}/xray"
    assert hook.config.timeout == 60.0
    assert hook.test_connection() == (True, "Connection to JFrog Artifactory works")


@pytest.mark.parametrize("fields,expected", [
    ({"host": "http://h.example:8081"}, "http://h.example:8081"),
    ({"host": "http://h.example:8081/artifactory/"}, "http://h.example:8081"),
    ({"host": "h.example", "schema": "http", "port": 8082}, "http://h.example:8082"),
    ({"host": "acme.jfrog.io"}, "https://acme.jfrog.io"),
])
def test_platform_url_forms(monkeypatch, fields, expected):
    set_conn(monkeypatch, password="tok12345", **fields)
    assert JFrogHook().config.platform_url == expected


def test_extras_configure_timeout_verify_and_retries(monkeypatch):
    set_conn(monkeypatch, host="http://h:1", password="tok12345",
             extra={"timeout": 5, "verify": "false", "max_retries": 2, "backoff_base": 0.5})
    cfg = JFrogHook(max_retries=7).config
    assert (cfg.timeout, cfg.verify, cfg.max_retries, cfg.backoff_base) == (5.0, False, 7, 0.5)
    assert "tok12345" not in repr(cfg)


@pytest.mark.parametrize("fields", [{"host": "", "password": "tok12345"}, {"host": "http://h:1"}])
def test_incomplete_connection_is_value_error(monkeypatch, fields):
    set_conn(monkeypatch, **fields)
    with pytest.raises(ValueError):
        JFrogHook().config  # noqa: B018


def test_bearer_by_default_basic_with_login(monkeypatch, jfrog_server):
    set_conn(monkeypatch, host=jfrog_server.url, password=jfrog_server.token)
    assert JFrogHook().session.headers["Authorization"] == f"Bearer {jfrog_server.token}"
    set_conn(monkeypatch, host=jfrog_server.url, login="alice", password=jfrog_server.token)
    hook = JFrogHook()
    assert "Authorization" not in hook.session.headers and hook.session.auth == ("alice", jfrog_server.token)
    assert hook.test_connection()[0] is True


def test_session_is_cached_and_reuses_one_connection(jfrog_conn, jfrog_server):
    hook = JFrogHook()
    assert hook.get_conn() is hook.session
    for _ in range(3):
        hook._request("GET", "/api/system/version")
    pool = next(iter(hook.session.adapters["http://"].poolmanager.pools._container.values()))
    assert pool.num_connections == 1


def test_bad_token_fails_test_connection_without_leaking_it(monkeypatch, jfrog_server):
    set_conn(monkeypatch, host=jfrog_server.url, password="wrong-token-abcdef")
    ok, message = JFrogHook().test_connection()
    assert ok is False and "401" in message and "wrong-token-abcdef" not in message


# -- retries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_survived(jfrog_conn, jfrog_server, status):
    jfrog_server.inject_faults(VERSION, [{"status": status}] * 3)
    assert fast_hook()._request("GET", "/api/system/version").status_code == 200
    assert len(jfrog_server.requests_matching("GET", VERSION)) == 4


def test_retries_are_bounded(jfrog_conn, jfrog_server):
    jfrog_server.inject_faults(VERSION, [{"status": 503}] * 10)
    with pytest.raises(JFrogApiError) as err:
        fast_hook(max_retries=2)._request("GET", "/api/system/version")
    assert err.value.status == 503 and err.value.message == "Injected fault"
    assert len(jfrog_server.requests_matching("GET", VERSION)) == 3


def test_max_total_wait_stops_retrying_early(jfrog_conn, jfrog_server):
    jfrog_server.inject_faults(VERSION, [{"status": 429, "retry_after": "30"}])
    start = time.monotonic()
    with pytest.raises(JFrogApiError) as err:
        fast_hook(max_total_wait=5)._request("GET", "/api/system/version")
    assert err.value.status == 429 and time.monotonic() - start < 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
def test_final_statuses_are_not_retried(jfrog_conn, jfrog_server, status):
    jfrog_server.inject_faults(VERSION, [{"status": status}])
    with pytest.raises(JFrogApiError) as err:
        fast_hook()._request("GET", "/api/system/version")
    assert err.value.status == status
    assert len(jfrog_server.requests_matching("GET", VERSION)) == 1


def test_retry_after_delta_seconds_is_honoured(jfrog_conn, jfrog_server):
    jfrog_server.inject_faults(VERSION, [{"status": 429, "retry_after": "1"}])
    start = time.monotonic()
    fast_hook()._request("GET", "/api/system/version")
    assert time.monotonic() - start >= 1.0


def test_retry_after_http_date_is_honoured(jfrog_conn, jfrog_server):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    jfrog_server.inject_faults(VERSION, [{"status": 503, "retry_after": when}])
    start = time.monotonic()
    fast_hook()._request("GET", "/api/system/version")
    assert time.monotonic() - start >= 0.9  # HTTP-date has 1 s resolution


def test_parse_retry_after_forms():
    now = 1_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(email.utils.formatdate(now + 10, usegmt=True), now) == pytest.approx(10, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 10, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None


def test_connection_reset_and_truncated_body_are_retried(jfrog_conn, jfrog_server):
    jfrog_server.inject_faults(VERSION, [{"reset": True}, {"truncate": True}])
    assert fast_hook()._request("GET", "/api/system/version").json()["version"]
    assert len(jfrog_server.requests_matching("GET", VERSION)) == 3


def test_read_timeout_is_retried_for_idempotent_calls(jfrog_conn, jfrog_server):
    jfrog_server.inject_faults(VERSION, [{"delay": 1.0}])
    assert fast_hook(timeout=0.3)._request("GET", "/api/system/version").ok
    deadline = time.monotonic() + 3  # the delayed first request is logged when its handler answers
    while len(jfrog_server.requests_matching("GET", VERSION)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(jfrog_server.requests_matching("GET", VERSION)) == 2


def test_non_idempotent_post_is_not_resent_after_reset(jfrog_conn, jfrog_server):
    hook = fast_hook(ArtifactoryHook)
    (tmp := jfrog_server.state_dir / "f.bin").write_bytes(b"x")
    hook.deploy_artifact(tmp, "ml-models-local", "mv/f.bin")
    jfrog_server.inject_faults(r"/api/move/", [{"reset": True}])
    with pytest.raises(JFrogApiError) as err:
        hook.move_item("ml-models-local", "mv/f.bin", "ml-models-release", "mv/f.bin")
    assert err.value.status is None
    assert len(jfrog_server.requests_matching("POST", r"/api/move/")) == 1


def test_non_idempotent_post_is_resent_after_429(jfrog_conn, jfrog_server):
    hook = fast_hook(ArtifactoryHook)
    (tmp := jfrog_server.state_dir / "f.bin").write_bytes(b"x")
    hook.deploy_artifact(tmp, "ml-models-local", "mv/f.bin")
    jfrog_server.inject_faults(r"/api/move/", [{"status": 429}, {"status": 502}])
    with pytest.raises(JFrogApiError) as err:  # 502: a proxy may have forwarded it; not safe to resend a move
        hook.move_item("ml-models-local", "mv/f.bin", "ml-models-release", "mv/f.bin")
    assert err.value.status == 502
    assert len(jfrog_server.requests_matching("POST", r"/api/move/")) == 2


def test_retry_false_disables_retries(jfrog_conn, jfrog_server):
    jfrog_server.inject_faults(VERSION, [{"status": 503}])
    with pytest.raises(JFrogApiError):
        fast_hook()._request("GET", "/api/system/version", retry=False)


# -- errors ----------------------------------------------------------------------------------------


def test_error_message_comes_from_jfrog_envelope(jfrog_conn, jfrog_server):
    with pytest.raises(JFrogApiError) as err:
        fast_hook()._request("GET", "/api/storage/no-such-repo/x")
    assert err.value.status == 404 and err.value.message == "Repository no-such-repo not found"
    assert "GET /api/storage/no-such-repo/x" in str(err.value)


def test_xray_error_body_is_read(jfrog_conn, jfrog_server):
    with pytest.raises(JFrogApiError) as err:
        fast_hook()._request("GET", "/api/v1/scan/graph/nope", service="xray")
    assert err.value.status == 404 and err.value.message == "scan id nope not found"


def test_token_never_in_exception_or_logs(jfrog_conn, jfrog_server, caplog, capsys):
    echo = f"echoing your token {jfrog_server.token} back"
    jfrog_server.inject_faults(VERSION, [{"status": 503, "body": echo}, {"status": 400, "body": echo}])
    caplog.set_level(logging.DEBUG)
    with pytest.raises(JFrogApiError) as err:
        fast_hook()._request("GET", "/api/system/version")
    assert err.value.status == 400
    assert jfrog_server.token not in str(err.value) and "***" in err.value.message
    logged = caplog.text + capsys.readouterr().out
    assert "answered 503; retry 1/" in logged and jfrog_server.token not in logged


def test_error_pickles():
    err = pickle.loads(pickle.dumps(JFrogApiError(409, "conflict", method="PUT", url_path="/r/p")))
    assert (err.status, err.message, str(err)) == (409, "conflict", "JFrog API PUT /r/p failed (HTTP 409): conflict")


def test_unreachable_server_raises_jfrog_error(monkeypatch):
    with JFrogCompatServer(monkeypatch_tmp := __import__("tempfile").mkdtemp()) as server:
        url = server.url
    del monkeypatch_tmp
    set_conn(monkeypatch, host=url, password="tok12345")
    with pytest.raises(JFrogApiError) as err:
        fast_hook(max_retries=1)._request("GET", "/api/system/version")
    assert err.value.status is None


def test_refused_connect_is_retried_even_for_a_post(monkeypatch):
    with JFrogCompatServer(__import__("tempfile").mkdtemp()) as server:
        url = server.url  # stopped on exit: connections to this port are refused
    set_conn(monkeypatch, host=url, password="tok12345")
    hook = fast_hook(max_retries=3)
    sleeps: list[float] = []
    hook._sleep = sleeps.append
    with pytest.raises(JFrogApiError) as err:
        hook._request("POST", "/api/move/r/a?to=/r/b")  # never sent, so resending cannot move twice
    assert err.value.status is None and len(sleeps) == 3


def test_backoff_has_jitter_and_is_capped(jfrog_conn):
    from tenacity import RetryCallState

    backoff = JFrogHook(backoff_base=1.0, backoff_max=8.0)._backoff
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    waits = []
    for attempt in range(1, 9):
        state.attempt_number = attempt
        waits += [backoff(state) for _ in range(20)]
    assert max(waits) <= 8.0 and min(waits) >= 0.5 and len(set(waits)) > 100
    assert all(0.5 <= w <= 1.0 for w in waits[:20]) and all(4.0 <= w <= 8.0 for w in waits[-20:])


def test_each_retry_is_logged_with_its_reason(jfrog_conn, jfrog_server, capsys):
    jfrog_server.inject_faults(VERSION, [{"status": 503}, {"reset": True}])
    fast_hook()._request("GET", "/api/system/version")
    retries = [line for line in capsys.readouterr().out.splitlines() if "; retry " in line]  # the SDK logs to stdout
    assert len(retries) == 2 and "answered 503; retry 1/5" in retries[0] and "ConnectionError" in retries[1]


# -- the async twin (triggers) shares the policy -------------------------------------------------------


def test_async_requests_follow_the_same_retry_and_post_rules(jfrog_conn, jfrog_server):
    import asyncio

    async def go() -> None:
        hook = fast_hook(ArtifactoryHook)
        jfrog_server.inject_faults(VERSION, [{"status": 503}, {"status": 429, "retry_after": "0"}])
        assert (await hook._arequest("GET", "/api/system/version")).json()["version"]
        jfrog_server.inject_faults(r"/api/move/", [{"reset": True}])
        with pytest.raises(JFrogApiError) as err:
            await hook._arequest("POST", "/api/move/ml-models-local/a?to=/ml-models-release/a")
        assert err.value.status is None
        jfrog_server.inject_faults(VERSION, [{"status": 403, "body": f"no, {jfrog_server.token}"}])
        with pytest.raises(JFrogApiError) as err:
            await hook._arequest("GET", "/api/system/version")
        assert err.value.status == 403 and jfrog_server.token not in str(err.value)
        await hook.aclose()

    asyncio.run(go())
    assert len(jfrog_server.requests_matching("GET", VERSION)) == 4
    assert len(jfrog_server.requests_matching("POST", r"/api/move/")) == 1


# -- lean calls: deploy's two PUTs go on urllib3 directly --------------------------------------------


class _Scripted(BaseHTTPRequestHandler):
    """Answers a deploy by what the path ends with; records what each request carried."""

    protocol_version = "HTTP/1.1"
    server: _ScriptedServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)),
                           **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:  # noqa: N802 - stdlib name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append({"line": self.requestline, "auth": self.headers.get("Authorization"),
                                 "accept_encoding": self.headers.get("Accept-Encoding"), "size": len(body)})
        if self.headers.get("X-Checksum-Deploy") == "true":
            return self._send(404, b'{"errors": [{"status": 404, "message": "Checksum deploy failed"}]}')
        ending = self.path.rsplit("/", 1)[-1]
        if ending == "moved":  # to another host name: the Authorization header must not follow
            target = f"http://localhost:{self.server.server_address[1]}/artifactory/ml-models-local/landed"
            return self._send(307, b"", {"Location": target})
        created = json.dumps({
            "repo": "ml-models-local", "path": self.path.split("/ml-models-local", 1)[-1],
            "checksums": {"sha256": hashlib.sha256(body).hexdigest(), "sha1": hashlib.sha1(body).hexdigest(),
                          "md5": hashlib.md5(body).hexdigest()}}).encode()
        if ending == "gzipped":  # compressed although identity was asked for
            return self._send(201, gzip.compress(created), {"Content-Encoding": "gzip"})
        if ending == "huge":
            return self._send(201, created + b" " * 5000)
        self._send(201, created)


class _ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[dict[str, Any]]


@pytest.fixture
def scripted(monkeypatch) -> Iterator[_ScriptedServer]:
    server = _ScriptedServer(("127.0.0.1", 0), _Scripted)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    set_conn(monkeypatch, host=f"http://127.0.0.1:{server.server_address[1]}", password="tok-lean-12345")
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def payload(tmp_path) -> Path:
    (path := tmp_path / "model.safetensors").write_bytes(os.urandom(64 * 1024))
    return path


def test_deploy_and_plain_calls_share_one_connection(jfrog_conn, jfrog_server, payload):
    hook = fast_hook(ArtifactoryHook)
    for i in range(3):
        hook.deploy_artifact(payload, "ml-models-local", f"lean/{i}.bin")
        hook.get_file_info("ml-models-local", f"lean/{i}.bin")
    pool = next(iter(hook.session.adapters["http://"].poolmanager.pools._container.values()))
    assert pool.num_connections == 1


def test_deploy_with_a_login_sends_the_basic_header_requests_would(monkeypatch, jfrog_server, payload):
    set_conn(monkeypatch, host=jfrog_server.url, login="alice", password=jfrog_server.token)
    hook = fast_hook(ArtifactoryHook)
    assert hook.deploy_artifact(payload, "ml-models-local", "lean/basic.bin").size == 64 * 1024
    expected = "Basic " + base64.b64encode(f"alice:{jfrog_server.token}".encode()).decode()
    assert hook._lean_headers["Authorization"] == expected


def test_redirected_deploy_follows_without_the_credential(scripted, payload):
    result = fast_hook(ArtifactoryHook).deploy_artifact(payload, "ml-models-local", "m/moved")
    assert result.path == "landed"
    # probe, the lean PUT answered 307, then requests' own PUT and its redirect to the other host name
    lines = [(s["line"].split()[1], s["auth"], s["size"]) for s in scripted.seen]
    assert lines == [("/artifactory/ml-models-local/m/moved", "Bearer tok-lean-12345", 0),
                     ("/artifactory/ml-models-local/m/moved", "Bearer tok-lean-12345", 64 * 1024),
                     ("/artifactory/ml-models-local/m/moved", "Bearer tok-lean-12345", 64 * 1024),
                     ("/artifactory/ml-models-local/landed", None, 64 * 1024)]


def test_deploy_through_a_proxy_goes_through_the_session(scripted, monkeypatch, payload):
    proxy = f"http://127.0.0.1:{scripted.server_address[1]}"  # the scripted server plays the proxy too
    set_conn(monkeypatch, host="http://artifactory.invalid", password="tok-lean-12345")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fast_hook(ArtifactoryHook).deploy_artifact(payload, "ml-models-local", "m/proxied.bin")
    # a proxy is sent the absolute URL (RFC 9112 "absolute-form"); a lean call would have sent the path
    assert all(s["line"].split()[1].startswith("http://artifactory.invalid/artifactory/") for s in scripted.seen)


def test_a_compressed_answer_is_not_inflated(scripted, payload):
    with pytest.raises(JFrogApiError, match="expected JSON"):
        fast_hook(ArtifactoryHook).deploy_artifact(payload, "ml-models-local", "m/gzipped")
    assert {s["accept_encoding"] for s in scripted.seen} == {"identity"}


def test_an_oversized_answer_is_refused_and_its_connection_dropped(scripted, monkeypatch, payload):
    monkeypatch.setattr(base, "LEAN_ANSWER_LIMIT", 4096)
    hook = fast_hook(ArtifactoryHook)
    with pytest.raises(JFrogApiError, match="answer larger than 4096 bytes"):
        hook.deploy_artifact(payload, "ml-models-local", "m/huge")
    # the unread rest of that answer must not be taken for the next answer on a reused connection
    assert hook.deploy_artifact(payload, "ml-models-local", "m/next.bin").path == "m/next.bin"


def test_deploy_survives_its_cached_pool_being_closed(jfrog_conn, jfrog_server, payload):
    hook = fast_hook(ArtifactoryHook)
    hook.deploy_artifact(payload, "ml-models-local", "lean/a.bin")
    (cached,) = hook._lean_pools.values()
    hook.session.adapters["http://"].poolmanager.clear()  # the session lets go of the pool, someone closes it
    cached.close()
    payload.write_bytes(os.urandom(64 * 1024))  # new content: the probe misses, the bytes go up
    assert hook.deploy_artifact(payload, "ml-models-local", "lean/b.bin").path == "lean/b.bin"
    assert hook._lean_pools and cached not in hook._lean_pools.values()  # a fresh pool from the session
    hook.close()
    assert hook.deploy_artifact(payload, "ml-models-local", "lean/c.bin").path == "lean/c.bin"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (certificate, key) as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jfrog-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (cert_path := tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (key_path := tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("verify", ["ca", "default", "off"])
def test_deploy_over_tls_checks_the_certificate_as_the_session_does(scripted, monkeypatch, tmp_path, payload, verify):
    import ssl

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    scripted.socket = context.wrap_socket(scripted.socket, server_side=True)
    extra = {"ca": {"verify": str(cert)}, "default": {}, "off": {"verify": "false"}}[verify]
    set_conn(monkeypatch, host=f"https://127.0.0.1:{scripted.server_address[1]}", password="tok-lean-12345",
             extra=extra)
    hook = fast_hook(ArtifactoryHook, max_retries=0)
    if verify == "default":  # the system's CAs do not know this certificate: the upload must not happen
        with pytest.raises(JFrogApiError, match="CERTIFICATE_VERIFY_FAILED"):
            hook.deploy_artifact(payload, "ml-models-local", "m/tls.bin")
        assert scripted.seen == []
    else:
        assert hook.deploy_artifact(payload, "ml-models-local", "m/tls.bin").size == 64 * 1024
        # probe and upload, both lean (requests would have asked for gzip)
        assert [(s["size"], s["accept_encoding"]) for s in scripted.seen] == [(0, "identity"), (64 * 1024, "identity")]
