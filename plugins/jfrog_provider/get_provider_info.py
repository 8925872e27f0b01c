"""Provider metadata for Airflow's ProvidersManager (entry point `apache_airflow_provider`)."""

from __future__ import annotations

from typing import Any

# ProvidersManager insists that package-name equals the installed distribution's name
# (airflow/_shared/providers_discovery: "The package ... do not match"), i.e. [project].name in pyproject.toml.
PACKAGE_NAME = "mnist-mlops-airflow"
INTEGRATION = "JFrog"


def get_provider_info() -> dict[str, Any]:
    """The provider dict, validated by Airflow against airflow/provider_info.schema.json."""
    from jfrog_provider import __version__

    return {
        "package-name": PACKAGE_NAME,
        "name": "JFrog",
        "description": "JFrog Artifactory and Xray (this project's provider): deploy, promote, build-info, "
                       "graph-scan gates.",
        "versions": [__version__],
        "integrations": [{"integration-name": INTEGRATION, "external-doc-url": "https://jfrog.com/help/r/jfrog-rest-apis",
                          "tags": ["software"]}],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": [
            "jfrog_provider.hooks.base", "jfrog_provider.hooks.artifactory", "jfrog_provider.hooks.xray",
            "jfrog_provider.hooks.evidence"]}],
        "operators": [{"integration-name": INTEGRATION, "python-modules": [
            "jfrog_provider.operators.artifactory", "jfrog_provider.operators.xray"]}],
        "sensors": [{"integration-name": INTEGRATION, "python-modules": ["jfrog_provider.sensors.artifactory"]}],
        "triggers": [{"integration-name": INTEGRATION, "python-modules": [
            "jfrog_provider.triggers.artifactory", "jfrog_provider.triggers.xray"]}],
        # no "extra-links": the operators' `operator_extra_links` is the one registration (see links.py)
        "connection-types": [{
            "hook-class-name": "jfrog_provider.hooks.base.JFrogHook",
            "hook-name": "JFrog Platform",
            "connection-type": "jfrog",
            # The one declaration of the connection form: Airflow >= 3.2 reads it from here without importing the
            # hook (hook methods for it are deprecated); each conn-field lands in the connection's `extra`.
            # Defaults equal JFrogHook.DEFAULT_* (a test checks).
            "conn-fields": {
                "timeout": {"label": "Timeout (s)", "description": "Per-request read timeout in seconds.",
                            "schema": {"type": ["number", "null"], "default": 60}},
                "verify": {"label": "Verify TLS", "description": "Verify the server certificate.",
                           "schema": {"type": ["boolean", "null"], "default": True}},
                "max_retries": {"label": "Max retries",
                                "description": "Retries after 429/502/503/504 or a dropped connection.",
                                "schema": {"type": ["integer", "null"], "default": 5}},
                "max_total_wait": {"label": "Max total wait (s)",
                                   "description": "Give up once retries would wait longer than this in total.",
                                   "schema": {"type": ["number", "null"], "default": 120}},
                "artifactory_url": {"label": "Artifactory URL",
                                    "description": "Only if Artifactory is not under <platform>/artifactory.",
                                    "schema": {"type": ["string", "null"]}},
                "xray_url": {"label": "Xray URL", "description": "Only if Xray is not under <platform>/xray.",
                             "schema": {"type": ["string", "null"]}},
            },
            "ui-field-behaviour": {
                "hidden-fields": ["schema", "port"],
                "relabeling": {"host": "Platform URL", "login": "User (optional, Basic auth)",
                               "password": "Access token"},
                "placeholders": {"host": "https://acme.jfrog.io", "login": "leave empty to send a Bearer token"},
            },
        }],
    }
