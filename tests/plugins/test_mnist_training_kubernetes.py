"""plugins/mnist_training_kubernetes.py: choosing the Kubernetes path, the pod KubernetesPodOperator would
create (built with no cluster and validated against the Kubernetes schemas in strict mode by kubernetes-validate),
and the pod's command run here with the pod's environment, read back as train_model's dict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient
from mnist_training_container import DEFAULT_IMAGE
from mnist_training_kubernetes import GPU_RESOURCE, LOG_NAME, KubernetesTraining

from include.mnist.data import read_checksums

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "include" / "data" / "mnist"
TINY = {"epochs": 1, "batch_size": 64, "max_train_samples": 256, "seed": 3, "preset": "fast"}
STATE = Path("/opt/mlops/state")
RUN_DIR = STATE / "runs" / "mnist_training" / "manual__2026-01-01"
RUN_OUTPUT = RUN_DIR / "model" / "model.safetensors"
WORKER_DATA = STATE / "data" / "mnist" / "v2"
K8S_VERSION = kubernetes_validate.latest_version()


def as_manifest(obj: Any) -> dict:
    """A kubernetes client model as the JSON the API server would receive."""
    return ApiClient().sanitize_for_serialization(obj)


def pod_for(settings: KubernetesTraining, config: dict | None = None, output: Path = RUN_OUTPUT,
            data_dir: Path = WORKER_DATA) -> dict:
    return as_manifest(settings.pod(None, config=config or TINY, data_dir=data_dir, output=output))


def enabled(variables: dict[str, Any] | None = None, **params: Any) -> KubernetesTraining:
    found = KubernetesTraining.resolve({"train_on_kubernetes": True, **params}, (variables or {}).get, env={})
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("params", "variables", "on"),
    [
        ({}, {}, False),
        ({"train_on_kubernetes": None}, {"mnist_train_on_kubernetes": "true"}, True),
        ({"train_on_kubernetes": False}, {"mnist_train_on_kubernetes": "true"}, False),
        ({"train_on_kubernetes": True}, {}, True),
        ({"train_on_kubernetes": None}, {"mnist_train_on_kubernetes": "off"}, False),
    ],
)
def test_param_then_variable_then_off(params: dict, variables: dict, on: bool) -> None:
    assert (KubernetesTraining.resolve(params, variables.get, env={}) is not None) is on


def test_settings_come_from_params_then_variables_then_environment() -> None:
    variables = {"mnist_training_kubernetes": json.dumps({
        "namespace": "mlops-training", "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"cpu": "8", "memory": "16Gi"}, "gpus": 2, "node_selector": {"pool": "gpu"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "data_pvc": "mnist-data"}), "mnist_training_image": "registry.example/train:1"}
    settings = enabled(variables)
    assert settings.namespace == "mlops-training" and settings.gpus == 2 and settings.data_pvc == "mnist-data"
    assert settings.image == "registry.example/train:1" and settings.requests == {"cpu": "4", "memory": "8Gi"}
    assert enabled(variables, gpus=0, training_image="other:2").gpus == 0
    assert enabled(variables, training_image="other:2").image == "other:2"
    from_env = KubernetesTraining.resolve({"train_on_kubernetes": True}, {}.get,
                                          env={"MLOPS_TRAINING_IMAGE": "env:3", "MLOPS_HOME": "/srv/state"})
    assert from_env.image == "env:3" and from_env.state_mount_path == "/srv/state"
    assert enabled().image == DEFAULT_IMAGE and enabled().gpus == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"gpu": 1}, "unknown: ['gpu']"),
        ({"limits": {"cpu": "two"}}, "mnist_training_kubernetes.limits.cpu: 'two' is not a Kubernetes quantity"),
        ({"requests": {"gpu": "1"}}, "mnist_training_kubernetes.requests takes the keys"),
        ({"tolerations": {"key": "x"}}, "mnist_training_kubernetes.tolerations must be a list"),
        ({"node_selector": ["gpu"]}, "mnist_training_kubernetes.node_selector must be an object"),
        ({"gpus": -1}, "gpus must be an int >= 0"),
        ({"state_mount_path": "state"}, "state_mount_path must be absolute"),
    ],
)
def test_bad_settings_fail_with_their_name(settings: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        enabled({"mnist_training_kubernetes": json.dumps(settings)})
    assert message in str(caught.value)


def test_settings_that_are_not_json_name_the_variable() -> None:
    with pytest.raises(ValueError, match="Variable mnist_training_kubernetes is not a JSON object"):
        enabled({"mnist_training_kubernetes": "{gpus: 1"})


def test_cpu_pod_is_valid_and_locked_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_JFROG_DEFAULT", '{"conn_type": "jfrog", "password": "worker-only"}')
    pod = pod_for(enabled())
    assert kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}
    assert "nodeSelector" not in spec or not spec["nodeSelector"]
    assert not spec.get("tolerations")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    # /tmp is the only scratch space (emptyDir); the run directory is the only shared writable path.
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]
    assert mounts[str(RUN_DIR)].get("readOnly") is not True
    assert mounts[str(RUN_DIR)]["subPath"] == str(RUN_DIR.relative_to(STATE))
    assert mounts[str(WORKER_DATA)]["readOnly"] is True
    assert volumes[mounts[str(WORKER_DATA)]["name"]]["persistentVolumeClaim"]["claimName"] == "mnist-mlops-state"
    # Nothing from the worker's environment reaches the pod.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert set(env) == {"MNIST_TRAIN_LOG", "HOME", "TMPDIR"}
    assert "worker-only" not in json.dumps(pod)
    assert container["image"] == DEFAULT_IMAGE


def test_gpu_pod_asks_for_gpus_and_lands_on_gpu_nodes() -> None:
    settings = enabled({"mnist_training_kubernetes": json.dumps({
        "gpus": 2, "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"}, "data_pvc": "mnist-data"})})
    pod = pod_for(settings)
    assert kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"][GPU_RESOURCE] == "2"
    assert pod["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    # GPUs asked for: training must use them, not fall back to the CPU.
    assert json.loads(container["args"][container["args"].index("--config") + 1])["device"] == "cuda"
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == str(WORKER_DATA))
    assert data["readOnly"] is True
    claim = next(v for v in pod["spec"]["volumes"] if v["name"] == data["name"])["persistentVolumeClaim"]
    assert claim == {"claimName": "mnist-data", "readOnly": True}


def test_the_images_own_data_needs_no_mount() -> None:
    pod = pod_for(enabled({"mnist_training_kubernetes": json.dumps({"data_dir": "/opt/mlops/include/data/mnist"})}))
    assert kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (container,) = pod["spec"]["containers"]
    assert container["args"][container["args"].index("--data-dir") + 1] == "/opt/mlops/include/data/mnist"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {str(RUN_DIR), "/tmp"}


def test_a_run_directory_off_the_shared_claim_is_refused() -> None:
    with pytest.raises(ValueError, match="run directory /elsewhere/run is not under /opt/mlops/state"):
        pod_for(enabled(), output=Path("/elsewhere/run/model/model.safetensors"))
    with pytest.raises(ValueError, match="data directory /opt/airflow/include/data/mnist is not under"):
        pod_for(enabled(), data_dir=Path("/opt/airflow/include/data/mnist"))


def test_strict_validation_rejects_what_kubernetes_would() -> None:
    """The validator can fail: an unknown field and a wrong type are both errors in strict mode."""
    pod = pod_for(enabled())
    pod["spec"]["containers"][0]["securityContext"]["dropCapabilities"] = ["ALL"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    pod = pod_for(enabled())
    pod["spec"]["automountServiceAccountToken"] = "no"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_the_pods_command_trains_and_the_worker_reads_its_result(tmp_path: Path) -> None:
    """The pod's command, args and env run here (the training image's interpreter is this one)."""
    from include.mlops.model_scan import assert_safe_model_file

    state = tmp_path / "state"
    output = state / "runs" / "r1" / "model" / "model.safetensors"
    output.parent.mkdir(parents=True)
    settings = KubernetesTraining(state_mount_path=str(state), data_dir=str(DATA_DIR))
    pod = pod_for(settings, output=output)
    (container,) = pod["spec"]["containers"]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT),
           "PYTHONDONTWRITEBYTECODE": "1", **{e["name"]: e["value"] for e in container["env"]}}
    env["HOME"] = env["TMPDIR"] = str(tmp_path)  # the pod's /tmp emptyDir
    proc = subprocess.run([*container["command"], *container["args"]], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The log goes to the run directory: the model's folder holds only the files that are signed.
    assert (output.parent.parent / LOG_NAME).is_file()
    assert sorted(p.name for p in output.parent.iterdir()) == ["model.json", "model.safetensors"]
    trained = settings.result(output=output, digests=read_checksums(DATA_DIR))
    assert trained["model_path"] == str(output) and trained["num_train_samples"] == 256
    assert trained["sha256"] == assert_safe_model_file(output).sha256
    assert trained["container"]["image"] == DEFAULT_IMAGE and trained["container"]["packages"]


def test_a_failed_pod_leaves_no_result_to_trust(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    output = tmp_path / "run" / "model" / "model.safetensors"
    output.parent.mkdir(parents=True)
    settings = KubernetesTraining(state_mount_path=str(tmp_path))
    with pytest.raises(AirflowFailException, match=f"wrote no {output.parent.parent / LOG_NAME}"):
        settings.result(output=output, digests={})
    (output.parent.parent / LOG_NAME).write_text("Traceback (most recent call last):\n  ...\nRuntimeError: CUDA\n")
    with pytest.raises(AirflowFailException, match="printed no result line"):
        settings.result(output=output, digests={})


def test_the_pipefail_wrapper_keeps_a_failed_training_failed(tmp_path: Path) -> None:
    """`| tee` must not turn a failed training into exit 0 (set -o pipefail)."""
    pod = pod_for(enabled())
    (container,) = pod["spec"]["containers"]
    script = container["command"][2].replace("python -m include.mnist.container", "false")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MNIST_TRAIN_LOG": str(tmp_path / "log")}
    proc = subprocess.run(["bash", "-c", script, "train"], env=env, capture_output=True, check=False)
    assert proc.returncode != 0
