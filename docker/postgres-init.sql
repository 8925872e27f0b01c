-- A second database on the same server for the MLflow tracking store.
CREATE DATABASE mlflow OWNER airflow;
