"""Model-file safety for files the pipeline did not write itself: strict structure checks, never unpickle.

Two formats, chosen by the file's suffix and never by sniffing its content (a sniffer and a loader that
guess differently read different files):

- `*.safetensors`: the header is checked the way the format is specified (8-byte little-endian length,
  one JSON object, known dtypes, each tensor's byte range exactly its shape times its dtype, ranges
  contiguous from 0 with no gap, overlap or trailing byte). No code can hide in such a file.
- `*.pt`, `*.pth`, `*.bin`, `*.ckpt`: a torch zip checkpoint, accepted only when every parser would read the
  same entries: the local headers tile the file from byte 0 to the one central directory, which ends at the
  one end record (no comment, no prepended or trailing bytes), names are unique and those torch writes,
  entries are stored (no compression, so nothing inflates) and unencrypted with matching CRCs. Legacy
  (non-zip) torch files are refused. `<name>/data.pkl` is walked opcode by opcode with a symbolic stack and
  accepts only what a torch state_dict needs: `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
  the typed storages, and persistent ids that name a stored `data/<key>` entry of exactly the declared size.

Work is bounded (file size, pickle size, opcodes, seconds) and every parser error is a refusal naming the
file: `scan_model_file` never raises for a bad file, `assert_safe_model_file` raises UnsafeModelFileError.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import pickletools
import stat
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_STORAGE_BYTES = {"Float": 4, "Double": 8, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                  "Byte": 1, "Bool": 1}
SAFE_GLOBALS: frozenset[str] = frozenset(
    {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2"} | {f"torch.{s}Storage" for s in _STORAGE_BYTES}
)
# Opcodes that build plain data, look up an allowlisted global, call it, or mark memo entries. Left out on
# purpose: INST/OBJ/NEWOBJ/NEWOBJ_EX (instantiate arbitrary classes), EXT1/2/4 (copyreg's extension
# registry resolves a global without naming it), PERSID (text persistent ids; torch writes BINPERSID),
# NEXT_BUFFER/READONLY_BUFFER (out-of-band data a file cannot carry).
SAFE_OPCODES: frozenset[str] = frozenset(
    """PROTO FRAME STOP MARK POP POP_MARK DUP PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET
    INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT NONE NEWTRUE NEWFALSE
    STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8
    BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS EMPTY_DICT DICT SETITEM SETITEMS
    EMPTY_SET ADDITEMS FROZENSET GLOBAL STACK_GLOBAL REDUCE BUILD BINPERSID""".split()
)
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_TUPLE_OPS = {"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"}
_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"}  # leave their container on the stack
_MARK = ("mark",)

TORCH_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt"})
SAFETENSORS_SUFFIX = ".safetensors"
# safetensors' element sizes (the format's own list; F8 variants are one byte).
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
# What torch.save writes under the archive's folder, and nothing else (torch/serialization.py).
_TORCH_MEMBERS = frozenset({"data.pkl", "byteorder", "version", ".format_version", ".storage_alignment",
                            ".data/version", ".data/serialization_id"})


@dataclass(frozen=True)
class ScanLimits:
    """Bounds on the scanner's work: a file over one is refused, never read further."""

    max_file_bytes: int = 2 << 30
    max_header_bytes: int = 16 << 20  # safetensors JSON header
    max_pickle_bytes: int = 64 << 20
    max_opcodes: int = 2_000_000
    max_entries: int = 100_000
    max_seconds: float = 30.0


DEFAULT_LIMITS = ScanLimits()


class UnsafeModelFileError(ValueError):
    """The model file holds something outside the allowlist and must not be uploaded or loaded."""


class _Refusal(UnsafeModelFileError):
    """A structural problem: the scan stops at the first one."""


@dataclass(frozen=True)
class ModelScanResult:
    """What the scanner found in one model file and whether it may be uploaded or loaded."""

    path: str
    sha256: str
    format: str
    safe: bool
    pickles: tuple[str, ...]
    globals: tuple[str, ...]
    refused: tuple[str, ...]
    opcodes: dict[str, int] = field(default_factory=dict)
    advisory: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    tensors: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for XCom and the evidence pack."""
        return {**asdict(self), "pickles": list(self.pickles), "globals": list(self.globals),
                "refused": list(self.refused)}

    def message(self) -> str:
        """One line a person can act on."""
        if self.safe:
            return f"{self.path}: {self.format} passes the model-file scan ({', '.join(self.globals) or 'no globals'})"
        return f"{self.path}: refused by the model-file scan: " + "; ".join(self.refused)


class _Deadline:
    def __init__(self, seconds: float, where: str) -> None:
        self.end, self.seconds, self.where = time.monotonic() + seconds, seconds, where

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise _Refusal(f"{self.where}: scan took longer than {self.seconds:g} s")


# -- safetensors --------------------------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Refusal(f"duplicate JSON keys {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def _reject_constant(name: str) -> None:
    raise _Refusal(f"JSON constant {name} is not allowed")


def safetensors_header(data: bytes | mmap.mmap, where: str, limits: ScanLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The checked header of a safetensors file's bytes: {name: (dtype, shape, begin, end)}, plus __metadata__."""
    if len(data) < 8:
        raise _Refusal(f"{where}: {len(data)} bytes is too short for a safetensors header length")
    (length,) = struct.unpack("<Q", data[:8])
    if length > limits.max_header_bytes:
        raise _Refusal(f"{where}: safetensors header of {length} bytes exceeds the {limits.max_header_bytes}-byte bound")
    if length < 2 or 8 + length > len(data):
        raise _Refusal(f"{where}: safetensors header length {length} does not fit the {len(data)}-byte file")
    raw = bytes(data[8:8 + length])
    if raw[:1] != b"{":
        raise _Refusal(f"{where}: safetensors header does not start with '{{'")
    try:
        header = json.loads(raw.decode("utf-8").rstrip(" "), object_pairs_hook=_no_duplicate_keys,
                            parse_constant=_reject_constant)
    except _Refusal as exc:
        raise _Refusal(f"{where}: safetensors header: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Refusal(f"{where}: safetensors header is not UTF-8 JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise _Refusal(f"{where}: safetensors header is a {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _Refusal(f"{where}: safetensors __metadata__ must map strings to strings")
    spans = []
    for name, info in header.items():
        label = f"{where}: tensor {name!r}"
        if not name:
            raise _Refusal(f"{where}: a tensor has an empty name")
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _Refusal(f"{label} must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise _Refusal(f"{label} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or len(shape) > 16:
            raise _Refusal(f"{label} shape {shape!r} is not a list of at most 16 non-negative ints")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise _Refusal(f"{label} data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
        numel = 1
        for dim in shape:
            numel *= dim
        if numel * SAFETENSORS_DTYPES[dtype] != offsets[1] - offsets[0]:
            raise _Refusal(f"{label}: {dtype} {shape} needs {numel * SAFETENSORS_DTYPES[dtype]} bytes, "
                           f"data_offsets span {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    body = len(data) - 8 - length
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else f"leaves a gap at byte {position}"
            raise _Refusal(f"{where}: tensor {name!r} at byte {begin} {kind}")
        position = end
    if position != body:
        raise _Refusal(f"{where}: tensors cover {position} bytes of a {body}-byte data section "
                       f"({'trailing data' if position < body else 'past the end of the file'})")
    return {"tensors": header, "metadata": metadata}


# -- torch zip ----------------------------------------------------------------------------------------------

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record
_LOCATOR = struct.Struct("<4sIQI")  # zip64 end of central directory locator
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")  # zip64 end of central directory record
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")


@dataclass(frozen=True)
class _Entry:
    name: str
    offset: int  # local header
    data_offset: int
    size: int
    crc: int


def _zip_entries(data: mmap.mmap, where: str, limits: ScanLimits, deadline: _Deadline) -> list[_Entry]:
    """The entries of a zip every reader agrees on, or _Refusal naming what two readers could read differently."""
    size = len(data)
    if data[:4] != b"PK\x03\x04":
        raise _Refusal(f"{where}: not a zip torch checkpoint (legacy pickle-format torch files are refused)")
    if size < _EOCD.size + _LOCAL.size:
        raise _Refusal(f"{where}: {size} bytes is too short for a zip")
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = _EOCD.unpack_from(data, size - _EOCD.size)
    if sig != b"PK\x05\x06" or comment:
        raise _Refusal(f"{where}: the zip does not end with an end-of-directory record without comment "
                       "(trailing data or a comment)")
    if data.find(b"PK\x05\x06", 0, size - _EOCD.size) != -1:
        # A second end record (or one hidden in entry data) lets a reader that searches from the front pick it.
        raise _Refusal(f"{where}: more than one end-of-central-directory record")
    cd_end = size - _EOCD.size
    if size - _EOCD.size - _LOCATOR.size >= 0 and data[cd_end - _LOCATOR.size:cd_end - _LOCATOR.size + 4] == b"PK\x06\x07":
        _, l_disk, eocd64_offset, disks = _LOCATOR.unpack_from(data, cd_end - _LOCATOR.size)
        if l_disk or disks != 1 or eocd64_offset + _EOCD64.size != cd_end - _LOCATOR.size:
            raise _Refusal(f"{where}: zip64 locator does not point at the record right before it")
        (sig64, rec_size, _, _, d64, cd_d64, n_disk64, n_total64, cd_size64,
         cd_offset64) = _EOCD64.unpack_from(data, eocd64_offset)
        if sig64 != b"PK\x06\x06" or rec_size != _EOCD64.size - 12 or d64 or cd_d64 or n_disk64 != n_total64:
            raise _Refusal(f"{where}: malformed zip64 end-of-central-directory record")
        for small, big, what in ((n_total, n_total64, "entry count"), (cd_size, cd_size64, "directory size"),
                                 (cd_offset, cd_offset64, "directory offset")):
            if small not in (big, 0xFFFF, 0xFFFFFFFF):
                raise _Refusal(f"{where}: zip and zip64 end records disagree on the {what} ({small} vs {big})")
        n_total, cd_size, cd_offset, cd_end = n_total64, cd_size64, cd_offset64, eocd64_offset
    elif data.find(b"PK\x06\x06") != -1:
        raise _Refusal(f"{where}: a zip64 end record without its locator")
    elif n_disk != n_total:
        raise _Refusal(f"{where}: the end record counts {n_disk} entries on this disk but {n_total} in all")
    if disk or cd_disk:
        raise _Refusal(f"{where}: multi-disk zips are refused")
    if n_total == 0 or n_total > limits.max_entries:
        raise _Refusal(f"{where}: {n_total} zip entries (1 to {limits.max_entries} allowed)")
    if cd_offset + cd_size != cd_end:
        raise _Refusal(f"{where}: central directory [{cd_offset}, {cd_offset + cd_size}) does not end at the end "
                       f"record ({cd_end}): data between them")
    entries: list[_Entry] = []
    position = cd_offset
    for index in range(n_total):
        deadline.check()
        if position + _CENTRAL.size > cd_end:
            raise _Refusal(f"{where}: central directory entry {index} runs past the directory")
        (sig, _made, _need, flags, method, _t, _d, crc, csize, usize, name_len, extra_len, comment_len, disk_start,
         _iattr, _eattr, offset) = _CENTRAL.unpack_from(data, position)
        if sig != b"PK\x01\x02":
            raise _Refusal(f"{where}: central directory entry {index} has no signature")
        raw_name = bytes(data[position + _CENTRAL.size:position + _CENTRAL.size + name_len])
        extra = bytes(data[position + _CENTRAL.size + name_len:position + _CENTRAL.size + name_len + extra_len])
        position += _CENTRAL.size + name_len + extra_len + comment_len
        if comment_len or disk_start:
            raise _Refusal(f"{where}: entry {raw_name!r} has a comment or another disk")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refusal(f"{where}: entry name {raw_name!r} is not UTF-8") from None
        if flags & 0x1 or flags & 0x40 or flags & 0x2000:
            raise _Refusal(f"{where}: entry {name!r} is encrypted (flags {flags:#x})")
        if flags & ~0x0808:  # torch's writer sets only "data descriptor" (bit 3) and "UTF-8 names" (bit 11)
            raise _Refusal(f"{where}: entry {name!r} has unknown flags {flags:#x}")
        if method != 0:
            raise _Refusal(f"{where}: entry {name!r} is compressed (method {method}); torch writes stored entries")
        csize, usize, offset = _zip64_sizes(extra, csize, usize, offset, name, where)
        if csize != usize:
            raise _Refusal(f"{where}: stored entry {name!r} declares {csize} bytes stored but {usize} uncompressed")
        entries.append(_Entry(name, offset, 0, usize, crc))
    if position != cd_end:
        raise _Refusal(f"{where}: {cd_end - position} bytes after the last central directory entry")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise _Refusal(f"{where}: duplicate zip entry names {sorted({n for n in names if names.count(n) > 1})}")
    # The local headers must tile [0, directory): no gap, overlap or hidden entry a front-to-back reader would see.
    checked: list[_Entry] = []
    position = 0
    for entry in sorted(entries, key=lambda e: e.offset):
        deadline.check()
        if entry.offset != position:
            raise _Refusal(f"{where}: entry {entry.name!r} starts at byte {entry.offset}, expected {position} "
                           "(data outside the entries, or overlapping entries)")
        if entry.offset + _LOCAL.size > cd_offset:
            raise _Refusal(f"{where}: local header of {entry.name!r} runs into the central directory")
        (sig, _need, flags, method, _t, _d, crc, csize, usize, name_len,
         extra_len) = _LOCAL.unpack_from(data, entry.offset)
        local_name = bytes(data[entry.offset + _LOCAL.size:entry.offset + _LOCAL.size + name_len])
        if sig != b"PK\x03\x04" or local_name != entry.name.encode("utf-8") or method != 0 or flags & ~0x0808:
            raise _Refusal(f"{where}: local header of {entry.name!r} disagrees with the central directory")
        if not flags & 0x8 and (crc, csize, usize) != (entry.crc, entry.size, entry.size) and 0xFFFFFFFF not in (csize, usize):
            raise _Refusal(f"{where}: local header of {entry.name!r} declares other sizes or CRC than the directory")
        start = entry.offset + _LOCAL.size + name_len + extra_len
        end = start + entry.size
        if end > cd_offset:
            raise _Refusal(f"{where}: entry {entry.name!r} of {entry.size} bytes runs past the central directory")
        position = end
        if flags & 0x8:
            position = _data_descriptor(data, end, entry, cd_offset, where)
        crc_now = 0
        for chunk_start in range(start, end, 1 << 22):
            crc_now = zlib.crc32(data[chunk_start:min(end, chunk_start + (1 << 22))], crc_now)
            deadline.check()
        if crc_now != entry.crc:
            raise _Refusal(f"{where}: entry {entry.name!r} fails its CRC check")
        checked.append(_Entry(entry.name, entry.offset, start, entry.size, entry.crc))
    if position != cd_offset:
        raise _Refusal(f"{where}: {cd_offset - position} bytes between the last entry and the central directory")
    return checked


def _zip64_sizes(extra: bytes, csize: int, usize: int, offset: int, name: str, where: str) -> tuple[int, int, int]:
    """Sizes and offset from the zip64 extra field where the directory entry saturates them."""
    pos = 0
    values = {"usize": usize, "csize": csize, "offset": offset}
    seen = False
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if len(body) != length:
            raise _Refusal(f"{where}: entry {name!r} has a truncated extra field")
        if tag == 0x0001:
            if seen:
                raise _Refusal(f"{where}: entry {name!r} has two zip64 extra fields")
            seen = True
            cursor = 0
            for key in ("usize", "csize", "offset"):
                if values[key] == 0xFFFFFFFF:
                    if cursor + 8 > length:
                        raise _Refusal(f"{where}: entry {name!r} zip64 extra field lacks its {key}")
                    (values[key],) = struct.unpack_from("<Q", body, cursor)
                    cursor += 8
        pos += 4 + length
    if pos != len(extra):
        raise _Refusal(f"{where}: entry {name!r} has a malformed extra field")
    return values["csize"], values["usize"], values["offset"]


def _data_descriptor(data: mmap.mmap, end: int, entry: _Entry, limit: int, where: str) -> int:
    """Where the entry's data descriptor ends; its CRC and sizes must be the directory's."""
    cursor = end + 4 if data[end:end + 4] == b"PK\x07\x08" else end
    for width in (8, 4):  # zip64 descriptors carry 8-byte sizes
        fmt = "<IQQ" if width == 8 else "<III"
        stop = cursor + struct.calcsize(fmt)
        if stop <= limit:
            crc, csize, usize = struct.unpack_from(fmt, data, cursor)
            if (crc, csize, usize) == (entry.crc, entry.size, entry.size):
                return stop
    raise _Refusal(f"{where}: data descriptor of {entry.name!r} disagrees with the central directory")


def _torch_archive(entries: list[_Entry], where: str) -> tuple[str, dict[str, _Entry]]:
    """The archive folder and its members; only names torch.save writes."""
    prefix = min(entries, key=lambda e: e.offset).name.split("/", 1)[0]
    members: dict[str, _Entry] = {}
    for entry in entries:
        head, _, rest = entry.name.partition("/")
        if head != prefix or not rest:
            raise _Refusal(f"{where}: entry {entry.name!r} is not under the archive folder {prefix!r}")
        if not (rest in _TORCH_MEMBERS or (rest.startswith("data/") and rest[5:].isdigit()
                                           and rest[5:] == str(int(rest[5:])))):
            raise _Refusal(f"{where}: entry {entry.name!r} is not a member torch.save writes")
        members[rest] = entry
    if "data.pkl" not in members:
        raise _Refusal(f"{where}: zip without {prefix}/data.pkl is not a torch checkpoint")
    return prefix, members


# -- pickle -------------------------------------------------------------------------------------------------


def scan_pickle_bytes(
    data: bytes, where: str, storages: dict[str, int] | None = None, limits: ScanLimits = DEFAULT_LIMITS,
    deadline: _Deadline | None = None,
) -> tuple[set[str], list[str], Counter]:
    """Globals named, refusal reasons and opcode counts of the one pickle in `data` (nothing may follow it).

    `storages` maps the checkpoint's `data/<key>` entries to their sizes: each persistent id must name one,
    with a storage type and element count that fill it exactly. None: no persistent id is allowed.
    """
    found: set[str] = set()
    refused: list[str] = []
    counts: Counter = Counter()
    deadline = deadline or _Deadline(limits.max_seconds, where)
    stream = io.BytesIO(data)
    try:
        _scan_one(stream, where, found, refused, counts, storages, limits, deadline)
    except _Refusal as exc:
        refused.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - a pickle we cannot parse is refused, never loaded
        refused.append(f"{where}: {type(exc).__name__}: {exc} (unparseable)")
    else:
        if stream.tell() != len(data):
            refused.append(f"{where}: {len(data) - stream.tell()} bytes after the pickle's STOP")
    return found, refused, counts


def _scan_one(stream: io.BytesIO, where: str, found: set[str], refused: list[str], counts: Counter,
              storages: dict[str, int] | None, limits: ScanLimits, deadline: _Deadline) -> None:
    stack: list[Any] = []
    memo: dict[int, Any] = {}

    def pop(n: int = 1) -> list[Any]:
        if len(stack) < n:
            raise ValueError("stack underflow")
        items = stack[-n:] if n else []
        del stack[len(stack) - n:]
        return items

    for total, (op, arg, pos) in enumerate(pickletools.genops(stream), 1):
        name = op.name
        counts[name] += 1
        if total > limits.max_opcodes:
            raise _Refusal(f"{where}: more than {limits.max_opcodes} pickle opcodes")
        if total % 4096 == 0:
            deadline.check()
        if name not in SAFE_OPCODES:
            refused.append(f"{where}: opcode {name} at byte {pos} is not allowed in a state dict")
            return
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1] if stack else None
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            if int(arg) not in memo:
                raise _Refusal(f"{where}: {name} at byte {pos} reads memo {arg} that was never stored")
            stack.append(memo[int(arg)])
            continue
        if name == "GLOBAL":
            dotted = ".".join(str(arg).split(" ", 1))
            found.add(dotted)
            if dotted not in SAFE_GLOBALS:
                refused.append(f"{where}: global {dotted} is not on the allowlist")
        before = op.stack_before
        if pickletools.markobject in before:
            if _MARK not in stack:
                raise ValueError(f"{name} without MARK")
            at = len(stack) - 1 - stack[::-1].index(_MARK)
            marked = stack[at + 1:]
            del stack[at:]
            popped = pop(before.index(pickletools.markobject))
        else:
            popped = pop(len(before))
            marked = []
        if name in _STRING_OPS:
            stack.append(("str", arg))
        elif name in _INT_OPS:
            stack.append(("int", arg) if isinstance(arg, int) else ("other",))
        elif name in _TUPLE_OPS:
            stack.append(("tuple", tuple(popped + marked)))
        elif name == "GLOBAL":
            stack.append(("global", ".".join(str(arg).split(" ", 1))))
        elif name == "STACK_GLOBAL":
            module, qualname = popped
            if module[0] != "str" or qualname[0] != "str":
                refused.append(f"{where}: STACK_GLOBAL at byte {pos} with operands that are not literal strings")
                stack.append(("global", "?"))
            else:
                dotted = f"{module[1]}.{qualname[1]}"
                found.add(dotted)
                if dotted not in SAFE_GLOBALS:
                    refused.append(f"{where}: global {dotted} is not on the allowlist")
                stack.append(("global", dotted))
        elif name == "REDUCE":
            func = popped[0]
            if func[0] != "global" or func[1] not in SAFE_GLOBALS:
                refused.append(f"{where}: REDUCE at byte {pos} calls {_describe(func)}, not an allowlisted global")
            stack.append(("call", func[1] if func[0] == "global" else "?"))
        elif name == "BUILD":
            target = popped[0]
            if target[0] != "call" or target[1] != "collections.OrderedDict":
                # torch sets state on the OrderedDict it rebuilt (its _metadata); anything else is an object.
                refused.append(f"{where}: BUILD at byte {pos} sets state on {_describe(target)}")
            stack.append(target)
        elif name == "BINPERSID":
            _check_storage(popped[0], storages, where, pos)
            stack.append(("storage",))
        elif name == "MARK":
            stack.append(_MARK)
        elif name in _MUTATORS:
            stack.append(popped[0] if popped else ("other",))
        elif name == "DUP":
            stack.extend(popped * 2)
        else:
            stack.extend(("other",) for _ in op.stack_after)
        if len(stack) > limits.max_opcodes:
            raise _Refusal(f"{where}: pickle stack deeper than {limits.max_opcodes}")


def _check_storage(pid: Any, storages: dict[str, int] | None, where: str, pos: int) -> None:
    """A persistent id must be ('storage', torch.<T>Storage, key, location, numel) naming a stored entry it fills."""
    if storages is None:
        raise _Refusal(f"{where}: persistent id at byte {pos} outside a torch checkpoint")
    items = pid[1] if pid[0] == "tuple" else ()
    if (len(items) != 5 or items[0] != ("str", "storage") or items[1][0] != "global" or items[2][0] != "str"
            or items[3][0] != "str" or items[4][0] != "int"):
        raise _Refusal(f"{where}: persistent id at byte {pos} is not a literal ('storage', type, key, location, numel)")
    storage_type, key, numel = items[1][1], items[2][1], items[4][1]
    kind = storage_type.removeprefix("torch.").removesuffix("Storage")
    if storage_type not in SAFE_GLOBALS or kind not in _STORAGE_BYTES:
        raise _Refusal(f"{where}: persistent id at byte {pos} names storage type {storage_type}")
    if key not in storages:
        raise _Refusal(f"{where}: persistent id at byte {pos} names storage {key!r}, which the archive lacks")
    if numel < 0 or numel * _STORAGE_BYTES[kind] != storages[key]:
        raise _Refusal(f"{where}: storage {key!r} declares {numel} x {kind} but holds {storages[key]} bytes")


def _describe(value: Any) -> str:
    if value is _MARK:
        return "a MARK"
    kind = value[0]
    return {"global": f"global {value[1]}", "call": f"the result of calling {value[1]}",
            "str": "a string"}.get(kind, "a non-global value")


# -- the file -----------------------------------------------------------------------------------------------


def _format_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return "safetensors"
    return "torch-zip" if suffix in TORCH_SUFFIXES else None


def scan_model_file(path: Path | str, limits: ScanLimits = DEFAULT_LIMITS) -> ModelScanResult:
    """Scan a safetensors file or a torch zip checkpoint without executing any of it; refusals never raise."""
    start = time.perf_counter()
    path = Path(path)
    fmt = _format_of(path) or "unknown"
    found: set[str] = set()
    refused: list[str] = []
    counts: Counter = Counter()
    pickles: list[str] = []
    sha256, tensors = "", 0
    deadline = _Deadline(limits.max_seconds, str(path))
    try:
        if fmt == "unknown":
            raise _Refusal(f"{path}: unknown model file type {path.suffix!r} (expected {SAFETENSORS_SUFFIX} or "
                           f"one of {sorted(TORCH_SUFFIXES)})")
        with _mapped(path, limits) as data:
            sha256 = _sha256(data, deadline)
            if fmt == "safetensors":
                tensors = len(safetensors_header(data, str(path), limits)["tensors"])
            else:
                _, members = _torch_archive(_zip_entries(data, str(path), limits, deadline), str(path))
                pickle_entry = members["data.pkl"]
                if pickle_entry.size > limits.max_pickle_bytes:
                    raise _Refusal(f"{path}: data.pkl of {pickle_entry.size} bytes exceeds the "
                                   f"{limits.max_pickle_bytes}-byte bound")
                byteorder = members.get("byteorder")
                if byteorder is not None and data[byteorder.data_offset:byteorder.data_offset + byteorder.size] != b"little":
                    raise _Refusal(f"{path}: byteorder is not 'little'")
                storages = {k[5:]: e.size for k, e in members.items() if k.startswith("data/")}
                pickles.append(pickle_entry.name)
                blob = bytes(data[pickle_entry.data_offset:pickle_entry.data_offset + pickle_entry.size])
                found, reasons, counts = scan_pickle_bytes(blob, f"{path.name}:{pickle_entry.name}", storages,
                                                           limits, deadline)
                tensors = counts.get("BINPERSID", 0)
                refused += reasons
    except _Refusal as exc:
        refused.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - every parser error is a refusal naming the file
        refused.append(f"{path}: {type(exc).__name__}: {exc}")
    return ModelScanResult(
        path=str(path), sha256=sha256, format=fmt, safe=not refused, pickles=tuple(pickles),
        globals=tuple(sorted(found)), refused=tuple(dict.fromkeys(refused)), opcodes=dict(sorted(counts.items())),
        advisory=_advisory(path) if fmt == "torch-zip" and not refused else {},
        seconds=round(time.perf_counter() - start, 4), tensors=tensors,
    )


class _mapped:
    """A read-only map of a regular file (never a FIFO, device or symlink), within the size bound."""

    def __init__(self, path: Path, limits: ScanLimits) -> None:
        self.path, self.limits = path, limits
        self.fd = -1
        self.map: mmap.mmap | bytes = b""

    def __enter__(self) -> mmap.mmap | bytes:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the file is the one named.
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Refusal(f"{self.path}: not a regular file")
        if info.st_size > self.limits.max_file_bytes:
            raise _Refusal(f"{self.path}: {info.st_size} bytes exceeds the {self.limits.max_file_bytes}-byte bound")
        if info.st_size:
            self.map = mmap.mmap(self.fd, info.st_size, access=mmap.ACCESS_READ)
        return self.map

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.map, mmap.mmap):
            self.map.close()
        if self.fd >= 0:
            os.close(self.fd)


def _sha256(data: mmap.mmap | bytes, deadline: _Deadline) -> str:
    digest = hashlib.sha256()
    view = memoryview(data)
    try:
        for start in range(0, len(data), 1 << 24):
            digest.update(view[start:start + (1 << 24)])
            deadline.check()
    finally:
        view.release()
    return digest.hexdigest()


def assert_safe_model_file(path: Path | str, limits: ScanLimits = DEFAULT_LIMITS) -> ModelScanResult:
    """Scan `path` and raise UnsafeModelFileError naming the file and every refusal."""
    result = scan_model_file(path, limits)
    if not result.safe:
        raise UnsafeModelFileError(result.message())
    return result


def _advisory(path: Path) -> dict[str, Any]:
    """picklescan's opinion when it is installed; advisory only: our checks decide."""
    try:
        from picklescan.scanner import scan_file_path
    except ImportError:
        return {"picklescan": "not installed"}
    try:
        result = scan_file_path(str(path))
    except Exception as exc:  # noqa: BLE001 - advisory tools must not break the gate
        return {"picklescan": f"error: {exc}"}
    return {"picklescan": {"issues": int(result.issues_count), "infected_files": int(result.infected_files),
                           "scan_err": bool(result.scan_err)}}


def allowlisted(globals_: Iterable[str]) -> bool:
    """True when every dotted global is on the state-dict allowlist."""
    return all(g in SAFE_GLOBALS for g in globals_)
