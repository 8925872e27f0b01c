"""deploy/jfrog_release.py, the release workflow's step, run as the workflow runs it (a subprocess with the
connection in AIRFLOW_CONN_JFROG_DEFAULT) against the local JFrog-compatible server and a local MLflow: a clean
release publishes the model, SBOM, ML-BOM and build-info and passes the Xray gate; a planted Critical CVE
blocks it with exit status 1; a log that names another model file is refused before anything is uploaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    model, log = folder / "model.pt", folder / "train.log"
    proc = subprocess.run([sys.executable, "-m", "include.mnist.container",
                           *container_command(TINY, DATA_DIR, model)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    log.write_text(proc.stdout)
    return model, log


def run_release(tmp_path: Path, model: Path, log: Path, number: str) -> subprocess.CompletedProcess:
    args = [sys.executable, str(SCRIPT), "--train-log", str(log), "--model", str(model), "--run-id", f"ci-{number}",
            "--build-number", number, "--run-url", f"https://github.example/acme/mnist/actions/runs/{number}",
            "--vcs-url", "https://github.example/acme/mnist", "--vcs-revision", "0" * 40,
            "--max-test-samples", "500", "--out-dir", str(tmp_path / f"release-{number}")]
    # The workflow's environment: the connection and MLflow from variables, nothing of the test's Python path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False, env=env)


def test_release_publishes_everything_and_the_gate_decides(tmp_path: Path, trained: tuple[Path, Path],
                                                           jfrog_conn: str, jfrog_server, mlops_home: Path) -> None:
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    model, log = trained
    clean = run_release(tmp_path, model, log, "7")
    assert clean.returncode == 0, clean.stdout + clean.stderr[-4000:]
    assert "Xray gate passed" in clean.stdout
    summary = json.loads((tmp_path / "release-7" / "release.json").read_text())
    hook = ArtifactoryHook()
    version = str(summary["registered"]["version"])
    model_path = f"mnist-cnn/{version}/model.pt"
    props = hook.get_item_properties("ml-models-local", model_path)
    assert props["model.version"] == [version] and props["mlflow.run_id"] == [summary["registered"]["run_id"]]
    assert props["ci.run_url"] == ["https://github.example/acme/mnist/actions/runs/7"]
    assert hook.get_file_info("ml-models-local", model_path)["checksums"]["sha256"] == summary["model"]["sha256"]
    for name in ("sbom.cdx.json", "mlbom.cdx.json"):
        assert hook.get_file_info("ml-models-local", f"mnist-cnn/{version}/{name}")
    build = hook.get_build_info("mnist-training", "7")
    paths = {a["path"] for a in build["modules"][0]["artifacts"]}
    assert paths == {model_path, f"mnist-cnn/{version}/sbom.cdx.json", f"mnist-cnn/{version}/mlbom.cdx.json"}
    assert build["vcs"][0]["revision"] == "0" * 40
    assert summary["xray"]["passed"] is True

    jfrog_server.plant_vulnerabilities([CRITICAL_TORCH])
    blocked = run_release(tmp_path, model, log, "8")
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr[-4000:]
    assert "Xray gate blocked the release" in blocked.stderr and "CVE-2099-4343" in blocked.stderr
    # Blocked after publishing, as in the DAG: the model and its evidence stay in the staging repository.
    assert hook.get_build_info("mnist-training", "8")


def test_a_log_for_another_model_file_is_refused(tmp_path: Path, trained: tuple[Path, Path],
                                                 jfrog_conn: str, jfrog_server, mlops_home: Path) -> None:
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    model, log = trained
    other = tmp_path / "other.pt"
    other.write_bytes(model.read_bytes())
    refused = run_release(tmp_path, other, log, "9")
    assert refused.returncode == 2, refused.stdout + refused.stderr[-4000:]
    assert f"not {other}" in refused.stderr
    assert ArtifactoryHook().get_build_info("mnist-training", "9") is None
