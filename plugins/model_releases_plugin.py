"""The "Model releases" entry in the Airflow UI: a page the api-server serves, shown in the UI's frame."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/model-releases"


class ReleasesApp:
    """ASGI app that imports the page on its first request.

    Every task process, the scheduler and the DAG processor load all plugins too; importing the page's Airflow
    API security module up front cost each of them 0.9 s, about 600 modules and a StarletteDeprecationWarning
    in every task log (measured with `python -X importtime`). Only the api-server ever calls this.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from model_releases.web import app

        await app(scope, receive, send)


class ModelReleasesPlugin(AirflowPlugin):
    """Mounts the releases page at /model-releases and adds it to the navigation bar."""

    name = "model_releases"
    fastapi_apps = [{"app": ReleasesApp(), "url_prefix": URL_PREFIX, "name": "Model releases"}]
    # Airflow plugins doc, "External Views": with a url_route the UI renders `href` in an iframe; a relative href
    # (no leading slash) resolves against the UI's base URL, so the page works behind a path prefix too.
    external_views = [{
        "name": "Model releases",
        "href": URL_PREFIX.lstrip("/") + "/",
        "url_route": "model-releases",
        "destination": "nav",
        "nav_top_level": True,
    }]
