"""Drift on per-image features and the model's own view; Evidently 0.7 reports: the only module importing evidently."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from include.mlops.files import atomic_write_bytes, atomic_write_text
from include.security.untrusted import read_regular_file
from include.settings import InputLimits

if TYPE_CHECKING:
    from include.mlops.drift_model import ModelViewer

IMAGE_FEATURES = (
    "mean_intensity",
    "std_intensity",
    "ink_ratio",
    "bbox_width",
    "bbox_height",
    "center_x",
    "center_y",
)
MODEL_FEATURES = ("confidence", "embedding_norm", "embedding_distance")
NUMERIC = IMAGE_FEATURES + MODEL_FEATURES
# Integer-coded categories: the model's predicted digit, and whether ink touches the image frame.
CATEGORICAL = ("predicted_class", "frame_ink")
FEATURES = NUMERIC + CATEGORICAL
# Evidently on more rows than this is slow and adds nothing a person can see: the human report samples.
REPORT_SAMPLE_ROWS = 100_000
# Above this many rows the report drops DataDriftPreset's DriftedColumnsCount, which recomputes every column
# through Evidently's legacy DatasetDriftMetric (evidently 0.7 src/evidently/presets/drift.py), and keeps the
# per-column ValueDrift metrics: 2.9 s instead of 9.5 s at 100k x 12 on the shared runner (bench/bench_drift.py),
# same per-column tests and widgets.
PRESET_MAX_ROWS = 20_000


class BatchError(ValueError):
    """A production batch that cannot be measured; the message names the file and the field."""


@dataclass(frozen=True)
class ReferenceProfile:
    """The reference features of one model version, computed once and stored with that version."""

    model_version: str
    columns: dict[str, np.ndarray]
    embeddings: np.ndarray | None
    centroids: np.ndarray | None  # (10, D) reference embedding centroid per predicted class
    class_scale: np.ndarray | None  # (10,) mean distance of reference images to their class centroid
    meta: dict[str, Any]

    @property
    def rows(self) -> int:
        """Reference images in the profile."""
        return int(next(iter(self.columns.values())).shape[0])


@dataclass(frozen=True)
class ReportResult:
    """Where Evidently's reports are and the per-column drift flags its default tests gave."""

    html_path: str
    json_path: str
    classification_html: str | None
    classification_json: str | None
    evidently_flags: dict[str, bool]
    sample_rows: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy."""
        return asdict(self)


def load_batch(
    path: Path, *, image_shape: Sequence[int], num_classes: int, limits: InputLimits | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and validate a batch (.npz, uint8 `images` (N, *image_shape), optional int `labels`) without pickle.

    The file must be a regular file (no symlink, FIFO or device) within `limits.batch_max_file_bytes`; each
    array's rows and bytes are checked against the limits from its .npy header before anything is inflated.
    """
    limits = limits or InputLimits.from_env()
    blob = read_regular_file(Path(path), limits.batch_max_file_bytes, BatchError)
    return parse_batch(blob, Path(path), image_shape=image_shape, num_classes=num_classes, limits=limits)


def parse_batch(
    blob: bytes, path: Path, *, image_shape: Sequence[int], num_classes: int, limits: InputLimits | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate the bytes of a .npz batch read from `path`; every parser error becomes a BatchError naming it."""
    image_shape, limits = tuple(image_shape), limits or InputLimits.from_env()
    try:
        arrays = _read_npz(blob, path, image_shape, limits)
    except BatchError:
        raise
    # What zipfile, zlib and numpy's .npy reader raise on hostile bytes (bad headers, CRC, unknown methods,
    # encryption, truncation): a refusal, never a crash.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, ValueError, struct.error,
            NotImplementedError, RuntimeError, OverflowError, KeyError, IndexError, TypeError, SyntaxError) as exc:
        raise BatchError(f"{path}: not a readable .npz batch: {type(exc).__name__}: {exc}") from exc
    images, labels = arrays["images"], arrays.get("labels")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        bad = int(np.count_nonzero(~np.isfinite(images)))
        raise BatchError(f"{path}: field 'images' has {bad} NaN or infinite values")
    if images.dtype != np.uint8 and (images.min() < 0 or images.max() > 255):
        raise BatchError(
            f"{path}: field 'images' values must lie in 0..255, got {images.min()}..{images.max()}"
        )
    if images.dtype != np.uint8:
        raise BatchError(f"{path}: field 'images' must be uint8 pixels 0..255, got {images.dtype}")
    if labels is not None:
        if labels.shape != (images.shape[0],):
            raise BatchError(f"{path}: field 'labels' must have shape ({images.shape[0]},), got {labels.shape}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise BatchError(f"{path}: field 'labels' values must lie in 0..{num_classes - 1}, "
                             f"got {labels.min()}..{labels.max()}")
    return images, labels


_NPZ_ENTRIES = {"images.npy": "images", "labels.npy": "labels"}
# Only what numpy.savez / savez_compressed write: stored or deflated entries, no encryption (zipfile's own flags).
_NPZ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _read_npz(blob: bytes, path: Path, image_shape: tuple[int, ...], limits: InputLimits) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        found = sorted(name.removesuffix(".npy") for name in names)
        if "images.npy" not in names:
            raise BatchError(f"{path}: field 'images' is missing (found {found})")
        if len(names) != len(set(names)):
            raise BatchError(f"{path}: entries {found}: an entry is listed twice; readers disagree on which counts")
        unknown = sorted(set(names) - set(_NPZ_ENTRIES))
        if unknown:
            raise BatchError(f"{path}: entries {unknown} are not allowed; a batch holds images.npy and labels.npy")
        declared = 0
        for info in infos:
            if info.flag_bits & 0x1:
                raise BatchError(f"{path}: entry {info.filename} is encrypted")
            if info.compress_type not in _NPZ_METHODS:
                raise BatchError(f"{path}: entry {info.filename} uses compression method {info.compress_type}; "
                                 "only stored and deflated are read")
            declared += info.file_size
        if declared > limits.batch_max_bytes + 4096 * len(infos):
            raise BatchError(f"{path}: entries declare {declared} bytes uncompressed, over the limit of "
                             f"{limits.batch_max_bytes} (MLOPS_BATCH_MAX_BYTES); nothing was inflated")
        return {_NPZ_ENTRIES[info.filename]: _read_npy(archive, info, path, image_shape, limits) for info in infos}


def _read_npy(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, image_shape: tuple[int, ...], limits: InputLimits
) -> np.ndarray:
    """One array from its .npy header and exactly the bytes the header declares (numpy.lib.format, no pickle)."""
    from numpy.lib import format as npy

    field = _NPZ_ENTRIES[info.filename]
    with archive.open(info) as handle:
        version = npy.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = npy.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy.read_array_header_2_0(handle)
        else:
            raise BatchError(f"{path}: field '{field}' is .npy format version {version}; 1.0 and 2.0 are read")
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise BatchError(f"{path}: field '{field}' has dtype {dtype}: object (pickled) and structured arrays "
                             "are refused")
        if field == "images":
            if dtype.kind not in "fiu":
                raise BatchError(f"{path}: field 'images' must be uint8 pixels 0..255, got {dtype}")
            if len(shape) != 1 + len(image_shape) or tuple(shape[1:]) != image_shape:
                raise BatchError(f"{path}: field 'images' must have shape (N, {', '.join(map(str, image_shape))}), "
                                 f"got {shape}")
            if shape[0] == 0:
                raise BatchError(f"{path}: field 'images' is empty")
        elif dtype.kind not in "iu":
            raise BatchError(f"{path}: field 'labels' must be integers, got {dtype}")
        if any(size < 0 for size in shape):
            raise BatchError(f"{path}: field '{field}' header shape {shape} has a negative dimension")
        rows = shape[0] if shape else 1
        if rows > limits.batch_max_rows:
            raise BatchError(f"{path}: field '{field}' declares {rows} rows, over the limit of {limits.batch_max_rows} "
                             "(MLOPS_BATCH_MAX_ROWS); nothing was inflated")
        nbytes = dtype.itemsize
        for size in shape:  # Python ints: a hostile shape cannot overflow
            nbytes *= size
        if nbytes > limits.batch_max_bytes:
            raise BatchError(f"{path}: field '{field}' declares {nbytes} bytes, over the limit of "
                             f"{limits.batch_max_bytes} (MLOPS_BATCH_MAX_BYTES); nothing was inflated")
        header_bytes = handle.tell()
        if info.file_size != header_bytes + nbytes:
            raise BatchError(f"{path}: field '{field}' entry holds {info.file_size - header_bytes} data bytes, its "
                             f"header shape {shape} {dtype} needs {nbytes}")
        # Reading to the entry's end makes zipfile check its CRC-32.
        data = handle.read(nbytes + 1)
    if len(data) != nbytes:
        raise BatchError(f"{path}: field '{field}' has {len(data)} data bytes, its header needs {nbytes}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    # Native byte order, C order and owned memory, whatever order and endianness the producer saved.
    return np.ascontiguousarray(array.astype(dtype.newbyteorder("="), copy=False))


def content_digest(images: np.ndarray, labels: np.ndarray | None) -> str:
    """SHA-256 of the decoded arrays (shape, pixels, labels as int64): the same batch saved differently is one batch."""
    digest = hashlib.sha256()
    header = {"images": list(images.shape), "labels": None if labels is None else list(labels.shape)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(memoryview(np.ascontiguousarray(images, dtype=np.uint8)).cast("B"))
    if labels is not None:
        digest.update(memoryview(np.ascontiguousarray(labels, dtype="<i8")).cast("B"))
    return digest.hexdigest()


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Intensity, ink, geometry and frame features of (N, H, W) uint8 images: Evidently does not read pixels."""
    x = images.astype(np.float32) / 255.0
    n, height, width = x.shape
    flat = x.reshape(n, -1)
    ink = x > 0.5
    rows_any, cols_any = ink.any(axis=2), ink.any(axis=1)
    mass = x.sum(axis=(1, 2))
    safe_mass = np.where(mass > 0, mass, 1.0)
    ys, xs = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    # Centred images keep their outer ring blank (MNIST digits sit in a 20x20 box in the 28x28 frame): ink
    # there means noise or an object pushed out of place.
    frame = ink[:, 0, :].any(axis=1) | ink[:, -1, :].any(axis=1) | ink[:, :, 0].any(axis=1) | ink[:, :, -1].any(axis=1)
    return {
        "mean_intensity": flat.mean(axis=1),
        "std_intensity": flat.std(axis=1),
        "ink_ratio": ink.reshape(n, -1).mean(axis=1),
        "bbox_width": _extent(cols_any),
        "bbox_height": _extent(rows_any),
        # Centre of mass; a blank image sits at the centre rather than at 0 so it reads as "no signal".
        "center_x": np.where(mass > 0, (x.sum(axis=1) * xs).sum(axis=1) / safe_mass, width / 2),
        "center_y": np.where(mass > 0, (x.sum(axis=2) * ys).sum(axis=1) / safe_mass, height / 2),
        "frame_ink": frame.astype(np.int64),
    }


def _extent(any_ink: np.ndarray) -> np.ndarray:
    first = np.argmax(any_ink, axis=1)
    last = any_ink.shape[1] - 1 - np.argmax(any_ink[:, ::-1], axis=1)
    return np.where(any_ink.any(axis=1), last - first + 1, 0).astype(np.float32)


def _model_columns(
    embeddings: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, centroids: np.ndarray, scale: np.ndarray
) -> dict[str, np.ndarray]:
    # Distance to the predicted class's reference centroid, in units of that class's typical distance:
    # images the model has not seen the like of sit far from every centroid.
    distance = np.linalg.norm(embeddings - centroids[predicted], axis=1) / scale[predicted]
    return {
        "confidence": confidence.astype(np.float32),
        "embedding_norm": np.linalg.norm(embeddings, axis=1).astype(np.float32),
        "embedding_distance": distance.astype(np.float32),
        "predicted_class": predicted.astype(np.int64),
    }


def build_reference_profile(
    images: np.ndarray, viewer: ModelViewer | None, model_version: str, meta: dict[str, Any] | None = None
) -> ReferenceProfile:
    """Features of the reference images, with the model's view of them when a `viewer` is given."""
    columns = image_features(images)
    embeddings = centroids = scale = None
    if viewer is not None:
        view = viewer(images)
        classes = range(view.num_classes)
        embeddings = view.embeddings
        overall = embeddings.mean(axis=0)
        # A class the model never predicted on the reference falls back to the overall centroid.
        centroids = np.stack(
            [
                embeddings[view.predicted_class == c].mean(axis=0) if (view.predicted_class == c).any() else overall
                for c in classes
            ]
        ).astype(np.float32)
        dist = np.linalg.norm(embeddings - centroids[view.predicted_class], axis=1)
        typical = float(dist.mean()) or 1.0
        scale = np.array(
            [dist[view.predicted_class == c].mean() if (view.predicted_class == c).any() else typical for c in classes],
            dtype=np.float32,
        )
        scale = np.where(scale > 0, scale, typical).astype(np.float32)
        columns.update(_model_columns(embeddings, view.predicted_class, view.confidence, centroids, scale))
    ordered = {name: columns[name] for name in FEATURES if name in columns}
    return ReferenceProfile(model_version, ordered, embeddings, centroids, scale, dict(meta or {}))


def batch_features(images: np.ndarray, profile: ReferenceProfile, viewer: ModelViewer | None) -> dict[str, np.ndarray]:
    """The same feature columns as the profile, for a production batch."""
    columns = image_features(images)
    if profile.centroids is not None:
        if viewer is None:
            raise ValueError(f"reference profile of model v{profile.model_version} has model features: pass its model")
        view = viewer(images)
        columns.update(
            _model_columns(view.embeddings, view.predicted_class, view.confidence, profile.centroids, profile.class_scale)
        )
    return {name: columns[name] for name in profile.columns}


def save_profile(profile: ReferenceProfile, directory: Path) -> Path:
    """Store the profile as `profile.npz` (no pickle) plus `profile.json`, each written atomically."""
    import io

    arrays = {f"col__{name}": values for name, values in profile.columns.items()}
    for key in ("embeddings", "centroids", "class_scale"):
        value = getattr(profile, key)
        if value is not None:
            arrays[key] = value
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / "profile.npz", buffer.getvalue())
    meta = {**profile.meta, "model_version": profile.model_version, "columns": list(profile.columns), "rows": profile.rows}
    atomic_write_text(directory / "profile.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def load_profile(directory: Path) -> ReferenceProfile:
    """Read a profile written by save_profile."""
    meta = json.loads((directory / "profile.json").read_text())
    with np.load(directory / "profile.npz", allow_pickle=False) as data:
        columns = {name: data[f"col__{name}"] for name in meta["columns"]}
        extra = {key: (data[key] if key in data.files else None) for key in ("embeddings", "centroids", "class_scale")}
    return ReferenceProfile(str(meta["model_version"]), columns, extra["embeddings"], extra["centroids"], extra["class_scale"], meta)


def write_reports(
    reference: dict[str, np.ndarray],
    current: dict[str, np.ndarray],
    report_dir: Path,
    drift_share: float = 0.5,
    labels: np.ndarray | None = None,
    sample_rows: int = REPORT_SAMPLE_ROWS,
    seed: int = 0,
) -> ReportResult:
    """Evidently's DataDriftPreset (per-column ValueDrift above PRESET_MAX_ROWS), ClassificationPreset with labels."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset, DataDriftPreset

    rng = np.random.default_rng(seed)
    ref_rows, cur_rows = _sample(_rows(reference), sample_rows, rng), _sample(_rows(current), sample_rows, rng)
    numeric = [c for c in reference if c not in CATEGORICAL]
    categorical = [c for c in reference if c in CATEGORICAL]
    ref_frame = pd.DataFrame({c: reference[c][ref_rows] for c in reference})
    cur_frame = pd.DataFrame({c: current[c][cur_rows] for c in reference})
    # Explicit types: Evidently would otherwise call an int column with <= 10 values categorical, and
    # bbox_width is float only by our choice.
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    if max(len(ref_rows), len(cur_rows)) <= PRESET_MAX_ROWS:
        metrics = [DataDriftPreset(drift_share=drift_share)]
    else:
        metrics = [ValueDrift(column=c) for c in reference]
    snapshot = Report(metrics, include_tests=True).run(
        Dataset.from_pandas(cur_frame, data_definition=definition),
        Dataset.from_pandas(ref_frame, data_definition=definition),
    )
    summary = snapshot.dict()
    html_path, json_path = report_dir / "drift_report.html", report_dir / "drift_report.json"
    atomic_write_text(html_path, snapshot.get_html_str(as_iframe=False))
    atomic_write_text(json_path, json.dumps(summary, indent=2, default=str))

    class_html = class_json = None
    if labels is not None and "predicted_class" in current:
        frame = pd.DataFrame({"label": labels[cur_rows].astype(np.int64), "prediction": current["predicted_class"][cur_rows]})
        spec = DataDefinition(
            categorical_columns=["label", "prediction"],
            classification=[MulticlassClassification(target="label", prediction_labels="prediction")],
        )
        report = Report([ClassificationPreset()]).run(Dataset.from_pandas(frame, data_definition=spec))
        class_html, class_json = report_dir / "classification_report.html", report_dir / "classification_report.json"
        atomic_write_text(class_html, report.get_html_str(as_iframe=False))
        atomic_write_text(class_json, json.dumps(report.dict(), indent=2, default=str))
    return ReportResult(
        html_path=str(html_path),
        json_path=str(json_path),
        classification_html=str(class_html) if class_html else None,
        classification_json=str(class_json) if class_json else None,
        evidently_flags=evidently_flags(summary),
        sample_rows=int(cur_rows.shape[0]),
    )


def evidently_flags(summary: dict[str, Any]) -> dict[str, bool]:
    """Per-column drift flags from an Evidently snapshot dict: its ValueDrift test FAILs on drift."""
    return {
        test["metric_config"]["params"]["column"]: test["status"] == "FAIL"
        for test in summary.get("tests", [])
        if test["metric_config"]["params"]["type"].endswith("ValueDrift")
    }


def _rows(columns: dict[str, np.ndarray]) -> int:
    return int(next(iter(columns.values())).shape[0])


def _sample(rows: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(rows) if rows <= limit else np.sort(rng.choice(rows, limit, replace=False))
