#!/usr/bin/env bash
# Runs once, when the postgres volume is first initialised: MLflow's own role and database
# beside Airflow's (POSTGRES_USER / POSTGRES_DB).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     --set pw="${MLFLOW_DB_PASSWORD:?}" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'pw';
CREATE DATABASE mlflow OWNER mlflow;
SQL
