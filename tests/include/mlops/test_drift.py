"""Drift on real MNIST features with the real Evidently 0.7 preset, and batches that must be refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from include.mlops.drift import FEATURES, BatchError, image_features, load_batch, measure_drift
from include.mnist.batches import make_batch
from include.mnist.data import load_split
from include.settings import DEFAULT_DATA_DIR


@pytest.fixture(scope="module")
def splits():
    train = load_split(DEFAULT_DATA_DIR, "train")
    test = load_split(DEFAULT_DATA_DIR, "test")
    reference = train.images[np.random.default_rng(0).choice(len(train.images), 3000, replace=False)]
    return reference, test


def test_features_are_meaningful():
    blank = np.zeros((2, 28, 28), np.uint8)
    square = blank.copy()
    square[1, 10:14, 4:12] = 255
    f = image_features(square)
    assert set(f) == set(FEATURES)
    assert f["bbox_width"].tolist() == [0, 8] and f["bbox_height"].tolist() == [0, 4]
    assert f["center_x"][1] == pytest.approx(7.5) and f["center_y"][1] == pytest.approx(11.5)
    assert f["ink_ratio"][1] == pytest.approx(32 / 784)


@pytest.mark.parametrize(("scenario", "drifted"), [("clean", False), ("inversion", True), ("noise", True)])
def test_drift_verdicts_and_reports(splits, tmp_path: Path, scenario, drifted):
    reference, test = splits
    images, _ = make_batch(test.images, test.labels, scenario, size=1000, seed=7)
    result = measure_drift(reference, images, tmp_path)
    assert result.drift_detected is drifted, result.column_scores
    assert set(result.column_scores) == set(FEATURES)
    report = json.loads(Path(result.json_path).read_text())
    assert any(m["config"]["type"].endswith("DriftedColumnsCount") for m in report["metrics"])
    assert "<html" in Path(result.html_path).read_text()[:2000].lower()


def _write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pixels": np.zeros((3, 28, 28), np.uint8)}, "field 'images' is missing"),
        ({"images": np.zeros((3, 28, 28), np.float32)}, "must be uint8"),
        ({"images": np.zeros((3, 32, 32), np.uint8)}, "must be uint8 \\(N, 28, 28\\)"),
        ({"images": np.zeros((0, 28, 28), np.uint8)}, "is empty"),
        ({"images": np.array([{"x": 1}], dtype=object)}, "not a readable .npz"),
    ],
)
def test_bad_batches_name_file_and_field(tmp_path: Path, arrays, message):
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(BatchError, match=message) as err:
        load_batch(path)
    assert str(path) in str(err.value)


def test_truncated_batch_is_refused(tmp_path: Path):
    good = _write(tmp_path / "good.npz", images=np.zeros((5, 28, 28), np.uint8))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(BatchError, match="truncated.npz"):
        load_batch(truncated)
