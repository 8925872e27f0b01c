"""The project's one AirflowPlugin: registers the JFrog extra links ("Artifactory", "Xray scan")."""

from __future__ import annotations

from airflow.sdk.plugins_manager import AirflowPlugin
from jfrog_provider.links import ArtifactoryLink, XrayScanLink


class JFrogPlugin(AirflowPlugin):
    """Extra links for the JFrog operators; each link's `operators` names the operators it serves."""

    name = "jfrog"
    # not global: the links read XCom keys that only the JFrog operators and sensors push
    operator_extra_links = [ArtifactoryLink(), XrayScanLink()]
