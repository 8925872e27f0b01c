"""deploy/jfrog_release.py, the release workflow's step, run as the workflow runs it (a subprocess with the
connection in AIRFLOW_CONN_JFROG_DEFAULT and the signing key in MODEL_SIGNING_KEY) against the local
JFrog-compatible server and a local MLflow: a clean release signs the model and publishes it with its config,
its signature, the SBOM, the ML-BOM and the build-info and passes the Xray gate; a planted Critical CVE blocks
it with exit status 1; a log that names another model file, or no signing key, is refused before anything is
uploaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from include.mlops.signing import SIGNATURE_FILE, generate_key_pair, key_id, verify_model
from include.mnist.container import container_command

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "deploy" / "jfrog_release.py"
DATA_DIR = REPO_ROOT / "include" / "data" / "mnist"
TINY = {"epochs": 1, "batch_size": 64, "max_train_samples": 256, "seed": 5, "preset": "fast"}
CRITICAL_TORCH = {
    "component": "pypi://torch", "issue_id": "XRAY-990002", "severity": "Critical",
    "summary": "planted by the release test", "cves": [{"cve": "CVE-2099-4343", "cvss_v3_score": "9.8"}],
    "fixed_versions": ["[99.0.0]"],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model trained by the training image's entry point, and the log the workflow keeps of it."""
    folder = tmp_path_factory.mktemp("train")
    model, log = folder / "model" / "model.safetensors", folder / "train.log"
    proc = subprocess.run([sys.executable, "-m", "include.mnist.container",
                           *container_command(TINY, DATA_DIR, model)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    log.write_text(proc.stdout)
    return model, log


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    """A throw-away signing key pair (private PEM, public PEM)."""
    return generate_key_pair()


def run_release(tmp_path: Path, model: Path, log: Path, number: str, keys: dict[str, bytes]
                ) -> subprocess.CompletedProcess:
    args = [sys.executable, str(SCRIPT), "--train-log", str(log), "--model", str(model), "--run-id", f"ci-{number}",
            "--build-number", number, "--run-url", f"https://github.example/acme/mnist/actions/runs/{number}",
            "--vcs-url", "https://github.example/acme/mnist", "--vcs-revision", "0" * 40,
            "--max-test-samples", "500", "--out-dir", str(tmp_path / f"release-{number}")]
    # The workflow's environment: the connection, MLflow and the keys from variables and secrets, nothing of
    # the test's Python path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MODEL_SIGNING_KEY", "MODEL_SIGNING_PUBLIC_KEY")}
    env.update({name: pem.decode() for name, pem in keys.items()})
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False, env=env)


def test_release_signs_publishes_everything_and_the_gate_decides(
    tmp_path: Path, trained: tuple[Path, Path], keys: tuple[bytes, bytes], jfrog_conn: str, jfrog_server,
    mlops_home: Path,
) -> None:
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    model, log = trained
    private, public = keys
    clean = run_release(tmp_path, model, log, "7", {"MODEL_SIGNING_KEY": private})
    assert clean.returncode == 0, clean.stdout + clean.stderr[-4000:]
    assert "Xray gate passed" in clean.stdout
    # The private key stays out of the job's log.
    body = private.decode().splitlines()[1]
    assert body not in clean.stdout and body not in clean.stderr
    summary = json.loads((tmp_path / "release-7" / "release.json").read_text())
    hook = ArtifactoryHook()
    version = str(summary["registered"]["version"])
    folder = f"mnist-cnn/{version}"
    model_path = f"{folder}/model.safetensors"
    props = hook.get_item_properties("ml-models-local", model_path)
    assert props["model.version"] == [version] and props["mlflow.run_id"] == [summary["registered"]["run_id"]]
    assert props["ci.run_url"] == ["https://github.example/acme/mnist/actions/runs/7"]
    assert props["signature.key_id"] == [key_id(public)]
    assert hook.get_file_info("ml-models-local", model_path)["checksums"]["sha256"] == summary["model"]["sha256"]
    # The weights, config and signature downloaded from Artifactory verify with the public key.
    published = tmp_path / "published"
    for name in ("model.safetensors", "model.json"):
        hook.download_artifact("ml-models-local", f"{folder}/{name}", published / "model" / name)
    hook.download_artifact("ml-models-local", f"{folder}/{SIGNATURE_FILE}", published / SIGNATURE_FILE)
    verified = verify_model(published / "model", published / SIGNATURE_FILE, public)
    assert verified.files["model.safetensors"] == summary["model"]["sha256"]
    assert verified.key_id == summary["signature"]["key_id"] == key_id(public)
    build = hook.get_build_info("mnist-training", "7")
    paths = {a["path"] for a in build["modules"][0]["artifacts"]}
    assert paths == {model_path, f"{folder}/model.json", f"{folder}/{SIGNATURE_FILE}", f"{folder}/sbom.cdx.json",
                     f"{folder}/mlbom.cdx.json"}
    signed = {a["path"]: a["sha256"] for a in build["modules"][0]["artifacts"]}
    assert signed[f"{folder}/{SIGNATURE_FILE}"] == verified.sha256
    assert signed[f"{folder}/model.json"] == verified.files["model.json"]
    assert build["vcs"][0]["revision"] == "0" * 40
    assert summary["xray"]["passed"] is True

    jfrog_server.plant_vulnerabilities([CRITICAL_TORCH])
    blocked = run_release(tmp_path, model, log, "8", {"MODEL_SIGNING_KEY": private, "MODEL_SIGNING_PUBLIC_KEY": public})
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr[-4000:]
    assert "Xray gate blocked the release" in blocked.stderr and "CVE-2099-4343" in blocked.stderr
    # Blocked after publishing, as in the DAG: the model and its evidence stay in the staging repository.
    assert hook.get_build_info("mnist-training", "8")


def test_a_log_for_another_model_file_is_refused(tmp_path: Path, trained: tuple[Path, Path],
                                                 keys: tuple[bytes, bytes], jfrog_conn: str, jfrog_server,
                                                 mlops_home: Path) -> None:
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    model, log = trained
    other = tmp_path / "other" / "model.safetensors"
    shutil.copytree(model.parent, other.parent)
    refused = run_release(tmp_path, other, log, "9", {"MODEL_SIGNING_KEY": keys[0]})
    assert refused.returncode == 2, refused.stdout + refused.stderr[-4000:]
    assert f"not {other}" in refused.stderr
    assert not (tmp_path / SIGNATURE_FILE).exists()  # refused before signing
    assert ArtifactoryHook().get_build_info("mnist-training", "9") is None


def test_no_signing_key_or_a_foreign_public_key_is_refused(tmp_path: Path, trained: tuple[Path, Path],
                                                           keys: tuple[bytes, bytes], jfrog_conn: str,
                                                           jfrog_server, mlops_home: Path) -> None:
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    model, log = trained
    unsigned = run_release(tmp_path, model, log, "10", {})
    assert unsigned.returncode == 2, unsigned.stdout + unsigned.stderr[-4000:]
    assert "MODEL_SIGNING_KEY is not set" in unsigned.stderr
    foreign = run_release(tmp_path, model, log, "11", {"MODEL_SIGNING_KEY": keys[0],
                                                        "MODEL_SIGNING_PUBLIC_KEY": generate_key_pair()[1]})
    assert foreign.returncode == 2, foreign.stdout + foreign.stderr[-4000:]
    assert "MODEL_SIGNING_PUBLIC_KEY" in foreign.stderr and "is not the public key of MODEL_SIGNING_KEY" in foreign.stderr
    hook = ArtifactoryHook()
    assert hook.get_build_info("mnist-training", "10") is None and hook.get_build_info("mnist-training", "11") is None
