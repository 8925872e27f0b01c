"""A generated corpus of hostile drift batches: none accepted, none crashes, none hangs, peak memory under 1 GB.

Each file is fed to `load_batch` (must raise BatchError) in a fresh subprocess under an alarm, and then all of
them land at once and one `ingest` pass must quarantine every one with a reason, claim none and leave the
landing folder empty.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

RUNNER = Path(__file__).resolve().parents[1] / "hostile_runner.py"
REPO = Path(__file__).resolve().parents[3]
MEMORY_BAR = 1 << 30
GOOD = np.zeros((4, 28, 28), np.uint8)


def npy(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def npy_header(shape: tuple, descr: str = "|u1", fortran: bool = False) -> bytes:
    """A .npy 1.0 header for any shape, written by hand so that it can lie about the data after it."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def zip_of(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", method) as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name the corpus writes on purpose
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def zero_deflate(prefix: bytes, zeros: int, chunk: int = 16 << 20) -> tuple[bytes, int]:
    """A raw deflate stream of `prefix` then `zeros` zero bytes, and its CRC-32, without compressing every chunk:
    full-flushed blocks of a zero chunk are independent, so one compressed chunk is repeated."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = [head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)]
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    zero_block = block.compress(bytes(chunk)) + block.flush(zlib.Z_FULL_FLUSH)
    crc, left, whole = zlib.crc32(prefix), zeros, bytes(chunk)
    while left >= chunk:
        stream.append(zero_block)
        crc = zlib.crc32(whole, crc)
        left -= chunk
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream.append(tail.compress(bytes(left)) + tail.flush())
    crc = zlib.crc32(bytes(left), crc)
    return b"".join(stream), crc


def bomb_zip(name: str, prefix: bytes, zeros: int, declared: int | None = None) -> bytes:
    """A one-entry zip whose deflated entry inflates to prefix + zeros; `declared` is the size it claims."""
    data, crc = zero_deflate(prefix, zeros)
    size = len(prefix) + zeros if declared is None else declared
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.compress_type, info.CRC, info.compress_size, info.file_size = zipfile.ZIP_DEFLATED, crc, len(data), size
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        # Write the local header, the raw stream and the central directory by hand through zipfile's own records.
        info.header_offset = buffer.tell()
        zip64 = size > 0xFFFFFFFF or len(data) > 0xFFFFFFFF
        buffer.write(info.FileHeader(zip64))
        buffer.write(data)
        archive.filelist.append(info)
        archive.NameToInfo[name] = info
        archive.start_dir = buffer.tell()
    return buffer.getvalue()


def flip_byte(blob: bytes, offset: int) -> bytes:
    return blob[:offset] + bytes([blob[offset] ^ 0xFF]) + blob[offset + 1 :]


def encrypted(blob: bytes) -> bytes:
    """Set the 'encrypted' flag bit in every local and central header."""
    out = bytearray(blob)
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (at := out.find(signature, start)) >= 0:
            out[at + flag_at] |= 0x01
            start = at + 4
    return bytes(out)


def method(blob: bytes, number: int) -> bytes:
    """Rewrite the compression method in every header (local at +8, central at +10)."""
    out = bytearray(blob)
    for signature, at_offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = 0
        while (at := out.find(signature, start)) >= 0:
            out[at + at_offset : at + at_offset + 2] = struct.pack("<H", number)
            start = at + 4
    return bytes(out)


def corpus(directory: Path, outside: Path) -> dict[str, Path]:
    """Write every hostile batch into `directory`; returns {case id: path}."""
    good_npz = zip_of([("images.npy", npy(GOOD)), ("labels.npy", npy(np.arange(4)))])
    ten_million = npy_header((10_000_000, 28, 28))
    files: dict[str, bytes] = {
        "pickled-object-images": zip_of([("images.npy", npy(np.array([{"x": 1}], dtype=object), allow_pickle=True))]),
        "pickled-object-labels": zip_of([("images.npy", npy(GOOD)),
                                         ("labels.npy", npy(np.array([1, "a", None] * 2, dtype=object)[:4],
                                                            allow_pickle=True))]),
        "float64-images": zip_of([("images.npy", npy(GOOD.astype(np.float64)))]),
        "int16-out-of-range": zip_of([("images.npy", npy(np.full((2, 28, 28), 300, np.int16)))]),
        "bool-images": zip_of([("images.npy", npy(GOOD.astype(bool)))]),
        "complex-images": zip_of([("images.npy", npy(GOOD.astype(np.complex64)))]),
        "string-images": zip_of([("images.npy", npy(np.full((2, 28, 28), "a")))]),
        "structured-images": zip_of([("images.npy", npy(np.zeros((2, 28, 28), dtype=[("a", "u1")])))]),
        "nan-images": zip_of([("images.npy", npy(np.full((2, 28, 28), np.nan, np.float32)))]),
        "wrong-shape": zip_of([("images.npy", npy(np.zeros((2, 32, 32), np.uint8)))]),
        "flat-images": zip_of([("images.npy", npy(np.zeros((2, 784), np.uint8)))]),
        "zero-rows": zip_of([("images.npy", npy(np.zeros((0, 28, 28), np.uint8)))]),
        "lying-header-10m-rows": zip_of([("images.npy", ten_million + bytes(4 * 784))]),
        "negative-shape": zip_of([("images.npy", npy_header((-1, 28, 28)) + bytes(784))]),
        "header-expression": zip_of([("images.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 54)
                                      + b"{'descr': __import__('os').system('id'), 'shape': ()}\n")]),
        "npy-version-9": zip_of([("images.npy", b"\x93NUMPY\x09\x00" + npy(GOOD)[8:])]),
        # 10 M blank images, 7.8 GB inflated, about 8 MB on disk: refused from the header.
        "zip-bomb-10m-blank-images": bomb_zip("images.npy", ten_million, 10_000_000 * 784),
        # Declares a small entry, inflates to 1 GiB: reading stops at the declared size.
        "zip-bomb-lying-size": bomb_zip("images.npy", npy_header((4, 28, 28)), 1 << 30, declared=4 * 784 + 128),
        "zip-bomb-declares-2gib": bomb_zip("images.npy", npy_header((4, 28, 28)), 4 * 784, declared=2 << 30),
        "nested-npz": zip_of([("images.npy", good_npz)]),
        "extra-entry": zip_of([("images.npy", npy(GOOD)), ("payload.pkl", b"cos\nsystem\n")]),
        "duplicate-entries": zip_of([("images.npy", npy(GOOD)), ("images.npy", npy(GOOD + 1))]),
        "encrypted-flag": encrypted(good_npz),
        "unknown-method": method(good_npz, 99),
        "bzip2-method": zip_of([("images.npy", npy(GOOD))], method=zipfile.ZIP_BZIP2),
        "crc-mismatch": flip_byte(zip_of([("images.npy", npy(GOOD + 1))], method=zipfile.ZIP_STORED), 200),
        "partial-write": good_npz[: len(good_npz) // 2],
        "truncated-100-bytes": good_npz[:100],
        "empty-file": b"",
        "not-a-zip": b"hello, I am a CSV\n1,2,3\n",
        "labels-wrong-length": zip_of([("images.npy", npy(GOOD)), ("labels.npy", npy(np.arange(3)))]),
        "labels-out-of-range": zip_of([("images.npy", npy(GOOD)), ("labels.npy", npy(np.full(4, 10)))]),
        "labels-float": zip_of([("images.npy", npy(GOOD)), ("labels.npy", npy(np.zeros(4, np.float32)))]),
        "labels-2d": zip_of([("images.npy", npy(GOOD)), ("labels.npy", npy(np.zeros((4, 1), np.int64)))]),
        "no-images": zip_of([("labels.npy", npy(np.arange(4)))]),
        "trailing-data-in-entry": zip_of([("images.npy", npy(GOOD) + b"\x00" * 64)]),
    }
    paths = {}
    for case, blob in files.items():
        paths[case] = directory / f"{case}.npz"
        paths[case].write_bytes(blob)
    (outside / "good.npz").write_bytes(good_npz)
    special = {
        "symlink-to-dev-zero": lambda p: p.symlink_to("/dev/zero"),
        "symlink-out-of-landing": lambda p: p.symlink_to(outside / "good.npz"),
        "fifo": lambda p: os.mkfifo(p),
        "directory": lambda p: p.mkdir(),
        # Sparse: larger than MLOPS_BATCH_MAX_FILE_BYTES (64 MiB) without using the disk.
        "over-file-size-limit": lambda p: (p.write_bytes(good_npz), os.truncate(p, 65 << 20)),
    }
    for case, make in special.items():
        paths[case] = directory / f"{case}.npz"
        make(paths[case])
    return paths


def run_python(code_or_runner: list[str], timeout: int = 300) -> dict:
    proc = subprocess.run([sys.executable, *code_or_runner], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    directory, outside = tmp_path_factory.mktemp("hostile-batches"), tmp_path_factory.mktemp("outside")
    return corpus(directory, outside)


def test_no_hostile_batch_is_loaded_crashes_or_hangs(hostile: dict[str, Path], tmp_path: Path):
    assert len(hostile) >= 30
    cases = [{"id": case, "call": "include.mlops.drift:load_batch", "args": [f"path:{path}"],
              "kwargs": {"image_shape": [28, 28], "num_classes": 10}} for case, path in hostile.items()]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    summary = run_python([str(RUNNER), str(tmp_path / "cases.json"), "include.mlops.drift:BatchError"])
    outcomes = {r["id"]: r["outcome"] for r in summary["results"]}
    not_refused = {case: outcome for case, outcome in outcomes.items() if not outcome.startswith("refused")}
    assert not_refused == {}, not_refused
    assert summary["peak_rss_bytes"] < MEMORY_BAR, summary["peak_rss_bytes"]
    # Every refusal names the file; the bombs and the lying header are refused from their headers.
    for case, outcome in outcomes.items():
        assert hostile[case].name in outcome, outcome
    assert "10000000 rows, over the limit" in outcomes["lying-header-10m-rows"]
    for case in ("zip-bomb-10m-blank-images", "lying-header-10m-rows", "zip-bomb-declares-2gib"):
        assert "nothing was inflated" in outcomes[case], outcomes[case]
    assert "declare 2147483648 bytes uncompressed" in outcomes["zip-bomb-declares-2gib"]
    assert "symbolic link" in outcomes["symlink-to-dev-zero"] and "not a regular file" in outcomes["fifo"]
    assert "pickled" in outcomes["pickled-object-images"]
    for case, outcome in sorted(outcomes.items()):
        print(f"{case}: {outcome.split(': ', 2)[-1].replace(str(hostile[case].parent), '')}")
    print(f"hostile batches: {len(outcomes)} cases, 0 accepted, 0 crashes, 0 hangs, "
          f"peak {summary['peak_rss_bytes'] >> 20} MiB")


INGEST = """
import json, sys
from functools import partial
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[3])))
from hostile_runner import _peak_rss_kib  # this image's own peak (VmHWM), not the spawning test process's
from include.mlops.drift import load_batch
from include.mlops.drift_store import DriftStore, ingest
store = DriftStore(landing=Path(sys.argv[1]), root=Path(sys.argv[2]))
result = ingest(store, partial(load_batch, image_shape=(28, 28), num_classes=10))
print(json.dumps({"claimed": [b.name for b in result.claimed], "pending": [b.name for b in result.pending],
                  "quarantined": {q.name: [q.path, q.reason] for q in result.quarantined},
                  "landing": sorted(p.name for p in Path(sys.argv[1]).iterdir()),
                  "peak_rss_bytes": _peak_rss_kib() * 1024}))
"""


def test_one_ingest_quarantines_every_hostile_batch_with_a_reason(hostile: dict[str, Path], tmp_path: Path):
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    landing.mkdir()
    outside.mkdir()
    landed = corpus(landing, outside)
    summary = run_python(["-c", INGEST, str(landing), str(tmp_path / "drift"), str(RUNNER.parent)])
    assert summary["claimed"] == [] and summary["pending"] == []
    assert summary["landing"] == [], "every refused entry leaves the landing folder"
    assert sorted(summary["quarantined"]) == sorted(p.name for p in landed.values())
    for name, (path, reason) in summary["quarantined"].items():
        assert name in reason
        info = json.loads(Path(path + ".reason.json").read_text())
        assert info["file"] == name and info["reason"] == reason
        assert os.path.lexists(path)
    assert summary["peak_rss_bytes"] < MEMORY_BAR
    # The symlink itself moved to quarantine; the file it pointed at is untouched and was never claimed.
    quarantined_link = Path(summary["quarantined"]["symlink-out-of-landing.npz"][0])
    assert quarantined_link.is_symlink() and (outside / "good.npz").is_file()
