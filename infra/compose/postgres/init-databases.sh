#!/bin/bash
# One PostgreSQL server, one database and one login role per consumer: pacsflow's own state
# (outbox, orders, worklist, review, audit, drift), Prefect, MLflow and Orthanc's index.
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d);
# passwords come from the environment (.env), never from this file.
set -euo pipefail

create() {
  local name="$1" password="$2"
  if [ -z "$password" ]; then
    echo "init-databases: the password of role $name is empty; set it in .env" >&2
    exit 1
  fi
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
}

create pacsflow "${PG_PACSFLOW_PASSWORD:-}"
create prefect "${PG_PREFECT_PASSWORD:-}"
create mlflow "${PG_MLFLOW_PASSWORD:-}"
create orthanc "${PG_ORTHANC_PASSWORD:-}"
