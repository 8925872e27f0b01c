"""Model signing with OpenSSF model-signing (elliptic-key mode, offline): sign a model directory, verify it.

The model is a directory of exactly the files it needs (for MNIST: model.safetensors and model.json); the
signature is a Sigstore bundle (a DSSE envelope over an in-toto statement listing each file's sha256) kept
beside the directory, never inside it. Keys arrive as PEM bytes (the DAG reads them from an Airflow
connection): the private key never touches a disk (an anonymous memory file where the OS has one), and
nothing here logs or returns it.

`verified_model` is the only way the pipeline opens a model it did not just write: it reads each file once
into memory, writes that copy to a private temporary directory, verifies the copy against the public key
and yields it, so the bytes that are loaded are the bytes that were verified (no swap between check and
load). Every failure is a ModelSignatureError naming the model and the signature.

Sources: https://github.com/sigstore/model-transparency (model_signing.signing.Config /
model_signing.verifying.Config, use_elliptic_key_signer / use_elliptic_key_verifier).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from include.mlops.gates import GateFailure

SIGNATURE_FILE = "model.sig"
# A model directory holds a few small files; anything larger than this is refused before it is read.
MAX_FILE_BYTES = 1 << 30
MAX_SIGNATURE_BYTES = 1 << 20


class ModelSignatureError(GateFailure):
    """A model's signature is missing, malformed, made with another key, or does not match its files."""


@dataclass(frozen=True)
class SignatureInfo:
    """Where a model's signature is and what identifies it (no key material)."""

    path: str
    sha256: str  # of the bundle file
    key_id: str  # sha256 of the public key's PEM (the bundle's public-key hint)
    files: dict[str, str]  # file name -> sha256, as signed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy for XCom, MLflow tags and the evidence pack."""
        return asdict(self)


@dataclass(frozen=True)
class VerifiedModel:
    """A private copy of a model directory whose files match their signature."""

    directory: Path
    signature: SignatureInfo

    def file(self, name: str) -> Path:
        """One of the verified files."""
        return self.directory / name


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new P-256 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    return (
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
        public_key_of(private),
    )


def public_key_of(private: Any) -> bytes:
    """The SubjectPublicKeyInfo PEM of a private key (an object, or PEM bytes)."""
    from cryptography.hazmat.primitives import serialization

    if isinstance(private, bytes | str):
        private = _load_private(private)
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public_pem: bytes | str) -> str:
    """The id model-signing records for a public key: sha256 of its canonical PEM."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(_as_bytes(public_pem))
    except (ValueError, TypeError) as exc:
        raise ModelSignatureError(f"the configured public key is not a PEM public key ({exc})") from None
    canonical = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(canonical).hexdigest()


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _load_private(private_pem: bytes | str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(_as_bytes(private_pem), None)
    except (ValueError, TypeError) as exc:
        # The message names the kind of problem only: never the key's bytes.
        raise ModelSignatureError(f"the signing key is not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ModelSignatureError("the signing key is not an elliptic-curve key (model-signing needs P-256/384/521)")
    return key


@contextlib.contextmanager
def _key_path(pem: bytes) -> Iterator[Path]:
    """A path model-signing can read the key from: an anonymous memory file, else an owner-only temp file."""
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fd = os.memfd_create("model-signing-key", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, pem)
            yield Path(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="model-signing-") as folder:  # mode 0700
        path = Path(folder) / "key.pem"
        path.touch(mode=0o600)
        path.write_bytes(pem)
        yield path


def _model_files(directory: Path) -> list[Path]:
    """The regular files directly in a model directory; symlinks, folders and special files are refused."""
    if directory.is_symlink() or not directory.is_dir():
        raise ModelSignatureError(f"{directory}: not a model directory")
    files = []
    for entry in sorted(directory.iterdir()):
        info = entry.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise ModelSignatureError(f"{entry}: only regular files may be in a model directory")
        files.append(entry)
    if not files:
        raise ModelSignatureError(f"{directory}: empty model directory")
    return files


def sign_model(model_dir: Path | str, signature_path: Path | str, private_key_pem: bytes | str) -> SignatureInfo:
    """Sign every file of `model_dir` into a Sigstore bundle at `signature_path` (outside the directory)."""
    from model_signing import hashing, signing

    model_dir, signature_path = Path(model_dir), Path(signature_path)
    if model_dir == signature_path.parent or model_dir in signature_path.parents:
        raise ModelSignatureError(f"{signature_path}: the signature must not be inside the model directory {model_dir}")
    files = _model_files(model_dir)
    private = _load_private(private_key_pem)
    pem = _as_bytes(private_key_pem)
    tmp = signature_path.with_name(f".{signature_path.name}.tmp")
    with _key_path(pem) as key_file:
        try:
            config = signing.Config().set_hashing_config(hashing.Config().set_ignored_paths(paths=[],
                                                                                            ignore_git_paths=False))
            config.use_elliptic_key_signer(private_key=key_file).sign(model_dir, tmp)
        except Exception as exc:  # noqa: BLE001 - the library raises many types; the key never appears in them
            tmp.unlink(missing_ok=True)
            raise ModelSignatureError(f"{model_dir}: signing failed ({type(exc).__name__}: {exc})") from None
    os.replace(tmp, signature_path)
    bundle = signature_path.read_bytes()
    return SignatureInfo(path=str(signature_path), sha256=hashlib.sha256(bundle).hexdigest(),
                         key_id=key_id(public_key_of(private)),
                         files={f.name: _sha256_file(f) for f in files})


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_regular(path: Path, limit: int) -> bytes:
    """A regular file's bytes (no FIFO, device or symlink), refused above `limit`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ModelSignatureError(f"{path}: missing") from None
    except OSError as exc:
        raise ModelSignatureError(f"{path}: cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ModelSignatureError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise ModelSignatureError(f"{path}: {info.st_size} bytes exceeds the {limit}-byte bound")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ModelSignatureError(f"{path}: grew past the {limit}-byte bound while being read")
    return data


@contextlib.contextmanager
def verified_model(model_dir: Path | str, signature_path: Path | str, public_key_pem: bytes | str | None
                   ) -> Iterator[VerifiedModel]:
    """Yield a private copy of `model_dir` whose files match the signature made with `public_key_pem`."""
    from model_signing import verifying

    model_dir, signature_path = Path(model_dir), Path(signature_path)
    if not public_key_pem:
        raise ModelSignatureError(f"{model_dir}: no public key is configured to verify {signature_path} with "
                                  "(Airflow connection mnist_model_signing, extra public_key)")
    expected_key = key_id(public_key_pem)
    bundle = _read_regular(signature_path, MAX_SIGNATURE_BYTES)
    files = {f.name: _read_regular(f, MAX_FILE_BYTES) for f in _model_files(model_dir)}
    with tempfile.TemporaryDirectory(prefix="verified-model-") as private:  # mode 0700: only this user
        copy = Path(private) / model_dir.name
        copy.mkdir()
        for name, data in files.items():
            (copy / name).write_bytes(data)
        (Path(private) / SIGNATURE_FILE).write_bytes(bundle)
        (Path(private) / "public.pem").write_bytes(_as_bytes(public_key_pem))
        try:
            config = verifying.Config().use_elliptic_key_verifier(public_key=Path(private) / "public.pem")
            config.verify(copy, Path(private) / SIGNATURE_FILE)
        except Exception as exc:  # noqa: BLE001 - parse errors, key mismatch, bad signature, manifest diff
            raise ModelSignatureError(f"{model_dir}: signature {signature_path} does not verify with key "
                                      f"{expected_key[:16]}: {type(exc).__name__}: {exc}") from None
        info = SignatureInfo(path=str(signature_path), sha256=hashlib.sha256(bundle).hexdigest(), key_id=expected_key,
                             files={name: hashlib.sha256(data).hexdigest() for name, data in files.items()})
        yield VerifiedModel(directory=copy, signature=info)


def verify_model(model_dir: Path | str, signature_path: Path | str, public_key_pem: bytes | str | None
                 ) -> SignatureInfo:
    """Check that `model_dir` matches its signature; ModelSignatureError when it does not."""
    with verified_model(model_dir, signature_path, public_key_pem) as model:
        return model.signature


def copy_verified(model: VerifiedModel, target_dir: Path, signature_target: Path) -> None:
    """Put a verified copy in a cache: files first, the signature last (a cache entry without one is incomplete)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    for entry in model.directory.iterdir():
        shutil.copyfile(entry, target_dir / entry.name)
    shutil.copyfile(model.directory.parent / SIGNATURE_FILE, signature_target)
