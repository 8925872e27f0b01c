"""Containerised training: the training image's entry point, and the launcher a worker uses to run it.

Inside the image (docker/training.Dockerfile), `python -m include.mnist.container --config JSON --output PATH`
trains, scans the file it wrote and prints one JSON line with the TrainResult and the scan. On the worker,
`train_in_container(...)` runs that image through the Docker engine (the `docker` SDK that the Docker provider
installs) with the run directory's volume mounted at the same path, optionally with a GPU device request, and
returns the same dict. No Airflow import here (style.md): the DAG task decides which path to take.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

RESULT_PREFIX = "MNIST_TRAIN_RESULT "


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
                                      "config": config.to_dict(), "python": sys.executable}), flush=True)
    return 0


def parse_result(logs: str) -> dict:
    """The result line the container printed last; ValueError when there is none."""
    lines = [line for line in logs.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError("the training container printed no result line")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def train_in_container(
    *,
    image: str,
    config: Mapping[str, object],
    data_dir: Path,
    output: Path,
    mounts: Mapping[str, str],
    gpus: int = 0,
    docker_url: str = "unix://var/run/docker.sock",
    log=print,
) -> dict:
    """Run the training image to completion and return its result; RuntimeError with the logs when it fails.

    `mounts` maps a Docker volume name or host path to the path it has inside the worker, so the container
    sees the data and the run directory where the worker does (e.g. {"mnist-mlops_mlops-state": "/opt/mlops/state"}).
    """
    import docker  # the Docker SDK, installed with apache-airflow-providers-docker

    client = docker.DockerClient(base_url=docker_url)
    device_requests = [docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]])] if gpus else None
    container = client.containers.run(
        image,
        command=["--config", json.dumps(dict(config)), "--data-dir", str(data_dir), "--output", str(output)],
        volumes={source: {"bind": target, "mode": "rw"} for source, target in mounts.items()},
        device_requests=device_requests,
        network_disabled=True,  # training needs no network: data and output are mounted
        detach=True,
    )
    try:
        for chunk in container.logs(stream=True, follow=True):
            log(chunk.decode(errors="replace").rstrip())
        status = container.wait()
        logs = container.logs().decode(errors="replace")
        if status.get("StatusCode") != 0:
            raise RuntimeError(f"training container {image} exited {status.get('StatusCode')}:\n{logs[-4000:]}")
        return parse_result(logs)
    finally:
        container.remove(force=True)


if __name__ == "__main__":
    sys.exit(main())
