"""The training image's entry point: train, scan, print one result line.

Inside the image (docker/training.Dockerfile), `python -m include.mnist.container --config JSON --data-dir D
--output PATH` trains, scans the file it wrote and prints one `MNIST_TRAIN_RESULT {json}` line with the
TrainResult, the scan and the resolved config. The worker starts the image through the Docker provider
(plugins/mnist_training_container.py) with `container_command(...)` as the command and reads the line back
with `parse_result`. No Airflow import here: include/ is plain Python.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULT_PREFIX = "MNIST_TRAIN_RESULT "


def container_command(config: Mapping[str, object], data_dir: Path | str, output: Path | str) -> list[str]:
    """The arguments `main` takes, as the container's command (the image's ENTRYPOINT runs this module)."""
    config_json = json.dumps(dict(config), sort_keys=True)
    return ["--config", config_json, "--data-dir", str(data_dir), "--output", str(output)]


def main(argv: Sequence[str] | None = None) -> int:
    """Train in this process (inside the training image) and print the result as one JSON line."""
    from include.mlops.model_scan import assert_safe_model_file
    from include.mnist.train import TrainConfig, train_model

    parser = argparse.ArgumentParser(description="Train the MNIST CNN (the training image's entry point).")
    parser.add_argument("--config", required=True, help="TrainConfig fields as JSON")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    config = TrainConfig.from_params(json.loads(args.config))
    result = train_model(config, args.data_dir, args.output, log=print)
    scan = assert_safe_model_file(args.output)
    print(RESULT_PREFIX + json.dumps({"result": result.to_dict(), "model_scan": scan.to_dict(),
                                      "config": config.to_dict(), "python": sys.executable,
                                      "packages": installed_packages(),
                                      "requires": installed_requirements()}), flush=True)
    return 0


def _installed() -> dict[str, Any]:
    """Normalised name -> distribution; a broken .dist-info has no name; first on sys.path wins, as for imports."""
    from importlib.metadata import distributions

    from include.mlops.sbom import normalize_name

    found: dict[str, Any] = {}
    for dist in distributions():
        if dist.metadata["Name"]:
            found.setdefault(normalize_name(dist.metadata["Name"]), dist)
    return found


def installed_packages() -> list[str]:
    """`name==version` of every distribution this interpreter sees: the image's inventory for its SBOM."""
    return sorted(f"{dist.metadata['Name']}=={dist.version}" for dist in _installed().values())


def installed_requirements() -> dict[str, list[str]]:
    """For each installed distribution, the installed ones it requires here (extras left out): the SBOM's graph."""
    from packaging.requirements import InvalidRequirement, Requirement

    from include.mlops.sbom import normalize_name

    installed = _installed()
    graph = {}
    for key, dist in installed.items():
        needs = set()
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue  # a malformed Requires-Dist line names nothing pip would have installed for it
            # A marker that is false here (an extra not asked for, another platform) installed nothing.
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = normalize_name(req.name)
            if dep in installed and dep != key:  # installed means the resolver picked it for this platform
                needs.add(dep)
        graph[key] = sorted(needs)
    return graph


def parse_result(logs: str) -> dict:
    """The last result line in the container's output; ValueError when there is none."""
    lines = [line for line in logs.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError("the training container printed no result line")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


if __name__ == "__main__":
    sys.exit(main())
