"""Synthetic "production" batches of MNIST images, clean or drifted, for drift monitoring (numpy only)."""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SCENARIOS: tuple[str, ...] = ("clean", "rotation", "noise", "inversion", "imbalance", "blank")
DEFAULT_DATA_DIR = Path("include/data/mnist")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Severity 1.0 settings: what each drift scenario does to the pixels or labels.
ROTATION_DEGREES = (30.0, 45.0)
NOISE_SIGMA = 60.0
IMBALANCE_SHARE = 0.9
BLANK_MAX_PIXEL = 8


def _rotate(images: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Rotate each (28, 28) image about its centre by its own angle; bilinear, zero fill outside."""
    n, h, w = images.shape
    theta = np.deg2rad(degrees).reshape(n, 1, 1)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    # Inverse mapping: each output pixel reads the source point it came from.
    cos, sin = np.cos(theta), np.sin(theta)
    src_x = cos * xx + sin * yy + cx
    src_y = -sin * xx + cos * yy + cy
    x0, y0 = np.floor(src_x).astype(np.int64), np.floor(src_y).astype(np.int64)
    fx, fy = src_x - x0, src_y - y0
    img = images.astype(np.float32)
    batch = np.arange(n).reshape(n, 1, 1)

    def sample(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        return img[batch, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)] * inside

    out = (
        sample(y0, x0) * (1 - fy) * (1 - fx)
        + sample(y0, x0 + 1) * (1 - fy) * fx
        + sample(y0 + 1, x0) * fy * (1 - fx)
        + sample(y0 + 1, x0 + 1) * fy * fx
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_batch(
    images: np.ndarray,
    labels: np.ndarray,
    scenario: str,
    size: int,
    seed: int,
    severity: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `size` images and labels from the pool and apply the scenario; returns uint8 arrays."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not np.isfinite(severity) or severity < 0:
        raise ValueError(f"severity must be a finite number >= 0, got {severity!r}")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    if images.shape[0] == 0:
        raise ValueError("the image pool is empty")

    rng = np.random.default_rng(seed)
    pool = images.shape[0]

    def draw(candidates: np.ndarray, count: int) -> np.ndarray:
        # Without replacement when the pool allows it, so a batch has no duplicate images.
        return rng.choice(candidates, size=count, replace=count > candidates.shape[0])

    if scenario == "imbalance":
        present = np.unique(labels)
        dominant = rng.choice(present, size=min(2, present.shape[0]), replace=False)
        n_dominant = int(round(size * min(1.0, IMBALANCE_SHARE * severity)))
        idx = np.concatenate(
            [
                draw(np.flatnonzero(np.isin(labels, dominant)), n_dominant),
                draw(np.arange(pool), size - n_dominant),
            ]
        )
        idx = rng.permutation(idx)
    else:
        idx = draw(np.arange(pool), size)
    batch_images = images[idx].copy()
    batch_labels = labels[idx].copy()

    if scenario == "rotation":
        lo, hi = ROTATION_DEGREES
        magnitude = rng.uniform(lo, hi, size=size) * severity
        sign = rng.choice(np.array([-1.0, 1.0]), size=size)
        batch_images = _rotate(batch_images, magnitude * sign)
    elif scenario == "noise":
        noisy = batch_images.astype(np.float32) + rng.normal(
            0.0, NOISE_SIGMA * severity, size=batch_images.shape
        )
        batch_images = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    elif scenario == "inversion":
        # Severity blends towards the negative; 1.0 is a full 255 - x inversion.
        s = min(1.0, float(severity))
        blended = (1 - s) * batch_images.astype(np.float32) + s * (255.0 - batch_images.astype(np.float32))
        batch_images = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    elif scenario == "blank":
        # A dead camera: near-black frames with faint sensor noise; labels stay as drawn.
        top = int(round(BLANK_MAX_PIXEL * severity))
        batch_images = rng.integers(0, top + 1, size=batch_images.shape, dtype=np.uint8)
    return batch_images, batch_labels


def _same_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> bool:
    try:
        with np.load(path, allow_pickle=False) as existing:
            return (
                set(existing.files) == {"images", "labels"}
                and existing["images"].dtype == images.dtype
                and existing["labels"].dtype == labels.dtype
                and np.array_equal(existing["images"], images)
                and np.array_equal(existing["labels"], labels)
            )
    except (OSError, ValueError, zipfile.BadZipFile, KeyError):
        return False


def write_batch(landing_dir: Path, images: np.ndarray, labels: np.ndarray, name: str) -> Path:
    """Atomically write <landing_dir>/<name>.npz; rewriting identical content is a no-op, different content fails.

    The drift store's producer contract (include/mlops/drift_store.py): the file is written under a hidden
    name in the landing folder and appears under its final name only when complete.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"batch name must match {_NAME_RE.pattern}, got {name!r}")
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    landing_dir = Path(landing_dir)
    target = landing_dir / f"{name}.npz"
    if target.exists():
        if _same_batch(target, images, labels):
            return target
        raise FileExistsError(f"{target}: a different batch with this name already exists")

    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, labels=labels)
    landing_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=landing_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            # link() fails if the target appeared meanwhile, so a concurrent writer is never overwritten.
            os.link(tmp_name, target)
        except FileExistsError:
            if _same_batch(target, images, labels):
                return target
            raise FileExistsError(f"{target}: a different batch with this name already exists") from None
        except OSError:
            # File systems without hard links: fall back to an atomic rename.
            os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: draw one batch from the verified test split and write it to --out."""
    parser = argparse.ArgumentParser(prog="python -m include.mnist.batches", description=main.__doc__)
    parser.add_argument("--scenario", required=True, choices=SCENARIOS)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--severity", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True, help="landing directory")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--split", choices=("test", "train"), default="test", help="pool to draw from")
    parser.add_argument("--name", default=None, help="file stem; default <scenario>-seed<seed>-n<size>")
    args = parser.parse_args(argv)

    # Imported here so that `--help` works without the data set.
    from include.mnist.data import load_split

    split = load_split(args.data_dir, args.split)
    images, labels = make_batch(
        split.images, split.labels, args.scenario, args.size, args.seed, args.severity
    )
    name = args.name or f"{args.scenario}-seed{args.seed}-n{args.size}"
    path = write_batch(args.out, images, labels, name)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
