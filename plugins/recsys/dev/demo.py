"""`make demo`: one nightly run of recsys_retrain on local defaults, no Docker.

All state lives under RECSYS_HOME (default .recsys/ in the checkout). Each call
runs the day after the last successful one there (or --date), so a second call
trains against the first one's champion. The local endpoint is started for the
run if nothing answers on RECSYS_ENDPOINT_URL, and stopped afterwards.

It prints a line per task as it starts and as it ends (state, time, and a gate's
verdict), then a summary: the champion, its metrics, reports, the endpoint's answer.
Airflow's own output (`airflow db migrate`, `airflow dags test`) goes to a log file
under RECSYS_HOME/demo/, whose path it prints first. A run that executed no task
(a date before the DAG's start_date creates none) is reported as such, never as a
success.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

import requests

from recsys import tracking
from recsys.settings import REPO_ROOT, Settings

DAG_ID = "recsys_retrain"
GATES = ("data_gate", "model_gate")

# What `airflow dags test` logs around each task it runs (airflow.sdk's DAG.test).
_TASK_STARTS = re.compile(r"\[DAG TEST\] starting task_id=(?P<task>\S+) map_index=(?P<map_index>-?\d+)")
_TASK_ENDS = re.compile(r"\[DAG TEST\] end task task_id=(?P<task>\S+) map_index=(?P<map_index>-?\d+)")
# What the gates log as their verdict (recsys.gates.GateResult.message), without the
# logger name and key=value pairs that Airflow's log format puts after a message.
_VERDICT = re.compile(r"\b(?P<gate>data|model) gate (?:passed|failed)\b.*?(?=\s+\[[\w.]+\](?:\s+\w+=\S*)*\s*$|\s*$)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def airflow_env(settings: Settings) -> dict[str, str]:
    airflow_home = settings.home / "airflow"
    return {
        "RECSYS_SIM_GENERATE_MISSING": "true",  # the demo's feed is the simulator, unless told otherwise
        **os.environ,
        "RECSYS_HOME": str(settings.home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_db(settings)}",
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        # the demo reads Airflow's output as it comes, to show each task as it starts and ends
        "PYTHONUNBUFFERED": "1",
    }


def airflow_db(settings: Settings) -> Path:
    return settings.home / "airflow" / "airflow.db"


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


# --- the run, as Airflow's metadata database records it --------------------------------


@dataclass
class TaskRecord:
    task_id: str
    state: str | None
    duration: float | None


@dataclass
class RunRecord:
    run_id: str
    state: str | None
    tasks: list[TaskRecord]

    @property
    def executed(self) -> list[TaskRecord]:
        """The task instances that ran (skipped and never-started ones did not)."""
        return [t for t in self.tasks if t.state in ("success", "failed", "up_for_retry")]


def _utc(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def find_run(db: Path, day: dt.date, since: dt.datetime) -> RunRecord | None:
    """The run of `day` that `airflow dags test` made after `since`, with its task instances."""
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
        runs = con.execute("select run_id, state, logical_date, run_after from dag_run where dag_id = ? "
                           "order by id desc", (DAG_ID,)).fetchall()
        for run_id, state, logical_date, run_after in runs:
            logical, after = _utc(logical_date), _utc(run_after)
            if logical and logical.date() == day and after and after >= since:
                rows = con.execute("select task_id, state, duration from task_instance where dag_id = ? and run_id = ? "
                                   "order by start_date is null, start_date, task_id", (DAG_ID, run_id)).fetchall()
                return RunRecord(run_id, state, [TaskRecord(*row) for row in rows])
    return None


# --- what a person sees while it runs ----------------------------------------------------


class Progress:
    """Reads `airflow dags test`'s output line by line: every line goes to the log file,
    and each task's start and end (with its state from the metadata database, and for a
    gate its verdict) is printed."""

    def __init__(self, log: TextIO, db: Path, day: dt.date, since: dt.datetime, out: TextIO = sys.stdout):
        self.log, self.db, self.day, self.since, self.out = log, db, day, since, out
        self.started: dict[str, float] = {}
        self.verdicts: dict[str, str] = {}

    def feed(self, line: str) -> None:
        self.log.write(line)
        text = _ANSI.sub("", line)
        if match := _VERDICT.search(text):
            self.verdicts[f"{match['gate']}_gate"] = match.group(0).strip()
        if match := _TASK_STARTS.search(text):
            self.started[match["task"]] = time.monotonic()
            self._say(match["task"], "started")
        elif match := _TASK_ENDS.search(text):
            self._ended(match["task"])

    def _ended(self, task_id: str) -> None:
        took = time.monotonic() - self.started.pop(task_id, time.monotonic())
        state = self._state(task_id) or "ended"
        verdict = self.verdicts.pop(task_id, "") if task_id in GATES else ""
        self._say(task_id, f"{state:<8s} {took:7.1f} s" + (f"  {verdict}" if verdict else ""))

    def _state(self, task_id: str) -> str | None:
        try:
            run = find_run(self.db, self.day, self.since)
        except sqlite3.Error:
            return None
        return next((t.state for t in run.tasks if t.task_id == task_id), None) if run else None

    def _say(self, task_id: str, what: str) -> None:
        print(f"  {dt.datetime.now():%H:%M:%S}  {task_id:<44s} {what}", file=self.out, flush=True)


def run_dag(settings: Settings, env: dict[str, str], day: dt.date, log_path: Path) -> tuple[int, RunRecord | None]:
    """`airflow dags test` for `day`, its output to `log_path`; its exit code and the run it made."""
    since = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with log_path.open("a") as log:
        log.write(f"\n=== airflow dags test {DAG_ID} {day} ({since:%Y-%m-%d %H:%M:%S} UTC)\n")
        log.flush()
        progress = Progress(log, airflow_db(settings), day, since)
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "dags", "test", DAG_ID, day.isoformat()],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)
        try:
            for line in proc.stdout:
                progress.feed(line)
        finally:
            returncode = proc.wait()
    return returncode, find_run(airflow_db(settings), day, since)


# --- the summary --------------------------------------------------------------------------


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
    k = settings.top_k
    for name in (f"test_hr_at_{k}", f"test_mrr_at_{k}", f"popularity_baseline_test_hr_at_{k}",
                 f"popularity_baseline_test_mrr_at_{k}"):
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


def verdict(returncode: int, run: RunRecord | None) -> tuple[bool, str]:
    """Whether the run succeeded, and what happened in a few words. A run that executed no
    task is never a success, whatever Airflow says of it."""
    if run is None:
        return False, f"no run of {DAG_ID} was recorded (airflow dags test exited with {returncode})"
    if not run.executed:
        return False, (f"no task ran (Airflow creates no task instance for a date before the DAG's "
                       f"start_date); Airflow still marked {run.run_id} {run.state}")
    not_run = [f"{t.task_id} ({t.state or 'never scheduled'})" for t in run.tasks if t not in run.executed]
    ok = returncode == 0 and run.state == "success"
    return ok, f"{len(run.executed)} tasks ran" + (f"; not run: {', '.join(not_run)}" if not_run else "")


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
    log_path = settings.home / "demo" / f"{DAG_ID}_{day}_{dt.datetime.now():%Y%m%dT%H%M%S}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"RECSYS_HOME={settings.home}; running {DAG_ID} for {day}")
    print(f"Airflow's log: {log_path}")
    with log_path.open("w") as log:
        migrated = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    if migrated.returncode != 0:
        print(f"airflow db migrate failed; see {log_path}", file=sys.stderr)
        return 1
    endpoint = start_endpoint(settings)
    try:
        started = time.monotonic()
        returncode, run = run_dag(settings, env, day, log_path)
        elapsed = time.monotonic() - started
        summary(settings, day)
        sample_prediction(settings)
    finally:
        if endpoint is not None:
            endpoint.terminate()
            endpoint.wait(timeout=30)
    ok, said = verdict(returncode, run)
    print(f"\nrun {'succeeded' if ok else 'FAILED'} in {elapsed:.0f} s: {said}\nAirflow's log: {log_path}")
    if ok:
        state.write_text(day.isoformat())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
