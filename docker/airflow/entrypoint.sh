#!/usr/bin/env bash
# Entry point of the Airflow image: runs its command (`airflow scheduler`, ...) after
#  - giving an arbitrary AIRFLOW_UID a passwd entry (some libraries look the user up), and
#  - exporting the secrets the stack's init job generated (JWT secret, Fernet key, API
#    secret key; one shared set for every Airflow service). A variable already set in the
#    environment (for example from .env.local) wins.
set -euo pipefail

if ! whoami >/dev/null 2>&1 && [ -w /etc/passwd ]; then
  echo "airflow-${UID:-$(id -u)}:x:$(id -u):0:airflow:/home/airflow:/bin/bash" >> /etc/passwd
fi
export HOME=${HOME:-/home/airflow}
[ "$HOME" = / ] && export HOME=/home/airflow

secrets_file=${RECSYS_AIRFLOW_SECRETS_FILE:-/opt/airflow/config/secrets.env}
if [ -r "$secrets_file" ]; then
  while IFS='=' read -r key value; do
    case "$key" in ''|\#*) continue ;; esac
    if [ -z "${!key:-}" ]; then
      export "$key=$value"
    fi
  done < "$secrets_file"
fi

exec "$@"
