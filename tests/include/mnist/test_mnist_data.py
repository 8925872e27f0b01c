"""include.mnist.data: IDX parsing, checksum verification and data-set validation on real and corrupted files."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from include.mnist.data import (
    MNIST_FILES,
    DatasetError,
    load_split,
    read_idx,
    sha256_file,
    validate_dataset,
    verify_checksums,
)

# Published label counts (include/data/mnist/README.md).
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def write_gz(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw))
    return path


def rewrite_sums(data_dir: Path) -> None:
    """Make SHA256SUMS match whatever files are now in data_dir, as an attacker or a careless copy would."""
    names = [name for pair in MNIST_FILES.values() for name in pair]
    lines = [f"{sha256_file(data_dir / n)}  {n}\n" for n in names if (data_dir / n).exists()]
    (data_dir / "SHA256SUMS").write_text("".join(lines))


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 10_000
    path = tmp_path / "blob"
    path.write_bytes(blob)
    assert sha256_file(path) == hashlib.sha256(blob).hexdigest()  # 2.5 MB: more than one 1 MiB chunk


def test_read_idx_parses_images_and_labels(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    img_path = write_gz(tmp_path / "img.gz", idx_bytes(0x803, (3, 28, 28), images.tobytes()))
    lbl_path = write_gz(tmp_path / "lbl.gz", idx_bytes(0x801, (3,), bytes([7, 0, 9])))
    parsed = read_idx(img_path)
    assert parsed.dtype == np.uint8 and parsed.shape == (3, 28, 28)
    np.testing.assert_array_equal(parsed, images)
    assert parsed.flags.writeable
    np.testing.assert_array_equal(read_idx(lbl_path), np.array([7, 0, 9], dtype=np.uint8))


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(idx_bytes(0x80B, (3,), bytes(3 * 4)), "magic", id="int32-dtype"),
        pytest.param(idx_bytes(0x802, (3, 1), bytes(3)), "magic", id="two-dims"),
        pytest.param(b"\x1f\x8b\x08\x00" + bytes(12), "magic", id="not-idx"),
        pytest.param(b"\x00\x00", "magic", id="too-short"),
        pytest.param(idx_bytes(0x803, (3, 28, 28), bytes(3 * 784 - 1)), "truncated", id="truncated-payload"),
        pytest.param(idx_bytes(0x803, (3, 28, 28), bytes(3 * 784 + 5)), "trailing", id="trailing-bytes"),
        pytest.param(idx_bytes(0x803, (3, 27, 28), bytes(3 * 27 * 28)), "dims", id="wrong-image-size"),
        pytest.param(idx_bytes(0x801, (0,), b""), "dims", id="zero-dim"),
        pytest.param(struct.pack(">I", 0x803) + struct.pack(">I", 3), "dims", id="header-cut-short"),
    ],
)
def test_read_idx_rejects_malformed_file(tmp_path: Path, raw: bytes, field: str) -> None:
    path = write_gz(tmp_path / "bad-idx.gz", raw)
    with pytest.raises(DatasetError, match=field) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_corrupt_gzip(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(0x801, (1000,), bytes(range(10)) * 100))
    cases = {
        "not-gzip.gz": b"this is not gzip at all",
        "truncated.gz": good[: len(good) // 2],
        # Flipping bytes in the deflate stream breaks either the stream or its CRC32 check.
        "garbled.gz": good[:20] + bytes(b ^ 0xFF for b in good[20:40]) + good[40:],
    }
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(DatasetError, match="gzip") as info:
            read_idx(path)
        assert str(path) in str(info.value)


def test_read_idx_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing") as info:
        read_idx(tmp_path / "nope.gz")
    assert "nope.gz" in str(info.value)


def test_verify_checksums_on_real_files(data_dir: Path) -> None:
    digests = verify_checksums(data_dir)
    assert digests["train-images-idx3-ubyte.gz"] == (
        "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971"
    )
    assert sorted(digests) == sorted(n for pair in MNIST_FILES.values() for n in pair)


def test_checksum_mismatch_names_file(data_copy: Path) -> None:
    target = data_copy / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray(target.read_bytes())
    blob[-9] ^= 0x01  # one bit near the end: same size and name, not the published bytes
    target.write_bytes(bytes(blob))
    for call in (lambda: verify_checksums(data_copy), lambda: load_split(data_copy, "test")):
        with pytest.raises(DatasetError, match="checksum mismatch") as info:
            call()
        assert str(target) in str(info.value)
    # The train split does not touch the damaged file, so it still loads.
    assert len(load_split(data_copy, "train", limit=10)) == 10


def test_missing_sha256sums(data_copy: Path) -> None:
    (data_copy / "SHA256SUMS").unlink()
    with pytest.raises(DatasetError, match="SHA256SUMS"):
        verify_checksums(data_copy)
    with pytest.raises(DatasetError, match="SHA256SUMS"):
        load_split(data_copy, "test")


def test_missing_sha256sums_entry(data_copy: Path) -> None:
    sums = data_copy / "SHA256SUMS"
    kept = [line for line in sums.read_text().splitlines() if "t10k-images" not in line]
    sums.write_text("\n".join(kept) + "\n")
    with pytest.raises(DatasetError, match="no checksum entry") as info:
        load_split(data_copy, "test")
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_malformed_sha256sums_line(data_copy: Path) -> None:
    (data_copy / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(DatasetError, match="line 1") as info:
        verify_checksums(data_copy)
    assert "SHA256SUMS" in str(info.value)


def test_missing_data_file(data_copy: Path) -> None:
    (data_copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing") as info:
        verify_checksums(data_copy)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)


def test_caller_digests_are_the_reference(data_copy: Path) -> None:
    digests = verify_checksums(data_copy)
    assert len(load_split(data_copy, "test", limit=5, digests=digests)) == 5
    stale = dict(digests, **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        load_split(data_copy, "test", digests=stale)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_labels_file_in_place_of_images(data_copy: Path) -> None:
    images = data_copy / "t10k-images-idx3-ubyte.gz"
    shutil.copyfile(data_copy / "t10k-labels-idx1-ubyte.gz", images)
    rewrite_sums(data_copy)
    with pytest.raises(DatasetError, match="no pinned data manifest"):
        load_split(data_copy, "test")
    with pytest.raises(DatasetError, match="magic") as info:
        load_split(data_copy, "test", pinned=False)
    assert str(images) in str(info.value)


def test_images_from_other_split_is_a_count_mismatch(data_copy: Path) -> None:
    # Test images next to train labels: each file is valid on its own, the pair is not.
    shutil.copyfile(data_copy / "t10k-images-idx3-ubyte.gz", data_copy / "train-images-idx3-ubyte.gz")
    rewrite_sums(data_copy)
    with pytest.raises(DatasetError, match="count") as info:
        load_split(data_copy, "train", pinned=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "10000 images" in str(info.value) and "60000 labels" in str(info.value)


def test_train_test_swap_with_edited_sums_fails_validation(data_copy: Path) -> None:
    for train_name, test_name in zip(MNIST_FILES["train"], MNIST_FILES["test"], strict=True):
        (data_copy / train_name).rename(data_copy / "tmp")
        (data_copy / test_name).rename(data_copy / train_name)
        (data_copy / "tmp").rename(data_copy / test_name)
    rewrite_sums(data_copy)
    # The pinned manifest names each file: the published files under each other's names are not pinned.
    with pytest.raises(DatasetError, match="no pinned data manifest"):
        validate_dataset(data_copy)
    with pytest.raises(DatasetError, match="swapped") as info:
        validate_dataset(data_copy, pinned=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "10000 records, expected 60000" in str(info.value)


def test_label_out_of_range(data_copy: Path) -> None:
    labels_path = data_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels_path.read_bytes()))
    raw[8 + 123] = 10  # header is 8 bytes; record 123 becomes class "10"
    labels_path.write_bytes(gzip.compress(bytes(raw)))
    rewrite_sums(data_copy)
    with pytest.raises(DatasetError, match="label range") as info:
        load_split(data_copy, "test", pinned=False)
    assert str(labels_path) in str(info.value)
    assert "index 123: 10" in str(info.value)


def test_load_split_real_data_and_limit(data_dir: Path) -> None:
    full = load_split(data_dir, "test")
    assert full.name == "test"
    assert full.images.shape == (10_000, 28, 28) and full.images.dtype == np.uint8
    assert full.labels.shape == (10_000,) and full.labels.dtype == np.uint8
    assert np.bincount(full.labels, minlength=10).tolist() == TEST_LABEL_COUNTS
    assert set(full.digests) == set(MNIST_FILES["test"])
    first = load_split(data_dir, "test", limit=300)
    np.testing.assert_array_equal(first.images, full.images[:300])
    np.testing.assert_array_equal(first.labels, full.labels[:300])
    # Real digits: roughly a fifth of MNIST pixels are ink.
    assert 0.1 < float((full.images > 127).mean()) < 0.3
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            load_split(data_dir, "test", limit=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        load_split(data_dir, "validation")


def test_validate_dataset_real(data_dir: Path) -> None:
    report = validate_dataset(data_dir)
    assert report.counts == {"train": 60_000, "test": 10_000}
    assert report.label_counts == {"train": TRAIN_LABEL_COUNTS, "test": TEST_LABEL_COUNTS}
    assert report.image_shape == (28, 28)
    assert report.digests == verify_checksums(data_dir)
    assert report.to_dict()["image_shape"] == [28, 28]
    assert report.manifest == "mnist-bundled"


def test_bundled_files_match_the_pinned_manifest(data_dir: Path) -> None:
    from include.security.untrusted import load_data_manifests

    assert load_data_manifests()["mnist-bundled"] == verify_checksums(data_dir)
