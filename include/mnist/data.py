"""MNIST IDX loading with checksum verification and strict format checks (numpy only)."""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from include.mlops.files import sha256_file

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The published record counts; validate_dataset checks them so that a train/test swap is caught even
# when SHA256SUMS was edited to match the swapped files.
MNIST_COUNTS: dict[str, int] = {"train": 60_000, "test": 10_000}
IMAGE_SHAPE: tuple[int, int] = (28, 28)
NUM_CLASSES = 10
CHECKSUMS_FILE = "SHA256SUMS"

_IDX_UBYTE = 0x08
# IDX magic for unsigned-byte data: 0x00 0x00 <dtype> <ndim>.
_MAGIC_IMAGES = 0x00000803
_MAGIC_LABELS = 0x00000801
_SHA256_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


class DatasetError(ValueError):
    """The data set is missing, corrupt or inconsistent; the message names the file and the field."""


@dataclass(frozen=True)
class MnistSplit:
    """One split: images (N, 28, 28) uint8, labels (N,) uint8, and the SHA-256 of the two files it came from."""

    images: np.ndarray
    labels: np.ndarray
    name: str
    digests: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DatasetReport:
    """What validate_dataset checked: file digests, record counts and label histograms per split."""

    data_dir: str
    digests: dict[str, str]
    counts: dict[str, int]
    label_counts: dict[str, list[int]]
    image_shape: tuple[int, int]

    def to_dict(self) -> dict[str, object]:
        """A JSON-able copy for XCom or MLflow."""
        return {
            "data_dir": self.data_dir,
            "digests": dict(self.digests),
            "counts": dict(self.counts),
            "label_counts": {k: list(v) for k, v in self.label_counts.items()},
            "image_shape": list(self.image_shape),
        }


def read_checksums(data_dir: Path) -> dict[str, str]:
    """Parse SHA256SUMS (sha256sum format) in data_dir into {filename: hex digest}."""
    sums_path = Path(data_dir) / CHECKSUMS_FILE
    try:
        text = sums_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{sums_path}: checksum file is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{sums_path}: cannot read checksum file ({exc})") from exc
    expected: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _SHA256_LINE.match(line.rstrip("\r"))
        if match is None:
            raise DatasetError(f"{sums_path}: line {lineno} is not '<sha256>  <filename>': {line!r}")
        name = match.group(2).strip()
        if name.startswith("./"):
            name = name[2:]
        expected[name] = match.group(1).lower()
    return expected


def _verify_files(data_dir: Path, names: tuple[str, ...], expected: Mapping[str, str]) -> dict[str, str]:
    """Hash each named file and compare it with its expected digest; return {filename: sha256}."""
    data_dir = Path(data_dir)
    digests: dict[str, str] = {}
    for name in names:
        path = data_dir / name
        if name not in expected:
            raise DatasetError(f"{path}: no checksum entry for this file in {data_dir / CHECKSUMS_FILE}")
        if not path.is_file():
            raise DatasetError(f"{path}: data file is missing")
        actual = sha256_file(path)
        if actual != expected[name].lower():
            raise DatasetError(f"{path}: checksum mismatch: sha256 is {actual}, expected {expected[name]}")
        digests[name] = actual
    return digests


def verify_checksums(data_dir: Path) -> dict[str, str]:
    """Check all four MNIST files against SHA256SUMS in data_dir; return {filename: sha256}."""
    names = tuple(name for pair in MNIST_FILES.values() for name in pair)
    return _verify_files(Path(data_dir), names, read_checksums(Path(data_dir)))


def read_idx(path: Path, expected_ndim: int | None = None) -> np.ndarray:
    """Parse a gzip IDX file of unsigned bytes (images: 3 dims, labels: 1 dim) into a uint8 array."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: data file is missing") from None
    # A truncated gzip stream raises EOFError; a damaged one BadGzipFile (an OSError) or zlib.error.
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a valid gzip stream ({exc})") from exc

    if len(raw) < 4:
        raise DatasetError(f"{path}: magic: file is {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (_MAGIC_IMAGES, _MAGIC_LABELS):
        raise DatasetError(
            f"{path}: magic 0x{magic:08x} is not an unsigned-byte IDX file "
            f"(expected 0x{_MAGIC_IMAGES:08x} images or 0x{_MAGIC_LABELS:08x} labels)"
        )
    ndim = raw[3]
    if expected_ndim is not None and ndim != expected_ndim:
        want = _MAGIC_IMAGES if expected_ndim == 3 else _MAGIC_LABELS
        kind = "images" if expected_ndim == 3 else "labels"
        raise DatasetError(
            f"{path}: magic 0x{magic:08x} does not match {kind} file (expected 0x{want:08x}); "
            "is a file swapped?"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DatasetError(
            f"{path}: dims: header declares {ndim} dimensions but the file ends after {len(raw)} bytes"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    for i, size in enumerate(dims):
        if size == 0:
            raise DatasetError(f"{path}: dims: dimension {i} is 0")
    if ndim == 3 and dims[1:] != IMAGE_SHAPE:
        raise DatasetError(f"{path}: dims: image size is {dims[1]}x{dims[2]}, expected 28x28")
    expected_bytes = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header_len
    if payload < expected_bytes:
        raise DatasetError(
            f"{path}: size: payload is {payload} bytes, dims {dims} need {expected_bytes} (truncated)"
        )
    if payload > expected_bytes:
        raise DatasetError(
            f"{path}: size: payload is {payload} bytes, dims {dims} need {expected_bytes} "
            f"({payload - expected_bytes} trailing bytes)"
        )
    # Copy so the array owns writable memory rather than viewing the immutable decompressed bytes.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def load_split(
    data_dir: Path,
    split: str,
    limit: int | None = None,
    digests: Mapping[str, str] | None = None,
) -> MnistSplit:
    """Verify and load one split; limit keeps the first N records (deterministic, file order)."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    data_dir = Path(data_dir)
    images_name, labels_name = MNIST_FILES[split]
    # Nothing is parsed before its bytes are verified: against digests the caller recorded earlier
    # (e.g. by validate_data, so training uses exactly what was validated) or else against SHA256SUMS.
    expected = dict(digests) if digests is not None else read_checksums(data_dir)
    verified = _verify_files(data_dir, (images_name, labels_name), expected)

    images = read_idx(data_dir / images_name, expected_ndim=3)
    labels = read_idx(data_dir / labels_name, expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{data_dir / images_name}: count: {images.shape[0]} images but "
            f"{labels_name} has {labels.shape[0]} labels"
        )
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DatasetError(
            f"{data_dir / labels_name}: label range: {bad.size} labels outside 0..9 "
            f"(first at index {int(bad[0])}: {int(labels[bad[0]])})"
        )
    if limit is not None:
        images, labels = images[:limit].copy(), labels[:limit].copy()
    return MnistSplit(images=images, labels=labels, name=split, digests=verified)


def validate_dataset(
    data_dir: Path, expected_counts: Mapping[str, int] | None = MNIST_COUNTS
) -> DatasetReport:
    """Fully verify the four files (checksums, format, counts, label range); None skips the count check."""
    data_dir = Path(data_dir)
    digests = verify_checksums(data_dir)
    counts: dict[str, int] = {}
    label_counts: dict[str, list[int]] = {}
    for split, (images_name, _) in MNIST_FILES.items():
        loaded = load_split(data_dir, split, digests=digests)
        counts[split] = len(loaded)
        label_counts[split] = np.bincount(loaded.labels, minlength=NUM_CLASSES).tolist()
        if expected_counts is not None and counts[split] != expected_counts[split]:
            raise DatasetError(
                f"{data_dir / images_name}: count: {counts[split]} records, expected {expected_counts[split]} "
                f"for the {split} split; are train and test swapped?"
            )
    return DatasetReport(
        data_dir=str(data_dir),
        digests=digests,
        counts=counts,
        label_counts=label_counts,
        image_shape=IMAGE_SHAPE,
    )
