"""The Kubernetes path of train_model: the training image as a pod through KubernetesPodOperator.

`KubernetesTraining.resolve(params, get_variable)` says whether train_model trains in a pod (Param
`train_on_kubernetes`, then Variable `mnist_train_on_kubernetes`, else no) and how, from the Variable
`mnist_training_kubernetes` (JSON: namespace, image, requests, limits, gpus, node_selector, tolerations, the
shared state and data claims), the image Param and Variables of the Docker path, then the environment.
`train(...)` runs the pod and returns what ContainerTraining.train returns, after the same checks; train_model
then scans the model file itself. The pod runs without a service-account token, as non-root with a read-only
root filesystem, all capabilities dropped and the RuntimeDefault seccomp profile; the data is mounted
read-only and the run directory is the only writable path it shares with the workers.
The Kubernetes provider is imported only when a pod is built: DAG parsing stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mnist_training_container import DEFAULT_IMAGE, IMAGE_VARIABLE, ContainerTraining, _as_bool

from include.mnist.container import container_command

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

ENABLE_VARIABLE = "mnist_train_on_kubernetes"
SETTINGS_VARIABLE = "mnist_training_kubernetes"
SETTINGS_KEYS = frozenset({
    "namespace", "image", "requests", "limits", "gpus", "node_selector", "tolerations", "state_pvc",
    "state_mount_path", "data_pvc", "data_dir", "kubernetes_conn_id", "image_pull_secrets", "startup_timeout_seconds",
})
RESOURCE_KEYS = frozenset({"cpu", "memory", "ephemeral-storage"})
GPU_RESOURCE = "nvidia.com/gpu"
# GPU node pools are commonly tainted with the resource name (GKE, AKS, the NVIDIA GPU operator's docs):
# a pod that asks for GPUs tolerates that taint unless the settings name their own toleration for it.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# The claim deploy/kubernetes/state-pvc.yaml creates and the workers mount at MLOPS_HOME (deploy/helm/values.yaml).
DEFAULT_STATE_PVC = "mnist-mlops-state"
DEFAULT_STATE_MOUNT = "/opt/mlops/state"
# The training image's user (docker/training.Dockerfile: uid 50000, gid 0, as Airflow's image): files in the
# shared run directory belong to the workers' user.
RUN_AS_USER, RUN_AS_GROUP = 50000, 0
TRAINING_LABELS = {"app.kubernetes.io/name": "mnist-training", "app.kubernetes.io/part-of": "mnist-mlops"}
LOG_NAME = "train-kubernetes.log"


def _mapping(name: str, value: Any, keys: frozenset[str] | None = None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str | int | float)
                                                  and not isinstance(v, bool) for k, v in value.items()):
        raise ValueError(f"{SETTINGS_VARIABLE}.{name} must be an object of strings, got {value!r}")
    if keys is not None and not set(value) <= keys:
        raise ValueError(f"{SETTINGS_VARIABLE}.{name} takes the keys {sorted(keys)}, got {sorted(value)}")
    return {k: str(v) for k, v in value.items()}


def _quantities(name: str, value: Any) -> dict[str, str]:
    from kubernetes.utils import parse_quantity

    found = _mapping(name, value, RESOURCE_KEYS)
    for key, quantity in found.items():
        try:
            parse_quantity(quantity)
        except ValueError as exc:
            raise ValueError(f"{SETTINGS_VARIABLE}.{name}.{key}: {quantity!r} is not a Kubernetes quantity") from exc
    return found


def _tolerations(value: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    allowed = {"key", "operator", "value", "effect", "tolerationSeconds"}
    if (not isinstance(value, Sequence) or isinstance(value, str)
            or not all(isinstance(t, Mapping) and set(t) <= allowed for t in value)):
        raise ValueError(f"{SETTINGS_VARIABLE}.tolerations must be a list of objects with keys {sorted(allowed)}")
    return tuple(dict(t) for t in value)


@dataclass(frozen=True)
class KubernetesTraining:
    """How train_model runs the training image as a pod: image, namespace, resources, GPUs and volumes."""

    image: str = DEFAULT_IMAGE
    namespace: str | None = None  # None: the worker's own namespace (in-cluster) or the connection's
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"cpu": "2", "memory": "4Gi"})
    gpus: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    state_pvc: str = DEFAULT_STATE_PVC  # ReadWriteMany claim with the run directories (the workers' MLOPS_HOME)
    state_mount_path: str = DEFAULT_STATE_MOUNT
    data_pvc: str | None = None  # a claim holding the data, mounted read-only at the worker's data path
    data_dir: str | None = None  # or the image's own copy (read-only, as the whole root filesystem)
    kubernetes_conn_id: str | None = None  # None: in-cluster configuration, as the workers run in the cluster
    image_pull_secrets: tuple[str, ...] = ()
    startup_timeout_seconds: int = 600  # the first pull of a CUDA torch image takes minutes

    def __post_init__(self) -> None:
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 0:
            raise ValueError(f"gpus must be an int >= 0, got {self.gpus!r}")
        if not self.image:
            raise ValueError("the training image must be named")
        if not PurePosixPath(self.state_mount_path).is_absolute():
            raise ValueError(f"{SETTINGS_VARIABLE}.state_mount_path must be absolute, got {self.state_mount_path!r}")

    @classmethod
    def resolve(
        cls,
        params: Mapping[str, Any],
        get_variable: Callable[[str], Any],
        env: Mapping[str, str] | None = None,
    ) -> KubernetesTraining | None:
        """None unless asked for (Param, then Variable); else the settings: Params, Variables, environment."""
        env = os.environ if env is None else env
        enabled = params.get("train_on_kubernetes")
        if enabled is None:
            enabled = _as_bool(ENABLE_VARIABLE, get_variable(ENABLE_VARIABLE) or False)
        if not enabled:
            return None
        raw = get_variable(SETTINGS_VARIABLE)
        try:
            settings = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Variable {SETTINGS_VARIABLE} is not a JSON object: {exc}") from exc
        if not isinstance(settings, dict) or not set(settings) <= SETTINGS_KEYS:
            unknown = sorted(set(settings) - SETTINGS_KEYS) if isinstance(settings, dict) else settings
            raise ValueError(f"Variable {SETTINGS_VARIABLE} takes a JSON object with keys {sorted(SETTINGS_KEYS)}; "
                             f"unknown: {unknown}")
        defaults = cls()
        gpus = params.get("gpus")
        return cls(
            image=params.get("training_image") or settings.get("image") or get_variable(IMAGE_VARIABLE)
            or env.get("MLOPS_TRAINING_IMAGE") or DEFAULT_IMAGE,
            namespace=settings.get("namespace") or None,
            requests=_quantities("requests", settings.get("requests", defaults.requests)),
            limits=_quantities("limits", settings.get("limits", defaults.limits)),
            gpus=settings.get("gpus", 0) if gpus is None else gpus,
            node_selector=_mapping("node_selector", settings.get("node_selector")),
            tolerations=_tolerations(settings.get("tolerations")),
            state_pvc=settings.get("state_pvc") or DEFAULT_STATE_PVC,
            state_mount_path=settings.get("state_mount_path") or env.get("MLOPS_HOME") or DEFAULT_STATE_MOUNT,
            data_pvc=settings.get("data_pvc") or None,
            data_dir=settings.get("data_dir") or env.get("MLOPS_TRAINING_DATA_DIR") or None,
            kubernetes_conn_id=settings.get("kubernetes_conn_id") or None,
            image_pull_secrets=tuple(settings.get("image_pull_secrets") or ()),
            startup_timeout_seconds=int(settings.get("startup_timeout_seconds", defaults.startup_timeout_seconds)),
        )

    # -- the pod ------------------------------------------------------------------------------------
    def _relative_to_state(self, path: Path, what: str) -> str:
        try:
            return str(PurePosixPath(path).relative_to(self.state_mount_path))
        except ValueError:
            raise ValueError(f"the {what} {path} is not under {self.state_mount_path} (the {self.state_pvc} "
                             "claim the workers and the training pod share)") from None

    def volumes(self, data_dir: Path, run_dir: Path) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
        """The run directory read-write, the data read-only, and an emptyDir for /tmp (the root is read-only).

        The data comes from `data_dir` in the image, else the `data_pvc` claim, else the worker's data
        directory on the state claim; each is read-only in the pod.
        """
        from kubernetes.client import models as k8s

        run_sub = self._relative_to_state(run_dir, "run directory")
        volumes = [
            k8s.V1Volume(name="state", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=self.state_pvc)),
            k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Gi")),
        ]
        # The pod sees only its own run directory of the shared claim, at the path the worker sees it.
        mounts = [
            k8s.V1VolumeMount(name="state", mount_path=str(run_dir), sub_path=run_sub),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ]
        if self.data_dir:
            pass  # the image's copy: nothing to mount
        elif self.data_pvc:
            volumes.append(k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=self.data_pvc, read_only=True)))
            mounts.append(k8s.V1VolumeMount(name="data", mount_path=str(data_dir), read_only=True))
        else:
            mounts.append(k8s.V1VolumeMount(name="state", mount_path=str(data_dir), read_only=True,
                                            sub_path=self._relative_to_state(data_dir, "data directory")))
        return volumes, mounts

    def operator(self, *, config: Mapping[str, object], data_dir: Path, output: Path) -> KubernetesPodOperator:
        """The KubernetesPodOperator that trains `config` on `data_dir` into `output` inside the training image."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import models as k8s

        if self.gpus and config.get("device", "auto") == "auto":
            # GPUs were asked for: fail in the pod when none is visible rather than train on its CPU.
            config = {**config, "device": "cuda"}
        # The model's own folder (output.parent) holds only what is signed; the pod's log goes to the run directory.
        volumes, mounts = self.volumes(data_dir, output.parent.parent)
        limits = dict(self.limits)
        tolerations = [dict(t) for t in self.tolerations]
        if self.gpus:
            # Extended resources are set as limits (requests default to them): https://kubernetes.io/docs/tasks/manage-gpus/scheduling-gpus/
            limits[GPU_RESOURCE] = str(self.gpus)
            if not any(t.get("key") == GPU_RESOURCE for t in tolerations):
                tolerations.append(dict(GPU_TOLERATION))
        log_path = output.parent.parent / LOG_NAME
        return KubernetesPodOperator(
            task_id="train_model_kubernetes",
            name="mnist-training",
            namespace=self.namespace,
            kubernetes_conn_id=self.kubernetes_conn_id,
            in_cluster=None if self.kubernetes_conn_id else True,
            image=self.image,
            # The image's entry point, with its output also written to the run directory: the worker reads the
            # result line from there (no XCom sidecar, whose image would need a second pull and its own rights).
            cmds=["bash", "-c", 'set -o pipefail; python -m include.mnist.container "$@" | tee "$MNIST_TRAIN_LOG"',
                  "train"],
            arguments=container_command(config, Path(self.data_dir) if self.data_dir else data_dir, output),
            # Nothing from the worker's environment (connections and tokens live there): what training needs.
            env_vars=[k8s.V1EnvVar(name="MNIST_TRAIN_LOG", value=str(log_path)),
                      k8s.V1EnvVar(name="HOME", value="/tmp"), k8s.V1EnvVar(name="TMPDIR", value="/tmp")],
            labels=dict(TRAINING_LABELS),
            container_resources=k8s.V1ResourceRequirements(requests=dict(self.requests), limits=limits),
            node_selector=dict(self.node_selector) or None,
            tolerations=[k8s.V1Toleration(key=t.get("key"), operator=t.get("operator"), value=t.get("value"),
                                          effect=t.get("effect"), toleration_seconds=t.get("tolerationSeconds"))
                         for t in tolerations] or None,
            volumes=volumes,
            volume_mounts=mounts,
            automount_service_account_token=False,
            security_context=k8s.V1PodSecurityContext(
                run_as_non_root=True, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_GROUP, fs_group=RUN_AS_GROUP,
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
            container_security_context=k8s.V1SecurityContext(
                run_as_non_root=True, allow_privilege_escalation=False, read_only_root_filesystem=True,
                privileged=False, capabilities=k8s.V1Capabilities(drop=["ALL"]),
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
            image_pull_secrets=[k8s.V1LocalObjectReference(name=n) for n in self.image_pull_secrets] or None,
            startup_timeout_seconds=self.startup_timeout_seconds,
            get_logs=True,
            do_xcom_push=False,
            deferrable=False,  # it runs inside train_model, which cannot defer on its behalf
            # A retry after a lost worker reattaches to the running pod (`durable`, on by default in Airflow 3.3).
            on_finish_action="delete_pod",
        )

    def pod(self, context: Mapping[str, Any] | None, *, config: Mapping[str, object], data_dir: Path,
            output: Path) -> k8s.V1Pod:
        """The pod the operator would create, built without a cluster (what tests validate)."""
        operator = self.operator(config=config, data_dir=data_dir, output=output)
        # dry_run: the in-cluster label would open a Kubernetes API client, which needs a cluster.
        return operator.build_pod_request_obj(context, dry_run=True)

    def train(
        self, context: Mapping[str, Any], *, config: Mapping[str, object], data_dir: Path, output: Path,
        digests: Mapping[str, str],
    ) -> dict:
        """Run the training pod to completion and return its checked result (ContainerTraining.train's shape)."""
        # A new pod's `tee` truncates the log; a pod that failed fails the operator before the log is read.
        output.parent.mkdir(parents=True, exist_ok=True)
        operator = self.operator(config=config, data_dir=data_dir, output=output)
        operator.execute(context)
        trained = self.result(output=output, digests=digests)
        statuses = getattr(getattr(operator.remote_pod, "status", None), "container_statuses", None) or []
        # The tag is mutable; the image id the kubelet ran names the exact image, for the lineage.
        trained["container"]["image_id"] = next((s.image_id for s in statuses if s.image_id), None)
        trained["container"]["kubernetes"] = {"namespace": operator.namespace, "pod": getattr(
            getattr(operator.pod, "metadata", None), "name", None)}
        return trained

    def result(self, *, output: Path, digests: Mapping[str, str]) -> dict:
        """The pod's result line (from its log in the run directory), after the Docker path's checks."""
        from airflow.sdk.exceptions import AirflowFailException

        log_path = output.parent.parent / LOG_NAME
        try:
            lines = log_path.read_text().splitlines()
        except FileNotFoundError:
            raise AirflowFailException(f"the training pod wrote no {log_path}: is the {self.state_pvc} claim "
                                       "ReadWriteMany and mounted by the workers at "
                                       f"{self.state_mount_path}?") from None
        try:
            # The same checks as the Docker path: model path, training-data digests.
            return ContainerTraining(image=self.image, gpus=self.gpus).result(lines, output=output, digests=digests)
        except ValueError as exc:  # no result line
            raise AirflowFailException(f"{log_path}: {exc}") from exc
