"""Reading untrusted files safely, and the data versions the pipeline trusts (data_manifests.json).

Data is trusted only when its file digests equal a manifest in data_manifests.json, a file in the code
tree reviewed like code: whoever can rewrite a data folder (or the SHA256SUMS beside it) cannot also
rewrite the pin. A new data version is accepted once a reviewed change adds its manifest here.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

MANIFESTS_FILE = Path(__file__).resolve().parent / "data_manifests.json"
MANIFESTS_SCHEMA = "mnist-mlops/data-manifests/1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def read_regular_file(path: Path, max_bytes: int, error: type[Exception] = ValueError) -> bytes:
    """Read a regular file of at most `max_bytes`; symlinks, FIFOs and devices are refused without blocking."""
    path = Path(path)
    # O_NOFOLLOW: a symlink is refused, not followed to /dev/zero or out of the folder; O_NONBLOCK: opening a
    # FIFO returns at once instead of waiting for a writer (open(2), Linux man-pages).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{path}: file is missing") from None
    except OSError as exc:
        if os.path.islink(path):
            raise error(f"{path}: is a symbolic link; only regular files are read") from None
        raise error(f"{path}: cannot open ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: is not a regular file (mode {stat.filemode(info.st_mode)})")
        if info.st_size > max_bytes:
            raise error(f"{path}: size is {info.st_size} bytes, over the limit of {max_bytes}")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise error(f"{path}: more than {max_bytes} bytes, over the limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_data_manifests(path: Path | None = None) -> dict[str, dict[str, str]]:
    """The pinned data versions, {name: {file: sha256}}; ValueError names the file and the bad field."""
    path = Path(path or MANIFESTS_FILE)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the pinned data manifests: {exc}") from exc
    if not isinstance(document, dict) or document.get("schema") != MANIFESTS_SCHEMA:
        raise ValueError(f"{path}: field schema must be {MANIFESTS_SCHEMA!r}")
    manifests = document.get("manifests")
    if not isinstance(manifests, dict) or not manifests:
        raise ValueError(f"{path}: field manifests must be a non-empty object")
    pinned: dict[str, dict[str, str]] = {}
    for name, entry in manifests.items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict) or not files:
            raise ValueError(f"{path}: manifests[{name!r}].files must map file names to sha256")
        for file, digest in files.items():
            if not _NAME.fullmatch(str(file)) or not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise ValueError(f"{path}: manifests[{name!r}].files[{file!r}] is not a plain name with a "
                                 f"lower-case sha256")
        pinned[str(name)] = dict(files)
    return pinned


def pinned_manifest(digests: Mapping[str, str], manifests: Mapping[str, Mapping[str, str]] | None = None) -> str | None:
    """The name of the pinned manifest whose files and digests equal `digests` exactly, else None."""
    manifests = load_data_manifests() if manifests is None else manifests
    wanted = {str(k): str(v).lower() for k, v in digests.items()}
    return next((name for name, files in manifests.items() if dict(files) == wanted), None)


def pinned_files(manifests: Mapping[str, Mapping[str, str]] | None = None) -> set[tuple[str, str]]:
    """Every (file name, sha256) some pinned manifest lists: a pinned file under another name is not pinned."""
    manifests = load_data_manifests() if manifests is None else manifests
    return {(name, digest) for files in manifests.values() for name, digest in files.items()}
