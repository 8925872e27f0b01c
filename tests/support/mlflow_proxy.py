"""A real `mlflow server` process and a fault-injecting HTTP proxy in front of it, for registry tests.

The proxy forwards every request unchanged, except those matching an armed fault:
- `commit_then_504`: forward, let the server commit, then answer 504 Gateway Timeout (a gateway that gave up);
- `504_before_commit`: answer 504 without forwarding (nothing committed);
- `hold`: keep the request open (not forwarded) until released, then answer 504 — the moment to SIGKILL a client.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
FAULTS = ("commit_then_504", "504_before_commit", "hold")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(tmp: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a SQLite store and proxied artifacts; yields its URL."""
    port = free_port()
    log = tmp / "mlflow-server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--serve-artifacts",
               "--artifacts-destination", str(tmp / "artifacts")]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp),
           "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    kind: str
    times: int


@dataclass
class FaultProxy:
    """Forwards to `upstream`; records (method, path, status) of every request; injects the armed faults."""

    upstream: str
    seen: list[tuple[str, str, int]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def inject(self, method: str, path_regex: str, kind: str, times: int = 1) -> None:
        """Arm `kind` for the next `times` requests of `method` whose path matches `path_regex`."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}: one of {FAULTS}")
        with self.lock:
            self.faults.append(Fault(method, re.compile(path_regex), kind, times))

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
        self.release.set()

    def count(self, method: str, path_regex: str) -> int:
        """Requests of `method` on a matching path that reached the proxy."""
        return sum(1 for m, p, _ in self.seen if m == method and re.search(path_regex, p))

    def _take(self, method: str, path: str) -> str | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and fault.path.search(path) and fault.times > 0:
                    fault.times -= 1
                    return fault.kind
        return None

    @contextlib.contextmanager
    def running(self) -> Iterator[FaultProxy]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # the test reads `seen`, not stderr
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                kind = proxy._take(self.command, path)
                status = 504
                if kind == "hold":
                    proxy.held.set()
                    proxy.release.wait(timeout=120)
                elif kind != "504_before_commit":
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                    resp = requests.request(self.command, proxy.upstream + self.path, data=body, headers=headers,
                                            timeout=120, allow_redirects=False)
                    if kind is None:
                        status = resp.status_code
                        self._reply(status, resp.content, resp.headers.get("Content-Type", "application/json"))
                        proxy.seen.append((self.command, path, status))
                        return
                proxy.seen.append((self.command, path, status))
                self._reply(504, b"<html><body>504 Gateway Time-out (injected)</body></html>", "text/html")

            def _reply(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release.set()
            server.shutdown()
            server.server_close()
