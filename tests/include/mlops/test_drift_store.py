"""Ingestion: every kind of bad batch is quarantined with a reason; a batch is processed exactly once; cooldown."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from include.mlops.drift import content_digest
from include.mlops.drift import load_batch as load_any_batch
from include.mlops.drift_policy import retrain_decision
from include.mlops.drift_store import DriftStore, ingest, write_history
from include.mlops.files import append_json_line as write_alert
from include.mlops.files import sha256_file
from include.mnist.spec import MNIST

# What the drift DAG validates a landed file with: the MNIST model's image shape and classes.
load_batch = partial(load_any_batch, image_shape=MNIST.image_shape, num_classes=MNIST.num_classes)
GOOD = np.zeros((5, 28, 28), np.uint8)


@pytest.fixture
def store(tmp_path: Path) -> DriftStore:
    landing = tmp_path / "landing"
    landing.mkdir()
    return DriftStore(landing=landing, root=tmp_path / "drift")


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _pickled(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        zf.writestr("images.npy", buffer.getvalue())
    return path


def _truncated(path: Path) -> Path:
    _npz(path, images=GOOD)
    path.write_bytes(path.read_bytes()[:100])
    return path


def _nan(path: Path) -> Path:
    images = np.zeros((3, 28, 28), np.float32)
    images[1, 2, 3] = np.nan
    return _npz(path, images=images)


BAD_BATCHES = {
    "not-npz": (lambda p: (p.with_suffix(".csv").write_text("1,2,3"), p.with_suffix(".csv"))[1], "format: expected a .npz"),
    "not-a-zip": (lambda p: (p.write_bytes(b"hello"), p)[1], "not a readable .npz"),
    "truncated": (_truncated, "not a readable .npz"),
    "pickled-objects": (_pickled, r"dtype object: object \(pickled\) and structured arrays are refused"),
    "no-images": (lambda p: _npz(p, pixels=GOOD), "field 'images' is missing"),
    "wrong-shape": (lambda p: _npz(p, images=np.zeros((3, 32, 32), np.uint8)), r"shape \(N, 28, 28\)"),
    "empty": (lambda p: _npz(p, images=np.zeros((0, 28, 28), np.uint8)), "is empty"),
    "nan": (_nan, "1 NaN or infinite"),
    "out-of-range": (lambda p: _npz(p, images=np.full((2, 28, 28), 300, np.int16)), r"0\.\.255, got 300\.\.300"),
    "float-dtype": (lambda p: _npz(p, images=np.zeros((2, 28, 28), np.float32)), "must be uint8"),
    "labels-shape": (lambda p: _npz(p, images=GOOD, labels=np.zeros(4, np.int64)), r"'labels' must have shape \(5,\)"),
    "labels-range": (lambda p: _npz(p, images=GOOD, labels=np.full(5, 12, np.int64)), r"'labels' values must lie in 0\.\.9"),
    "labels-float": (lambda p: _npz(p, images=GOOD, labels=np.zeros(5, np.float32)), "'labels' must be integers"),
}


@pytest.mark.parametrize("kind", sorted(BAD_BATCHES))
def test_every_bad_batch_is_quarantined_with_a_reason(store: DriftStore, kind: str):
    make, message = BAD_BATCHES[kind]
    path = make(store.landing / f"{kind}.npz")
    result = ingest(store, load_batch, sha256_file)
    assert result.claimed == [] and result.pending == []
    (bad,) = result.quarantined
    assert bad.name == path.name
    assert list(store.landing.iterdir()) == [], "a refused file must leave the landing folder"
    assert Path(bad.path).exists()
    reason = json.loads(Path(bad.path + ".reason.json").read_text())
    assert reason["file"] == path.name
    assert path.name in reason["reason"]
    assert re.search(message, reason["reason"]), reason["reason"]


def test_good_batch_is_claimed_once_and_finished_after_a_crash(store: DriftStore):
    _npz(store.landing / "day1.npz", images=GOOD, labels=np.arange(5))
    first = ingest(store, load_batch, sha256_file)
    (claimed,) = first.claimed
    assert first.pending == [claimed] and Path(claimed.path).exists()
    # Keyed by the decoded arrays; the file's own sha256 is kept for the audit trail.
    assert claimed.sha256 == content_digest(GOOD, np.arange(5))
    assert claimed.file_sha256 == sha256_file(Path(claimed.path))

    # The run died before the processed marker: the next run finds the batch pending, claims nothing new.
    rerun = ingest(store, load_batch, sha256_file)
    assert rerun.claimed == [] and rerun.pending == [claimed]
    assert store.has_work()

    store.mark_processed(claimed.sha256, {"batch": claimed.to_dict(), "measured_at": "2026-01-02T06:00:00+00:00"})
    assert ingest(store, load_batch, sha256_file).pending == []
    assert not store.has_work()

    # The same bytes landing again are a duplicate: quarantined with the original's name, never measured.
    _npz(store.landing / "day1-again.npz", images=GOOD, labels=np.arange(5))
    again = ingest(store, load_batch, sha256_file)
    assert again.pending == [] and "duplicate" in again.quarantined[0].reason and "day1" in again.quarantined[0].reason


def test_a_crash_between_meta_and_rename_claims_the_file_again(store: DriftStore):
    _npz(store.landing / "day1.npz", images=GOOD)
    sha = content_digest(GOOD, None)
    (store.batches / sha).mkdir(parents=True)
    (store.batches / sha / "meta.json").write_text("{}")  # meta written, file not yet moved
    result = ingest(store, load_batch, sha256_file)
    assert [b.name for b in result.claimed] == ["day1"] and [b.name for b in result.pending] == ["day1"]


def test_hidden_producer_temporaries_are_left_alone(store: DriftStore):
    (store.landing / ".day1.abc.tmp").write_bytes(b"partial")
    assert not store.has_work()
    assert ingest(store, load_batch, sha256_file).quarantined == []


def test_drift_outbox_survives_a_failed_decision_and_is_handled_once(store: DriftStore):
    record = {"batch": {"name": "d", "sha256": "ab"}, "measured_at": "t", "drift_detected": True}
    store.mark_processed("ab", record)
    store.mark_processed("cd", {**record, "batch": {"name": "c", "sha256": "cd"}, "drift_detected": False})
    assert [r["batch"]["sha256"] for r in store.unsignalled_drift("run-1")] == ["ab"]
    store.mark_signal(["ab"], {"action": "emit", "run_id": "run-1"})
    # A retry of the same run sees its own verdicts again; any other run does not.
    assert [r["batch"]["sha256"] for r in store.unsignalled_drift("run-1")] == ["ab"]
    assert store.unsignalled_drift("run-2") == []


NOW = datetime(2026, 3, 1, 6, tzinfo=UTC)


H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("drifted", "last_request", "last_start", "action"),
    [
        ([], None, None, "none"),
        ([], NOW - 2 * H, None, "none"),
        (["b1"], None, None, "emit"),  # never requested: whether training ever ran does not matter
        (["b1"], None, NOW - 5 * H, "emit"),
        (["b1", "b2"], NOW - 30 * H, NOW - 29 * H, "emit"),  # requested, started, cooldown over
        (["b1"], NOW - 2 * H, NOW - 1 * H, "cooldown"),  # started, but the last request is recent
        (["b1"], NOW - 2 * H, None, "pending"),  # requested, no training run has started since
        (["b1"], NOW - 30 * H, NOW - 40 * H, "pending"),  # the last start predates the request: still queued
        (["b1"], NOW - 2 * H, NOW - 2 * H, "cooldown"),  # started at the request's instant: picked up
    ],
)
def test_retrain_decision(drifted, last_request, last_start, action):
    decision = retrain_decision(drifted, NOW, timedelta(hours=24), last_request, last_start)
    assert decision.action == action
    assert decision.emit is (action == "emit")
    for name in drifted:
        assert name in decision.reason


def test_history_plot_csv_and_page(tmp_path: Path):
    records = [
        {
            "measured_at": f"2026-03-0{day}T06:00:00+00:00",
            "batch": {"name": f"day{day}", "sha256": f"{day}" * 64},
            "drift_share": share,
            "threshold": 0.4,
            "drift_detected": share >= 0.4,
            "drifted_columns": ["confidence"] if share >= 0.4 else [],
            "report": {"html_path": str(tmp_path / f"day{day}.html")},
        }
        for day, share in [(1, 0.0), (2, 0.08), (3, 0.75)]
    ]
    paths = write_history(records, tmp_path / "history")
    assert Path(paths["png"]).read_bytes()[:4] == b"\x89PNG"
    lines = Path(paths["csv"]).read_text().splitlines()
    assert len(lines) == 4 and lines[3].split(",")[1] == "day3"
    assert "day3" in Path(paths["html"]).read_text()


def test_alerts_append_whole_lines(tmp_path: Path):
    path = tmp_path / "alerts" / "drift.jsonl"
    write_alert(path, {"kind": "drift", "message": "a"})
    write_alert(path, {"kind": "quarantine", "message": "b"})
    assert [json.loads(line)["kind"] for line in path.read_text().splitlines()] == ["drift", "quarantine"]
