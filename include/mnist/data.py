"""MNIST IDX loading with checksum verification, pinned data versions and strict, bounded format checks (numpy only).

Every file is read once (a regular file, not a symlink, FIFO or device, within a size limit), its sha256 checked,
and those same bytes parsed: nothing can change between the check and the parse. Decompression stops at the size
the IDX header declares, and the header is refused before anything is inflated when it declares more than
`InputLimits.data_max_idx_bytes`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from include.mlops.files import sha256_file
from include.security.untrusted import MANIFESTS_FILE, pinned_files, pinned_manifest, read_regular_file
from include.settings import InputLimits

__all__ = ["sha256_file"]  # re-exported for callers that hash a data file the way this module does

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
# sha256sum's output: digest, space, text (" ") or binary ("*") marker, a plain file name in this folder.
_SHA256_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](?:\./)?([A-Za-z0-9][A-Za-z0-9._-]*)")
_MAX_CHECKSUMS_BYTES = 64 << 10


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
    manifest: str | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-able copy for XCom or MLflow."""
        return {
            "data_dir": self.data_dir,
            "digests": dict(self.digests),
            "counts": dict(self.counts),
            "label_counts": {k: list(v) for k, v in self.label_counts.items()},
            "image_shape": list(self.image_shape),
            "manifest": self.manifest,
        }


def read_checksums(data_dir: Path) -> dict[str, str]:
    """Parse SHA256SUMS strictly into {filename: hex digest}: plain names in this folder, each listed once."""
    sums_path = Path(data_dir) / CHECKSUMS_FILE
    raw = read_regular_file(sums_path, _MAX_CHECKSUMS_BYTES, DatasetError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{sums_path}: checksum file is not UTF-8 ({exc})") from None
    expected: dict[str, str] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        match = _SHA256_LINE.fullmatch(line)
        if match is None:
            raise DatasetError(f"{sums_path}: line {lineno} is not '<sha256>  <file name in this folder>': {line!r}")
        name = match.group(2)
        # A second entry could vouch for a file the first one does not: sha256sum -c checks both, we refuse.
        if name in expected:
            raise DatasetError(f"{sums_path}: line {lineno} lists {name!r} a second time")
        expected[name] = match.group(1).lower()
    return expected


def _read_verified(path: Path, expected: Mapping[str, str], limits: InputLimits) -> tuple[bytes, str]:
    """Read a data file once and check its sha256 against `expected`; returns the bytes and the digest."""
    if path.name not in expected:
        raise DatasetError(f"{path}: no checksum entry for this file in {path.parent / CHECKSUMS_FILE}")
    blob = read_regular_file(path, limits.data_max_file_bytes, DatasetError)
    actual = hashlib.sha256(blob).hexdigest()
    if actual != str(expected[path.name]).lower():
        raise DatasetError(f"{path}: checksum mismatch: sha256 is {actual}, expected {expected[path.name]}")
    return blob, actual


def _verify_files(data_dir: Path, names: tuple[str, ...], expected: Mapping[str, str]) -> dict[str, str]:
    """Hash each named file and compare it with its expected digest; return {filename: sha256}."""
    limits = InputLimits.from_env()
    return {name: _read_verified(Path(data_dir) / name, expected, limits)[1] for name in names}


def verify_checksums(data_dir: Path) -> dict[str, str]:
    """Check all four MNIST files against SHA256SUMS in data_dir; return {filename: sha256}."""
    names = tuple(name for pair in MNIST_FILES.values() for name in pair)
    return _verify_files(Path(data_dir), names, read_checksums(Path(data_dir)))


def read_idx(path: Path, expected_ndim: int | None = None) -> np.ndarray:
    """Parse a gzip IDX file of unsigned bytes (images: 3 dims, labels: 1 dim) into a uint8 array."""
    limits = InputLimits.from_env()
    return parse_idx(read_regular_file(Path(path), limits.data_max_file_bytes, DatasetError), Path(path),
                     expected_ndim, limits)


def parse_idx(blob: bytes, path: Path, expected_ndim: int | None = None, limits: InputLimits | None = None) -> np.ndarray:
    """Parse gzip IDX bytes read from `path`, inflating at most the size the header declares (plus one byte)."""
    limits = limits or InputLimits.from_env()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob), mode="rb") as fh:
            return _parse_idx_stream(fh, path, expected_ndim, limits)
    # A truncated gzip stream raises EOFError; a damaged one BadGzipFile (an OSError) or zlib.error.
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a valid gzip stream ({exc})") from exc


def _parse_idx_stream(fh: gzip.GzipFile, path: Path, expected_ndim: int | None, limits: InputLimits) -> np.ndarray:
    magic_bytes = fh.read(4)
    if len(magic_bytes) < 4:
        raise DatasetError(f"{path}: magic: file is {len(magic_bytes)} bytes, too short for an IDX header")
    magic = int.from_bytes(magic_bytes, "big")
    if magic not in (_MAGIC_IMAGES, _MAGIC_LABELS):
        raise DatasetError(
            f"{path}: magic 0x{magic:08x} is not an unsigned-byte IDX file "
            f"(expected 0x{_MAGIC_IMAGES:08x} images or 0x{_MAGIC_LABELS:08x} labels)"
        )
    ndim = magic_bytes[3]
    if expected_ndim is not None and ndim != expected_ndim:
        want = _MAGIC_IMAGES if expected_ndim == 3 else _MAGIC_LABELS
        kind = "images" if expected_ndim == 3 else "labels"
        raise DatasetError(
            f"{path}: magic 0x{magic:08x} does not match {kind} file (expected 0x{want:08x}); "
            "is a file swapped?"
        )
    header = fh.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise DatasetError(
            f"{path}: dims: header declares {ndim} dimensions but the file ends after {4 + len(header)} bytes"
        )
    dims = tuple(int.from_bytes(header[4 * i : 4 + 4 * i], "big") for i in range(ndim))
    for i, size in enumerate(dims):
        if size == 0:
            raise DatasetError(f"{path}: dims: dimension {i} is 0")
    if ndim == 3 and dims[1:] != IMAGE_SHAPE:
        raise DatasetError(f"{path}: dims: image size is {dims[1]}x{dims[2]}, expected 28x28")
    expected_bytes = 1
    for size in dims:  # Python ints: four 32-bit dimensions cannot overflow
        expected_bytes *= size
    if expected_bytes > limits.data_max_idx_bytes:
        raise DatasetError(
            f"{path}: size: dims {dims} declare {expected_bytes} bytes, over the limit of "
            f"{limits.data_max_idx_bytes} (MLOPS_DATA_MAX_IDX_BYTES); nothing was inflated"
        )
    # One byte more than declared tells trailing data from an exact fit without inflating the rest.
    payload = fh.read(expected_bytes + 1)
    if len(payload) < expected_bytes:
        raise DatasetError(
            f"{path}: size: payload is {len(payload)} bytes, dims {dims} need {expected_bytes} (truncated)"
        )
    if len(payload) > expected_bytes:
        raise DatasetError(
            f"{path}: size: payload is longer than the {expected_bytes} bytes dims {dims} need (trailing bytes)"
        )
    # Copy so the array owns writable memory rather than viewing the immutable decompressed bytes.
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()


def load_split(
    data_dir: Path,
    split: str,
    limit: int | None = None,
    digests: Mapping[str, str] | None = None,
    *,
    pinned: bool = True,
) -> MnistSplit:
    """Verify and load one split; limit keeps the first N records (deterministic, file order).

    `digests` (what validate_data recorded) are the reference when given; otherwise SHA256SUMS is, and with
    `pinned` each file's digest must also be one a pinned data manifest lists.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    data_dir, limits = Path(data_dir), InputLimits.from_env()
    images_name, labels_name = MNIST_FILES[split]
    # Nothing is parsed before its bytes are verified, and the verified bytes are what is parsed: a file
    # changed after validate_data (whose digests the caller passes) is refused, naming the file.
    expected = dict(digests) if digests is not None else read_checksums(data_dir)
    if digests is None and pinned:
        trusted = pinned_files()
        for name in (images_name, labels_name):
            if name in expected and (name, expected[name]) not in trusted:
                raise DatasetError(f"{data_dir / name}: sha256 {expected[name]} is in no pinned data manifest "
                                   f"({MANIFESTS_FILE.name}); a new data version is added there, reviewed like code")
    images_blob, images_sha = _read_verified(data_dir / images_name, expected, limits)
    labels_blob, labels_sha = _read_verified(data_dir / labels_name, expected, limits)
    images = parse_idx(images_blob, data_dir / images_name, 3, limits)
    del images_blob
    labels = parse_idx(labels_blob, data_dir / labels_name, 1, limits)
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
    return MnistSplit(images=images, labels=labels, name=split, digests={images_name: images_sha, labels_name: labels_sha})


def validate_dataset(
    data_dir: Path, expected_counts: Mapping[str, int] | None = MNIST_COUNTS, *, pinned: bool = True
) -> DatasetReport:
    """Fully verify the four files: checksums, the pinned manifest, format, counts, labels and content sanity.

    `pinned` requires the four digests to equal a manifest in include/security/data_manifests.json (checked
    before any file is parsed); None for `expected_counts` skips the count check.
    """
    data_dir, limits = Path(data_dir), InputLimits.from_env()
    digests = verify_checksums(data_dir)
    manifest = pinned_manifest(digests) if pinned else None
    if pinned and manifest is None:
        raise DatasetError(
            f"{data_dir}: these file digests are in no pinned data manifest ({MANIFESTS_FILE.name}): {digests}; "
            "a new data version is accepted once a reviewed change adds its manifest there"
        )
    splits: dict[str, MnistSplit] = {}
    counts: dict[str, int] = {}
    label_counts: dict[str, list[int]] = {}
    for split, (images_name, labels_name) in MNIST_FILES.items():
        loaded = splits[split] = load_split(data_dir, split, digests=digests)
        counts[split] = len(loaded)
        label_counts[split] = np.bincount(loaded.labels, minlength=NUM_CLASSES).tolist()
        if expected_counts is not None and counts[split] != expected_counts[split]:
            raise DatasetError(
                f"{data_dir / images_name}: count: {counts[split]} records, expected {expected_counts[split]} "
                f"for the {split} split; are train and test swapped?"
            )
        _check_content(loaded, data_dir / images_name, data_dir / labels_name, limits)
    _check_label_agreement(splits["train"], splits["test"], data_dir / MNIST_FILES["test"][1], limits)
    return DatasetReport(
        data_dir=str(data_dir),
        digests=digests,
        counts=counts,
        label_counts=label_counts,
        image_shape=IMAGE_SHAPE,
        manifest=manifest,
    )


def _check_content(split: MnistSplit, images_path: Path, labels_path: Path, limits: InputLimits) -> None:
    """No blank images, and each class's share of the split within the configured bounds."""
    ink = np.count_nonzero(split.images.reshape(len(split), -1), axis=1)
    blank = np.flatnonzero(ink < limits.data_min_ink_pixels)
    if blank.size:
        raise DatasetError(
            f"{images_path}: content: {blank.size} blank images (fewer than {limits.data_min_ink_pixels} ink "
            f"pixels, MLOPS_DATA_MIN_INK_PIXELS; first at index {int(blank[0])})"
        )
    shares = np.bincount(split.labels, minlength=NUM_CLASSES) / len(split)
    low, high = limits.data_min_class_share, limits.data_max_class_share
    outside = [f"{digit}: {share:.3f}" for digit, share in enumerate(shares) if not low <= share <= high]
    if outside:
        raise DatasetError(
            f"{labels_path}: label histogram: class shares {', '.join(outside)} outside {low}..{high} "
            "(MLOPS_DATA_MIN_CLASS_SHARE, MLOPS_DATA_MAX_CLASS_SHARE)"
        )


def _check_label_agreement(train: MnistSplit, test: MnistSplit, labels_path: Path, limits: InputLimits) -> None:
    """Labels must describe the images: a nearest-class-mean classifier fit on train must agree with test's labels."""
    flat = train.images.reshape(len(train), -1)
    centroids = np.stack([flat[train.labels == c].mean(axis=0) for c in range(NUM_CLASSES)]).astype(np.float32)
    test_flat = test.images.reshape(len(test), -1).astype(np.float32)
    distance = (centroids**2).sum(axis=1)[None, :] - 2 * test_flat @ centroids.T
    agreement = float((distance.argmin(axis=1) == test.labels).mean())
    if agreement < limits.data_min_label_agreement:
        raise DatasetError(
            f"{labels_path}: label agreement: a nearest-class-mean classifier fit on train agrees with "
            f"{agreement:.2f} of these labels, under {limits.data_min_label_agreement} "
            "(MLOPS_DATA_MIN_LABEL_AGREEMENT); are labels shuffled or from another split?"
        )
