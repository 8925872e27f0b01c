"""The distributed path for real: scripts/celery_e2e.py runs mnist_training on CeleryExecutor with two workers
against the machine's PostgreSQL and Redis, SIGKILLs the worker running train_model and expects the retry on
the other worker to succeed without duplicate model versions or artifacts. Deselect with -m "not celery"."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "celery_e2e.py"
TIMEOUT_S = 540


@pytest.mark.celery
def test_celery_two_workers_survive_a_killed_worker(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--keep-logs", str(logs), "--timeout", "300"],
            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO_ROOT, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    except subprocess.TimeoutExpired as exc:  # the script's SIGTERM handler still stops what it started
        pytest.fail(f"celery_e2e.py ran past {TIMEOUT_S} s:\n{exc.stdout}")
    print(proc.stdout)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-5000:]}\nlogs: {sorted(logs.glob('*'))}"
    out = proc.stdout
    spread = re.search(r"tasks per worker: worker1: (\d+) .*; worker2: (\d+) ", out)
    assert spread and int(spread.group(1)) > 0 and int(spread.group(2)) > 0, out
    assert re.search(r"SIGKILLed worker\d", out), out
    assert re.search(r"kill recovery: lost task noticed [\d.]+ s after SIGKILL", out), out
    assert re.search(r"model versions \[1, 2\]; Artifactory ml-models-local: \['mnist-cnn/1', 'mnist-cnn/2'\]", out), out
    assert "PASS: Celery run" in out, out
