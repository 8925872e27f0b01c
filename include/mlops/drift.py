"""Data drift on per-image features, measured with Evidently 0.7: the only module that imports evidently."""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from include.mlops.files import atomic_write_text

FEATURES = (
    "mean_intensity",
    "std_intensity",
    "ink_ratio",
    "bbox_width",
    "bbox_height",
    "center_x",
    "center_y",
)


class BatchError(ValueError):
    """A production batch that cannot be measured; the message names the file and the field."""


@dataclass(frozen=True)
class DriftResult:
    """Evidently's dataset-level verdict and where its reports are."""

    drift_detected: bool
    drifted_columns: int
    total_columns: int
    drift_share: float
    threshold: float
    column_scores: dict[str, float]
    html_path: str
    json_path: str
    reference_rows: int
    current_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Intensity, ink and geometry features of (N, 28, 28) uint8 images: Evidently does not read pixels."""
    x = images.astype(np.float32) / 255.0
    n, height, width = x.shape
    flat = x.reshape(n, -1)
    ink = x > 0.5
    rows_any, cols_any = ink.any(axis=2), ink.any(axis=1)
    mass = x.sum(axis=(1, 2))
    safe_mass = np.where(mass > 0, mass, 1.0)
    ys, xs = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    return {
        "mean_intensity": flat.mean(axis=1),
        "std_intensity": flat.std(axis=1),
        "ink_ratio": ink.reshape(n, -1).mean(axis=1),
        "bbox_width": _extent(cols_any),
        "bbox_height": _extent(rows_any),
        # Centre of mass; a blank image sits at the centre rather than at 0 so it reads as "no signal".
        "center_x": np.where(mass > 0, (x.sum(axis=1) * xs).sum(axis=1) / safe_mass, width / 2),
        "center_y": np.where(mass > 0, (x.sum(axis=2) * ys).sum(axis=1) / safe_mass, height / 2),
    }


def _extent(any_ink: np.ndarray) -> np.ndarray:
    first = np.argmax(any_ink, axis=1)
    last = any_ink.shape[1] - 1 - np.argmax(any_ink[:, ::-1], axis=1)
    return np.where(any_ink.any(axis=1), last - first + 1, 0).astype(np.float32)


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a production batch (.npz with uint8 `images` (N, 28, 28) and optional `labels`) without pickle."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = sorted(data.files)
            images = data["images"] if "images" in files else None
            labels = data["labels"] if "labels" in files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BatchError(f"{path}: not a readable .npz batch: {exc}") from exc
    if images is None:
        raise BatchError(f"{path}: field 'images' is missing (found {files})")
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise BatchError(f"{path}: field 'images' must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if images.shape[0] == 0:
        raise BatchError(f"{path}: field 'images' is empty")
    return images, labels


def measure_drift(
    reference_images: np.ndarray,
    current_images: np.ndarray,
    report_dir: Path,
    drift_share: float = 0.5,
) -> DriftResult:
    """Run Evidently's DataDriftPreset on image features and keep its HTML and JSON reports."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference = pd.DataFrame(image_features(reference_images), columns=list(FEATURES))
    current = pd.DataFrame(image_features(current_images), columns=list(FEATURES))
    snapshot = Report([DataDriftPreset(drift_share=drift_share)]).run(current_data=current, reference_data=reference)
    summary = snapshot.dict()

    count = next(m for m in summary["metrics"] if m["config"]["type"].endswith("DriftedColumnsCount"))
    scores = {
        m["config"]["column"]: float(m["value"])
        for m in summary["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }
    share = float(count["value"]["share"])

    html_path, json_path = report_dir / "drift_report.html", report_dir / "drift_report.json"
    atomic_write_text(html_path, snapshot.get_html_str(as_iframe=False))
    atomic_write_text(json_path, json.dumps(summary, indent=2, default=str))
    return DriftResult(
        # Evidently's dataset rule: drift when the share of drifted columns reaches drift_share.
        drift_detected=share >= drift_share,
        drifted_columns=int(count["value"]["count"]),
        total_columns=len(FEATURES),
        drift_share=share,
        threshold=drift_share,
        column_scores=scores,
        html_path=str(html_path),
        json_path=str(json_path),
        reference_rows=len(reference),
        current_rows=len(current),
    )

