"""Extra links from the pipeline's Python tasks to what they made outside Airflow: MLflow and Evidently pages.

Airflow 3 resolves an extra link in the api-server from one XCom row, the one under the link's `xcom_key`
("Define an operator extra link": https://airflow.apache.org/docs/apache-airflow/stable/howto/define-extra-link.html);
the link object itself only runs on the worker. So a task pushes each URL under its link's own key with
`push_link` as soon as it knows it, and `get_link` (called by the worker when the task ends) reads that row
back. A mapped task's instances are built without these links on the worker, so the task's own push is the one
that counts there too. `@task` takes no `operator_extra_links` argument; `with_links` sets them on the task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class _PushedUrlLink(BaseOperatorLink):
    """A URL the task pushed under this link's own XCom key."""

    name = ""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # runs on the worker only, where the Task SDK's XCom is the public way in
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return value if isinstance(value, str) else ""


class MlflowRunLink(_PushedUrlLink):
    """"MLflow run": the run's page in the MLflow UI."""

    name = "MLflow run"


class MlflowModelVersionLink(_PushedUrlLink):
    """"MLflow model version": the registered version's page in the MLflow UI."""

    name = "MLflow model version"


class DriftReportLink(_PushedUrlLink):
    """"Evidently drift report": the batch's Evidently report, shown by the MLflow UI's artifact viewer."""

    name = "Evidently drift report"


def with_links(output: Any, *links: BaseOperatorLink) -> Any:
    """Give the task behind a `@task` call's output (plain or mapped) these extra links; returns the output."""
    output.operator.operator_extra_links = (*output.operator.operator_extra_links, *links)
    return output


def push_link(link_class: type[_PushedUrlLink], url: str) -> None:
    """Push `url` for the running task under `link_class`'s key; nothing when there is no URL to show."""
    from airflow.sdk import get_current_context

    if url:
        get_current_context()["ti"].xcom_push(key=link_class().xcom_key, value=url)


# MLflow UI routes (hash routes of its single-page app): #/experiments/<id>/runs/<run id> is the run's page, with
# /artifactPath/<path> the artifact viewer on that file (HTML reports render in it); #/runs/<run id> finds the
# experiment itself but keeps no artifact path.
def mlflow_run_url(ui_url: str, run_id: str, experiment_id: str = "", artifact_path: str = "") -> str:
    """The MLflow UI page of a run, or of one of its artifacts (needs the experiment); "" without a UI URL."""
    if not ui_url or not run_id:
        return ""
    if not experiment_id:
        return f"{ui_url.rstrip('/')}/#/runs/{quote(run_id, safe='')}"
    url = f"{ui_url.rstrip('/')}/#/experiments/{quote(experiment_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"{url}/artifactPath/{quote(artifact_path)}" if artifact_path else url


def mlflow_model_version_url(ui_url: str, model_name: str, version: str) -> str:
    """The MLflow UI page of a registered model version; "" when no UI URL is configured."""
    if not ui_url:
        return ""
    return f"{ui_url.rstrip('/')}/#/models/{quote(model_name, safe='')}/versions/{quote(str(version), safe='')}"
