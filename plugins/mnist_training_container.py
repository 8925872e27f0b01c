"""The Docker path of train_model: the training image run through the Docker provider's DockerOperator.

`ContainerTraining.resolve(params, variable)` says whether train_model trains in the image (Param, then
Variable `mnist_train_in_container`, else no) and how: image, GPUs, engine URL, registry connection, pull
policy and mounts, from Params, the Variables `mnist_training_image` and `mnist_training_docker` (JSON), the
environment (docker/compose.training.yaml), then defaults. `train(...)` builds the DockerOperator and runs
it; the worker then checks the container's claims (model path, training data digests) and train_model scans
the model file itself. The Docker provider is imported only when a container runs: DAG parsing stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mnist.container import container_command, parse_result

if TYPE_CHECKING:
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import Mount

# The tag docker-compose.yaml builds docker/training.Dockerfile as (tests/plugins check that they agree).
DEFAULT_IMAGE = "mnist-mlops-training:0.1.0"
ENABLE_VARIABLE = "mnist_train_in_container"
IMAGE_VARIABLE = "mnist_training_image"
ENGINE_VARIABLE = "mnist_training_docker"
ENGINE_KEYS = frozenset({"docker_url", "docker_conn_id", "force_pull", "gpus", "mounts", "data_dir"})
# The container gets no variable from the worker's environment (where connections and tokens live): its
# arguments and the image's own ENV are all training needs.
CONTAINER_ENVIRONMENT: dict[str, str] = {}


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off", ""}:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class ContainerTraining:
    """How train_model runs the training image: image, GPUs, Docker engine, pull policy and mounts."""

    image: str = DEFAULT_IMAGE
    gpus: int = 0
    docker_url: str | None = None  # None: DOCKER_HOST, else unix://var/run/docker.sock (DockerOperator's rule)
    docker_conn_id: str | None = None  # a `docker` registry connection, for pulling from a private registry
    force_pull: bool = False  # False: pull only when the engine lacks the tag (a locally built tag has no registry)
    # Docker volume name (or host path) -> where the worker sees it, for a worker that runs in a container
    # itself (compose): the training container mounts the same volume at the same path.
    mounts: Mapping[str, str] = field(default_factory=dict)
    data_dir: str | None = None  # the data as the container sees it (the image's copy); None: bind the worker's

    def __post_init__(self) -> None:
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 0:
            raise ValueError(f"gpus must be an int >= 0, got {self.gpus!r}")
        if not self.image:
            raise ValueError("the training image must be named")

    @classmethod
    def resolve(
        cls,
        params: Mapping[str, Any],
        variable: Callable[[str], Any],
        env: Mapping[str, str] | None = None,
    ) -> ContainerTraining | None:
        """None for the in-process path; else the settings: Params, then Variables, then the environment."""
        env = os.environ if env is None else env
        enabled = params.get("train_in_container")
        if enabled is None:
            enabled = _as_bool(ENABLE_VARIABLE, variable(ENABLE_VARIABLE) or False)
        if not enabled:
            return None
        raw = variable(ENGINE_VARIABLE)
        engine = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        if not isinstance(engine, dict) or not set(engine) <= ENGINE_KEYS:
            raise ValueError(f"Variable {ENGINE_VARIABLE} takes a JSON object with keys {sorted(ENGINE_KEYS)}")
        mounts = engine.get("mounts")
        if mounts is None:
            mounts = json.loads(env.get("MLOPS_TRAINING_MOUNTS") or "{}")
        gpus = params.get("gpus")
        return cls(
            image=params.get("training_image") or variable(IMAGE_VARIABLE) or env.get("MLOPS_TRAINING_IMAGE")
            or DEFAULT_IMAGE,
            gpus=engine.get("gpus", 0) if gpus is None else gpus,
            docker_url=engine.get("docker_url"),
            docker_conn_id=engine.get("docker_conn_id"),
            force_pull=_as_bool(f"{ENGINE_VARIABLE}.force_pull", engine.get("force_pull", False)),
            mounts=dict(mounts),
            data_dir=engine.get("data_dir") or env.get("MLOPS_TRAINING_DATA_DIR") or None,
        )

    def container_mounts(self, data_dir: Path, run_dir: Path) -> list[Mount]:
        """The configured volumes, then the data (read-only) and the run directory bound at the worker's paths."""
        from docker.types import Mount

        mounts = [
            Mount(target=target, source=source, type="bind" if source.startswith("/") else "volume")
            for source, target in self.mounts.items()
        ]

        def covered(path: Path) -> bool:
            return any(path == Path(t) or Path(t) in path.parents for t in self.mounts.values())

        if self.data_dir is None and not covered(data_dir):
            mounts.append(Mount(target=str(data_dir), source=str(data_dir), type="bind", read_only=True))
        if not covered(run_dir):
            mounts.append(Mount(target=str(run_dir), source=str(run_dir), type="bind"))
        return mounts

    def operator(self, *, config: Mapping[str, object], data_dir: Path, output: Path) -> DockerOperator:
        """The DockerOperator that trains `config` on `data_dir` into `output` inside the training image."""
        from airflow.providers.docker.operators.docker import DockerOperator
        from docker.types import DeviceRequest

        if self.gpus and config.get("device", "auto") == "auto":
            # GPUs were asked for: fail in the container when none is visible rather than train on its CPU.
            config = {**config, "device": "cuda"}
        return DockerOperator(
            task_id="train_model_container",
            image=self.image,
            command=container_command(config, Path(self.data_dir) if self.data_dir else data_dir, output),
            docker_url=self.docker_url,
            docker_conn_id=self.docker_conn_id,
            force_pull=self.force_pull,
            mounts=self.container_mounts(data_dir, output.parent),
            # The provider's scratch mount is a worker path, which a containerised worker cannot bind.
            mount_tmp_dir=False,
            network_mode="none",  # training reads mounted data and writes a mounted file: no network
            environment=dict(CONTAINER_ENVIRONMENT),
            # The worker's uid and gid, so the model file in the shared run directory belongs to the worker.
            user=f"{os.getuid()}:{os.getgid()}",
            device_requests=[DeviceRequest(count=self.gpus, capabilities=[["gpu"]])] if self.gpus else None,
            auto_remove="force",
            do_xcom_push=True,
            xcom_all=True,  # every line: the result line need not be the last one the container printed
        )

    def train(
        self, context: Mapping[str, Any], *, config: Mapping[str, object], data_dir: Path, output: Path,
        digests: Mapping[str, str],
    ) -> dict:
        """Run the training image to completion and return its checked result."""
        output.parent.mkdir(parents=True, exist_ok=True)  # a bind mount's source must exist
        # Run from inside train_model so the task id, Params and XCom stay those of the in-process path;
        # Airflow logs that a nested operator ran (allow_nested_operators, on by default).
        operator = self.operator(config=config, data_dir=data_dir, output=output)
        lines = operator.execute(context)
        trained = self.result(lines if isinstance(lines, list) else [lines or ""], output=output, digests=digests)
        # The tag is mutable; the image id names the exact image that trained, for the lineage.
        trained["container"]["image_id"] = operator.cli.inspect_image(self.image)["Id"]
        return trained

    def result(self, lines: list[str], *, output: Path, digests: Mapping[str, str]) -> dict:
        """The container's result line as train_model's dict, once it names `output` and the validated data."""
        from airflow.sdk.exceptions import AirflowFailException

        reported = parse_result("\n".join(lines))
        result = reported["result"]
        if result["model_path"] != str(output):
            raise AirflowFailException(f"the training container wrote {result['model_path']}, not {output}")
        # The container may train on its own copy of MNIST (the image's): it must be the one validate_data read.
        trained_on = result["data_digests"]
        # Every file it reports must be one validate_data checked, and the training split must be among them.
        required = {k for k in digests if k.startswith("train-")} or set(digests)
        differing = sorted(k for k in set(trained_on) | required if trained_on.get(k) != digests.get(k))
        if differing:
            raise AirflowFailException(
                f"the training container trained on {differing} with digests that validate_data did not see"
            )
        return {
            **result,
            "config": reported["config"],
            "container": {"image": self.image, "gpus": self.gpus, "python": reported["python"],
                          "packages": reported.get("packages"), "requires": reported.get("requires")},
        }
