"""Fault injection on every endpoint family with counted outcomes (retry rules: JFrog REST "Error Responses",
jfrog-client-go `shouldRetry`); run with -s to see the figures."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from jfrog_provider.exceptions import ChecksumMismatchError, JFrogApiError
from jfrog_provider.hooks.artifactory import ArtifactoryHook
from jfrog_provider.hooks.xray import XrayHook

from devtools.jfrog_compat.server import JFrogCompatServer

REPO, RELEASE = "ml-models-local", "ml-models-release"
BUILD = "faults/nightly"


@dataclass
class World:
    """Hooks plus objects that every endpoint family's call needs."""

    art: ArtifactoryHook
    xray: XrayHook
    server: JFrogCompatServer
    tmp: Path
    small: Path
    scan_id: str
    sha256: str


@pytest.fixture
def world(jfrog_conn, jfrog_server, tmp_path) -> World:
    fast = {"backoff_base": 0.001, "backoff_max": 0.005, "max_retries": 6, "timeout": 0.4}
    art, xray = ArtifactoryHook(**fast), XrayHook(**fast)
    (small := tmp_path / "metrics.json").write_bytes(b'{"accuracy": 0.99}')
    deployed = art.deploy_artifact(small, REPO, "w/metrics.json", {"build.name": BUILD, "build.number": "1"})
    art.publish_build_info({"name": BUILD, "number": "1", "started": "2026-05-01T12:00:00.000+0000"})
    scan_id = xray.scan_graph(["pypi://torch:2.0.0"])
    jfrog_server.request_log.clear()
    return World(art, xray, jfrog_server, tmp_path, small, scan_id, deployed.sha256)


def _download(w: World) -> None:
    w.art.download_artifact(REPO, "w/metrics.json", w.tmp / "dl" / "metrics.json")


def _graph_get(w: World) -> None:
    # one poll is 202 (scan still running), the next the final 200; both are successes
    w.xray.get_graph_scan_result(w.scan_id)


# family → (method, path regex, call); each call is idempotent or documented-safe to resend
FAMILIES: dict[str, tuple[str, str, Callable[[World], object]]] = {
    "deploy": ("PUT", r"^/artifactory/ml-models-local/w/", lambda w: w.art.deploy_artifact(w.small, REPO, "w/new.json")),
    "download": ("GET", r"^/artifactory/ml-models-local/w/metrics\.json$", _download),
    "storage": ("GET", r"^/artifactory/api/storage/", lambda w: w.art.get_file_info(REPO, "w/metrics.json")),
    "properties": ("PUT", r"^/artifactory/api/storage/",
                   lambda w: w.art.set_item_properties(REPO, "w/metrics.json", {"k": "v"})),
    "aql": ("POST", r"^/artifactory/api/search/aql$", lambda w: w.art.search_aql('items.find({"name":"x"})')),
    "copy": ("POST", r"^/artifactory/api/copy/", lambda w: w.art.copy_item(REPO, "w/metrics.json", RELEASE, "c.json")),
    "build_put": ("PUT", r"^/artifactory/api/build$", lambda w: w.art.publish_build_info(
        {"name": BUILD, "number": "2", "started": "2026-05-01T12:00:00.000+0000"})),
    "build_get": ("GET", r"^/artifactory/api/build/", lambda w: w.art.get_build_info(BUILD, "1")),
    "promote": ("POST", r"^/artifactory/api/build/promote/",
                lambda w: w.art.promote_build(BUILD, "1", status="released", target_repo=RELEASE)),
    "xray_scan": ("POST", r"^/xray/api/v1/scan/graph$", lambda w: w.xray.scan_graph(["pypi://numpy:2.0.0"])),
    "xray_poll": ("GET", r"^/xray/api/v1/scan/graph/", _graph_get),
    "xray_summary": ("POST", r"^/xray/api/v2/summary/artifact$",
                     lambda w: w.xray.get_artifact_summary(checksums=[w.sha256])),
}

RETRYABLE_SEQUENCE = [{"status": 503}, {"status": 429, "retry_after": "0"}, {"status": 429}, {"status": 502},
                      {"status": 504}]


def _count(w: World, method: str, regex: str, settle: float = 0.0) -> int:
    # a delayed (timed-out) request is logged only when its handler finishes: wait for the log to settle
    deadline = time.monotonic() + settle
    n = len(w.server.requests_matching(method, regex))
    while time.monotonic() < deadline:
        time.sleep(0.05)
        n = len(w.server.requests_matching(method, regex))
    return n


@pytest.mark.parametrize("family", FAMILIES)
def test_retryable_statuses_survived_on_every_family(world, family):
    method, regex, call = FAMILIES[family]
    world.server.inject_faults(regex, RETRYABLE_SEQUENCE, method=method)
    call(world)
    sent = _count(world, method, regex)
    print(f"\n{family}: {len(RETRYABLE_SEQUENCE)}/{len(RETRYABLE_SEQUENCE)} injected 503/429/429+RA/502/504 "
          f"survived, {sent - 1} retries")
    assert world.server.pending_faults() == 0
    assert sent == len(RETRYABLE_SEQUENCE) + 1


@pytest.mark.parametrize("family", FAMILIES)
def test_final_4xx_are_never_retried_on_every_family(world, family):
    method, regex, call = FAMILIES[family]
    seen = {}
    for status in (400, 401, 403, 404, 409):
        before = _count(world, method, regex)
        world.server.inject_faults(regex, [{"status": status, "body": f"injected {status}"}], method=method)
        if family == "build_get" and status == 404:
            assert call(world) is None  # a missing build is "not found", not an error (jfrog-client-go)
        else:
            with pytest.raises(JFrogApiError) as err:
                call(world)
            assert (err.value.status, err.value.message) == (status, f"injected {status}")
        seen[status] = _count(world, method, regex) - before
    print(f"\n{family}: requests per 4xx {seen}")
    assert seen == {400: 1, 401: 1, 403: 1, 404: 1, 409: 1}


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "download"])
def test_transport_faults_survived_on_every_family(world, family):
    method, regex, call = FAMILIES[family]
    # a 204 answer has no body to cut short, so those families get a second reset instead of a truncation
    no_body = family in ("build_put", "properties")
    faults = [{"reset": True}, {"reset": True} if no_body else {"truncate": True}, {"delay": 1.0}]
    world.server.inject_faults(regex, faults, method=method)
    call(world)
    sent = _count(world, method, regex, settle=1.2)
    print(f"\n{family}: reset, truncated answer and slow answer survived with {sent - 1} retries")
    assert (sent, world.server.pending_faults()) == (len(faults) + 1, 0)


def test_twenty_uploads_each_after_a_503_or_429_all_succeed_with_twenty_retries(world):
    files = []
    for i in range(20):
        (f := world.tmp / f"u{i}.json").write_bytes(os.urandom(512))
        fault = [{"status": 503}, {"status": 429, "retry_after": "0"}, {"status": 429}][i % 3]
        world.server.inject_faults(rf"^/artifactory/{REPO}/up/u{i}\.json$", [fault], method="PUT")
        files.append(f)
    ok = sum(world.art.deploy_artifact(f, REPO, f"up/{f.name}").size == 512 for f in files)
    puts = _count(world, "PUT", r"/up/u\d+\.json$")
    retries = puts - len(files)
    print(f"\nuploads: {ok}/{len(files)} succeeded after an injected 503/429 each; total retries {retries}")
    assert (ok, retries, world.server.pending_faults()) == (20, 20, 0)


def test_zero_corrupt_downloads_accepted(world):
    big = world.tmp / "model.pt"
    big.write_bytes(os.urandom(300 * 1024))
    world.art.deploy_artifact(big, REPO, "dl/model.pt")
    out_dir = world.tmp / "downloads"
    faults = [{"truncate": True}] * 10 + [{"wrong_checksum": True}] * 10
    world.server.inject_faults(r"/dl/model\.pt$", faults, method="GET")
    errors = {"truncated": 0, "wrong_checksum": 0}
    for i, fault in enumerate(faults):
        with pytest.raises(JFrogApiError) as err:
            world.art.download_artifact(REPO, "dl/model.pt", out_dir / f"model{i}.pt")
        kind = "truncated" if "truncate" in fault else "wrong_checksum"
        assert isinstance(err.value, ChecksumMismatchError) == (kind == "wrong_checksum")
        errors[kind] += 1
    accepted = list(out_dir.iterdir())
    print(f"\ndownloads: {sum(errors.values())}/20 corrupt answers rejected {errors}; {len(accepted)} files kept")
    assert errors == {"truncated": 10, "wrong_checksum": 10} and accepted == []
    # and a clean download afterwards is accepted
    assert world.art.download_artifact(REPO, "dl/model.pt", out_dir / "ok.pt") == hashlib.sha256(
        big.read_bytes()).hexdigest()


def test_zero_duplicates_after_uploads_reset_mid_body(world):
    n = 5
    for i in range(n):
        (f := world.tmp / f"big{i}.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        # the checksum-deploy try passes ({}), then the upload is cut after its first MiB and retried
        world.server.inject_faults(rf"^/artifactory/{REPO}/dup/big{i}\.bin$", [{}, {"reset_after_bytes": 1}],
                                   method="PUT")
        world.art.deploy_artifact(f, REPO, f"dup/big{i}.bin")
    rows = world.art.search_aql(f'items.find({{"repo":"{REPO}","path":"dup"}}).include("name","sha256")')
    stored = {r["name"]: r["sha256"] for r in rows}
    local = {f"big{i}.bin": hashlib.sha256((world.tmp / f"big{i}.bin").read_bytes()).hexdigest() for i in range(n)}
    partial = [p for p in (world.server.state_dir / "tmp").iterdir()]
    uploads = [b for _, _, b in world.server.requests_matching("PUT", r"/dup/big\d\.bin$") if b]
    print(f"\nreset mid-body: {n}/{n} uploads retried, {len(rows)} items for {n} paths, "
          f"{len(rows) - len(stored)} duplicates, {len(partial)} partial files, body sizes {sorted(set(uploads))}")
    assert len(rows) == n and stored == local and partial == []
    assert len(uploads) == 2 * n and min(uploads) < 3 * 1024 * 1024 == max(uploads)
