"""JFrog Platform (Artifactory + Xray) provider for this project, shaped like an Airflow provider."""

__version__ = "0.1.0"
