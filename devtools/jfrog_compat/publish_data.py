"""Publish a local MNIST data folder as a data version in Artifactory, as a data team's upload would (dev tool).

The files SHA256SUMS lists go up first and SHA256SUMS itself last: `mnist_data_arrival` waits for that file,
so a version is only seen once it is complete. Uses the `jfrog_default` Airflow connection.

    python -m devtools.jfrog_compat.publish_data --version 2026-12-01 [--source include/data/mnist]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from jfrog_provider.hooks.artifactory import ArtifactoryHook, DeployResult

from include.mnist.data import CHECKSUMS_FILE, read_checksums

REPO_ROOT = Path(__file__).resolve().parents[2]
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def publish_data_version(source: Path, version: str, *, repo: str = "mnist-data-local", path: str = "mnist",
                         hook: ArtifactoryHook | None = None) -> list[DeployResult]:
    """Deploy every file SHA256SUMS lists, then SHA256SUMS, to `<repo>/<path>/<version>/`."""
    if not _VERSION.fullmatch(version):
        raise ValueError(f"version {version!r}: use letters, digits, '.', '_' or '-' (one folder name)")
    hook = hook or ArtifactoryHook()
    names = [*sorted(read_checksums(Path(source))), CHECKSUMS_FILE]
    return [hook.deploy_artifact(Path(source) / name, repo, f"{path.strip('/')}/{version}/{name}") for name in names]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description="Publish an MNIST data version to Artifactory (dev tool).")
    ap.add_argument("--version", required=True, help="the data version, e.g. 2026-12-01")
    ap.add_argument("--source", type=Path, default=REPO_ROOT / "include" / "data" / "mnist")
    ap.add_argument("--repo", default="mnist-data-local")
    ap.add_argument("--path", default="mnist")
    args = ap.parse_args(argv)
    for result in publish_data_version(args.source, args.version, repo=args.repo, path=args.path):
        print(f"published {result.repo}/{result.path} sha256 {result.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
