"""The DAG file: imports cleanly, cheaply, and is configured as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# not imported from conftest: importing it a second time would make a second test home
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag("recsys_retrain")


def test_schedule_and_run_policy(dag):
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.timetable.expression == "0 2 * * *"
    assert all(task.retries >= 1 for task in dag.tasks)


def test_every_task_closes_the_mlflow_run_when_it_fails_for_good(dag):
    """Not only the DAG-level callback (run by the scheduler's side, which may be down):
    each task's own failure callback marks the run's MLflow run FAILED."""
    for task in dag.tasks:
        callbacks = task.on_failure_callback if isinstance(task.on_failure_callback, list) else [task.on_failure_callback]
        assert any(getattr(cb, "__name__", "") == "_close_failed_run" for cb in callbacks), task.task_id


def test_any_day_of_history_can_be_run(dag):
    """A run before the tasks' start_date gets no task instance at all (a green run that did
    nothing): the real browsing file's days are in 2019."""
    assert dag.start_date.year <= 2019
    assert all(task.start_date is None or task.start_date.year <= 2019 for task in dag.tasks)


def test_params_are_validated(dag):
    params = dag.params
    assert params["window_days"] == 4  # from RECSYS_WINDOW_DAYS in the test environment
    schema = params.get_param("window_days").schema
    assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", 3, 120)
    assert params["force_deploy"] is False
    with pytest.raises(Exception, match="window_days|2"):
        params.get_param("window_days").resolve(2)


def test_the_pipeline_reads_like_the_diagram(dag):
    order = ["wait_for_earlier_nights", "plan_window", "ingest_raw_events", "dbt.stg_browsing_events.run", "dbt.stg_browsing_events.test",
             "dbt.sessions.run", "dbt.training_events.run", "dbt.training_events.test", "export_dataset", "data_gate",
             "train_model", "model_gate", "newer_than_champion", "update_endpoint", "promote_champion"]
    for upstream, downstream in zip(order, order[1:]):
        assert downstream in {t.task_id for t in dag.get_task(upstream).get_flat_relatives(upstream=False)}, (upstream, downstream)


def test_parsing_does_not_import_the_heavy_libraries(airflow_db):
    """Parsing runs every 30 s in the dag processor: Evidently, MLflow, TensorFlow, the data
    stack, the development tools and boto3 (through the Amazon provider's filesystem) are
    imported by the tasks when they run, never by the parse."""
    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        "heavy = ('evidently', 'mlflow', 'tensorflow', 'pandas', 'numpy', 'recsys.dev', 'boto3', 'airflow.providers.amazon.aws.hooks.s3')\n"
        "print(json.dumps({'errors': list(bag.import_errors), 'heavy': sorted(m for m in heavy if m in sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"errors": [], "heavy": []}


def test_cosmos_renders_from_the_manifest(dag):
    from cosmos.constants import LoadMode

    from recsys import dbt_config

    assert dbt_config.render_config().load_method == LoadMode.DBT_MANIFEST
    run = dag.get_task("dbt.training_events.run")
    assert run.vars["window_end"] == "{{ ti.xcom_pull(task_ids='plan_window')['window_end'] }}"
