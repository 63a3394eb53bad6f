"""Steps 1 (exposure) and 2-5 of the compose end-to-end test, against a stack that
`docker compose up` started.

    1. only Airflow, MLflow and the endpoint are published, on RECSYS_BIND_ADDRESS (MLflow on
       127.0.0.1 whatever it says), and the socket table shows them listening there only; the endpoint is healthy while it has no model, and /ping says 503 until then;
    2. log in through the API (/auth/token), see the first scheduled run of recsys_retrain go
       green, trigger a run through /api/v2 and wait for it;
    3. POST /invocations on the endpoint's published port answers with the model that MLflow's
       alias `champion` names (checked through MLflow's REST API);
    4. create a three-night backfill with a concurrency of 3 through the API and wait for its
       runs; their work took turns in date order, and they register their models but leave the
       champion serving (their data is older than its); then a run triggered with an impossible
       hyperparameter fails at train_model, its MLflow run is closed FAILED naming the task and
       the container's reason, and the champion keeps serving;
    5. screenshots of the Airflow grid view and the MLflow run page (headless Chromium).

Standard library only (runs on the CI host's python3). .ci/compose-e2e calls it; settings
come from the environment (E2E_* below, AIRFLOW_USERNAME / AIRFLOW_PASSWORD). Every wait is
bounded; a failed run prints its task states and the failed tasks' logs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import screenshot  # noqa: E402

DAG_ID = "recsys_retrain"
AIRFLOW = os.environ.get("E2E_AIRFLOW_URL", "http://localhost:8080").rstrip("/")
MLFLOW = os.environ.get("E2E_MLFLOW_URL", "http://localhost:5000").rstrip("/")
ENDPOINT = os.environ.get("E2E_ENDPOINT_URL", "http://localhost:8081").rstrip("/")
USERNAME = os.environ.get("AIRFLOW_USERNAME", "admin")
PASSWORD = os.environ.get("AIRFLOW_PASSWORD", "admin")
OUT = Path(os.environ.get("E2E_OUTPUT_DIR", "ci-output"))
RUN_TIMEOUT_S = float(os.environ.get("E2E_RUN_TIMEOUT_S", "1200"))
UP_STARTED = float(os.environ.get("E2E_UP_STARTED", "0") or 0)
PROJECT = os.environ.get("E2E_PROJECT", "recsys-e2e")
BIND_ADDRESS = os.environ.get("E2E_BIND_ADDRESS", "127.0.0.1") or "127.0.0.1"
PUBLISHED = {"airflow-apiserver", "mlflow", "endpoint"}
REGISTERED_MODEL = "session-recsys"
TERMINAL = {"success", "failed"}


class E2EFailure(AssertionError):
    pass


def log(message: str) -> None:
    print(f"[compose-e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def request(method: str, url: str, body: dict | None = None, token: str | None = None,
            headers: dict | None = None, timeout: float = 30.0, raw: bool = False):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            payload = response.read()
            return payload.decode() if raw else (json.loads(payload) if payload else {})
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:2000]
        raise E2EFailure(f"{method} {url} -> HTTP {exc.code}: {detail}") from None


def airflow_api(method: str, path: str, token: str, body: dict | None = None, **kwargs):
    return request(method, f"{AIRFLOW}/api/v2{path}", body=body, token=token, **kwargs)


# ---- step 1: exposure ------------------------------------------------------------------------

def compose_ps() -> list[dict]:
    out = subprocess.run(["docker", "compose", "-p", PROJECT, "ps", "--format", "json"],
                         check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    if out.startswith("["):  # compose before 2.21: one array
        return json.loads(out)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure() -> None:
    published: dict[str, set[tuple[str, int]]] = {}
    for container in compose_ps():
        for pub in container.get("Publishers") or []:
            if pub.get("PublishedPort"):
                published.setdefault(container["Service"], set()).add((pub["URL"], pub["PublishedPort"]))
    if set(published) != PUBLISHED:
        raise E2EFailure(f"published services: {sorted(published)}, expected exactly {sorted(PUBLISHED)}")
    expected = {name: ("127.0.0.1" if name == "mlflow" else BIND_ADDRESS) for name in PUBLISHED}
    for name, bindings in sorted(published.items()):
        addresses = {address for address, _ in bindings}
        if addresses != {expected[name]}:
            raise E2EFailure(f"{name} is published on {sorted(bindings)}, expected on {expected[name]} only")
    log("published: " + ", ".join(f"{n} on {a}:{p}" for n, b in sorted(published.items()) for a, p in sorted(b)))

    ports = {port for bindings in published.values() for _, port in bindings}
    listeners = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    for port in sorted(ports):
        local = [line.split()[3] for line in listeners if len(line.split()) > 3
                 and line.split()[3].rsplit(":", 1)[-1] == str(port)]
        wrong = [address for address in local
                 if address.rsplit(":", 1)[0] not in (BIND_ADDRESS, "127.0.0.1")]
        if wrong:
            raise E2EFailure(f"port {port} listens on {wrong} (ss -ltn), not only on the bind address")
        log(f"ss -ltn: port {port} listens on {local or '(no userland proxy: iptables only)'}")

    # what listens is read off the socket table (ss), never probed on the host's other
    # addresses: this test sends traffic to loopback only


def check_endpoint_alive_without_model() -> None:
    """Liveness is not readiness: on a fresh stack the endpoint's container is healthy (compose
    waited for it) while it has no model, and /ping answers 503 until it has one."""
    health = {c["Service"]: c.get("Health") for c in compose_ps()}
    try:
        with urllib.request.urlopen(f"{ENDPOINT}/ping", timeout=10) as response:
            body = response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise E2EFailure(f"GET /ping answered {exc.code} before the first model, expected 503") from None
    else:
        if (json.loads(body or "{}") or {}).get("model_version"):
            log(f"a model is deployed already ({body}): the check of /ping without a model does not apply")
            return
        raise E2EFailure(f"GET /ping answered {response.status} without a model (expected 503): {body}")
    if health.get("endpoint") != "healthy":
        raise E2EFailure(f"the endpoint container is {health.get('endpoint')!r}, not healthy, while it has no model")
    log("the endpoint is healthy (alive) and GET /ping answers 503 until the first model is deployed")


# ---- step 2 ---------------------------------------------------------------------------------

def login() -> str:
    token = request("POST", f"{AIRFLOW}/auth/token", {"username": USERNAME, "password": PASSWORD})["access_token"]
    log(f"logged in as {USERNAME} through /auth/token")
    return token


def wait_for_dag(token: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            dag = airflow_api("GET", f"/dags/{DAG_ID}", token)
            errors = airflow_api("GET", "/importErrors", token).get("import_errors", [])
            if errors:
                raise E2EFailure(f"DAG import errors: {json.dumps(errors, indent=1)[:3000]}")
            log(f"{DAG_ID} is parsed; paused={dag['is_paused']}")
            return dag
        except E2EFailure as exc:
            if "import errors" in str(exc):
                raise
            last = str(exc)
        time.sleep(5)
    raise E2EFailure(f"{DAG_ID} did not appear within {timeout:.0f} s: {last}")


def dag_runs(token: str, **filters) -> list[dict]:
    query = urllib.parse.urlencode({"order_by": "run_after", "limit": 100, **filters}, doseq=True)
    return airflow_api("GET", f"/dags/{DAG_ID}/dagRuns?{query}", token)["dag_runs"]


def trigger(token: str) -> str:
    run = airflow_api("POST", f"/dags/{DAG_ID}/dagRuns", token,
                      {"logical_date": None, "note": "compose end-to-end test"})
    log(f"triggered {run['dag_run_id']}")
    return run["dag_run_id"]


def task_states(token: str, run_id: str) -> list[dict]:
    quoted = urllib.parse.quote(run_id, safe="")
    return airflow_api("GET", f"/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances?limit=100", token)["task_instances"]


def task_log(token: str, run_id: str, task: dict) -> str:
    path = "/dags/{}/dagRuns/{}/taskInstances/{}/logs/{}?full_content=true".format(
        DAG_ID, urllib.parse.quote(run_id, safe=""), urllib.parse.quote(task["task_id"], safe=""),
        max(task.get("try_number") or 1, 1))
    try:
        content = airflow_api("GET", path, token, timeout=60).get("content", [])
    except E2EFailure as exc:
        return f"(no log: {exc})"
    lines = []
    for item in content if isinstance(content, list) else [content]:
        if not isinstance(item, dict):
            lines.append(str(item))
            continue
        lines.append(" ".join(str(item[k]) for k in ("timestamp", "level", "event") if item.get(k)))
        for error in item.get("error_detail") or []:
            lines.append(f"    {error.get('exc_type')}: {error.get('exc_value')}")
    return "\n".join(lines)


def report_failure(token: str, run_id: str) -> str:
    tasks = task_states(token, run_id)
    summary = "\n".join(f"  {t['task_id']:45s} {t['state']}" for t in tasks)
    logs = []
    for task in tasks:
        if task["state"] in ("failed", "up_for_retry"):
            logs.append(f"---- log of {task['task_id']} (try {task.get('try_number')}) ----\n"
                        + task_log(token, run_id, task)[-6000:])
    return f"task states of {run_id}:\n{summary}\n" + "\n".join(logs)


def wait_for_runs(token: str, run_ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    last_states: dict[str, str] = {}
    while time.monotonic() < deadline:
        for run_id in run_ids:
            if run_id in done:
                continue
            run = airflow_api("GET", f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}", token)
            if run["state"] != last_states.get(run_id):
                log(f"{run_id}: {run['state']}")
                last_states[run_id] = run["state"]
            if run["state"] in TERMINAL:
                if run["state"] != "success":
                    raise E2EFailure(f"{run_id} ended {run['state']}\n{report_failure(token, run_id)}")
                ran = [t for t in task_states(token, run_id) if t["state"] == "success"]
                if not ran:  # a green run that did nothing is no success
                    raise E2EFailure(f"{run_id} is marked success but no task of it ran")
                done[run_id] = run
                took = _seconds(run["start_date"], run["end_date"])
                log(f"{run_id} succeeded in {took:.0f} s")
        if len(done) == len(run_ids):
            return done
        time.sleep(10)
    pending = [r for r in run_ids if r not in done]
    details = "\n".join(report_failure(token, r) for r in pending)
    raise E2EFailure(f"runs not finished within {timeout:.0f} s: {pending}\n{details}")


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def first_scheduled_run(token: str, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = dag_runs(token, run_type="scheduled")
        if runs:
            log(f"first scheduled run: {runs[0]['dag_run_id']} (created by the scheduler when the DAG was unpaused)")
            return runs[0]["dag_run_id"]
        time.sleep(5)
    raise E2EFailure(f"the scheduler created no scheduled run within {timeout:.0f} s (is the DAG paused?)")


# ---- step 3 ---------------------------------------------------------------------------------

def mlflow_api(path: str) -> dict:
    return request("GET", f"{MLFLOW}/api/2.0/mlflow/{path}")


def check_endpoint_serves_champion() -> dict:
    alias = urllib.parse.urlencode({"name": REGISTERED_MODEL, "alias": "champion"})
    version = mlflow_api(f"registered-models/alias?{alias}")["model_version"]
    tags = {t["key"]: t["value"] for t in version.get("tags", [])}
    champion = tags.get("model_version")
    if not champion:
        raise E2EFailure(f"MLflow's champion (version {version['version']}) has no model_version tag: {tags}")
    log(f"MLflow: {REGISTERED_MODEL} version {version['version']} is champion ({champion})")

    first = request("POST", f"{ENDPOINT}/invocations", {"sessions": [[]], "k": 5})
    popular = [item["sku"] for item in first["recommendations"][0]]
    sessions = [popular[:2], popular[2:3], []]
    answer = request("POST", f"{ENDPOINT}/invocations", {"sessions": sessions, "k": 5})
    if answer.get("model_version") != champion:
        raise E2EFailure(f"the endpoint serves {answer.get('model_version')!r}, MLflow's champion is {champion!r}")
    recommendations = answer["recommendations"]
    if len(recommendations) != len(sessions) or any(len(r) != 5 for r in recommendations):
        raise E2EFailure(f"expected 5 recommendations for each of {len(sessions)} sessions: {answer}")
    log(f"POST {ENDPOINT}/invocations answers from the champion {champion}: "
        f"{[r['sku'][:12] for r in recommendations[0]]}")
    ping = request("GET", f"{ENDPOINT}/ping")
    if ping.get("model_version") != champion:
        raise E2EFailure(f"GET /ping answers {ping}, expected 200 with the champion {champion}")
    run = mlflow_api(f"runs/get?run_id={version['run_id']}")["run"]
    return {"version": version, "model_version": champion, "run": run}


# ---- step 4 ---------------------------------------------------------------------------------

def backfill_three_nights(token: str) -> list[str]:
    """A backfill of three past nightly dates (four to two days ago) created with a concurrency
    of 3, as when filling in history quickly. The backfill starts the nights side by side;
    each waits for the earlier ones (check_nights_took_turns). Their windows end before the
    champion's, so each trains, gates against the baselines and registers its model, and none
    replaces the champion (check_backfill_kept_champion)."""
    today = dt.datetime.now(dt.UTC).date()
    first, last = today - dt.timedelta(days=4), today - dt.timedelta(days=2)
    body = {"dag_id": DAG_ID, "from_date": f"{first}T00:00:00Z", "to_date": f"{last}T23:59:59Z",
            "reprocess_behavior": "none", "max_active_runs": 3}
    planned = airflow_api("POST", "/backfills/dry_run", token, body)
    dates = sorted(b["logical_date"] for b in planned.get("backfills", []))
    if len(dates) != 3:
        raise E2EFailure(f"the backfill {first}..{last} would create {len(dates)} runs, not 3: {planned}")
    created = time.time()
    backfill = airflow_api("POST", "/backfills", token, body)
    log(f"backfill {backfill['id']}: {first}..{last}, max_active_runs 3 (logical dates {', '.join(dates)})")
    deadline = time.monotonic() + 120
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = [r for r in dag_runs(token, logical_date_gte=dates[0], logical_date_lte=dates[-1])
                if r["state"] not in TERMINAL or _after(r.get("end_date"), created)]
        if len(runs) >= 3:
            return [r["dag_run_id"] for r in sorted(runs, key=lambda r: r["logical_date"])]
        time.sleep(5)
    raise E2EFailure(f"backfill {backfill['id']} started {len(runs)} runs within 120 s, not 3")


def check_nights_took_turns(token: str, run_ids: list[str]) -> None:
    """The nights' work (everything after wait_for_earlier_nights) never overlapped, and ran
    in date order: one DuckDB file, one set of dbt tables and one endpoint take one night at a time."""
    spans = []
    for run_id in run_ids:  # in logical-date order
        tasks = [t for t in task_states(token, run_id)
                 if t["task_id"] != "wait_for_earlier_nights" and t.get("start_date")]
        start = min(dt.datetime.fromisoformat(t["start_date"]) for t in tasks)
        end = max(dt.datetime.fromisoformat(t["end_date"]) for t in tasks if t.get("end_date"))
        spans.append((run_id, start, end))
    for (earlier, _, earlier_end), (later, later_start, _) in zip(spans, spans[1:]):
        if later_start < earlier_end:
            raise E2EFailure(f"{later} started work at {later_start} before {earlier} finished at {earlier_end}")
    log("the backfill's nights took turns in date order: "
        + "; ".join(f"{r} {s:%H:%M:%S}-{e:%H:%M:%S}" for r, s, e in spans))


def check_backfill_kept_champion(token: str, run_ids: list[str], champion: dict) -> None:
    """Every backfilled run stopped at the freshness check; the champion is unchanged."""
    for run_id in run_ids:
        states = {t["task_id"]: t["state"] for t in task_states(token, run_id)}
        expected = {"model_gate": "success", "newer_than_champion": "success",
                    "update_endpoint": "skipped", "promote_champion": "skipped"}
        actual = {task: states.get(task) for task in expected}
        if actual != expected:
            raise E2EFailure(f"{run_id}: expected {expected}, got {actual}")
    now = check_endpoint_serves_champion()
    if now["model_version"] != champion["model_version"]:
        raise E2EFailure(f"the backfill replaced the champion {champion['model_version']} with {now['model_version']}")
    log(f"the backfilled runs registered their models and left the champion {champion['model_version']} serving")


def check_failed_training_changes_nothing(token: str, champion: dict) -> None:
    """A run triggered with an impossible hyperparameter (epochs 0): training fails (after its
    retry), the run fails at train_model with the container's reason, its MLflow run is closed
    FAILED by the deployed stack naming the task and the reason, and the champion keeps serving."""
    run = airflow_api("POST", f"/dags/{DAG_ID}/dagRuns", token, {
        "logical_date": None, "conf": {"hyperparameters": {"epochs": 0}},
        "note": "compose end-to-end test: a training that fails"})
    run_id = run["dag_run_id"]
    log(f"triggered {run_id} with hyperparameters {{epochs: 0}}")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (state := airflow_api("GET", f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}",
                                token)["state"]) not in TERMINAL:
        if time.monotonic() > deadline:
            raise E2EFailure(f"{run_id} did not end within {RUN_TIMEOUT_S:.0f} s\n{report_failure(token, run_id)}")
        time.sleep(10)
    states = {t["task_id"]: t["state"] for t in task_states(token, run_id)}
    if state != "failed" or states.get("train_model") != "failed" or states.get("update_endpoint") == "success":
        raise E2EFailure(f"{run_id} ended {state}, expected failed at train_model: {states}")
    experiment = mlflow_api("experiments/get-by-name?experiment_name=recsys-retrain")["experiment"]["experiment_id"]
    found = request("POST", f"{MLFLOW}/api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment], "filter": f"tags.`airflow.run_id` = '{run_id}'"}).get("runs", [])
    if len(found) != 1:
        raise E2EFailure(f"expected one MLflow run tagged airflow.run_id={run_id}, found {len(found)}")
    mlflow_run = found[0]
    tags = {t["key"]: t["value"] for t in mlflow_run["data"].get("tags", [])}
    if mlflow_run["info"]["status"] != "FAILED" or tags.get("failed_task") != "train_model" \
            or "epochs" not in tags.get("failure_reason", ""):
        raise E2EFailure(f"the MLflow run of {run_id} is {mlflow_run['info']['status']} with failed_task="
                         f"{tags.get('failed_task')!r}, failure_reason={tags.get('failure_reason')!r}")
    now = check_endpoint_serves_champion()
    if now["model_version"] != champion["model_version"]:
        raise E2EFailure(f"a failed training replaced the champion {champion['model_version']} with {now['model_version']}")
    log(f"{run_id} failed at train_model ({tags['failure_reason'][:120]}); its MLflow run is FAILED; "
        f"the champion {champion['model_version']} still serves")


def _after(timestamp: str | None, epoch: float) -> bool:
    return bool(timestamp) and dt.datetime.fromisoformat(timestamp).timestamp() >= epoch


# ---- step 5 ---------------------------------------------------------------------------------

def take_screenshots(token: str, champion: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    grid = OUT / "airflow-grid.png"
    text = screenshot.capture(f"{AIRFLOW}/dags/{DAG_ID}", str(grid), cookies={"_token": token},
                              wait_for=[DAG_ID, "promote_champion"], timeout=90)
    log(f"screenshot {grid}: Airflow grid of {DAG_ID} ({len(text)} characters of page text)")
    run = champion["run"]
    url = f"{MLFLOW}/#/experiments/{run['info']['experiment_id']}/runs/{run['info']['run_id']}"
    page = OUT / "mlflow-run.png"
    text = screenshot.capture(url, str(page), wait_for=[run["info"]["run_name"]], timeout=90)
    log(f"screenshot {page}: MLflow run {run['info']['run_name']} ({len(text)} characters of page text)")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    try:
        check_exposure()
        check_endpoint_alive_without_model()
        token = login()
        dag = wait_for_dag(token)
        if dag["is_paused"]:
            raise E2EFailure(f"{DAG_ID} is paused: AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION should be False")
        scheduled = first_scheduled_run(token)
        manual = trigger(token)
        runs = wait_for_runs(token, [scheduled, manual], RUN_TIMEOUT_S)
        if UP_STARTED:
            green = dt.datetime.fromisoformat(runs[scheduled]["end_date"]).timestamp()
            timings["up_to_first_green_run_s"] = round(green - UP_STARTED)
            log(f"first scheduled run green {timings['up_to_first_green_run_s']} s after `docker compose up`")
        timings["scheduled_run_s"] = round(_seconds(runs[scheduled]["start_date"], runs[scheduled]["end_date"]))
        timings["manual_run_s"] = round(_seconds(runs[manual]["start_date"], runs[manual]["end_date"]))

        champion = check_endpoint_serves_champion()

        backfill_runs = backfill_three_nights(token)
        started = time.monotonic()
        wait_for_runs(token, backfill_runs, RUN_TIMEOUT_S)
        timings["backfill_three_nights_s"] = round(time.monotonic() - started)
        check_nights_took_turns(token, backfill_runs)
        check_backfill_kept_champion(token, backfill_runs, champion)

        started = time.monotonic()
        check_failed_training_changes_nothing(token, champion)
        timings["failed_training_run_s"] = round(time.monotonic() - started)

        token = login()  # a fresh token for the browser
        take_screenshots(token, champion)
    except (E2EFailure, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        (OUT / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    log(f"steps 1-5 passed; timings {json.dumps(timings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
