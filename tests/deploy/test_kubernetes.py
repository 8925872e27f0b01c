"""The Kubernetes deployment without a cluster: every manifest in deploy/kubernetes validated against the
Kubernetes schemas in strict mode (kubernetes-validate), their hardening and NetworkPolicies checked, and
deploy/helm/values.yaml checked against the parameters the official Airflow chart documents (no copy of the
chart's values.schema.json could be obtained offline) with its pod fragments validated as Kubernetes objects."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from mnist_training_kubernetes import DEFAULT_STATE_MOUNT, DEFAULT_STATE_PVC, TRAINING_LABELS

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
VALUES = REPO_ROOT / "deploy" / "helm" / "values.yaml"
K8S_VERSION = kubernetes_validate.latest_version()
SECRET_NAME_RE = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|URI|CONN", re.I)
# The chart's labels on Celery workers and KubernetesExecutor pods (its pod template file).
WORKER_LABELS = {"tier": "airflow", "component": "worker"}

# Parameters of the official chart that values.yaml may set, as the parameters reference of chart 1.22.0 lists
# them (https://airflow.apache.org/docs/helm-chart/1.22.0/parameters-ref.html). A key ending in "*" takes a
# free-form value (airflow.cfg sections, Kubernetes objects, lists of env entries).
DOCUMENTED = {
    "defaultAirflowRepository", "defaultAirflowTag", "airflowVersion",
    "images.airflow.repository", "images.airflow.tag", "images.airflow.pullPolicy",
    "images.useDefaultImageForMigration",
    "executor", "allowPodLaunching",
    "fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName",
    "data.metadataSecretName", "data.resultBackendSecretName", "data.brokerUrlSecretName",
    "postgresql.enabled", "pgbouncer.enabled", "redis.enabled", "redis.passwordSecretName",
    "createUserJob.defaultUser.enabled",
    "secret*", "env*", "config*",
    "dags.persistence.enabled", "dags.gitSync.enabled",
    "apiServer.replicas", "apiServer.extraVolumes*", "apiServer.extraVolumeMounts*",
    "scheduler.replicas", "triggerer.enabled", "dagProcessor.enabled",
    "workers.replicas", "workers.resources*", "workers.extraVolumes*", "workers.extraVolumeMounts*",
    "networkPolicies.enabled", "statsd.enabled",
}
# Values the chart would otherwise generate or default: none may be set in the file.
CREDENTIAL_KEYS = {"fernetKey", "webserverSecretKey", "apiSecretKey", "jwtSecret", "data.metadataConnection",
                   "data.resultBackendConnection", "data.brokerUrl", "redis.password",
                   "createUserJob.defaultUser.password", "webserver.defaultUser.password"}


def manifests() -> list[tuple[str, dict]]:
    """Every object in the files kustomization.yaml lists, with where it came from."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        for i, doc in enumerate(yaml.safe_load_all((K8S_DIR / name).read_text())):
            if doc:
                found.append((f"{name}#{i}", doc))
    return found


def pod_specs(objects: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [(where, doc["spec"]["template"]["spec"]) for where, doc in objects
            if doc["kind"] in {"Deployment", "StatefulSet", "Job"}]


def hardening_problems(objects: list[tuple[str, dict]]) -> list[str]:
    """Pod templates that fall short: token, user, seccomp, capabilities, root filesystem, literal secrets."""
    problems = []
    for where, spec in pod_specs(objects):
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service-account token")
        pod_sc = spec.get("securityContext") or {}
        if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{where}: pod not runAsNonRoot with the RuntimeDefault seccomp profile")
        for container in spec["containers"]:
            sc = container.get("securityContext") or {}
            if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
                problems.append(f"{where}/{container['name']}: capabilities not dropped (drop ALL)")
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}/{container['name']}: privilege escalation or a writable root filesystem")
            if not container.get("resources", {}).get("limits"):
                problems.append(f"{where}/{container['name']}: no resource limits")
            for env in container.get("env", []):
                if SECRET_NAME_RE.search(env["name"]) and "value" in env:
                    problems.append(f"{where}/{container['name']}: {env['name']} is a literal, not a secretKeyRef")
    return problems


def flatten(values: Any, prefix: str = "") -> set[str]:
    """Dotted paths of the leaves of the values; free-form keys (DOCUMENTED with "*") stop the descent."""
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if f"{path}*" in DOCUMENTED or not isinstance(value, dict) or not value:
            paths.add(path)
        else:
            paths |= flatten(value, f"{path}.")
    return paths


def undocumented(values: dict) -> list[str]:
    allowed = {k.rstrip("*") for k in DOCUMENTED}
    return sorted(flatten(values) - allowed)


def values_problems(values: dict) -> list[str]:
    """How the values fall short of: Airflow 3.3, both executors, Secrets for every credential, baked-in DAGs."""
    problems = [f"{key}: not a parameter the chart documents" for key in undocumented(values)]
    paths = flatten(values)
    for key in sorted(CREDENTIAL_KEYS):
        if key in paths or any(p.startswith(key + ".") for p in paths):
            problems.append(f"{key}: a credential in the values file (use its *SecretName)")
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        if not values.get(key):
            problems.append(f"{key}: unset, so the chart would generate the secret")
    for key in ("metadataSecretName", "resultBackendSecretName", "brokerUrlSecretName"):
        if not values.get("data", {}).get(key):
            problems.append(f"data.{key}: unset, so the chart would build the connection from defaults")
    if not values.get("redis", {}).get("passwordSecretName"):
        problems.append("redis.passwordSecretName: unset")
    if values.get("createUserJob", {}).get("defaultUser", {}).get("enabled") is not False:
        problems.append("createUserJob.defaultUser.enabled: the chart's default user (admin/admin) is on")
    if values.get("executor") != "CeleryExecutor,KubernetesExecutor":
        problems.append(f"executor is {values.get('executor')!r}")
    if not str(values.get("airflowVersion", "")).startswith("3.3."):
        problems.append(f"airflowVersion {values.get('airflowVersion')!r} is not Airflow 3.3")
    dags = values.get("dags", {})
    if dags.get("gitSync", {}).get("enabled") or dags.get("persistence", {}).get("enabled"):
        problems.append("dags: git-sync or a DAG volume, but the DAGs are baked into the image")
    if values.get("postgresql", {}).get("enabled") is not False:
        problems.append("postgresql.enabled: the chart's throw-away database")
    return problems


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


@pytest.mark.parametrize(("where", "doc"), manifests(), ids=[w for w, _ in manifests()])
def test_manifest_is_valid_in_strict_mode(where: str, doc: dict) -> None:
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_manifests_are_hardened() -> None:
    assert hardening_problems(manifests()) == []


def test_mlflow_reads_its_database_from_a_secret() -> None:
    (where, spec), = pod_specs(manifests())
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    ref = env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "mnist-mlops-mlflow-db", "key": "uri"}
    # The workers' tracking URI names the Service and a host MLflow allows.
    service = next(doc for _, doc in manifests() if doc["kind"] == "Service")
    assert service["metadata"]["name"] == "mlflow" and service["spec"]["ports"][0]["port"] == 5000
    assert "mlflow:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")


def test_network_policies_let_only_workers_reach_mlflow_and_isolate_training() -> None:
    policies = {doc["metadata"]["name"]: doc["spec"] for _, doc in manifests() if doc["kind"] == "NetworkPolicy"}
    ingress = [p for p in policies.values() if p["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mlflow"}
               and "Ingress" in p["policyTypes"]]
    assert len(ingress) == 1
    sources = [peer for rule in ingress[0]["ingress"] for peer in rule["from"]]
    assert sources == [{"podSelector": {"matchLabels": WORKER_LABELS}}]
    workers = next(p for p in policies.values() if p["podSelector"]["matchLabels"] == WORKER_LABELS)
    assert workers["policyTypes"] == ["Egress"]
    https = [r for r in workers["egress"] if {"port": 443, "protocol": "TCP"} in r.get("ports", [])]
    assert any("ipBlock" in peer for rule in https for peer in rule["to"]), "no JFrog egress on 443"
    training = next(p for p in policies.values()
                    if p["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": TRAINING_LABELS[
                        "app.kubernetes.io/name"]})
    assert set(training["policyTypes"]) == {"Ingress", "Egress"}
    assert not training.get("ingress") and not training.get("egress")


def test_shared_claim_is_the_one_workers_and_training_pods_mount(values: dict) -> None:
    claim = next(doc for _, doc in manifests() if doc["kind"] == "PersistentVolumeClaim"
                 and doc["metadata"]["name"] == DEFAULT_STATE_PVC)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in values["workers"]["extraVolumes"]}
    mounts = {m["name"]: m for m in values["workers"]["extraVolumeMounts"]}
    (name,) = [n for n, v in volumes.items() if v["persistentVolumeClaim"]["claimName"] == DEFAULT_STATE_PVC]
    assert mounts[name]["mountPath"] == DEFAULT_STATE_MOUNT
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["MLOPS_HOME"] == DEFAULT_STATE_MOUNT


def test_values_keep_the_rules(values: dict) -> None:
    assert values_problems(values) == []


def test_values_use_the_projects_image(values: dict) -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    name, tag = compose["x-airflow-common"]["image"].rsplit(":", 1)
    image = values["images"]["airflow"]
    assert image["repository"].rsplit("/", 1)[-1] == name and image["tag"] == tag
    assert values["defaultAirflowTag"] == tag
    training = compose["services"]["mnist-training-image"]["image"]
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["MLOPS_TRAINING_IMAGE"].rsplit("/", 1)[-1] == training
    airflow_pin = re.search(r"^apache-airflow==(\S+)", (REPO_ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert values["airflowVersion"] == airflow_pin


def test_the_jfrog_connection_comes_from_a_secret(values: dict) -> None:
    assert {"envName": "AIRFLOW_CONN_JFROG_DEFAULT", "secretName": "mnist-mlops-jfrog",
            "secretKey": "connection"} in values["secret"]
    for entry in values["env"]:
        assert not SECRET_NAME_RE.search(entry["name"]) or entry["name"] == "MLFLOW_TRACKING_URI", entry


def test_pod_fragments_in_the_values_are_valid_kubernetes(values: dict) -> None:
    """Volumes, mounts, resources and env entries, placed in a Pod and validated in strict mode."""
    for component in ("workers", "apiServer"):
        section = values[component]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"values-{component.lower()}"},
               "spec": {"volumes": section["extraVolumes"], "containers": [{
                   "name": "base", "image": "x", "volumeMounts": section["extraVolumeMounts"],
                   "resources": section.get("resources", {}), "env": values["env"]}]}}
        assert kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


VALUE_MUTANTS = {
    "typo in a key": (lambda v: v.update(fernetKeySecret=v.pop("fernetKeySecretName")), "fernetKeySecret:"),
    "literal fernet key": (lambda v: v.update(fernetKey="c2VjcmV0"), "fernetKey: a credential"),
    "metadata connection": (lambda v: v["data"].update(metadataConnection={"pass": "postgres"}),
                            "data.metadataConnection: a credential"),
    "default user": (lambda v: v["createUserJob"]["defaultUser"].update(enabled=True), "default user"),
    "old executor": (lambda v: v.update(executor="CeleryKubernetesExecutor"), "executor is"),
    "git-sync": (lambda v: v["dags"]["gitSync"].update(enabled=True), "baked into the image"),
    "no jwt secret": (lambda v: v.pop("jwtSecretName"), "jwtSecretName: unset"),
}


@pytest.mark.parametrize("mutant", sorted(VALUE_MUTANTS))
def test_values_check_catches(values: dict, mutant: str) -> None:
    mutate, expected = VALUE_MUTANTS[mutant]
    mutated = copy.deepcopy(values)
    mutate(mutated)
    problems = values_problems(mutated)
    assert any(expected in p for p in problems), problems


def test_hardening_check_catches_a_weakened_pod() -> None:
    objects = copy.deepcopy(manifests())
    (_, spec), = pod_specs(objects)
    container = spec["containers"][0]
    container["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    container["env"].append({"name": "MLFLOW_TRACKING_PASSWORD", "value": "hunter2"})
    spec["automountServiceAccountToken"] = True
    problems = hardening_problems(objects)
    assert any("drop ALL" in p for p in problems) and any("literal" in p for p in problems)
    assert any("service-account token" in p for p in problems)
