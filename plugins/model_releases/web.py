"""The FastAPI app behind /model-releases (model_releases_plugin mounts it): one HTML page and the drift plot."""

from __future__ import annotations

from pathlib import Path

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, FileSystemLoader

# The releases are what mnist_training's runs produced: whoever may read its runs may read this page.
TRAINING_DAG_ID = "mnist_training"
# No script at all; images only from here; only Airflow's own pages may frame it.
CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'"

_templates = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True)

# Airflow has no public helper to authenticate a plugin's FastAPI app: the api-server mounts it with
# app.mount(), which inherits none of the core API's dependencies. `requires_access_dag` (not a public API) is
# what the core API's own routes use: it reads the JWT from the Authorization header or the `_token` cookie
# (which the UI's iframe sends, same origin), answers 401 without one, and asks the auth manager (the public
# BaseAuthManager interface) for read access to the training DAG's runs, 403 when refused. So this page follows
# the login and roles of the rest of the UI, whichever auth manager is configured.
app = FastAPI(
    title="Model releases",
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN, TRAINING_DAG_ID))],
    # FastAPI serves its docs outside the app's dependencies: keep them off rather than public.
    docs_url=None, redoc_url=None, openapi_url=None,
)


def _settings():
    from include.settings import PipelineSettings

    return PipelineSettings.from_env()


def _artifactory():
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    # A page view waits seconds, not the task default of minutes of retries, when Artifactory is down.
    return ArtifactoryHook(timeout=10, max_retries=1, max_total_wait=5)


def _drift_plot() -> Path:
    return _settings().reports_dir / "drift" / "history.png"


@app.get("/", response_class=HTMLResponse)
def releases_page() -> HTMLResponse:
    """Every version of the registered model: aliases, accuracy, gates, Xray, signature, links, audit trail."""
    from model_releases.releases import load_registry

    settings = _settings()
    registry = load_registry(settings.mlflow_tracking_uri, settings.model_name, _artifactory)
    html = _templates.get_template("releases.html").render(registry=registry, has_plot=_drift_plot().is_file())
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP})


@app.get("/drift-history.png")
def drift_history() -> FileResponse:
    """The drift history plot the drift DAG redraws after each batch."""
    plot = _drift_plot()
    if not plot.is_file():
        raise HTTPException(404, "no drift history yet: the drift DAG has not measured a batch")
    return FileResponse(plot, media_type="image/png")
