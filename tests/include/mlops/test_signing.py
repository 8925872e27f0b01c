"""Model signing (OpenSSF model-signing, elliptic key): a signed model verifies; any change or wrong key refuses."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from include.mlops.gates import GateFailure
from include.mlops.signing import (
    ModelSignatureError,
    generate_key_pair,
    key_id,
    sign_model,
    verified_model,
    verify_model,
)


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[bytes, bytes]) -> tuple[Path, Path]:
    from include.mnist.model import build_model
    from include.mnist.train import save_model

    model_dir = tmp_path / "model"
    save_model(build_model(), model_dir / "model.safetensors", "fast")
    signature = tmp_path / "model.sig"
    sign_model(model_dir, signature, keys[0])
    return model_dir, signature


def test_signed_model_verifies_and_loads_from_the_verified_copy(signed, keys):
    from include.mnist.train import load_model

    model_dir, signature = signed
    bundle = json.loads(signature.read_text())
    assert bundle["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == key_id(keys[1])
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    with verified_model(model_dir, signature, keys[1]) as verified:
        assert verified.directory != model_dir and sorted(os.listdir(verified.directory)) == [
            "model.json", "model.safetensors"]
        assert verified.signature.key_id == key_id(keys[1])
        assert load_model(verified.directory).training is False
        private_copy = verified.directory
    assert not private_copy.exists()  # the private copy goes away with the context


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d, s: _flip_last_byte(d / "model.safetensors"), r"Hash mismatch for \\*'model\.safetensors"),
        (lambda d, s: (d / "model.json").write_text((d / "model.json").read_text().replace("fast", "quality")),
         r"Hash mismatch for \\*'model\.json"),
        (lambda d, s: (d / "extra.bin").write_bytes(b"x"), "Extra files"),
        (lambda d, s: (d / "model.json").unlink(), "Missing files"),
        (lambda d, s: s.unlink(), "model.sig: missing"),
        (lambda d, s: s.write_text("{}"), "does not verify"),
        (lambda d, s: s.write_text("not json"), "does not verify"),
        (lambda d, s: _swap_payload(s), "does not verify"),
        (lambda d, s: (d / "link").symlink_to(d / "model.json"), "only regular files"),
    ],
)
def test_any_change_is_refused(signed, keys, tamper, message):
    model_dir, signature = signed
    tamper(model_dir, signature)
    with pytest.raises(ModelSignatureError, match=message) as info:
        verify_model(model_dir, signature, keys[1])
    assert isinstance(info.value, GateFailure)  # the DAG fails such a task without retrying


def _swap_payload(signature: Path) -> None:
    """Keep the signature, change the signed statement: the DSSE signature no longer matches."""
    import base64

    bundle = json.loads(signature.read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    signature.write_text(json.dumps(bundle))


def test_wrong_or_missing_public_key_is_refused(signed):
    model_dir, signature = signed
    _, other_public = generate_key_pair()
    with pytest.raises(ModelSignatureError, match="Key mismatch"):
        verify_model(model_dir, signature, other_public)
    with pytest.raises(ModelSignatureError, match="no public key is configured"):
        verify_model(model_dir, signature, None)
    with pytest.raises(ModelSignatureError, match="not a PEM public key"):
        verify_model(model_dir, signature, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_a_signature_by_another_key_with_our_key_id_is_refused(signed, keys, tmp_path):
    """Re-sign the same files with another key, then claim our key's id: the signature check still fails."""
    model_dir, signature = signed
    other_private, _ = generate_key_pair()
    forged = tmp_path / "forged.sig"
    sign_model(model_dir, forged, other_private)
    bundle = json.loads(forged.read_text())
    bundle["verificationMaterial"]["publicKey"]["hint"] = key_id(keys[1])
    forged.write_text(json.dumps(bundle))
    with pytest.raises(ModelSignatureError, match="does not verify"):
        verify_model(model_dir, forged, keys[1])


def test_signing_refuses_bad_keys_and_layouts_without_leaking_the_key(tmp_path, signed, keys):
    model_dir, _ = signed
    with pytest.raises(ModelSignatureError, match="inside the model directory"):
        sign_model(model_dir, model_dir / "model.sig", keys[0])
    garbage = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ModelSignatureError) as info:
        sign_model(model_dir, tmp_path / "x.sig", garbage)
    assert "c2VjcmV0" not in str(info.value) and "BEGIN" not in str(info.value)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ModelSignatureError, match="not an elliptic-curve key"):
        sign_model(model_dir, tmp_path / "x.sig", ed)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelSignatureError, match="empty model directory"):
        sign_model(empty, tmp_path / "e.sig", keys[0])
    assert not (tmp_path / "x.sig").exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_fifo_beside_the_model_does_not_hang_verification(signed, keys):
    model_dir, signature = signed
    signature.unlink()
    os.mkfifo(signature)
    with pytest.raises(ModelSignatureError, match="not a regular file"):
        verify_model(model_dir, signature, keys[1])


def test_copied_model_still_verifies(signed, keys, tmp_path):
    """Signatures bind file names and bytes, not paths: a download to another folder verifies."""
    model_dir, signature = signed
    elsewhere = tmp_path / "downloaded" / "model"
    shutil.copytree(model_dir, elsewhere)
    shutil.copyfile(signature, elsewhere.parent / "model.sig")
    assert verify_model(elsewhere, elsewhere.parent / "model.sig", keys[1]).files.keys() == {
        "model.json", "model.safetensors"}
