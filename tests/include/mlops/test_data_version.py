"""Data versions from Asset events: every bad field is named, nothing lands outside the target, digests must match."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from include.mlops.data_version import BUNDLED, DataVersion, DataVersionError, prepare_dataset

DIGEST = "a" * 64
GOOD = {"data_version": "v2", "repo": "mnist-data-local", "folder": "mnist/v2", "digests": {"train.gz": DIGEST}}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"data_version": ""}, "'data_version'"),
        ({"repo": None}, "'repo'"),
        ({"data_version": "../v2"}, "data_version '../v2'"),
        ({"repo": "a/b"}, "repo 'a/b'"),
        ({"folder": "mnist/../../etc"}, "folder 'mnist/../../etc'"),
        ({"folder": "/abs/../x"}, "folder"),
        ({"digests": ["train.gz"]}, "digests must map"),
        ({"digests": {"../train.gz": DIGEST}}, "'../train.gz'"),
        ({"digests": {"SHA256SUMS": DIGEST}}, "'SHA256SUMS'"),
        ({"digests": {"train.gz": "A" * 64}}, "digests['train.gz']"),
    ],
)
def test_bad_event_fields_are_named(change, field):
    with pytest.raises(DataVersionError, match="data event") as caught:
        DataVersion.from_event({**GOOD, **change})
    assert field in str(caught.value)


def _store(files: dict[str, bytes]):
    """A download function over in-memory files, returning the sha256 of what it wrote, as the hook does."""
    def download(repo: str, path: str, local: Path) -> str:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(files[f"{repo}/{path}"])
        return hashlib.sha256(local.read_bytes()).hexdigest()

    return download


def test_a_file_with_another_digest_is_refused_and_removed(tmp_path):
    version = DataVersion.from_event(GOOD)
    download = _store({"mnist-data-local/mnist/v2/train.gz": b"other bytes", "mnist-data-local/mnist/v2/SHA256SUMS": b""})
    with pytest.raises(DataVersionError, match=r"mnist-data-local/mnist/v2/train.gz: sha256 [0-9a-f]{64}, but"):
        version.fetch(download, tmp_path)
    assert not (tmp_path / "train.gz").exists()


def test_prepare_dataset_uses_the_event_version_or_the_bundled_copy(tmp_path):
    data = b"images"
    sha = hashlib.sha256(data).hexdigest()
    extra = {**GOOD, "digests": {"train.gz": sha}}
    download = _store({"mnist-data-local/mnist/v2/train.gz": data, "mnist-data-local/mnist/v2/SHA256SUMS": b"sums"})
    seen = []

    def validate(directory: Path) -> dict:
        seen.append(directory)
        return {"data_dir": str(directory), "digests": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                                        for p in directory.iterdir() if p.name != "SHA256SUMS"}}

    pins = {"v2": {"train.gz": sha}}
    dataset = prepare_dataset(extra, bundled_dir=tmp_path / "bundled", directory=tmp_path / "run", download=download,
                              validate=validate, manifests=pins)
    assert dataset["data_version"] == "v2" and dataset["data_source"] == "mnist-data-local/mnist/v2"
    assert seen == [tmp_path / "run" / "v2"]
    (tmp_path / "bundled").mkdir()
    for empty in (None, {}):
        bundled = prepare_dataset(empty, bundled_dir=tmp_path / "bundled", directory=tmp_path / "run",
                                  download=download, validate=lambda d: {"data_dir": str(d), "digests": {"train.gz": sha}},
                                  manifests=pins)
        assert bundled["data_version"] == BUNDLED and bundled["data_dir"] == str(tmp_path / "bundled")


def test_an_event_file_the_validation_did_not_vouch_for_is_refused(tmp_path):
    data = b"images"
    extra = {**GOOD, "digests": {"train.gz": hashlib.sha256(data).hexdigest()}}
    download = _store({"mnist-data-local/mnist/v2/train.gz": data, "mnist-data-local/mnist/v2/SHA256SUMS": b""})
    with pytest.raises(DataVersionError, match=r"\['train.gz'\] differ between the event and SHA256SUMS"):
        prepare_dataset(extra, bundled_dir=tmp_path, directory=tmp_path / "run", download=download,
                        validate=lambda d: {"data_dir": str(d), "digests": {}}, manifests={"v2": extra["digests"]})


def test_a_version_without_a_pinned_manifest_is_refused_before_download(tmp_path):
    extra = {**GOOD, "digests": {"train.gz": DIGEST, "test.gz": "b" * 64}}
    downloads = []

    def download(repo: str, path: str, local: Path) -> str:
        downloads.append(path)
        raise AssertionError("an unpinned version must not be downloaded")

    # Pinned manifests are whole: a subset, a superset or one changed digest is not pinned.
    for pins in ({}, {"v": {"train.gz": DIGEST}}, {"v": {**extra["digests"], "x.gz": DIGEST}},
                 {"v": {"train.gz": DIGEST, "test.gz": "c" * 64}}):
        with pytest.raises(DataVersionError, match=r"data version v2: .* in no pinned data manifest"):
            prepare_dataset(extra, bundled_dir=tmp_path, directory=tmp_path / "run", download=download,
                            validate=lambda d: {}, manifests=pins)
    assert downloads == []


def test_unpinned_bundled_data_is_refused(tmp_path):
    with pytest.raises(DataVersionError, match="bundled data .* in no pinned data manifest"):
        prepare_dataset(None, bundled_dir=tmp_path, directory=tmp_path / "run", download=None,
                        validate=lambda d: {"data_dir": str(d), "digests": {"train.gz": DIGEST}}, manifests={})


def test_the_real_pins_accept_the_bundled_data_and_refuse_rewritten_sums(tmp_path):
    """The default pins (include/security/data_manifests.json) with the real MNIST validation."""
    import shutil

    from include.mnist.data import MNIST_FILES, DatasetError, sha256_file
    from include.mnist.spec import MNIST
    from include.settings import DEFAULT_DATA_DIR

    bundled = prepare_dataset(None, bundled_dir=DEFAULT_DATA_DIR, directory=tmp_path / "run", download=None,
                              validate=MNIST.validate_data)
    assert bundled["manifest"] == "mnist-bundled" and bundled["data_version"] == BUNDLED
    # Shuffled labels with a SHA256SUMS rewritten to match: the pin, not the sums, decides.
    copy = tmp_path / "copy"
    shutil.copytree(DEFAULT_DATA_DIR, copy)
    labels = copy / MNIST_FILES["test"][1]
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8:] = bytes(np.random.default_rng(0).permutation(np.frombuffer(bytes(raw[8:]), np.uint8)))
    labels.write_bytes(gzip.compress(bytes(raw)))
    names = [n for pair in MNIST_FILES.values() for n in pair]
    (copy / "SHA256SUMS").write_text("".join(f"{sha256_file(copy / n)}  {n}\n" for n in names))
    # The model's own validation refuses it first (DatasetError); prepare_dataset would as well.
    with pytest.raises(DatasetError, match="no pinned data manifest"):
        prepare_dataset(None, bundled_dir=copy, directory=tmp_path / "run", download=None, validate=MNIST.validate_data)
