"""Extra links: the Artifactory UI page of an artifact or build, and the Xray page of a graph scan.

One registration: an operator lists its links in `operator_extra_links`, nothing else. In Airflow 3 the
worker calls `get_link` when the task finishes (success or failure) and stores the URL in XCom under the
link's `xcom_key`; the DAG serializer keeps only each link's name and key, and the API server answers from
that XCom row (Airflow "Define an operator extra link":
https://airflow.apache.org/docs/apache-airflow/stable/howto/define-extra-link.html). A plugin or
provider-info registration would add nothing, and a plugin link would even replace that XCom read with
our `get_link`, which needs a worker. The operators push the URL under `ARTIFACTORY_URL_KEY` /
`XRAY_URL_KEY` as soon as they know it, so a gate that fails still shows its scan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

ARTIFACTORY_URL_KEY = "jfrog_artifactory_url"
XRAY_URL_KEY = "jfrog_xray_scan_url"


def push_link_url(context: Any, key: str, url: str) -> None:
    """Push a link URL for the running task instance; a bare test context without `ti` is fine."""
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is not None and url:
        ti.xcom_push(key=key, value=url)


def _pulled(ti_key: TaskInstanceKey, key: str) -> str:
    # runs on the worker only (see the module docstring), where the Task SDK's XCom is the public way in
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_value(ti_key=ti_key, key=key)
    return value if isinstance(value, str) else ""


class ArtifactoryLink(BaseOperatorLink):
    """"Artifactory": the uploaded, promoted or property-stamped item (or published build) in the UI."""

    name = "Artifactory"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _pulled(ti_key, ARTIFACTORY_URL_KEY)


class XrayScanLink(BaseOperatorLink):
    """"Xray scan": Xray's `xray_data_url` for the graph scan, else the platform's scan page."""

    name = "Xray scan"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _pulled(ti_key, XRAY_URL_KEY)


def xray_scan_url(platform_url: str, scan_id: str, result: Any = None) -> str:
    """The scan's `xray_data_url` from a result body when it is an http(s) URL, else the UI scan page."""
    from urllib.parse import quote

    url = result.get("xray_data_url") if isinstance(result, dict) else None
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    return f"{platform_url.rstrip('/')}/ui/scans-list/graph/{quote(scan_id, safe='')}"
