"""`make demo`: a line per task from Airflow's output, and no success without a task run."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3

from recsys.dev.demo import DAG_ID, Progress, RunRecord, TaskRecord, find_run, verdict

DAY = dt.date(2026, 3, 10)
SINCE = dt.datetime(2026, 3, 11, 9, 0, tzinfo=dt.UTC)


def _airflow_db(path, tasks: dict[str, str], logical_date: str = "2026-03-10 00:00:00.000000"):
    with sqlite3.connect(path) as con:
        con.execute("create table dag_run (id integer primary key, dag_id, run_id, state, logical_date, run_after)")
        con.execute("create table task_instance (dag_id, run_id, task_id, state, duration, start_date)")
        con.execute("insert into dag_run values (1, ?, 'old', 'success', ?, '2026-03-10 09:00:00.000000')",
                    (DAG_ID, logical_date))
        con.execute("insert into dag_run values (2, ?, 'manual__x', 'failed', ?, '2026-03-11 09:00:05.000000')",
                    (DAG_ID, logical_date))
        con.executemany("insert into task_instance values (?, 'manual__x', ?, ?, 1.0, '2026-03-11 09:00:06')",
                        [(DAG_ID, task, state) for task, state in tasks.items()])
    return path


def test_each_task_is_shown_as_it_starts_and_ends_with_a_gates_verdict(tmp_path):
    db = _airflow_db(tmp_path / "airflow.db", {"plan_window": "success", "model_gate": "failed"})
    log, out = io.StringIO(), io.StringIO()
    progress = Progress(log, db, DAY, SINCE, out=out)
    lines = [
        "2026-03-11T09:00:06Z [info     ] [DAG TEST] starting task_id=plan_window map_index=-1 [airflow] loc=dag.py:1\n",
        "a task's own log line\n",
        "2026-03-11T09:00:07Z [info     ] [DAG TEST] end task task_id=plan_window map_index=-1 [airflow] loc=dag.py:2\n",
        "2026-03-11T09:00:08Z [info     ] [DAG TEST] starting task_id=model_gate map_index=-1 [airflow] loc=dag.py:1\n",
        "recsys.gates.report.GateFailed: model gate failed: the challenger does not beat the champion [0.1, 0.2]\n",
        "2026-03-11T09:00:09Z [info     ] [DAG TEST] end task task_id=model_gate map_index=-1 [airflow] loc=dag.py:2\n",
    ]
    for line in lines:
        progress.feed(line)
    assert log.getvalue() == "".join(lines)
    shown = out.getvalue().splitlines()
    assert len(shown) == 4
    assert "plan_window" in shown[0] and shown[0].endswith("started")
    assert "plan_window" in shown[1] and " success " in shown[1]
    assert "model_gate" in shown[3] and " failed " in shown[3]
    assert shown[3].endswith("model gate failed: the challenger does not beat the champion [0.1, 0.2]")


def test_a_run_without_any_executed_task_is_never_a_success(tmp_path):
    db = _airflow_db(tmp_path / "airflow.db", {})
    run = find_run(db, DAY, SINCE)
    assert run is not None and run.run_id == "manual__x"
    ok, said = verdict(0, RunRecord("manual__x", "success", []))
    assert not ok and "no task ran" in said
    ok, said = verdict(0, RunRecord("manual__x", "success", [TaskRecord("plan_window", "skipped", None)]))
    assert not ok and "no task ran" in said
    assert verdict(0, None)[0] is False


def test_a_run_succeeds_only_when_airflow_says_so_and_tasks_ran():
    tasks = [TaskRecord("plan_window", "success", 1.0), TaskRecord("update_endpoint", "skipped", None)]
    ok, said = verdict(0, RunRecord("r", "success", tasks))
    assert ok and said == "1 tasks ran; not run: update_endpoint (skipped)"
    assert verdict(1, RunRecord("r", "failed", tasks))[0] is False
