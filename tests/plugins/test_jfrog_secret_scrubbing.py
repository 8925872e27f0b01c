"""No form of the JFrog credential leaves the provider, whatever a hostile server echoes back.

A small HTTP server in this module reflects every request (method, URL, all headers, so the credential too) in
JSON error envelopes, HTML error pages cut mid-credential by the hook's message limits, HTML 200 pages, every
field of a JSON answer, and redirect locations (on the same host, and to a closed port). Every public hook
call, with Bearer and with Basic (login + password) auth, must leave 0 occurrences of any credential form in its
exception text (with the chained causes), its return value and the captured logs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.hooks.xray import XrayHook
from jfrog_provider.scrubbing import Scrubber, credential_forms

LOGIN = "svc-airflow"
MODES = ("error_json", "error_html", "ok_html", "json_echo", "redirect_here", "redirect_away")
# where the hook cuts server text: non-JSON error pages, non-JSON 200 answers
CUTS = {"error_html": 1000, "ok_html": 200}


def canary_token() -> str:
    # characters that change under URL-encoding, so the encoded forms differ from the plain one
    return f"Cnry+{secrets.token_hex(12)}/tok=en"


def leaked_forms(token: str, login: str | None) -> list[str]:
    """Every form to look for, built here independently of the code under test."""
    plain = [token]
    if login:
        basic = base64.b64encode(f"{login}:{token}".encode()).decode()
        plain += [basic, basic.rstrip("="), base64.urlsafe_b64encode(f"{login}:{token}".encode()).decode()]
    encoded = [quote(f, safe="") for f in plain] + [quote_plus(f) for f in plain]
    # a credential cut in half by a message limit still leaks its first half
    halves = [f[: len(f) // 2] for f in plain]
    return sorted({*plain, *encoded, *halves}, key=len, reverse=True)


def count_hits(text: str, forms: list[str]) -> int:
    return sum(text.count(f) for f in forms)


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HostileServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _body(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while (size := int(self.rfile.readline().split(b";")[0] or b"0", 16)) > 0:
                self.rfile.read(size + 2)
            self.rfile.readline()
        else:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, body: str, ctype: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        self._body()
        auth = self.headers.get("Authorization", "")
        credential = auth.partition(" ")[2]
        echo = f"{self.command} {self.path} " + "; ".join(f"{k}: {v}" for k, v in self.headers.items())
        quoted = quote(auth, safe="")
        mode = self.server.mode
        if mode == "redirect_here" and not self.path.startswith("/landing"):
            return self._answer(302, "", "text/plain", {"Location": f"/landing?auth={quoted}"})
        if mode == "redirect_away":
            return self._answer(302, "", "text/plain",
                                {"Location": f"http://127.0.0.1:{self.server.closed_port}/x?auth={quoted}"})
        if mode in ("error_json", "redirect_here"):
            return self._answer(404, json.dumps({"errors": [{"status": 404, "message": echo}], "error": echo}),
                                "application/json")
        if mode in CUTS:
            # the credential starts so that the hook's cut falls in its middle
            head = "<html><body><pre>"
            lead = f"{head}{'.' * (CUTS[mode] - len(credential) // 2 - len(head) - len(auth) + len(credential))}{auth}"
            page = f"{lead} {echo} {quoted}</pre></body></html>"
            return self._answer(403 if mode == "error_html" else 200, page, "text/html")
        uri = f"http://{self.headers.get('Host')}/artifactory/x?auth={quoted}"
        answer = {
            "repo": echo, "path": echo, "uri": uri, "downloadUri": uri, "checksums": {"sha256": echo, "sha1": echo},
            "messages": [{"level": "error", "message": echo}], "properties": {"k": [echo]},
            "results": [{"repo": echo, "path": echo, "name": echo, "created": "2026-01-01T00:00:00.000Z"}],
            "buildInfo": {"name": echo, "number": echo}, "buildsNumbers": [{"uri": f"/{echo}"}],
            "scan_id": echo, "status": echo, "vulnerabilities": [], "violations": [],
            "artifacts": [], "errors": [{"identifier": echo, "error": echo}], "echo": echo, "auth": quoted,
        }
        self._answer(201 if self.command == "PUT" else 200, json.dumps(answer), "application/json",
                     {"X-Checksum-Sha256": echo})

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _HostileServer(ThreadingHTTPServer):
    daemon_threads = True
    mode = "error_json"
    closed_port = 0


@pytest.fixture(scope="module")
def hostile() -> Iterator[_HostileServer]:
    server = _HostileServer(("127.0.0.1", 0), _Hostile)
    with socket.socket() as probe:  # a port nobody listens on: redirects there are refused
        probe.bind(("127.0.0.1", 0))
        server.closed_port = probe.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["bearer", "basic"])
def credentials(request, monkeypatch, hostile) -> tuple[str, str | None]:
    """A canary token on the jfrog_default connection, as a Bearer token or as the password of a login."""
    token, login = canary_token(), (LOGIN if request.param == "basic" else None)
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps({
        "conn_type": "jfrog", "host": f"http://127.0.0.1:{hostile.server_address[1]}", "login": login,
        "password": token, "extra": {"max_retries": 1, "backoff_base": 0.001, "backoff_max": 0.002}}))
    return token, login


def _calls(tmp: Path) -> dict[str, Callable[[], Any]]:
    tmp.mkdir(parents=True, exist_ok=True)
    small, big = tmp / "small.bin", tmp / "big.bin"
    small.write_bytes(b"s" * 100)
    big.write_bytes(b"b" * 20_000)
    art, xray = ArtifactoryHook, XrayHook
    build = {"name": "b", "number": "1", "started": "2026-01-01T00:00:00.000+0000"}

    def run(coro_fn: Callable[[Any], Any], cls: type) -> Callable[[], Any]:
        async def go() -> Any:
            hook = cls()
            try:
                return await coro_fn(hook)
            finally:
                await hook.aclose()

        return lambda: asyncio.run(go())

    return {
        "art.test_connection": lambda: art().test_connection(),
        "art.ping": lambda: art().ping(),
        "art.get_version": lambda: art().get_version(),
        "art.deploy_artifact small": lambda: art().deploy_artifact(small, "r", "a/small.bin", {"k": "v"}),
        "art.deploy_artifact checksum": lambda: art().deploy_artifact(big, "r", "a/big.bin"),
        "art.download_artifact": lambda: art().download_artifact("r", "a/small.bin", tmp / "dl" / "small.bin"),
        "art.get_file_info": lambda: art().get_file_info("r", "a/small.bin"),
        "art.get_item_properties": lambda: art().get_item_properties("r", "a/small.bin"),
        "art.set_item_properties": lambda: art().set_item_properties("r", "a/small.bin", {"k": "v"}),
        "art.delete_item_properties": lambda: art().delete_item_properties("r", "a/small.bin", ["k"]),
        "art.search_aql": lambda: art().search_aql('items.find({"repo": "r"})'),
        "art.find_latest_artifact": lambda: art().find_latest_artifact("r", {"k": "v"}),
        "art.copy_item": lambda: art().copy_item("r", "a/small.bin", "s", "a/small.bin"),
        "art.move_item": lambda: art().move_item("r", "a/small.bin", "s", "a/small.bin"),
        "art.promote_artifact": lambda: art().promote_artifact("r", "a/small.bin", "s", properties={"k": "v"}),
        "art.delete_item": lambda: art().delete_item("r", "a/small.bin"),
        "art.publish_build_info": lambda: art().publish_build_info(build),
        "art.get_build_info": lambda: art().get_build_info("b", "1"),
        "art.get_build_runs": lambda: art().get_build_runs("b"),
        "art.promote_build": lambda: art().promote_build("b", "1", status="released", target_repo="s"),
        "art.create_local_repository": lambda: art().create_local_repository("new-repo"),
        "art.artifact_url": lambda: art().artifact_url("r", "a/small.bin"),
        "art.ui_url": lambda: art().ui_url("r", "a/small.bin"),
        "art.asearch_aql": run(lambda h: h.asearch_aql('items.find({"repo": "r"})'), art),
        "xray.test_connection": lambda: xray().test_connection(),
        "xray.get_version": lambda: xray().get_version(),
        "xray.scan_graph": lambda: xray().scan_graph(["pypi://torch:2.0"]),
        "xray.get_graph_scan_result": lambda: xray().get_graph_scan_result("s-1"),
        "xray.wait_for_graph_scan": lambda: xray().wait_for_graph_scan("s-1", poll_interval=0.01, timeout=0.05),
        "xray.get_artifact_summary": lambda: xray().get_artifact_summary(["r/a/small.bin"]),
        "xray.wait_for_artifact_summary": lambda: xray().wait_for_artifact_summary(
            ["r/a/small.bin"], poll_interval=0.01, timeout=0.05),
        "xray.get_violations": lambda: xray().get_violations(["pypi://torch:2.0"], watches=["w"],
                                                               poll_interval=0.01, timeout=0.05),
        "xray.aget_graph_scan_result": run(lambda h: h.aget_graph_scan_result("s-1"), xray),
        "xray.aget_indexed_summary": run(lambda h: h.aget_indexed_summary(["r/a/small.bin"]), xray),
    }


def _outcome(call: Callable[[], Any]) -> tuple[str, str]:
    """('raised'|'returned', everything a caller could print or store from the outcome)."""
    try:
        value = call()
    except Exception as exc:  # noqa: BLE001 - every error counts, whatever its type
        return "raised", "".join(traceback.format_exception(exc)) + repr(exc.args)
    return "returned", json.dumps(value, default=repr) + repr(value)


def test_no_credential_form_survives_a_hostile_server(hostile, credentials, tmp_path, caplog, capsys):
    token, login = credentials
    forms = leaked_forms(token, login)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="airflow.task.hooks")
    leaks: dict[str, int] = {}
    outcomes = {"raised": 0, "returned": 0}
    for mode in MODES:
        hostile.mode = mode
        for name, call in _calls(tmp_path / mode).items():
            kind, text = _outcome(call)
            outcomes[kind] += 1
            if hits := count_hits(text, forms):
                leaks[f"{mode} {name} ({kind})"] = hits
    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err  # stdlib records and Airflow's structlog console output
    assert "retry 1/1" in logs  # the redirect-away calls were retried and logged
    log_hits = count_hits(logs, forms)
    with capsys.disabled():
        print(f"\n{sum(outcomes.values())} hook calls ({outcomes}), {len(forms)} forms: "
              f"{sum(leaks.values())} hits in errors/returns, {log_hits} in logs")
    assert leaks == {} and log_hits == 0


def test_hostile_answers_do_carry_the_credential(hostile, credentials, tmp_path):
    """The control: each mode echoes the credential, and the hook's answer shows where it was redacted."""
    token, login = credentials
    for mode in MODES:
        hostile.mode = mode
        kind, text = _outcome(_calls(tmp_path / "x")["art.get_file_info"])
        assert "***" in text, (mode, kind, text[:300])


def test_credential_forms_cover_bearer_basic_and_encodings():
    token = "ab/c+d=e&f"
    forms = credential_forms(token, "me")
    basic = base64.b64encode(b"me:ab/c+d=e&f").decode()
    assert {token, "ab%2Fc%2Bd%3De%26f", "ab%2fc%2bd%3de%26f", "ab/c%2Bd%3De%26f", "ab/c+d=e&amp;f",
            basic, basic.rstrip("="), quote(basic, safe="")} <= forms
    assert credential_forms(token, None) >= {token, "ab%2Fc%2Bd%3De%26f"}
    assert not any(basic in f for f in credential_forms(token, None))


def test_scrubbing_happens_before_the_cut():
    token = "0123456789abcdef"
    scrub = Scrubber(credential_forms(token))
    text = "x" * 995 + token
    assert scrub.excerpt(text, 1000) == "x" * 995 + "***"
    assert "01234" not in scrub.excerpt(text, 1000)


def test_exception_chains_are_scrubbed_in_place():
    token = "s3cr3t-token-value"
    scrub = Scrubber(credential_forms(token))

    class Opaque(Exception):
        def __str__(self) -> str:  # a message built from an attribute, not from args
            return f"opaque {token}"

    try:
        try:
            try:
                raise Opaque()
            except Opaque as inner:
                raise ValueError(f"url ?t={token}", [f"Bearer {token}"]) from inner
        except ValueError as middle:
            raise RuntimeError(f"wrapped {quote(token, safe='')}") from middle
    except RuntimeError as outer:
        clean = scrub.exception(outer)
    text = "".join(traceback.format_exception(clean))
    assert token not in text and "wrapped ***" in text and "url ?t=***" in text and "Bearer ***" in text
    assert clean.__cause__.__cause__ is None  # the opaque one could not be cleaned, so it was cut


class _RecordingTI:
    """The one piece of a task instance the operators touch: xcom_push (for the extra links)."""

    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


@pytest.mark.parametrize("login", [None, LOGIN])
def test_upload_operator_xcom_has_the_echoed_download_uri_redacted(tmp_path, monkeypatch, login):
    from jfrog_provider.operators.artifactory import ArtifactoryUploadOperator

    from devtools.jfrog_compat.server import JFrogCompatServer

    token = canary_token()
    model = tmp_path / "model.pt"
    model.write_bytes(b"m" * 20_000)
    with JFrogCompatServer(tmp_path / "state", token=token, echo_credentials=True) as server:
        monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps(
            {"conn_type": "jfrog", "host": server.url, "login": login, "password": token}))
        ti = _RecordingTI()
        out = ArtifactoryUploadOperator(task_id="publish", local_path=str(model), repo="ml-models-local",
                                        target_path="m/1/model.pt").execute({"ti": ti})
    assert "?echo=" in out["uri"] and "***" in out["uri"]  # the stand-in echoed the request into downloadUri
    assert count_hits(json.dumps([out, ti.xcoms]), leaked_forms(token, login)) == 0


def test_every_form_is_registered_with_airflows_secrets_masker(monkeypatch):
    from airflow.sdk.log import redact

    token = canary_token()
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps(
        {"conn_type": "jfrog", "host": "http://127.0.0.1:1", "login": LOGIN, "password": token}))
    assert ArtifactoryHook().config.login == LOGIN  # reading the connection registers the forms
    basic = base64.b64encode(f"{LOGIN}:{token}".encode()).decode()
    line = f"Authorization: Basic {basic}; url ?t={quote(token, safe='')}; raw {token}"
    assert redact(line) == "Authorization: Basic ***; url ?t=***; raw ***"
