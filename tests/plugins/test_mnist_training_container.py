"""plugins/mnist_training_container.py: choosing the Docker path, the DockerOperator it builds, the training
image's entry point run with that operator's argv and env, and DockerOperator.execute through the docker SDK
against a Docker-Engine-API stub (tests/docker_engine_stub.py) whose containers are local processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from docker_engine_stub import DockerEngineStub, image_from_dockerfile, image_id
from mnist_training_container import DEFAULT_IMAGE, ContainerTraining

from include.mnist.container import container_command
from include.mnist.data import read_checksums

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "include" / "data" / "mnist"
TINY = {"epochs": 1, "batch_size": 64, "max_train_samples": 256, "seed": 3, "preset": "fast"}
SECRET = "s3cr3t-token-that-must-stay-on-the-worker"


def training_image_here() -> dict:
    """The training image as the stub runs it: its Dockerfile's ENTRYPOINT, ENV and WORKDIR, in this checkout."""
    image = image_from_dockerfile(REPO_ROOT / "docker" / "training.Dockerfile", "/opt/mlops", REPO_ROOT)
    assert image["Entrypoint"] == [sys.executable, "-m", "include.mnist.container"]
    return image


def in_process_keys() -> set[str]:
    """The keys of train_model's dict before the scan: TrainResult's fields, config, container."""
    from dataclasses import fields

    from include.mnist.train import TrainResult

    return {f.name for f in fields(TrainResult)} | {"config", "container"}


@pytest.fixture
def engine():
    """The Docker-Engine-API stub on a short socket path (sun_path holds 108 bytes), serving the training image."""
    with tempfile.TemporaryDirectory(prefix="dk") as folder:
        with DockerEngineStub(Path(folder) / "docker.sock", {DEFAULT_IMAGE: training_image_here()}) as stub:
            yield stub


def test_default_image_is_the_tag_compose_builds() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    assert compose["services"]["mnist-training-image"]["image"] == DEFAULT_IMAGE
    assert compose["x-airflow-common"]["environment"]["MLOPS_TRAINING_IMAGE"] == DEFAULT_IMAGE


@pytest.mark.parametrize(
    ("params", "variables", "enabled"),
    [
        ({}, {}, False),
        ({"train_in_container": None}, {"mnist_train_in_container": "true"}, True),
        ({"train_in_container": False}, {"mnist_train_in_container": "true"}, False),
        ({"train_in_container": True}, {}, True),
        ({"train_in_container": None}, {"mnist_train_in_container": "no"}, False),
    ],
)
def test_param_then_variable_then_in_process(params: dict, variables: dict, enabled: bool) -> None:
    assert (ContainerTraining.resolve(params, variables.get, env={}) is not None) is enabled


def test_settings_come_from_params_then_variables_then_environment() -> None:
    env = {"MLOPS_TRAINING_IMAGE": "env/image:1", "MLOPS_TRAINING_MOUNTS": '{"vol": "/state"}',
           "MLOPS_TRAINING_DATA_DIR": "/opt/mlops/include/data/mnist"}
    on = {"train_in_container": True}
    assert ContainerTraining.resolve(on, {}.get, env={}) == ContainerTraining()
    from_env = ContainerTraining.resolve(on, {}.get, env=env)
    assert (from_env.image, from_env.mounts, from_env.data_dir) == ("env/image:1", {"vol": "/state"}, env[
        "MLOPS_TRAINING_DATA_DIR"])
    engine = {"docker_url": "tcp://docker:2376", "docker_conn_id": "registry", "force_pull": "true", "gpus": 2,
              "mounts": {}}
    variables = {"mnist_training_image": "var/image:2", "mnist_training_docker": json.dumps(engine)}
    from_vars = ContainerTraining.resolve(on, variables.get, env=env)
    assert from_vars == ContainerTraining(image="var/image:2", gpus=2, docker_url="tcp://docker:2376",
                                          docker_conn_id="registry", force_pull=True, mounts={},
                                          data_dir=env["MLOPS_TRAINING_DATA_DIR"])
    from_params = ContainerTraining.resolve({**on, "training_image": "param/image:3", "gpus": 0}, variables.get)
    assert (from_params.image, from_params.gpus) == ("param/image:3", 0)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"mnist_train_in_container": "maybe"}, "mnist_train_in_container must be true or false"),
        ({"mnist_train_in_container": "true", "mnist_training_docker": '{"network": "host"}'}, "takes a JSON"),
    ],
)
def test_bad_variables_fail_with_their_name(variables: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContainerTraining.resolve({}, variables.get, env={})


@pytest.mark.parametrize("gpus", [0, 1])
def test_operator_mounts_data_read_only_and_the_run_dir_read_write_with_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpus: int
) -> None:
    from docker.types import DeviceRequest

    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", json.dumps({"conn_type": "jfrog", "password": SECRET}))
    output = tmp_path / "runs" / "r1" / "model" / "model.safetensors"
    op = ContainerTraining(gpus=gpus).operator(config=TINY, data_dir=DATA_DIR, output=output)
    assert op.image == DEFAULT_IMAGE and op.task_id == "train_model_container"
    expected_config = {**TINY, "device": "cuda"} if gpus else TINY
    assert op.command == container_command(expected_config, DATA_DIR, output)
    assert [(m["Source"], m["Target"], m["Type"], m["ReadOnly"]) for m in op.mounts] == [
        (str(DATA_DIR), str(DATA_DIR), "bind", True),
        (str(output.parent), str(output.parent), "bind", False),
    ]
    if gpus:
        assert op.device_requests == [DeviceRequest(count=1, capabilities=[["gpu"]])]
    else:
        assert op.device_requests is None
    assert op.network_mode == "none" and op.auto_remove == "force" and op.mount_tmp_dir is False
    assert op.environment == {} and op._private_environment == {} and op.env_file is None
    assert op.user == f"{os.getuid()}:{os.getgid()}"
    assert op.docker_url == os.environ.get("DOCKER_HOST", "unix://var/run/docker.sock")
    assert SECRET not in json.dumps([op.command, op.environment, op.user, op.image])


def test_a_containerised_worker_mounts_the_shared_volume_and_uses_the_images_data(tmp_path: Path) -> None:
    state = Path("/opt/mlops/state")
    settings = ContainerTraining(mounts={"mnist-mlops-state": str(state)}, data_dir="/opt/mlops/include/data/mnist")
    op = settings.operator(config=TINY, data_dir=Path("/opt/airflow/include/data/mnist"),
                           output=state / "runs" / "r1" / "model" / "model.safetensors")
    assert [(m["Source"], m["Target"], m["Type"]) for m in op.mounts] == [
        ("mnist-mlops-state", str(state), "volume")]
    assert op.command[op.command.index("--data-dir") + 1] == "/opt/mlops/include/data/mnist"


def test_entry_point_run_with_the_operators_argv_and_env_returns_train_models_dict(tmp_path: Path) -> None:
    """(a) What the image runs: its ENTRYPOINT plus the operator's command, with its ENV plus the operator's."""
    from include.mlops.model_scan import assert_safe_model_file

    output = tmp_path / "run" / "model" / "model.safetensors"
    output.parent.mkdir(parents=True)
    settings = ContainerTraining()
    op = settings.operator(config=TINY, data_dir=DATA_DIR, output=output)
    image = training_image_here()
    env = dict(item.split("=", 1) for item in image["Env"]) | op.environment
    proc = subprocess.run([*image["Entrypoint"], *op.command], env=env, cwd=image["WorkingDir"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = settings.result(proc.stdout.splitlines(), output=output, digests=read_checksums(DATA_DIR))
    assert set(trained) == in_process_keys()
    assert trained["model_path"] == str(output) and trained["num_train_samples"] == 256
    assert trained["sha256"] == assert_safe_model_file(output).sha256
    assert trained["config"]["seed"] == 3 and trained["container"]["image"] == DEFAULT_IMAGE
    # The image's own inventory comes back with the result, and generate_sbom turns it into the SBOM.
    from include.mlops.sbom import generate_sbom
    from include.settings import PipelineSettings

    packages = trained["container"]["packages"]
    assert any(p.lower().startswith("torch==") for p in packages)
    sbom = generate_sbom("unused", tmp_path / "sbom.cdx.json", PipelineSettings.from_env().sbom_tool,
                         packages=packages, requires=trained["container"]["requires"])
    doc = json.loads(Path(sbom.path).read_text())
    assert sorted(f"{c['name']}=={c['version']}" for c in doc["components"]) == sorted(packages)
    # ...with the dependency graph the image reported, so the ML-BOM's runtime closure reaches torch's deps
    from include.mlops.mlbom import runtime_closure

    names = {c["bom-ref"]: c["name"].lower() for c in doc["components"]}
    closure = {names[ref] for ref in runtime_closure(doc, ["torch"])}
    assert {"torch", "filelock", "sympy", "typing-extensions"} <= {n.replace("_", "-") for n in closure}


def test_result_refuses_a_foreign_path_or_unvalidated_data(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    digests = read_checksums(DATA_DIR)
    line = "MNIST_TRAIN_RESULT " + json.dumps({
        "result": {"model_path": str(tmp_path / "model" / "model.safetensors"), "sha256": "00",
                   "data_digests": {"train-images-idx3-ubyte.gz": "ff" * 32}},
        "config": {}, "python": "/usr/local/bin/python"})
    with pytest.raises(AirflowFailException, match="not /elsewhere/model.pt"):
        ContainerTraining().result([line], output=Path("/elsewhere/model.pt"), digests=digests)
    with pytest.raises(AirflowFailException, match="train-images-idx3-ubyte.gz"):
        ContainerTraining().result([line], output=tmp_path / "model" / "model.safetensors", digests=digests)
    silent = line.replace('{"train-images-idx3-ubyte.gz": "' + "ff" * 32 + '"}', "{}")
    assert silent != line  # a container that reports no data digests must not pass either
    with pytest.raises(AirflowFailException, match="train-labels-idx1-ubyte.gz"):
        ContainerTraining().result([silent], output=tmp_path / "model" / "model.safetensors", digests=digests)


def test_docker_operator_trains_through_the_engine_api(tmp_path: Path, engine: DockerEngineStub) -> None:
    """(c) The real DockerOperator and docker SDK: pull when missing, create, attach, start, wait, remove."""
    from include.mlops.model_scan import assert_safe_model_file

    output = tmp_path / "runs" / "r1" / "model" / "model.safetensors"
    settings = ContainerTraining(docker_url=engine.url)
    trained = settings.train({}, config=TINY, data_dir=DATA_DIR, output=output, digests=read_checksums(DATA_DIR))
    assert set(trained) == in_process_keys() and trained["num_train_samples"] == 256
    assert trained["sha256"] == assert_safe_model_file(output).sha256
    assert trained["container"]["image_id"] == image_id(DEFAULT_IMAGE)  # the exact image, not only its tag
    assert engine.pulled == [DEFAULT_IMAGE]
    (created,) = engine.created
    assert created["Image"] == DEFAULT_IMAGE and created["Cmd"] == container_command(TINY, DATA_DIR, output)
    assert created.get("Env") in (None, []) and created["User"] == f"{os.getuid()}:{os.getgid()}"
    host = created["HostConfig"]
    assert host["NetworkMode"] == "none" and not host.get("DeviceRequests")
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in host["Mounts"]] == [
        (str(DATA_DIR), str(DATA_DIR), True), (str(output.parent), str(output.parent), False)]
    assert len(engine.removed) == 1 and engine.containers == {}


def test_a_failing_container_fails_the_task_and_is_removed(tmp_path: Path, engine: DockerEngineStub) -> None:
    from airflow.providers.docker.exceptions import DockerContainerFailedException

    empty = tmp_path / "no-data"
    empty.mkdir()
    settings = ContainerTraining(docker_url=engine.url, data_dir=str(empty))
    with pytest.raises(DockerContainerFailedException, match="StatusCode.: 1"):
        settings.train({}, config=TINY, data_dir=DATA_DIR, output=tmp_path / "run" / "model" / "model.safetensors", digests={})
    assert len(engine.removed) == 1 and engine.containers == {}
