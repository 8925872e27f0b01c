"""Fixtures for the MNIST package tests: the real data set, a writable copy, and one small trained model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REAL_DATA_DIR = Path(__file__).resolve().parents[3] / "include" / "data" / "mnist"
DATA_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "SHA256SUMS",
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The project's real MNIST files (read-only use)."""
    missing = [name for name in DATA_FILES if not (REAL_DATA_DIR / name).is_file()]
    # A missing data set is a broken checkout, not a reason to skip.
    assert not missing, f"MNIST files missing from {REAL_DATA_DIR}: {missing}"
    return REAL_DATA_DIR


@pytest.fixture
def data_copy(tmp_path: Path, data_dir: Path) -> Path:
    """A writable copy of the real data set that a test may corrupt."""
    target = tmp_path / "mnist"
    target.mkdir()
    for name in DATA_FILES:
        shutil.copyfile(data_dir / name, target / name)
    return target
