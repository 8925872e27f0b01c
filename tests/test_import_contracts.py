"""The layering holds: import-linter checks the contracts in pyproject.toml, and does catch a broken one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTRACT_IDS = {"ops-independent-of-model", "include-without-airflow", "provider-standalone"}


def _lint_imports(config: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("lint-imports", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert tool, "lint-imports (import-linter) is not installed next to this interpreter"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "plugins")])}
    return subprocess.run([tool, "--config", str(config), "--no-cache"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_project_contracts_are_declared_and_kept():
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    assert set(contracts) == CONTRACT_IDS
    assert contracts["ops-independent-of-model"]["forbidden_modules"] == ["include.mnist"]
    assert set(contracts["include-without-airflow"]["forbidden_modules"]) == {"airflow", "jfrog_provider", "devtools"}
    assert contracts["include-without-airflow"]["ignore_imports"] == ["include.assets -> airflow"]
    proc = _lint_imports(REPO_ROOT / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("include.mnist", "include.mlops"),  # the model package does use the ops package
        ("include.mnist", "torch"),  # an external import inside a function body counts too
    ],
)
def test_a_contract_the_code_breaks_is_reported(tmp_path, source, forbidden):
    config = tmp_path / "broken.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["include", "jfrog_provider", "devtools"]\n'
        "include_external_packages = true\n\n[[tool.importlinter.contracts]]\n"
        f'name = "deliberately broken"\ntype = "forbidden"\nsource_modules = ["{source}"]\n'
        f'forbidden_modules = ["{forbidden}"]\n'
    )
    proc = _lint_imports(config)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "0 kept, 1 broken" in proc.stdout and f"{source}." in proc.stdout, proc.stdout[-2000:]
