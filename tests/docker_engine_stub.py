"""A minimal Docker Engine API on a unix socket, for tests: the calls DockerOperator makes through the SDK.

Not Docker: a "container" is its image's Entrypoint plus the container's Cmd run as a local subprocess with
the image's Env plus the container's Env (nothing else from the test's environment) in the image's
WorkingDir. Nothing is isolated: mounts, network mode, user and device requests are recorded for the test
to check, not enforced. Endpoints: _ping, version, images/json, images/create (pull), containers/create,
containers/{id}/json, attach (the raw multiplexed stream of the Engine API), start, wait, stop, delete.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socketserver
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

API_VERSION = "1.45"


def image_from_dockerfile(dockerfile: Path, root_in_image: str, root_here: Path) -> dict:
    """A Dockerfile's ENTRYPOINT (python: this interpreter), ENV and WORKDIR, with its root moved to `root_here`."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))

    def here(value: str) -> str:
        return value.replace(root_in_image, str(root_here))

    return {
        "Entrypoint": [sys.executable if entrypoint[0] == "python" else entrypoint[0], *entrypoint[1:]],
        "Env": [here(item) for line in re.findall(r"^ENV (.+)$", text, re.M) for item in line.split()],
        "WorkingDir": here(re.search(r"^WORKDIR (\S+)$", text, re.M).group(1)),
    }


class _Container:
    """One created container: its create body, the image it came from, and its process and output."""

    def __init__(self, spec: dict, image: dict) -> None:
        self.spec, self.image = spec, image
        self.proc: subprocess.Popen | None = None
        self.frames: list[tuple[int, bytes]] = []  # (1 = stdout, 2 = stderr, chunk), in arrival order
        self.done = False
        self.cond = threading.Condition()

    def start(self) -> None:
        argv = [*(self.spec.get("Entrypoint") or self.image["Entrypoint"]), *(self.spec.get("Cmd") or [])]
        env = dict(item.split("=", 1) for item in [*self.image.get("Env", []), *(self.spec.get("Env") or [])])
        self.proc = subprocess.Popen(argv, env=env, cwd=self.spec.get("WorkingDir") or self.image.get("WorkingDir"),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        readers = [threading.Thread(target=self._read, args=(pipe, n), daemon=True)
                   for n, pipe in ((1, self.proc.stdout), (2, self.proc.stderr))]
        for reader in readers:
            reader.start()
        threading.Thread(target=self._finish, args=(readers,), daemon=True).start()

    def _read(self, pipe, stream: int) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            with self.cond:
                self.frames.append((stream, chunk))
                self.cond.notify_all()

    def _finish(self, readers: list[threading.Thread]) -> None:
        for reader in readers:
            reader.join()
        self.proc.wait()
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait(self) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.done)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()


def image_id(ref: str) -> str:
    """The stub's content id for an image reference (a real engine hashes the image config)."""
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()


class DockerEngineStub:
    """The engine: a registry of pullable images, the engine's local images, and the containers made."""

    def __init__(self, socket_path: Path, registry: Mapping[str, dict]) -> None:
        self.socket_path = Path(socket_path)
        self.registry = dict(registry)  # image reference -> {"Entrypoint": [...], "Env": [...], "WorkingDir": ...}
        self.local: set[str] = set()
        self.containers: dict[str, _Container] = {}
        self.created: list[dict] = []
        self.pulled: list[str] = []
        self.removed: list[str] = []
        stub = self

        class Handler(_Handler):
            engine = stub

        self._server = socketserver.ThreadingUnixStreamServer(str(self.socket_path), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The docker_url that reaches this engine."""
        return f"unix://{self.socket_path}"

    def __enter__(self) -> DockerEngineStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for container in self.containers.values():
            container.kill()
        self._server.shutdown()
        self._server.server_close()
        self.socket_path.unlink(missing_ok=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine: DockerEngineStub

    def log_message(self, format: str, *args: object) -> None:
        pass  # a unix socket has no client address for the default log line

    def _reply(self, status: int, body: object = None) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, bytes) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = re.sub(r"^/v[0-9.]+", "", url.path), parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        engine = self.engine
        match = re.fullmatch(r"/containers/([0-9a-f]+)(?:/(\w+))?", path)
        container = engine.containers.get(match.group(1)) if match else None
        action = (method, match.group(2) if match else path)
        if match and container is None:
            self._reply(404, {"message": f"No such container: {match.group(1)}"})
        elif action == ("GET", "/_ping"):
            self._reply(200, b"OK")
        elif action == ("GET", "/version"):
            self._reply(200, {"ApiVersion": API_VERSION, "MinAPIVersion": "1.24", "Version": "stub"})
        elif action == ("GET", "/images/json"):
            wanted = json.loads(query.get("filters", ["{}"])[0]).get("reference", [])
            self._reply(200, [{"Id": image_id(ref), "RepoTags": [ref]} for ref in sorted(engine.local)
                              if not wanted or ref in wanted])
        elif method == "GET" and (image := re.fullmatch(r"/images/(.+)/json", path)):
            ref = unquote(image.group(1))
            if ref not in engine.local:
                self._reply(404, {"message": f"No such image: {ref}"})
                return
            self._reply(200, {"Id": image_id(ref), "RepoTags": [ref], "RepoDigests": []})
        elif action == ("POST", "/images/create"):
            ref = f"{query['fromImage'][0]}:{query.get('tag', ['latest'])[0]}"
            if ref not in engine.registry:
                self._reply(404, {"message": f"pull access denied for {ref}"})
                return
            engine.local.add(ref)
            engine.pulled.append(ref)
            self._reply(200, {"status": f"Downloaded newer image for {ref}"})
        elif action == ("POST", "/containers/create"):
            if body["Image"] not in engine.local:
                self._reply(404, {"message": f"No such image: {body['Image']}"})
                return
            container_id = uuid.uuid4().hex
            engine.containers[container_id] = _Container(body, engine.registry[body["Image"]])
            engine.created.append(body)
            self._reply(201, {"Id": container_id, "Warnings": []})
        elif action == ("GET", "json"):
            self._reply(200, {"Id": match.group(1), "Config": {"Tty": bool(container.spec.get("Tty"))}})
        elif action == ("POST", "attach"):
            self._attach(container)
        elif action == ("POST", "start"):
            container.start()
            self._reply(204)
        elif action == ("POST", "wait"):
            self._reply(200, {"StatusCode": container.wait(), "Error": None})
        elif action in {("POST", "stop"), ("DELETE", None)}:
            container.kill()
            if method == "DELETE":
                del engine.containers[match.group(1)]
                engine.removed.append(match.group(1))
            self._reply(204)
        else:
            self._reply(404, {"message": f"the stub does not implement {method} {path}"})

    def _attach(self, container: _Container) -> None:
        """Hijack the connection and stream the container's output as Engine API frames until it exits."""
        self.send_response(101, "UPGRADED")
        self.send_header("Content-Type", "application/vnd.docker.raw-stream")
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "tcp")
        self.end_headers()
        self.wfile.flush()
        sent = 0
        while True:
            with container.cond:
                container.cond.wait_for(lambda sent=sent: len(container.frames) > sent or container.done)
                frames, done = container.frames[sent:], container.done
            for stream, chunk in frames:
                self.wfile.write(struct.pack(">BxxxL", stream, len(chunk)) + chunk)
            self.wfile.flush()
            sent += len(frames)
            if done and sent == len(container.frames):
                break
        self.close_connection = True

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")
