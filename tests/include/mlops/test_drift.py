"""Drift on real MNIST features and a quickly trained CNN: every scenario's verdict, false alarms, Evidently parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from include.mlops.drift import (
    CATEGORICAL,
    FEATURES,
    batch_features,
    build_reference_profile,
    image_features,
    load_profile,
    save_profile,
    write_reports,
)
from include.mlops.drift_stats import decide, summarize_reference
from include.mnist.batches import SCENARIOS, make_batch
from include.mnist.data import load_split
from include.mnist.spec import MNIST
from include.settings import DEFAULT_DATA_DIR

DRIFT_SHARE = 0.4  # the DAG's default
CLEAN_BATCHES = 30
# Stated bound on the dataset-level false-alarm rate over clean batches: at most 1 in 30 (about 3 %).
MAX_FALSE_ALARMS = 1


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A fast99 CNN trained for one epoch on 4000 images: enough for a model view that means something."""
    from include.mnist.train import TrainConfig, train_model

    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    train_model(TrainConfig(epochs=1, max_train_samples=4000, max_test_samples=100, deterministic=False), DEFAULT_DATA_DIR, path)
    return path


@pytest.fixture(scope="module")
def viewer(model_path):
    """The trained CNN's view of raw images, as the drift DAG builds it from the MNIST model spec."""
    return MNIST.viewer(model_path)


@pytest.fixture(scope="module")
def test_split():
    return load_split(DEFAULT_DATA_DIR, "test")


@pytest.fixture(scope="module")
def profile(viewer):
    train = load_split(DEFAULT_DATA_DIR, "train")
    pick = np.sort(np.random.default_rng(0).choice(len(train.images), 3000, replace=False))
    return build_reference_profile(train.images[pick], viewer, "1")


@pytest.fixture(scope="module")
def summary(profile):
    return summarize_reference(profile.columns, CATEGORICAL)


def test_features_are_meaningful():
    blank = np.zeros((2, 28, 28), np.uint8)
    square = blank.copy()
    square[1, 10:14, 4:12] = 255
    f = image_features(square)
    assert f["bbox_width"].tolist() == [0, 8] and f["bbox_height"].tolist() == [0, 4]
    assert f["center_x"][1] == pytest.approx(7.5) and f["center_y"][1] == pytest.approx(11.5)
    assert f["ink_ratio"][1] == pytest.approx(32 / 784)
    assert f["frame_ink"].tolist() == [0, 0]
    square[0, 0, 5] = 255
    assert image_features(square)["frame_ink"].tolist() == [1, 0]


def test_profile_has_the_model_view_and_round_trips(profile, tmp_path: Path):
    assert tuple(profile.columns) == FEATURES
    assert profile.embeddings.shape == (3000, 256)
    assert set(np.unique(profile.columns["predicted_class"])) <= set(range(10))
    assert ((profile.columns["confidence"] > 0) & (profile.columns["confidence"] <= 1)).all()
    loaded = load_profile(save_profile(profile, tmp_path / "v1"))
    assert loaded.model_version == "1" and tuple(loaded.columns) == FEATURES
    np.testing.assert_array_equal(loaded.columns["embedding_distance"], profile.columns["embedding_distance"])
    np.testing.assert_array_equal(loaded.centroids, profile.centroids)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_gives_the_expected_verdict(summary, profile, viewer, test_split, scenario):
    images, _ = make_batch(test_split.images, test_split.labels, scenario, size=1000, seed=7)
    decision = decide(summary, batch_features(images, profile, viewer), DRIFT_SHARE)
    expected = scenario != "clean"
    assert decision.drift_detected is expected, (scenario, decision.drift_share, decision.drifted_columns)


def test_false_alarm_rate_over_clean_batches(summary, profile, viewer, test_split):
    shares = []
    for seed in range(1000, 1000 + CLEAN_BATCHES):
        images, _ = make_batch(test_split.images, test_split.labels, "clean", size=1000, seed=seed)
        shares.append(decide(summary, batch_features(images, profile, viewer), DRIFT_SHARE).drift_share)
    alarms = sum(share >= DRIFT_SHARE for share in shares)
    print(
        f"false alarms: {alarms}/{CLEAN_BATCHES} clean batches ({alarms / CLEAN_BATCHES:.1%}); "
        f"drift share max {max(shares):.2f}, mean {np.mean(shares):.3f}"
    )
    assert alarms <= MAX_FALSE_ALARMS, shares


@pytest.mark.parametrize("scenario", ["clean", "rotation", "imbalance"])
def test_fast_flags_match_evidently_on_real_features(summary, profile, viewer, test_split, tmp_path, scenario):
    images, labels = make_batch(test_split.images, test_split.labels, scenario, size=800, seed=11)
    current = batch_features(images, profile, viewer)
    decision = decide(summary, current, DRIFT_SHARE)
    report = write_reports(profile.columns, current, tmp_path, DRIFT_SHARE, labels=labels)
    assert report.evidently_flags == {name: col.drifted for name, col in decision.columns.items()}
    assert "<html" in Path(report.html_path).read_text()[:2000].lower()
    metrics = json.loads(Path(report.json_path).read_text())["metrics"]
    assert any(m["config"]["type"].endswith("DriftedColumnsCount") for m in metrics)
    classification = json.loads(Path(report.classification_json).read_text())
    assert any("Accuracy" in m["metric_name"] for m in classification["metrics"])
