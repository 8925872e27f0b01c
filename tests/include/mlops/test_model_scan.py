"""Model-file scan: real state dicts pass; a corpus of malicious pickles is refused K of K with 0 side effects.

Every malicious file is generated into tmp_path at test time; its payload would only create a marker file
(or write one through Python) if it were ever unpickled. A control run unpickles each payload in a child
process, in a separate marker folder, to prove the payloads are live, so "0 markers after scanning" means
something.
"""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import runpy
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from include.mlops.model_scan import (
    SAFE_GLOBALS,
    UnsafeModelFileError,
    assert_safe_model_file,
    scan_model_file,
)


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


def _torch_zip(pkl: bytes, name: str = "archive") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{name}/data.pkl", pkl)
        archive.writestr(f"{name}/.format_version", "1")
        archive.writestr(f"{name}/byteorder", "little")
        archive.writestr(f"{name}/version", "3\n")
    return buffer.getvalue()


def malicious_corpus(markers: Path) -> dict[str, tuple[bytes, str]]:
    """name → (file bytes, the global or opcode its refusal must name); payloads only create markers."""
    m = lambda name: markers / name  # noqa: E731 - a short alias keeps the table readable
    corpus: dict[str, tuple[bytes, str]] = {}
    for proto in (0, 2, 4, 5):
        corpus[f"os_system_p{proto}.pkl"] = (
            pickle.dumps(_Reduce(os.system, f"touch {m(f'os_system_p{proto}.pkl')}"), protocol=proto),
            "system",  # posix.system on Linux: os.system is an alias
        )
    corpus["eval_reduce.pkl"] = (pickle.dumps(_Reduce(builtins.eval, _touch(m("eval_reduce.pkl"))), 2),
                                 "__builtin__.eval")
    corpus["exec_reduce.pkl"] = (pickle.dumps(_Reduce(builtins.exec, _touch(m("exec_reduce.pkl"))), 4),
                                 "builtins.exec")
    corpus["subprocess_popen.pkl"] = (
        pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(m("subprocess_popen.pkl"))]), 4), "subprocess.Popen")
    corpus["runpy_run_code.pkl"] = (
        pickle.dumps(_Reduce(runpy._run_code, _touch(m("runpy_run_code.pkl")), {}), 4), "runpy._run_code")
    # getattr(__import__("builtins"), "exec")(code), hand-assembled: pickle.dumps cannot express it
    corpus["getattr_exec.pkl"] = (
        b"\x80\x02c__builtin__\ngetattr\nc__builtin__\n__import__\n" + _str("builtins") + b"\x85R"
        + _str("exec") + b"\x86R" + _str(_touch(m("getattr_exec.pkl"))) + b"\x85R.",
        "__builtin__.getattr",
    )
    inner = pickle.dumps(_Reduce(builtins.exec, _touch(m("nested_pickle.pkl"))), 4)
    corpus["nested_pickle.pkl"] = (pickle.dumps(_Reduce(pickle.loads, inner), 4), "nested pickle")
    inner0 = pickle.dumps(_Reduce(builtins.exec, _touch(m("nested_p0.pkl"))), 0)
    corpus["nested_p0.pkl"] = (pickle.dumps(_Reduce(pickle.loads, inner0), 0), "nested pickle")
    # a benign-looking state dict whose one "tensor" is exec(...)
    state = collections.OrderedDict(
        [("conv1.weight", _Reduce(builtins.exec, _touch(m("ordereddict_exec.pkl")))), ("conv1.bias", 0)])
    corpus["ordereddict_exec.pkl"] = (pickle.dumps(state, 2), "__builtin__.exec")
    evil_zip_pkl = pickle.dumps(collections.OrderedDict(
        [("fc1.weight", _Reduce(os.system, f"touch {m('torch_zip.pt')}"))]), 2)
    corpus["torch_zip.pt"] = (_torch_zip(evil_zip_pkl), "system")
    # protocol 0 INST opcode: instantiate os.system('touch ...') without REDUCE
    corpus["inst_p0.pkl"] = (f"(S'touch {m('inst_p0.pkl')}'\nios\nsystem\n.".encode(), "INST")
    # EXT1: copyreg's extension registry resolves a global by number (registered in the control only)
    corpus["ext1_copyreg.pkl"] = (b"\x80\x02\x82\xf0" + pickle.dumps(_touch(m("ext1_copyreg.pkl")), 2)[2:-1]
                                  + b"\x85R.", "EXT1")
    # BUILD on an allowlisted class itself: sets OrderedDict.__reduce_ex__ for everybody (no marker: no call)
    corpus["build_on_class.pkl"] = (b"\x80\x02ccollections\nOrderedDict\n}X\x04\x00\x00\x00evil\x88sb.",
                                    "BUILD")
    return corpus


def _write(folder: Path, corpus: dict[str, tuple[bytes, str]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (data, _) in corpus.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def real_models(tmp_path_factory) -> list[Path]:
    import torch

    from include.mnist.model import QUALITY_ARCHITECTURE, build_model
    from include.mnist.train import save_state_dict

    folder = tmp_path_factory.mktemp("models")
    save_state_dict(build_model(), folder / "fast99.pt")
    save_state_dict(build_model(QUALITY_ARCHITECTURE), folder / "fast995.pt")
    torch.save(build_model().state_dict(), folder / "torch_state_dict.pt")
    return [folder / "fast99.pt", folder / "fast995.pt", folder / "torch_state_dict.pt"]


def test_real_state_dicts_pass(real_models):
    for path in real_models:
        result = assert_safe_model_file(path)
        assert result.format == "torch-zip" and result.safe, result.refused
        assert set(result.globals) <= SAFE_GLOBALS
        assert "torch._utils._rebuild_tensor_v2" in result.globals
        assert result.opcodes.get("REDUCE", 0) > 0  # tensors are rebuilt by REDUCE: allowed for allowlisted only


def test_whole_pickled_module_is_refused(tmp_path):
    import torch

    from include.mnist.model import build_model

    torch.save(build_model(), tmp_path / "module.pt")
    result = scan_model_file(tmp_path / "module.pt")
    assert not result.safe
    assert any("include.mnist.model.MnistCNN" in r for r in result.refused)
    assert any("NEWOBJ" in r for r in result.refused)


def test_malicious_corpus_refused_k_of_k_without_side_effects(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    corpus = malicious_corpus(markers)
    paths = _write(tmp_path / "corpus", corpus)
    refused = 0
    for path in paths:
        result = scan_model_file(path)
        expected = corpus[path.name][1]
        assert not result.safe, f"{path.name} passed the scan"
        assert any(expected in r for r in result.refused), (path.name, result.refused)
        with pytest.raises(UnsafeModelFileError, match=path.name):
            assert_safe_model_file(path)
        refused += 1
    assert refused == len(corpus) == 16
    assert list(markers.iterdir()) == [], "scanning executed a payload"
    print(f"malicious corpus: {refused} of {len(corpus)} refused, 0 markers")


def test_control_payloads_are_live(tmp_path):
    """Unpickle every payload in a child process: each one that calls something creates its marker."""
    markers = tmp_path / "markers"
    markers.mkdir()
    corpus = malicious_corpus(markers)
    paths = _write(tmp_path / "corpus", corpus)
    code = (
        "import copyreg, io, pickle, sys, zipfile\n"
        "copyreg.add_extension('builtins', 'exec', 0xf0)\n"
        "for p in sys.argv[1:]:\n"
        "    data = open(p, 'rb').read()\n"
        "    if zipfile.is_zipfile(io.BytesIO(data)):\n"
        "        data = zipfile.ZipFile(io.BytesIO(data)).read('archive/data.pkl')\n"
        "    try:\n"
        "        pickle.loads(data)\n"
        "    except Exception as exc:\n"
        "        print(p, type(exc).__name__, exc)\n"
    )
    subprocess.run([sys.executable, "-c", code, *map(str, paths)], check=True, timeout=60, cwd=tmp_path,
                   capture_output=True)
    live = {p.name for p in markers.iterdir()}
    assert live == set(corpus) - {"build_on_class.pkl"}


def test_stack_global_needs_literal_strings(tmp_path):
    # STACK_GLOBAL fed by a memo entry that holds a non-string: refuse rather than guess
    data = b"\x80\x04K\x01\x94K\x02\x94\x93)R."
    (tmp_path / "x.pkl").write_bytes(data)
    result = scan_model_file(tmp_path / "x.pkl")
    assert not result.safe and any("not literal strings" in r for r in result.refused)


def test_truncated_and_garbage_files_are_refused(tmp_path, real_models):
    good = real_models[0].read_bytes()
    (tmp_path / "garbage.pkl").write_bytes(b"\x80\x04\x95garbage")
    (tmp_path / "empty.pkl").write_bytes(b"")
    assert not scan_model_file(tmp_path / "garbage.pkl").safe
    assert not scan_model_file(tmp_path / "empty.pkl").safe
    # a torch zip whose data.pkl was replaced by a benign pickle that names an unknown storage type
    bad = _torch_zip(pickle.dumps(collections.OrderedDict(a=1), 2).replace(b"collections", b"collectionz"))
    (tmp_path / "renamed.pt").write_bytes(bad)
    assert any("collectionz.OrderedDict" in r for r in scan_model_file(tmp_path / "renamed.pt").refused)
    assert len(good) > 1000
