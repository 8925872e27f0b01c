"""Extra links: the Artifactory UI page of an artifact or build, and the Xray page of a graph scan.

Airflow 3 resolves a link on the worker when the task finishes (success or failure) and stores the URL
under the link's `xcom_key`. The operators push the URL under `ARTIFACTORY_URL_KEY` / `XRAY_URL_KEY` as
soon as they know it, so a gate that fails still shows its scan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

ARTIFACTORY_URL_KEY = "jfrog_artifactory_url"
XRAY_URL_KEY = "jfrog_xray_scan_url"


class _OperatorsByPath:
    """`operators` resolved on first read: the operator modules import this module (no import cycle)."""

    def __init__(self, *paths: str) -> None:
        self.paths = paths

    def __get__(self, obj: Any, owner: type) -> list[type]:
        from airflow.sdk.module_loading import import_string

        return [import_string(p) for p in self.paths]


def push_link_url(context: Any, key: str, url: str) -> None:
    """Push a link URL for the running task instance; a bare test context without `ti` is fine."""
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is not None and url:
        ti.xcom_push(key=key, value=url)


def _pulled(ti_key: TaskInstanceKey, key: str) -> str:
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_value(ti_key=ti_key, key=key)
    return value if isinstance(value, str) else ""


class ArtifactoryLink(BaseOperatorLink):
    """"Artifactory": the uploaded, promoted or property-stamped item (or published build) in the UI."""

    name = "Artifactory"
    operators: ClassVar = _OperatorsByPath(  # type: ignore[assignment]
        "jfrog_provider.operators.artifactory.ArtifactoryUploadOperator",
        "jfrog_provider.operators.artifactory.ArtifactorySetPropertiesOperator",
        "jfrog_provider.operators.artifactory.ArtifactoryPromoteOperator",
        "jfrog_provider.operators.artifactory.ArtifactoryPublishBuildInfoOperator",
    )

    @property
    def xcom_key(self) -> str:
        return "_link_ArtifactoryLink"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _pulled(ti_key, ARTIFACTORY_URL_KEY)


class XrayScanLink(BaseOperatorLink):
    """"Xray scan": Xray's `xray_data_url` for the graph scan, else the platform's scan page."""

    name = "Xray scan"
    operators: ClassVar = _OperatorsByPath(  # type: ignore[assignment]
        "jfrog_provider.operators.xray.XrayScanGateOperator",
        "jfrog_provider.sensors.xray.XrayScanSensor",
    )

    @property
    def xcom_key(self) -> str:
        return "_link_XrayScanLink"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _pulled(ti_key, XRAY_URL_KEY)


def xray_scan_url(platform_url: str, scan_id: str, result: Any = None) -> str:
    """The scan's `xray_data_url` from a result body when it is an http(s) URL, else the UI scan page."""
    from urllib.parse import quote

    url = result.get("xray_data_url") if isinstance(result, dict) else None
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    return f"{platform_url.rstrip('/')}/ui/scans-list/graph/{quote(scan_id, safe='')}"
