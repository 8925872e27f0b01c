"""Ingest under load and races: 50 batches land at once, two runs ingest and measure concurrently, each batch is
measured exactly once and none is lost; the same arrays saved differently are one batch; quarantine never
overwrites."""

from __future__ import annotations

import json
import threading
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from include.mlops.drift import content_digest, load_batch
from include.mlops.drift_store import DriftStore, ingest
from include.mnist.batches import write_batch

LOAD = partial(load_batch, image_shape=(28, 28), num_classes=10)


@pytest.fixture
def store(tmp_path: Path) -> DriftStore:
    (tmp_path / "landing").mkdir()
    return DriftStore(landing=tmp_path / "landing", root=tmp_path / "drift")


def run(store: DriftStore, measured: Counter, lock: threading.Lock, barrier: threading.Barrier, errors: list) -> None:
    """One drift run: ingest, then measure every pending batch under its lock unless another run finished it."""
    try:
        barrier.wait()
        for _ in range(2):
            for ref in ingest(store, LOAD).pending:
                with store.measuring(ref.sha256) as done:
                    if done is not None:
                        continue
                    images, _ = LOAD(Path(ref.path))
                    with lock:
                        measured[ref.sha256] += 1
                    store.mark_processed(ref.sha256, {"batch": ref.to_dict(), "measured_at": "t",
                                                      "rows": int(images.shape[0])})
    except BaseException as exc:  # noqa: BLE001  (reported by the test thread)
        errors.append(exc)


def test_fifty_batches_two_racing_runs_each_measured_exactly_once(store: DriftStore):
    rng = np.random.default_rng(0)
    expected = set()
    for i in range(50):
        images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=20)
        write_batch(store.landing, images, labels, f"batch-{i:02d}")
        expected.add(content_digest(images, labels))
    measured, lock, errors = Counter(), threading.Lock(), []
    barrier = threading.Barrier(2)
    runs = [threading.Thread(target=run, args=(store, measured, lock, barrier, errors)) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(timeout=300)
    assert errors == []
    assert set(measured) == expected and set(measured.values()) == {1}, "every batch measured exactly once"
    assert {r["batch"]["sha256"] for r in store.records()} == expected, "none lost"
    assert list(store.landing.iterdir()) == [] and not store.quarantine.exists()
    assert store.pending() == [] and not store.has_work()


def test_the_same_arrays_saved_differently_are_one_batch(store: DriftStore):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    labels = np.array([1, 2, 3])
    np.savez_compressed(store.landing / "a.npz", images=images, labels=labels.astype(np.int64))
    first = ingest(store, LOAD)
    # Stored instead of deflated, Fortran order, big-endian int32 labels: other bytes, the same arrays.
    np.savez(store.landing / "b.npz", labels=labels.astype(">i4"), images=np.asfortranarray(images))
    second = ingest(store, LOAD)
    assert [b.name for b in first.claimed] == ["a"] and second.claimed == []
    (duplicate,) = second.quarantined
    assert duplicate.name == "b.npz" and "duplicate: same content as batch 'a'" in duplicate.reason
    assert first.claimed[0].sha256 == content_digest(images, labels)


def test_quarantine_never_overwrites(store: DriftStore):
    paths = []
    for content in (b"first bad file", b"second bad file"):
        (store.landing / "day1.npz").write_bytes(content)
        (bad,) = ingest(store, LOAD).quarantined
        paths.append(Path(bad.path))
    assert paths[0] != paths[1]
    assert [p.read_bytes() for p in paths] == [b"first bad file", b"second bad file"]
    assert all(json.loads(Path(f"{p}.reason.json").read_text())["file"] == "day1.npz" for p in paths)


def test_a_claim_interrupted_before_the_landed_file_was_removed_is_finished(store: DriftStore):
    images = np.ones((2, 28, 28), np.uint8)
    write_batch(store.landing, images, np.array([0, 1]), "day1")
    kept = (store.landing / "day1.npz").read_bytes()
    (claimed,) = ingest(store, LOAD).claimed
    (store.landing / "day1.npz").write_bytes(kept)  # as if the pass stopped before unlinking it
    again = ingest(store, LOAD)
    assert again.claimed == [] and again.quarantined == [] and again.pending == [claimed]
    assert list(store.landing.iterdir()) == []


def test_measuring_refuses_a_key_that_is_not_a_digest(store: DriftStore):
    with pytest.raises(ValueError, match="not a lower-case sha256"), store.measuring("../../etc"):
        pass
