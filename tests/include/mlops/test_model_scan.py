"""The strict model-file scan: real files pass, a generated hostile corpus is refused without side effects.

The corpus covers pickle payloads (inside well-formed torch zips, so the opcode walk is what refuses them),
zip tricks two parsers could read differently, bounds (opcodes, declared sizes), bad safetensors headers,
special files and unknown suffixes. Each file must end in UnsafeModelFileError naming it: 0 accepted, 0 other
exception types, 0 payload markers, no hang (a child process with a timeout) and bounded memory (its max RSS).
"""

from __future__ import annotations

import builtins
import collections
import json
import os
import pickle
import runpy
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from include.mlops.model_scan import (
    SAFE_GLOBALS,
    ScanLimits,
    assert_safe_model_file,
    scan_model_file,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")


class _Reduce:
    """An object whose unpickling calls `func(*args)`: the classic pickle payload."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def make_zip(members: list[tuple[str, bytes]], *, flags: int = 0x800, method: int = 0, bad_crc: tuple = (),
             local_names: dict | None = None, declared: dict | None = None, comment: bytes = b"",
             before: bytes = b"") -> bytes:
    """A zip written field by field, so each test can bend exactly one rule."""
    out, directory = bytearray(before), bytearray()
    for name, data in members:
        offset = len(out)
        stored = zlib.compress(data)[2:-4] if method == 8 else data
        crc = zlib.crc32(data) ^ (1 if name in bad_crc else 0)
        local = (local_names or {}).get(name, name).encode()
        size = (declared or {}).get(name, len(data))
        out += _LOCAL.pack(b"PK\x03\x04", 20, flags, method, 0, 0, crc, len(stored), size, len(local), 0)
        out += local + stored
        encoded = name.encode()
        directory += _CENTRAL.pack(b"PK\x01\x02", 20, 20, flags, method, 0, 0, crc, len(stored), size, len(encoded),
                                   0, 0, 0, 0, 0, offset) + encoded
    cd_offset = len(out)
    out += directory + _EOCD.pack(b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), cd_offset,
                                  len(comment)) + comment
    return bytes(out)


def torch_members(pkl: bytes, folder: str = "archive") -> list[tuple[str, bytes]]:
    return [(f"{folder}/data.pkl", pkl), (f"{folder}/byteorder", b"little"), (f"{folder}/version", b"3\n")]


def _state_pickle() -> bytes:
    """data.pkl of a real torch.save of one tensor, and its storage bytes."""
    import io
    import zipfile

    import torch

    buffer = io.BytesIO()
    torch.save(collections.OrderedDict(w=torch.ones(3)), buffer)
    with zipfile.ZipFile(buffer) as archive:
        names = archive.namelist()
        return archive.read(next(n for n in names if n.endswith("data.pkl")))


def pickle_payloads(markers: Path) -> dict[str, bytes]:
    """name → a pickle whose unpickling creates marker `name` (or would corrupt the interpreter)."""
    m = lambda name: markers / name  # noqa: E731 - a short alias keeps the table readable
    corpus = {f"os_system_p{p}": pickle.dumps(_Reduce(os.system, f"touch {m(f'os_system_p{p}')}"), protocol=p)
              for p in (0, 2, 4, 5)}
    corpus["eval_reduce"] = pickle.dumps(_Reduce(builtins.eval, _touch(m("eval_reduce"))), 2)
    corpus["exec_reduce"] = pickle.dumps(_Reduce(builtins.exec, _touch(m("exec_reduce"))), 4)
    corpus["subprocess_popen"] = pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(m("subprocess_popen"))]), 4)
    corpus["runpy_run_code"] = pickle.dumps(_Reduce(runpy._run_code, _touch(m("runpy_run_code")), {}), 4)
    # getattr(__import__("builtins"), "exec")(code), hand-assembled: pickle.dumps cannot express it
    corpus["getattr_exec"] = (b"\x80\x02c__builtin__\ngetattr\nc__builtin__\n__import__\n" + _str("builtins")
                              + b"\x85R" + _str("exec") + b"\x86R" + _str(_touch(m("getattr_exec"))) + b"\x85R.")
    inner = pickle.dumps(_Reduce(builtins.exec, _touch(m("nested_pickle"))), 4)
    corpus["nested_pickle"] = pickle.dumps(_Reduce(pickle.loads, inner), 4)
    state = collections.OrderedDict([("conv1.weight", _Reduce(builtins.exec, _touch(m("ordereddict_exec")))),
                                     ("conv1.bias", 0)])
    corpus["ordereddict_exec"] = pickle.dumps(state, 2)
    corpus["inst_p0"] = f"(S'touch {m('inst_p0')}'\nios\nsystem\n.".encode()
    # EXT1: copyreg's extension registry resolves a global by number (registered in the control only)
    corpus["ext1_copyreg"] = b"\x80\x02\x82\xf0" + pickle.dumps(_touch(m("ext1_copyreg")), 2)[2:-1] + b"\x85R."
    # BUILD on an allowlisted class itself: sets OrderedDict.__reduce_ex__ for everybody (no marker: no call)
    corpus["build_on_class"] = b"\x80\x02ccollections\nOrderedDict\n}X\x04\x00\x00\x00evil\x88sb."
    # a harmless state dict, then a second pickle after STOP that a streaming reader could pick up
    corpus["second_pickle_after_stop"] = pickle.dumps(collections.OrderedDict(), 2) + corpus["exec_reduce"]
    # STACK_GLOBAL whose operands come from the memo, not literal strings
    corpus["stack_global_from_memo"] = b"\x80\x04K\x01\x94K\x02\x94\x93)R."
    corpus["get_unset_memo"] = b"\x80\x02h\x07."
    corpus["persid_text"] = b"\x80\x02P0\n."
    return corpus


def hostile_corpus(folder: Path, markers: Path, real_pt: bytes) -> dict[str, bytes]:
    """file name → bytes: at least 40 hostile model files (special files are added by the test)."""
    payloads = pickle_payloads(markers)
    evil = payloads["exec_reduce"]
    benign = _state_pickle()
    files: dict[str, bytes] = {}
    for name, pkl in payloads.items():
        files[f"zip_{name}.pt"] = make_zip(torch_members(pkl))
    files["legacy_non_zip.pt"] = payloads["os_system_p2"]
    files["raw_pickle.pkl"] = payloads["os_system_p4"]
    files["no_suffix"] = payloads["os_system_p4"]
    files["onnx_suffix.onnx"] = real_pt
    # zip tricks: each gives two parsers a chance to disagree about data.pkl
    good = torch_members(pickle.dumps(collections.OrderedDict(), 2))
    files["duplicate_data_pkl.pt"] = make_zip([*good, ("archive/data.pkl", evil)])
    files["junk_prepended.pt"] = b"JUNK" + make_zip(torch_members(evil))
    files["evil_zip_then_benign_zip.pt"] = make_zip(torch_members(evil)) + make_zip(good)
    files["trailing_bytes.pt"] = make_zip(good) + b"\x00" * 16
    files["zip_comment.pt"] = make_zip(good, comment=b"PK\x03\x04 hidden")
    hidden = make_zip(torch_members(evil))
    hidden_local = hidden[:hidden.index(b"PK\x01\x02")]
    files["hidden_local_entry_before_directory_entries.pt"] = _shift(make_zip(good), hidden_local)
    files["deflated_entries.pt"] = make_zip(torch_members(evil), method=8)
    files["encrypted_flag.pt"] = make_zip(good, flags=0x801)
    files["unknown_flag.pt"] = make_zip(good, flags=0x802 | 0x4000)
    files["crc_mismatch.pt"] = make_zip(good, bad_crc=("archive/data.pkl",))
    files["local_name_differs.pt"] = make_zip(torch_members(evil), local_names={"archive/data.pkl": "archive/data.pkx"})
    files["extra_pickle_member.pt"] = make_zip([*good, ("archive/evil.pkl", evil)])
    files["two_folders.pt"] = make_zip([*good, ("other/data.pkl", evil)])
    files["no_data_pkl.pt"] = make_zip(good[1:])
    files["dotdot_name.pt"] = make_zip([*good, ("archive/../data/0", b"x")])
    files["big_endian.pt"] = make_zip([good[0], ("archive/byteorder", b"big"), good[2]])
    files["declared_size_4_gib.pt"] = make_zip(good, declared={"archive/data.pkl": 0xFFFFFFF0})
    files["truncated_real.pt"] = real_pt[: len(real_pt) // 2]
    files["eocd_count_wrong.pt"] = _eocd_count(make_zip(good), 7)
    files["zip64_record_without_locator.pt"] = _insert_before_eocd(make_zip(good), b"PK\x06\x06" + b"\x00" * 52)
    # storages: a persistent id must name a stored entry it fills exactly
    files["storage_missing.pt"] = make_zip(torch_members(benign))
    files["storage_declares_huge_numel.pt"] = make_zip(
        [*torch_members(benign.replace(b"K\x03", b"J\x00\x00\x00\x10", 1)), ("archive/data/0", b"\x00" * 12)])
    files["storage_size_mismatch.pt"] = make_zip([*torch_members(benign), ("archive/data/0", b"\x00" * 8)])
    # bounds: a pickle of more opcodes than the limit (the test lowers the limit to keep the file small)
    files["opcode_bomb.pt"] = make_zip(torch_members(b"\x80\x02" + b"(0" * 60_000 + b"}."))
    files["empty.pt"] = b""
    # safetensors
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    files["st_header_len_2_63.safetensors"] = struct.pack("<Q", 1 << 63) + b"{}"
    files["st_header_past_end.safetensors"] = struct.pack("<Q", 1000) + b"{}"
    files["st_not_json.safetensors"] = _st_raw(b"{not json}", b"")
    files["st_array.safetensors"] = _st_raw(b"[1, 2]", b"")
    files["st_duplicate_keys.safetensors"] = _st_raw(
        b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
        b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', b"\x00" * 8)
    files["st_unknown_dtype.safetensors"] = _st({"w": {**header["w"], "dtype": "PICKLE"}}, 8)
    files["st_negative_offset.safetensors"] = _st({"w": {**header["w"], "data_offsets": [-8, 0]}}, 8)
    files["st_shape_mismatch.safetensors"] = _st({"w": {**header["w"], "shape": [3]}}, 8)
    files["st_overlap.safetensors"] = _st({"a": header["w"], "b": header["w"]}, 8)
    files["st_gap.safetensors"] = _st({"w": {**header["w"], "data_offsets": [4, 12]}}, 12)
    files["st_trailing_data.safetensors"] = _st(header, 16)
    files["st_past_end.safetensors"] = _st(header, 4)
    files["st_huge_shape.safetensors"] = _st({"w": {**header["w"], "shape": [1 << 40, 1 << 40]}}, 8)
    files["st_extra_field.safetensors"] = _st({"w": {**header["w"], "__reduce__": "os.system"}}, 8)
    files["st_metadata_not_strings.safetensors"] = _st({**header, "__metadata__": {"a": 1}}, 8)
    files["st_nan_constant.safetensors"] = _st_raw(b'{"__metadata__": {}, "w": NaN}', b"")
    files["st_deep_nesting.safetensors"] = _st_raw(b"{\"a\":" + b"[" * 100_000 + b"]" * 100_000 + b"}", b"")
    files["st_is_a_zip.safetensors"] = real_pt
    files["st_short.safetensors"] = b"\x01\x02"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _st(header: dict, body: int) -> bytes:
    return _st_raw(json.dumps(header).encode(), b"\x00" * body)


def _st_raw(header: bytes, body: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + body


def _shift(archive: bytes, prefix: bytes) -> bytes:
    """Put `prefix` (a local entry) before the archive's entries and shift every offset the directory holds."""
    cd_offset = _EOCD.unpack_from(archive, len(archive) - _EOCD.size)[6]
    out = bytearray(prefix + archive)
    pos = len(prefix) + cd_offset
    while out[pos:pos + 4] == b"PK\x01\x02":
        fields = list(_CENTRAL.unpack_from(out, pos))
        fields[-1] += len(prefix)
        _CENTRAL.pack_into(out, pos, *fields)
        pos += _CENTRAL.size + fields[10]
    eocd = list(_EOCD.unpack_from(out, len(out) - _EOCD.size))
    eocd[6] += len(prefix)
    _EOCD.pack_into(out, len(out) - _EOCD.size, *eocd)
    return bytes(out)


def _eocd_count(archive: bytes, count: int) -> bytes:
    out = bytearray(archive)
    eocd = list(_EOCD.unpack_from(out, len(out) - _EOCD.size))
    eocd[3] = eocd[4] = count
    _EOCD.pack_into(out, len(out) - _EOCD.size, *eocd)
    return bytes(out)


def _insert_before_eocd(archive: bytes, record: bytes) -> bytes:
    return archive[:-_EOCD.size] + record + archive[-_EOCD.size:]


@pytest.fixture(scope="module")
def real_models(tmp_path_factory):
    import torch
    from safetensors.torch import save_file

    from include.mnist.model import QUALITY_ARCHITECTURE, build_model
    from include.mnist.train import save_model, save_state_dict

    folder = tmp_path_factory.mktemp("real")
    save_state_dict(build_model(), folder / "fast99.pt")
    save_state_dict(build_model(QUALITY_ARCHITECTURE), folder / "fast995.pt")
    torch.save(build_model().state_dict(), folder / "torch_state_dict.pt")
    save_model(build_model(QUALITY_ARCHITECTURE), folder / "q" / "model.safetensors", "quality")
    save_file({"w": torch.zeros(2, 3), "b": torch.ones(3, dtype=torch.int64)}, folder / "plain.safetensors")
    return [folder / "fast99.pt", folder / "fast995.pt", folder / "torch_state_dict.pt",
            folder / "q" / "model.safetensors", folder / "plain.safetensors"]


def test_real_model_files_pass(real_models):
    for path in real_models:
        result = assert_safe_model_file(path)
        assert result.safe and result.tensors > 0 and len(result.sha256) == 64
        if result.format == "torch-zip":
            assert set(result.globals) <= SAFE_GLOBALS and result.pickles
        else:
            assert path.suffix == ".safetensors" and not result.globals


def test_whole_pickled_module_is_refused(tmp_path):
    import torch

    from include.mnist.model import build_model

    torch.save(build_model(), tmp_path / "module.pt")
    result = scan_model_file(tmp_path / "module.pt")
    assert not result.safe
    assert any("include.mnist.model" in r or "NEWOBJ" in r for r in result.refused), result.refused


_CHILD = """
import json, sys
from pathlib import Path
from include.mlops.model_scan import ScanLimits, UnsafeModelFileError, assert_safe_model_file
limits = ScanLimits(max_opcodes=50_000, max_seconds=20)
out = {}
for path in sorted(Path(sys.argv[1]).iterdir()):
    try:
        assert_safe_model_file(path, limits)
        out[path.name] = "accepted"
    except UnsafeModelFileError as exc:
        out[path.name] = "refused" if path.name in str(exc) else "refused without naming the file: " + str(exc)
    except BaseException as exc:
        out[path.name] = f"crash {type(exc).__name__}: {exc}"
# VmHWM is this process's own peak (ru_maxrss keeps the parent's across exec on Linux).
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"results": out, "max_rss_kb": peak}))
"""


def test_hostile_corpus_refused_without_side_effects_hangs_or_memory(tmp_path, real_models):
    markers, folder = tmp_path / "markers", tmp_path / "corpus"
    markers.mkdir()
    files = hostile_corpus(folder, markers, real_models[0].read_bytes())
    os.mkfifo(folder / "fifo.pt")  # opening it for reading must not wait for a writer
    (folder / "symlink_to_real.pt").symlink_to(real_models[0])
    (folder / "dev_zero.safetensors").symlink_to("/dev/zero")
    (folder / "a_directory.pt").mkdir()
    expected = set(files) | {"fifo.pt", "symlink_to_real.pt", "dev_zero.safetensors", "a_directory.pt"}
    assert len(expected) >= 40
    # A child process: a hang fails on the timeout, and its peak memory is its own.
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(folder)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]
    assert set(results) == expected
    wrong = {name: outcome for name, outcome in results.items() if outcome != "refused"}
    assert wrong == {}, wrong
    assert list(markers.iterdir()) == [], "scanning executed a payload"
    assert report["max_rss_kb"] < 1 << 20, f"peak memory {report['max_rss_kb']} kB"
    print(f"hostile corpus: {len(results)} files, {len(results)} refused, 0 accepted, 0 crashes, "
          f"0 markers, peak RSS {report['max_rss_kb'] // 1024} MiB")


def test_control_payloads_are_live(tmp_path):
    """Unpickle every payload in a child process: each one that calls something creates its marker."""
    markers = tmp_path / "markers"
    markers.mkdir()
    payloads = pickle_payloads(markers)
    folder = tmp_path / "payloads"
    folder.mkdir()
    for name, data in payloads.items():
        (folder / name).write_bytes(data)
    code = (
        "import copyreg, pickle, sys\n"
        "copyreg.add_extension('builtins', 'exec', 0xf0)\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        pickle.loads(open(p, 'rb').read())\n"
        "    except Exception as exc:\n"
        "        print(p, type(exc).__name__, exc)\n"
    )
    subprocess.run([sys.executable, "-c", code, *map(str, sorted(folder.iterdir()))], check=True, timeout=60,
                   cwd=tmp_path, capture_output=True)
    live = {p.name for p in markers.iterdir()}
    inert = {"build_on_class", "stack_global_from_memo", "get_unset_memo", "persid_text"}
    # pickle.loads stops at the first STOP, so the second pickle's payload needs a streaming reader to run.
    assert live == set(payloads) - inert - {"second_pickle_after_stop"}


def test_duplicate_names_are_a_real_disagreement(tmp_path):
    """Python's zipfile reads the last duplicate entry: the evil data.pkl, behind a benign one."""
    import zipfile

    evil = pickle_payloads(tmp_path)["exec_reduce"]
    data = make_zip([*torch_members(pickle.dumps(collections.OrderedDict(), 2)), ("archive/data.pkl", evil)])
    (tmp_path / "dup.pt").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "dup.pt") as archive:
        assert archive.read("archive/data.pkl") == evil
    assert any("duplicate zip entry names" in r for r in scan_model_file(tmp_path / "dup.pt").refused)


def test_refusals_name_what_was_wrong(tmp_path, real_models):
    markers = tmp_path / "m"
    markers.mkdir()
    files = hostile_corpus(tmp_path / "c", markers, real_models[0].read_bytes())
    limits = ScanLimits(max_opcodes=50_000)
    for name, needle in {
        "zip_os_system_p2.pt": "global posix.system is not on the allowlist",
        "zip_inst_p0.pt": "opcode INST",
        "zip_ext1_copyreg.pt": "opcode EXT1",
        "zip_build_on_class.pt": "BUILD",
        "zip_second_pickle_after_stop.pt": "after the pickle's STOP",
        "legacy_non_zip.pt": "legacy pickle-format torch files are refused",
        "raw_pickle.pkl": "unknown model file type '.pkl'",
        "evil_zip_then_benign_zip.pt": "more than one end-of-central-directory record",
        "hidden_local_entry_before_directory_entries.pt": "data outside the entries",
        "deflated_entries.pt": "compressed (method 8)",
        "encrypted_flag.pt": "encrypted",
        "crc_mismatch.pt": "CRC",
        "storage_missing.pt": "which the archive lacks",
        "storage_size_mismatch.pt": "holds 8 bytes",
        "opcode_bomb.pt": "more than 50000 pickle opcodes",
        "st_header_len_2_63.safetensors": "exceeds the 16777216-byte bound",
        "st_overlap.safetensors": "overlaps the previous tensor",
        "st_gap.safetensors": "leaves a gap",
        "st_trailing_data.safetensors": "trailing data",
        "st_duplicate_keys.safetensors": "duplicate JSON keys",
        "st_is_a_zip.safetensors": "safetensors header",
    }.items():
        assert name in files
        result = scan_model_file(tmp_path / "c" / name, limits)
        assert not result.safe and any(needle in r for r in result.refused), (name, result.refused)
