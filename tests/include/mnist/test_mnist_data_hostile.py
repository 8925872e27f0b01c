"""A generated corpus of hostile training-data files: none accepted, none crashes, none hangs, peak under 1 GB.

Every case runs in one fresh subprocess under a per-case alarm (tests/include/hostile_runner.py): gzip bombs,
truncated and malformed IDX files, swapped files, shuffled labels, blank images, and SHA256SUMS tricks (a FIFO,
a symlink to /dev/zero, duplicates, paths outside the folder), with the sums rewritten to match where that
is what an attacker would do.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from include.mnist.data import CHECKSUMS_FILE, MNIST_FILES, sha256_file

REPO = Path(__file__).resolve().parents[3]
RUNNER = REPO / "tests" / "include" / "hostile_runner.py"
BUNDLED = REPO / "include" / "data" / "mnist"
NAMES = [name for pair in MNIST_FILES.values() for name in pair]
TRAIN_IMAGES, TRAIN_LABELS = MNIST_FILES["train"]
TEST_IMAGES, TEST_LABELS = MNIST_FILES["test"]
MEMORY_BAR = 1 << 30


def idx(magic: int, dims: tuple[int, ...], payload: bytes = b"") -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def gzip_zeros(prefix: bytes, zeros: int, chunk: int = 16 << 20) -> bytes:
    """A gzip file of `prefix` then `zeros` zero bytes, built from one full-flushed compressed chunk repeated."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)]
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    zero_block = block.compress(bytes(chunk)) + block.flush(zlib.Z_FULL_FLUSH)
    crc, left, whole = zlib.crc32(prefix), zeros, bytes(chunk)
    while left >= chunk:
        parts.append(zero_block)
        crc, left = zlib.crc32(whole, crc), left - chunk
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts.append(tail.compress(bytes(left)) + tail.flush())
    crc = zlib.crc32(bytes(left), crc)
    size = (len(prefix) + zeros) & 0xFFFFFFFF
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + b"".join(parts) + struct.pack("<II", crc, size)


def copy_bundled(target: Path) -> Path:
    target.mkdir(parents=True)
    for name in [*NAMES, CHECKSUMS_FILE]:
        try:
            os.link(BUNDLED / name, target / name)  # same bytes, no copy; replaced (not written) when changed
        except OSError:
            shutil.copyfile(BUNDLED / name, target / name)
    return target


def replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def rewrite_sums(directory: Path) -> None:
    """Make SHA256SUMS match the files as they are now: what whoever rewrites the data does."""
    replace(directory / CHECKSUMS_FILE, "".join(f"{sha256_file(directory / n)}  {n}\n" for n in NAMES).encode())


def edit_idx(path: Path, change) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    change(raw)
    replace(path, gzip.compress(bytes(raw), compresslevel=1))


def swap(directory: Path, a: str, b: str) -> None:
    (directory / a).rename(directory / "tmp")
    (directory / b).rename(directory / a)
    (directory / "tmp").rename(directory / b)


def shuffled_labels(raw: bytearray) -> None:
    raw[8:] = np.random.default_rng(1).permutation(np.frombuffer(bytes(raw[8:]), np.uint8)).tobytes()


def blank_images(raw: bytearray) -> None:
    raw[16 + 784 * 100 : 16 + 784 * 101] = bytes(784)  # image 100 becomes blank


def one_class(raw: bytearray) -> None:
    raw[8 : 8 + (len(raw) - 8) // 2] = b"\x03" * ((len(raw) - 8) // 2)  # half the labels become 3


def file_cases(directory: Path) -> list[dict]:
    """Single-file cases for read_idx."""
    files = {
        # 2 MB of gzip inflating to 2 GiB; its header is consistent (2,739,146 images of 28x28).
        "gzip-bomb-consistent-header": gzip_zeros(idx(0x803, ((2 << 30) // 784, 28, 28)), (2 << 30) // 784 * 784),
        # A header declaring 1,000 images followed by 2 GiB: reading stops one byte after the declared size.
        "gzip-bomb-lying-header": gzip_zeros(idx(0x803, (1000, 28, 28)), 2 << 30),
        "gzip-bomb-no-header": gzip_zeros(b"", 1 << 30),
        "truncated-gzip": gzip.compress(idx(0x801, (5000,), np.random.default_rng(0).bytes(5000)))[:200],
        "truncated-gzip-trailer": gzip.compress(idx(0x801, (5000,), bytes(5000)))[:-8],
        "truncated-payload": gzip.compress(idx(0x803, (3, 28, 28), bytes(3 * 784 - 1))),
        "truncated-header": gzip.compress(idx(0x803, (3,))),
        "wrong-magic": gzip.compress(idx(0x0000_0903, (3, 28, 28), bytes(3 * 784))),
        "int32-dtype": gzip.compress(idx(0x0C01, (3,), bytes(12))),
        "ndim-255": gzip.compress(struct.pack(">I", 0x08FF) + bytes(1020)),
        "dims-overflow": gzip.compress(idx(0x803, (0xFFFFFFFF, 28, 28))),
        "dims-overflow-labels": gzip.compress(idx(0x801, (0xFFFFFFFF,))),
        "image-size-29x28": gzip.compress(idx(0x803, (2, 29, 28), bytes(2 * 29 * 28))),
        "zero-dimension": gzip.compress(idx(0x801, (0,))),
        "trailing-bytes": gzip.compress(idx(0x801, (10,), bytes(10) + b"extra")),
        "two-members-then-garbage": gzip.compress(idx(0x801, (4,), bytes(4))) + b"garbage after the member",
        "uncompressed-idx": idx(0x801, (10,), bytes(10)),
        "empty-file": b"",
        "garbled-deflate": (lambda g: g[:20] + bytes(b ^ 0xFF for b in g[20:40]) + g[40:])(
            gzip.compress(idx(0x801, (1000,), bytes(range(10)) * 100))),
    }
    cases = []
    for case, blob in files.items():
        (directory / f"{case}.gz").write_bytes(blob)
        cases.append({"id": case, "call": "include.mnist.data:read_idx", "args": [f"path:{directory / f'{case}.gz'}"]})
    os.mkfifo(directory / "fifo.gz")
    os.symlink("/dev/zero", directory / "dev-zero.gz")
    cases += [{"id": "idx-fifo", "call": "include.mnist.data:read_idx", "args": [f"path:{directory / 'fifo.gz'}"]},
              {"id": "idx-symlink-dev-zero", "call": "include.mnist.data:read_idx",
               "args": [f"path:{directory / 'dev-zero.gz'}"]}]
    return cases


def folder_cases(root: Path) -> list[dict]:
    """Whole data folders for validate_dataset (pinned by default, or pinned=False to reach the content checks)."""
    cases = []

    def case(case_id: str, make, *, call: str = "validate_dataset", **kwargs) -> None:
        directory = copy_bundled(root / case_id)
        make(directory)
        args = [f"path:{directory}"]
        if call == "load_split":
            args.append(kwargs.pop("split", "test"))
        cases.append({"id": case_id, "call": f"include.mnist.data:{call}", "args": args, "kwargs": kwargs})

    def train_test_swapped(d: Path) -> None:
        swap(d, TRAIN_IMAGES, TEST_IMAGES)
        swap(d, TRAIN_LABELS, TEST_LABELS)
        rewrite_sums(d)

    def relabel(change):
        return lambda d: (edit_idx(d / TEST_LABELS, change), rewrite_sums(d))

    def reimage(change):
        return lambda d: (edit_idx(d / TEST_IMAGES, change), rewrite_sums(d))

    # The attacker rewrites the data and the sums together: the pin (not the sums) refuses it.
    case("train-test-swapped", train_test_swapped)
    case("train-test-swapped-unpinned", train_test_swapped, pinned=False)
    case("labels-shuffled", relabel(shuffled_labels))
    case("labels-shuffled-unpinned", relabel(shuffled_labels), pinned=False)
    case("blank-image", reimage(blank_images))
    case("blank-image-unpinned", reimage(blank_images), pinned=False)
    case("label-histogram-skewed-unpinned", relabel(one_class), pinned=False)
    case("labels-from-train-unpinned", lambda d: (shutil.copyfile(BUNDLED / TRAIN_LABELS, d / "x"),
                                                    (d / TEST_LABELS).unlink(), (d / "x").rename(d / TEST_LABELS),
                                                    rewrite_sums(d)), pinned=False)
    case("labels-file-as-images", lambda d: (replace(d / TEST_IMAGES, (d / TEST_LABELS).read_bytes()),
                                             rewrite_sums(d)), call="load_split", pinned=False)
    case("label-out-of-range-unpinned", relabel(lambda raw: raw.__setitem__(8 + 5, 10)), pinned=False)
    case("one-bit-flipped", lambda d: replace(d / TEST_LABELS, (lambda b: b[:-9] + bytes([b[-9] ^ 1]) + b[-8:])(
        (d / TEST_LABELS).read_bytes())))
    # SHA256SUMS tricks.
    sums = {n: sha256_file(BUNDLED / n) for n in NAMES}
    lines = [f"{sums[n]}  {n}" for n in NAMES]

    def write_sums(text: str):
        return lambda d: replace(d / CHECKSUMS_FILE, text.encode("utf-8", "surrogateescape"))

    case("sums-fifo", lambda d: ((d / CHECKSUMS_FILE).unlink(), os.mkfifo(d / CHECKSUMS_FILE)))
    case("sums-symlink-dev-zero", lambda d: ((d / CHECKSUMS_FILE).unlink(), os.symlink("/dev/zero", d / CHECKSUMS_FILE)))
    case("sums-huge", lambda d: (replace(d / CHECKSUMS_FILE, b""), os.truncate(d / CHECKSUMS_FILE, 1 << 30)))
    case("sums-duplicate-wrong-first", write_sums("\n".join([f"{'0' * 64}  {TEST_LABELS}", *lines]) + "\n"))
    case("sums-duplicate-same", write_sums("\n".join([*lines, lines[0]]) + "\n"))
    case("sums-dotdot-path", write_sums("\n".join([*lines, f"{'0' * 64}  ../etc/passwd"]) + "\n"))
    case("sums-absolute-path", write_sums("\n".join([*lines, f"{'0' * 64}  /etc/passwd"]) + "\n"))
    case("sums-subdir-path", write_sums("\n".join([*lines[:3], f"{sums[TEST_LABELS]}  sub/{TEST_LABELS}"]) + "\n"))
    case("sums-not-utf8", lambda d: replace(d / CHECKSUMS_FILE, b"\xff\xfe" + "\n".join(lines).encode()))
    case("sums-missing-entry", write_sums("\n".join(lines[:3]) + "\n"))
    # The data files themselves as special files.
    case("data-fifo", lambda d: ((d / TEST_LABELS).unlink(), os.mkfifo(d / TEST_LABELS)))
    case("data-symlink-dev-zero", lambda d: ((d / TEST_IMAGES).unlink(), os.symlink("/dev/zero", d / TEST_IMAGES)))
    case("data-symlink-to-real-file", lambda d: ((d / TEST_IMAGES).unlink(),
                                                 os.symlink(BUNDLED / TEST_IMAGES, d / TEST_IMAGES)))
    case("data-directory", lambda d: ((d / TEST_LABELS).unlink(), (d / TEST_LABELS).mkdir()))
    case("data-over-size-limit", lambda d: (replace(d / TEST_LABELS, b""), os.truncate(d / TEST_LABELS, 65 << 20)))
    # Digests from validate_data that the files no longer match (changed between validate_data and training).
    stale = {**sums, TEST_IMAGES: sha256_file(BUNDLED / TRAIN_IMAGES)}
    case("stale-digests", lambda d: None, call="load_split", digests=stale)
    return cases


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("hostile-data")
    (root / "files").mkdir()
    return file_cases(root / "files") + folder_cases(root / "folders")


def test_no_hostile_data_file_is_loaded_crashes_or_hangs(corpus: list[dict], tmp_path: Path):
    assert len(corpus) >= 30
    (tmp_path / "cases.json").write_text(json.dumps(corpus))
    proc = subprocess.run([sys.executable, str(RUNNER), str(tmp_path / "cases.json"), "include.mnist.data:DatasetError"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    outcomes = {r["id"]: r["outcome"] for r in summary["results"]}
    not_refused = {case: outcome for case, outcome in outcomes.items() if not outcome.startswith("refused")}
    assert not_refused == {}, not_refused
    assert summary["peak_rss_bytes"] < MEMORY_BAR, summary["peak_rss_bytes"]
    expected = {
        "gzip-bomb-consistent-header": "over the limit of",
        "gzip-bomb-lying-header": "trailing bytes",
        "train-test-swapped": "no pinned data manifest",
        "train-test-swapped-unpinned": "swapped",
        "labels-shuffled": "no pinned data manifest",
        "labels-shuffled-unpinned": "label agreement",
        "labels-from-train-unpinned": "count",
        "blank-image-unpinned": "1 blank images",
        "label-histogram-skewed-unpinned": "label histogram",
        "sums-fifo": "not a regular file",
        "sums-symlink-dev-zero": "symbolic link",
        "sums-duplicate-wrong-first": "a second time",
        "sums-dotdot-path": "line 5",
        "sums-absolute-path": "line 5",
        "data-symlink-dev-zero": "symbolic link",
        "stale-digests": "checksum mismatch",
    }
    for case, fragment in expected.items():
        assert fragment in outcomes[case], (case, outcomes[case])
    for case, outcome in sorted(outcomes.items()):
        print(f"{case}: {outcome[:200]}")
    print(f"hostile data files: {len(outcomes)} cases, 0 accepted, 0 crashes, 0 hangs, "
          f"peak {summary['peak_rss_bytes'] >> 20} MiB")
