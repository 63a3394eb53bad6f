"""`make demo`: one nightly run of recsys_retrain on local defaults, no Docker.

All state lives under RECSYS_HOME (default .recsys/ in the checkout). Each call
runs the day after the last successful one there (or --date), so a second call
trains against the first one's champion. The local endpoint is started for the
run if nothing answers on RECSYS_ENDPOINT_URL, and stopped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

from recsys import tracking
from recsys.settings import REPO_ROOT, Settings

DAG_ID = "recsys_retrain"


def airflow_env(settings: Settings) -> dict[str, str]:
    airflow_home = settings.home / "airflow"
    return {
        **os.environ,
        "RECSYS_HOME": str(settings.home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    }


def next_date(state: Path) -> dt.date:
    if state.exists():
        return dt.date.fromisoformat(state.read_text().strip()) + dt.timedelta(days=1)
    return dt.datetime.now(dt.UTC).date()


def start_endpoint(settings: Settings) -> subprocess.Popen | None:
    try:
        requests.get(f"{settings.endpoint_url}/ping", timeout=2)
        print(f"using the endpoint already answering at {settings.endpoint_url}")
        return None
    except requests.RequestException:
        pass
    serve = REPO_ROOT / ".venv-train" / "bin" / "serve"
    settings.endpoint_dir.mkdir(parents=True, exist_ok=True)
    log = open(settings.endpoint_dir / "serve.log", "ab")
    port = str(urlparse(settings.endpoint_url).port or 8081)
    proc = subprocess.Popen(
        [str(serve), "--host", "127.0.0.1", "--port", port, "--model-dir", str(settings.endpoint_dir / "current")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    for _ in range(120):
        try:
            requests.get(f"{settings.endpoint_url}/ping", timeout=2)
            print(f"started the local endpoint at {settings.endpoint_url} (log: {log.name})")
            return proc
        except requests.RequestException:
            if proc.poll() is not None:
                raise SystemExit(f"the local endpoint did not start; see {log.name}")
            time.sleep(1)
    proc.terminate()
    raise SystemExit(f"the local endpoint did not answer within 120 s; see {log.name}")


def summary(settings: Settings, day: dt.date) -> None:
    champion = tracking.current_champion(settings)
    print("\n=== recsys_retrain demo", day, "===")
    if champion is None:
        print("no champion yet")
        return
    client = tracking.client(settings)
    run = client.get_run(champion.run_id)
    metrics = run.data.metrics
    print(f"champion: {tracking.REGISTERED_MODEL} v{champion.version} ({champion.model_version}), "
          f"window {champion.window_start}..{champion.window_end}")
    for name in ("test_hr_at_20", "test_mrr_at_20", "popularity_baseline_test_hr_at_20",
                 "popularity_baseline_test_mrr_at_20"):
        if name in metrics:
            print(f"  {name:38s} {metrics[name]:.4f}")
    print(f"MLflow run:   {run.info.run_id} (store {settings.mlflow_tracking_uri};"
          f" browse with `.venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}`)")
    key = run.data.tags.get("airflow.run_id", "")
    reports = sorted((settings.home / "reports").glob("*/*_report.html"), key=lambda p: p.stat().st_mtime)
    print("reports:      " + ", ".join(str(p) for p in reports[-2:]) if reports else "reports:      none")
    print(f"model:        {champion.artifact_uri}")
    print(f"airflow run:  {key}")


def sample_prediction(settings: Settings) -> None:
    try:
        response = requests.post(f"{settings.endpoint_url}/invocations",
                                 json={"sessions": [[]], "k": 3}, timeout=10)
        print("endpoint:     POST /invocations ->", json.dumps(response.json())[:300])
    except requests.RequestException as exc:
        print(f"endpoint:     not answering ({exc})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make demo",
        description="Run recsys_retrain once on local defaults (DuckDB, files, local training and endpoint).",
    )
    parser.add_argument("--date", type=dt.date.fromisoformat,
                        help="the run's logical date, YYYY-MM-DD (default: the day after the last demo run)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    state = settings.home / "demo_last_date"
    day = args.date or next_date(state)
    env = airflow_env(settings)
    print(f"RECSYS_HOME={settings.home}; running {DAG_ID} for {day}")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    endpoint = start_endpoint(settings)
    try:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", DAG_ID, day.isoformat()], env=env)
        elapsed = time.monotonic() - started
        state_ok = run_succeeded(env, day)
        summary(settings, day)
        sample_prediction(settings)
    finally:
        if endpoint is not None:
            endpoint.terminate()
            endpoint.wait(timeout=30)
    print(f"\nrun {'succeeded' if state_ok else 'FAILED'} in {elapsed:.0f} s")
    if state_ok:
        state.write_text(day.isoformat())
    return 0 if state_ok and result.returncode == 0 else 1


def run_succeeded(env: dict[str, str], day: dt.date) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "state", DAG_ID, day.isoformat()],
        env=env, capture_output=True, text=True,
    ).stdout
    return out.strip().splitlines()[-1:] == ["success"]


if __name__ == "__main__":
    sys.exit(main())
