"""Static checks of docker-compose.yaml and its exposure check, without starting anything.

The stack publishes only Airflow, MLflow and the endpoint, on 127.0.0.1 unless
RECSYS_BIND_ADDRESS opens them (MLflow never); every service runs under an init process
and waits for the exposure check, which refuses default passwords beyond localhost; no
Airflow service depends on the endpoint; the endpoint's healthcheck is liveness, not
readiness. The runtime side (what really listens, a refused start) is in the compose
end-to-end test (.ci/compose-e2e).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
CHECK_SCRIPT = REPO / "docker" / "exposure-check" / "check.sh"
CHECK_SERVICE = "exposure-check"
PUBLISHED = {"airflow-apiserver", "mlflow", "endpoint"}
# the passwords the check refuses beyond localhost, with their local defaults
DEFAULT_PASSWORDS = {"AIRFLOW_PASSWORD": "admin", "POSTGRES_PASSWORD": "airflow", "MLFLOW_DB_PASSWORD": "mlflow"}
STRONG = "k3Jq9-vXw2-Lp7Rt-a8Zs"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def dotenv() -> dict[str, str]:
    values = {}
    for line in (REPO / ".env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME-default} (one level, as the ports use)."""

    def value(match: re.Match) -> str:
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", value, text)


def host_bindings(services: dict, env: dict[str, str]) -> dict[str, list[str]]:
    """service -> the host addresses its ports are published on."""
    bound = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: use the short syntax HOST_IP:PUBLISHED:TARGET"
            parts = interpolate(port, env).rsplit(":", 2)
            assert len(parts) == 3, f"{name}: port {port!r} names no host address (Docker would use 0.0.0.0)"
            bound.setdefault(name, []).append(parts[0])
    return bound


def test_only_airflow_mlflow_and_the_endpoint_are_published(services):
    assert {name for name, service in services.items() if service.get("ports")} == PUBLISHED
    for name, service in services.items():
        assert "expose" not in service and service.get("network_mode") != "host", name


def test_ports_listen_on_loopback_by_default(services):
    assert host_bindings(services, {}) == {name: ["127.0.0.1"] for name in PUBLISHED}
    assert dotenv()["RECSYS_BIND_ADDRESS"] == "127.0.0.1"
    assert host_bindings(services, dotenv()) == {name: ["127.0.0.1"] for name in PUBLISHED}


def test_the_setting_opens_airflow_and_the_endpoint_but_never_mlflow(services):
    bound = host_bindings(services, {"RECSYS_BIND_ADDRESS": "0.0.0.0"})
    assert bound == {"airflow-apiserver": ["0.0.0.0"], "endpoint": ["0.0.0.0"], "mlflow": ["127.0.0.1"]}


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_renders_the_same_bindings():
    def rendered(bind: str | None) -> dict[str, set[str]]:
        env = {k: v for k, v in os.environ.items() if k != "RECSYS_BIND_ADDRESS"}
        if bind is not None:
            env["RECSYS_BIND_ADDRESS"] = bind
        proc = subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 and "is not a docker command" in proc.stderr:
            pytest.skip("no docker compose v2")
        assert proc.returncode == 0, proc.stderr
        services = json.loads(proc.stdout)["services"]
        return {name: {p.get("host_ip") for p in s.get("ports", [])} for name, s in services.items() if s.get("ports")}

    assert rendered(None) == {name: {"127.0.0.1"} for name in PUBLISHED}
    assert rendered("0.0.0.0") == {"airflow-apiserver": {"0.0.0.0"}, "endpoint": {"0.0.0.0"}, "mlflow": {"127.0.0.1"}}


def test_every_service_runs_under_an_init_process(services):
    missing = sorted(name for name, service in services.items() if service.get("init") is not True)
    assert not missing, f"without `init: true`: {missing}"


def test_every_service_waits_for_the_exposure_check(services):
    check = services[CHECK_SERVICE]
    assert check.get("restart") == "no" and check.get("network_mode") == "none"
    for name, service in services.items():
        if name == CHECK_SERVICE:
            continue
        condition = (service.get("depends_on") or {}).get(CHECK_SERVICE, {}).get("condition")
        assert condition == "service_completed_successfully", f"{name} does not wait for {CHECK_SERVICE}"
    # it checks the values compose really uses: the same defaults as everywhere else
    env = check["environment"]
    assert env["RECSYS_BIND_ADDRESS"] == "${RECSYS_BIND_ADDRESS:-127.0.0.1}"
    for name, default in DEFAULT_PASSWORDS.items():
        assert env[name] == f"${{{name}:-{default}}}"
        assert dotenv()[name] == default


def test_no_airflow_service_depends_on_the_endpoint(services):
    airflow = [name for name in services if name.startswith("airflow-")]
    assert {"airflow-scheduler", "airflow-worker", "airflow-apiserver"} <= set(airflow)
    for name in airflow:
        assert "endpoint" not in (services[name].get("depends_on") or {}), f"{name} depends on the endpoint"


# ---- the endpoint's healthcheck: alive while it has no model --------------------------------

class _Ping(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthcheck(services: dict, port: int) -> int:
    test = services["endpoint"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    code = test[3].replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    assert code != test[3], "the healthcheck no longer probes 127.0.0.1:8080/ping"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode


@pytest.mark.parametrize("status, healthy", [(200, True), (503, True), (500, False), (404, False)])
def test_endpoint_healthcheck_is_liveness(services, status, healthy):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ping)
    server.status = status
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert (_healthcheck(services, server.server_address[1]) == 0) is healthy
    finally:
        server.shutdown()
        server.server_close()


def test_endpoint_healthcheck_fails_when_nothing_listens(services):
    assert _healthcheck(services, _free_port()) != 0


# ---- the exposure check ---------------------------------------------------------------------

def run_check(**env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(["sh", str(CHECK_SCRIPT)], env={**base, **env}, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "", "::1"])
def test_check_allows_local_defaults_on_loopback(address):
    proc = run_check(RECSYS_BIND_ADDRESS=address, **DEFAULT_PASSWORDS)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.20", "::", "127.0.0.1.example", "1127.0.0.1"])
def test_check_refuses_default_passwords_beyond_loopback(address):
    proc = run_check(RECSYS_BIND_ADDRESS=address, **DEFAULT_PASSWORDS)
    assert proc.returncode != 0
    for name in DEFAULT_PASSWORDS:
        assert f"{name} is still its local default" in proc.stderr
    assert "SECURITY.md" in proc.stderr


def test_check_names_only_the_weak_variable_and_never_a_value():
    weak = {**{name: STRONG for name in DEFAULT_PASSWORDS}, "POSTGRES_PASSWORD": "short"}
    proc = run_check(RECSYS_BIND_ADDRESS="0.0.0.0", **weak)
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD is shorter than 12 characters" in proc.stderr
    assert "AIRFLOW_PASSWORD" not in proc.stderr and "MLFLOW_DB_PASSWORD" not in proc.stderr
    assert STRONG not in proc.stdout + proc.stderr and "short" not in proc.stdout + proc.stderr.replace("shorter", "")


def test_check_refuses_unset_passwords_beyond_loopback():
    proc = run_check(RECSYS_BIND_ADDRESS="0.0.0.0")
    assert proc.returncode != 0
    assert all(f"{name} is empty" in proc.stderr for name in DEFAULT_PASSWORDS)


def test_check_allows_real_passwords_beyond_loopback():
    proc = run_check(RECSYS_BIND_ADDRESS="0.0.0.0", **{name: STRONG for name in DEFAULT_PASSWORDS})
    assert proc.returncode == 0, proc.stderr


def test_env_file_holds_no_secrets():
    """.env is tracked: its passwords are the local defaults the check knows, nothing else."""
    values = dotenv()
    for name, value in values.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|KEY", name):
            assert DEFAULT_PASSWORDS.get(name) == value, f"{name} in .env is not a known local default"
        assert not name.startswith(("AIRFLOW_CONN_", "AWS_", "AIRFLOW__")), name
