#!/bin/sh
# The stack's exposure check (service exposure-check; every other service starts after it
# succeeds). Bound to a loopback address (RECSYS_BIND_ADDRESS=127.0.0.1, the default) the
# stack is reachable from this machine only and its local default passwords are fine.
# Bound to anything else, it refuses to start while a password is still its local default,
# empty or short, and names the variable. Prints names, never values.
#
#   RECSYS_BIND_ADDRESS=0.0.0.0 docker compose run --rm exposure-check
#
# POSIX sh, no network (network_mode: none): runs in any image that has /bin/sh.
set -eu

address=${RECSYS_BIND_ADDRESS:-127.0.0.1}
min_length=${RECSYS_MIN_PASSWORD_LENGTH:-12}

is_loopback() {
  case "$1" in
    ::1 | "[::1]") return 0 ;;
    *[!0-9.]* | *..* | .* | *.) return 1 ;;  # not a dotted IPv4 literal
    127.*.*.*) [ "$(echo "$1" | tr -cd . | wc -c)" -eq 3 ] ;;
    *) return 1 ;;
  esac
}

if is_loopback "$address"; then
  echo "[exposure-check] ports published on $address (this machine only): local defaults allowed"
  exit 0
fi

# the local defaults of .env / docker-compose.yaml: VARIABLE=default
failures=0
for pair in AIRFLOW_PASSWORD=admin POSTGRES_PASSWORD=airflow MLFLOW_DB_PASSWORD=mlflow; do
  name=${pair%%=*}
  default=${pair#*=}
  eval "value=\${$name:-}"
  reason=
  if [ -z "$value" ]; then
    reason="is empty"
  elif [ "$value" = "$default" ]; then
    reason="is still its local default"
  elif [ "${#value}" -lt "$min_length" ]; then
    reason="is shorter than $min_length characters"
  fi
  if [ -n "$reason" ]; then
    echo "[exposure-check] ERROR: $name $reason, and RECSYS_BIND_ADDRESS=$address publishes the stack beyond this machine." >&2
    failures=$((failures + 1))
  fi
done

if [ "$failures" -gt 0 ]; then
  echo "[exposure-check] Refusing to start. Put real passwords in .env.local (untracked) and start with" >&2
  echo "[exposure-check]   docker compose --env-file .env --env-file .env.local up -d" >&2
  echo "[exposure-check] or keep RECSYS_BIND_ADDRESS=127.0.0.1. See SECURITY.md." >&2
  exit 1
fi
echo "[exposure-check] ports published on $address: no default, empty or short password"
