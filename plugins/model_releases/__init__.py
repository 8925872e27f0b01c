"""The "Model releases" view: each registered model version as MLflow and Artifactory record it."""
