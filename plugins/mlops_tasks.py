"""Task-side glue of the training DAG: its context, settings and run directory, run summaries, gate failures,
extra links and the training backend. Airflow-facing only; the steps themselves live in include/mlops."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException
from jfrog_provider.links import ARTIFACTORY_URL_KEY, push_link_url
from mlops_champion import audit_actor
from mlops_links import MlflowModelVersionLink, MlflowRunLink, push_link

log = logging.getLogger(__name__)


def context() -> tuple[dict, str, str]:
    """The running task's Params, dag id and run id."""
    ctx = get_current_context()
    return dict(ctx["params"]), ctx["dag"].dag_id, ctx["run_id"]


def settings():
    """Where state lives, with the data folder from the Variable `mnist_data_dir` when set."""
    from airflow.sdk import Variable

    from include.settings import PipelineSettings

    return PipelineSettings.from_env(data_dir=Variable.get("mnist_data_dir", default=None))


def run_dir() -> Path:
    """This run's directory under MLOPS_HOME."""
    _, dag_id, run_id = context()
    return settings().run_dir(dag_id, run_id)


def actor():
    """Who the running task acts for, for the audit trail."""
    return audit_actor(get_current_context())


def summary(task_id: str) -> dict:
    """The run summary `task_id` returned: it ran earlier in the chain, so reading it adds no edge to the graph."""
    return get_current_context()["ti"].xcom_pull(task_ids=task_id)


@contextmanager
def no_retry() -> Iterator[None]:
    """A failed gate or consistency check fails the task at once: retrying cannot change the verdict."""
    from include.mlops.gates import GateFailure

    try:
        yield
    except GateFailure as exc:
        # One ERROR line naming the gate and its figures; the chained GateFailure traceback would only repeat it.
        log.error("%s", exc)
        raise AirflowFailException(str(exc)) from None


def push_artifactory_link(repo_path: str) -> None:
    """The task's "Artifactory" link: the UI page of `repo/path` (the JFrog connection's platform URL)."""
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    repo, _, path = repo_path.partition("/")
    push_link_url(get_current_context(), ARTIFACTORY_URL_KEY, ArtifactoryHook().ui_url(repo, path))


def push_mlflow_links(registered: dict, run: bool = True) -> None:
    """The task's MLflow links: the run (when `run`) and the model version, in the MLflow UI."""
    from mlops_links import mlflow_model_version_url, mlflow_run_url

    ui = settings().mlflow_ui_url
    if run:
        push_link(MlflowRunLink, mlflow_run_url(ui, registered["run_id"], registered["experiment_id"]))
    push_link(MlflowModelVersionLink, mlflow_model_version_url(ui, registered["model_name"], registered["version"]))


def trainer(params: dict) -> Callable[..., dict]:
    """The training backend: a Kubernetes pod or the training image through Docker when asked, else this process."""
    from functools import partial

    from airflow.sdk import Variable
    from mnist_training_container import ContainerTraining
    from mnist_training_kubernetes import KubernetesTraining

    from include.mnist.train import train_in_process

    variable = partial(Variable.get, default=None)
    pod, container = KubernetesTraining.resolve(params, variable), ContainerTraining.resolve(params, variable)
    if pod is not None and container is not None:
        raise AirflowFailException("train_on_kubernetes and train_in_container are both on: choose one backend")
    backend = pod or container
    return partial(backend.train, get_current_context()) if backend is not None else train_in_process
