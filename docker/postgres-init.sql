-- Runs once, when the postgres service initialises an empty data directory: the official image runs
-- /docker-entrypoint-initdb.d/*.sql with psql as the superuser ("Initialization scripts",
-- https://hub.docker.com/_/postgres). Two login roles that are not superusers and cannot create roles or
-- databases, each owning its own databases and unable to connect to the other's:
--   AIRFLOW_DB_USER (airflow): database airflow, Airflow's metadata and the Celery results;
--   MLFLOW_DB_USER (mlflow): database mlflow, the tracking store, and mlflow_auth, MLflow's users and grants.
-- Names and passwords come from the container's environment through psql's \getenv (psql 15 or later), never
-- from this file or a command line. The password is sent once in the CREATE ROLE statement, which the server
-- does not log with its default log_statement = none, and is stored as a SCRAM-SHA-256 verifier.
\set ON_ERROR_STOP on

\getenv airflow_user AIRFLOW_DB_USER
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_user MLFLOW_DB_USER
\getenv mlflow_password MLFLOW_DB_PASSWORD
\if :{?airflow_user}
\else
\set airflow_user airflow
\endif
\if :{?mlflow_user}
\else
\set mlflow_user mlflow
\endif
\if :{?airflow_password}
\else
\set airflow_password ''
\endif
\if :{?mlflow_password}
\else
\set mlflow_password ''
\endif

SELECT :'airflow_password' = '' AS airflow_password_missing,
       :'mlflow_password' = '' AS mlflow_password_missing,
       :'airflow_user' = :'mlflow_user' AS same_user \gset
\if :airflow_password_missing
DO $$ BEGIN RAISE EXCEPTION 'postgres-init.sql: AIRFLOW_DB_PASSWORD is empty; set it in .env'; END $$;
\endif
\if :mlflow_password_missing
DO $$ BEGIN RAISE EXCEPTION 'postgres-init.sql: MLFLOW_DB_PASSWORD is empty; set it in .env'; END $$;
\endif
\if :same_user
DO $$ BEGIN RAISE EXCEPTION 'postgres-init.sql: AIRFLOW_DB_USER and MLFLOW_DB_USER must differ'; END $$;
\endif

SET password_encryption = 'scram-sha-256';
CREATE ROLE :"airflow_user" LOGIN PASSWORD :'airflow_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE :"mlflow_user" LOGIN PASSWORD :'mlflow_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;

\set mlflow_auth_db :mlflow_user '_auth'
CREATE DATABASE :"airflow_user" OWNER :"airflow_user";
CREATE DATABASE :"mlflow_user" OWNER :"mlflow_user";
CREATE DATABASE :"mlflow_auth_db" OWNER :"mlflow_user";
-- PUBLIC may connect to (and create temporary tables in) every new database by default: only the owner may.
REVOKE ALL ON DATABASE :"airflow_user" FROM PUBLIC;
REVOKE ALL ON DATABASE :"mlflow_user" FROM PUBLIC;
REVOKE ALL ON DATABASE :"mlflow_auth_db" FROM PUBLIC;
