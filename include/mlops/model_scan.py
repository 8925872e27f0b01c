"""Model-file safety: read the pickles in a model file opcode by opcode, never unpickle, refuse what's not allowed.

A torch checkpoint is a zip whose `<name>/data.pkl` is a pickle; unpickling runs whatever callables it
names (`os.system`, `builtins.exec`, ...). This scanner walks each pickle with `pickletools.genops`, keeps
a symbolic stack (strings, globals, call results) so `STACK_GLOBAL` operands and `REDUCE`/`BUILD`
targets are known, and accepts only what a torch state_dict needs. The allowlist was derived from real
files written by `include.mnist.train.save_state_dict` (both architectures) and `torch.save(model.state_dict())`:
`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the typed storages. Whole pickled
modules (`torch.save(model)`) are refused on purpose: they name model classes and need NEWOBJ.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
import struct
import time
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_STORAGES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
SAFE_GLOBALS: frozenset[str] = frozenset(
    {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2"} | {f"torch.{s}Storage" for s in _STORAGES}
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
_BYTES_OPS = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"}  # leave their container on the stack
_MARK = ("mark",)
_MAX_DEPTH = 3


class UnsafeModelFileError(ValueError):
    """The model file holds something outside the allowlist and must not be uploaded or loaded."""


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for XCom and the evidence pack."""
        return {**asdict(self), "pickles": list(self.pickles), "globals": list(self.globals),
                "refused": list(self.refused)}

    def message(self) -> str:
        """One line a person can act on."""
        if self.safe:
            return f"{self.path}: {self.format} passes the model-file scan ({', '.join(self.globals) or 'no globals'})"
        return f"{self.path}: refused by the model-file scan: " + "; ".join(self.refused)


def _looks_like_pickle(data: bytes) -> bool:
    # protocol 2+ starts with PROTO; protocol 0/1 pickles are accepted as nested only if they parse to STOP
    if len(data) >= 2 and data[0] == 0x80 and data[1] <= 5:
        return True
    try:
        ops = list(pickletools.genops(io.BytesIO(data)))
    except Exception:  # noqa: BLE001 - not a pickle is the common, expected case
        return False
    return bool(ops) and ops[-1][0].name == "STOP" and any(o[0].name in ("GLOBAL", "REDUCE") for o in ops)


def scan_pickle_bytes(data: bytes, where: str, depth: int = 0) -> tuple[set[str], list[str], Counter]:
    """Globals named, refusal reasons and opcode counts of one or more concatenated pickles in `data`."""
    found: set[str] = set()
    refused: list[str] = []
    counts: Counter = Counter()
    stream = io.BytesIO(data)
    index = 0
    while stream.tell() < len(data):
        label = where if index == 0 else f"{where}[pickle {index}]"
        _scan_one(stream, label, depth, found, refused, counts)
        index += 1
        if refused and refused[-1].endswith("(unparseable)"):
            break
    if index == 0:
        refused.append(f"{where}: empty pickle")
    return found, refused, counts


def _scan_one(stream: io.BytesIO, where: str, depth: int, found: set[str], refused: list[str],
              counts: Counter) -> None:
    stack: list[Any] = []
    memo: dict[int, Any] = {}

    def pop(n: int = 1) -> list[Any]:
        if len(stack) < n:
            raise ValueError("stack underflow")
        items = stack[-n:] if n else []
        del stack[len(stack) - n:]
        return items

    try:
        for op, arg, pos in pickletools.genops(stream):
            name = op.name
            counts[name] += 1
            if name not in SAFE_OPCODES:
                refused.append(f"{where}: opcode {name} at byte {pos} is not allowed in a state dict")
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1] if stack else None
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg), ("other",)))
                continue
            if name in ("GLOBAL", "INST"):
                dotted = ".".join(str(arg).split(" ", 1))
                found.add(dotted)
                if dotted not in SAFE_GLOBALS:
                    refused.append(f"{where}: global {dotted} is not on the allowlist")
            # protocols 0-2 carry bytes as latin-1 text (fed to _codecs.encode): check strings too
            if (name in _BYTES_OPS or name in _STRING_OPS) and isinstance(arg, bytes | bytearray | str):
                payload = _as_bytes(arg)
                if payload is not None and len(payload) > 8 and _looks_like_pickle(payload):
                    if depth >= _MAX_DEPTH:
                        refused.append(f"{where}: pickles nested deeper than {_MAX_DEPTH}")
                    else:
                        inner, reasons, _ = scan_pickle_bytes(payload, f"{where} > nested pickle at byte {pos}",
                                                              depth + 1)
                        found.update(inner)
                        refused.append(f"{where}: nested pickle at byte {pos} (globals: "
                                       f"{', '.join(sorted(inner)) or 'none'})")
                        refused.extend(reasons)
            # symbolic stack effect
            before, after = op.stack_before, op.stack_after
            if pickletools.markobject in before:
                i = before.index(pickletools.markobject)
                while stack and stack[-1] is not _MARK:
                    stack.pop()
                if not stack:
                    raise ValueError(f"{name} without MARK")
                stack.pop()
                popped = pop(i)
            else:
                popped = pop(len(before))
            if name in _STRING_OPS:
                stack.append(("str", arg))
            elif name in ("GLOBAL", "INST"):
                stack.append(("global", ".".join(str(arg).split(" ", 1))) if name == "GLOBAL" else ("call", "?"))
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
                if target[0] == "global":  # setting attributes on a class or function, not on an instance
                    refused.append(f"{where}: BUILD at byte {pos} modifies {target[1]} itself")
                stack.append(target)
            elif name == "MARK":
                stack.append(_MARK)
            elif name in _MUTATORS:
                stack.append(popped[0] if popped else ("other",))
            elif name == "DUP":
                stack.extend(popped * 2)
            else:
                stack.extend(("other",) for _ in after)
    except Exception as exc:  # noqa: BLE001 - a pickle we cannot parse is refused, never loaded
        refused.append(f"{where}: {type(exc).__name__}: {exc} (unparseable)")


def _as_bytes(arg: bytes | bytearray | str) -> bytes | None:
    if not isinstance(arg, str):
        return bytes(arg)
    try:
        return arg.encode("latin-1")
    except UnicodeEncodeError:
        return None


def _describe(value: Any) -> str:
    if value is _MARK:
        return "a MARK"
    kind = value[0]
    return {"global": f"global {value[1]}", "call": f"the result of calling {value[1]}",
            "str": "a string"}.get(kind, "a non-global value")


def _safetensors(data: bytes, where: str) -> list[str]:
    """Header checks of a safetensors file: 8-byte length, JSON object, no code anywhere."""
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        return [f"{where}: safetensors header length {length} exceeds the file"]
    try:
        header = json.loads(data[8:8 + length])
    except ValueError as exc:
        return [f"{where}: safetensors header is not JSON ({exc})"]
    return [] if isinstance(header, dict) else [f"{where}: safetensors header is not an object"]


def scan_model_file(path: Path | str) -> ModelScanResult:
    """Scan a torch zip checkpoint, plain pickle or safetensors file without executing any of it."""
    start = time.perf_counter()
    path = Path(path)
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    found: set[str] = set()
    refused: list[str] = []
    counts: Counter = Counter()
    pickles: list[str] = []
    if zipfile.is_zipfile(io.BytesIO(data)):
        fmt = "torch-zip"
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.namelist()
            if not any(m.endswith("/data.pkl") or m == "data.pkl" for m in members):
                refused.append(f"{path}: zip without data.pkl is not a torch checkpoint")
            for member in members:
                blob = archive.read(member)
                # every *.pkl is unpickled by someone; other members are raw storage bytes torch never unpickles
                if member.endswith(".pkl") or (not member.split("/")[-2:-1] == ["data"] and _looks_like_pickle(blob)):
                    pickles.append(member)
                    g, r, c = scan_pickle_bytes(blob, f"{path.name}:{member}")
                    found |= g
                    refused += r
                    counts += c
    elif data[8:9] == b"{" and len(data) >= 8:
        fmt = "safetensors"
        refused += _safetensors(data, str(path))
    else:
        fmt = "pickle"
        pickles.append(path.name)
        g, r, c = scan_pickle_bytes(data, path.name)
        found |= g
        refused += r
        counts += c
    return ModelScanResult(
        path=str(path), sha256=sha256, format=fmt, safe=not refused, pickles=tuple(pickles),
        globals=tuple(sorted(found)), refused=tuple(dict.fromkeys(refused)), opcodes=dict(sorted(counts.items())),
        advisory=_advisory(path), seconds=round(time.perf_counter() - start, 4),
    )


def assert_safe_model_file(path: Path | str) -> ModelScanResult:
    """Scan `path` and raise UnsafeModelFileError naming every refused global or opcode."""
    result = scan_model_file(path)
    if not result.safe:
        raise UnsafeModelFileError(result.message())
    return result


def _advisory(path: Path) -> dict[str, Any]:
    """picklescan's opinion when it is installed; advisory only: our allowlist decides."""
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
