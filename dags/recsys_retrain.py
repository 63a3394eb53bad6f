"""recsys_retrain: nightly retraining of the session-based next-item recommender.

    wait for earlier nights ─► plan window ─► ingest raw events ─► dbt models + tests (Cosmos)
      ─► export time-split dataset ─► data gate ─► train ─► model gate
      ─► newer than the champion? ─► update endpoint ─► promote champion in MLflow

A backfill of days older than the champion's window trains, gates and registers
its model, then stops at the freshness check: serving never goes back to older data.

Every box runs locally (DuckDB, files, local processes) or in the cloud
(Snowflake, S3, SageMaker) depending on RECSYS_* settings only; this file does
not branch on them. The task bodies live in plugins/recsys/pipeline.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, chain, dag, task
from cosmos import DbtTaskGroup

from recsys import dbt_config
from recsys.operators import TrainModelOperator, UpdateEndpointOperator
from recsys.settings import Settings

settings = Settings.from_env()


def _close_failed_run(context):
    from recsys import pipeline

    ti = context.get("ti") or context.get("task_instance")
    pipeline.close_failed_run(context["dag_run"].run_id, task_id=getattr(ti, "task_id", None),
                              reason=str(context.get("exception") or context.get("reason") or ""))


@dag(
    dag_id="recsys_retrain",
    schedule="0 2 * * *",
    # no day is older than the DAG: a run, trigger or backfill of any day with landing data
    # (the real Coveo file's days are in 2019) gets its tasks; catchup stays off
    start_date=datetime(2000, 1, 1),
    catchup=False,
    max_active_runs=1,
    # A task that fails for good closes the run's MLflow run as FAILED itself: the DAG-level
    # callback below runs in the scheduler's processor, which a restart or an outage can skip.
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2), "on_failure_callback": _close_failed_run},
    params={
        "window_days": Param(settings.window_days, type="integer", minimum=3, maximum=120,
                             description="Days of sessions to train on; the last is the holdout, the one before validation."),
        "force_deploy": Param(False, type="boolean",
                              description="Deploy even if a gate fails. Needs force_reason; recorded in MLflow."),
        "force_reason": Param("", type="string", description="Why the gates are overridden (audit trail)."),
        "hyperparameters": Param({}, type="object",
                                 description="This run's hyperparameters over RECSYS_HP_* (e.g. {\"epochs\": 10}); "
                                             "logged to MLflow. training_image/README.md lists them."),
    },
    tags=["recsys", "training"],
    on_failure_callback=_close_failed_run,
    doc_md=__doc__,
)
def recsys_retrain():
    # Each task calls the body of the same name in recsys.pipeline. The heavy libraries
    # (Evidently, MLflow) are imported when a task runs, never when the file is parsed.
    @task.sensor(poke_interval=60, timeout=timedelta(hours=12).total_seconds(), mode="reschedule")
    def wait_for_earlier_nights(ti=None) -> bool:
        from recsys import pipeline
        return pipeline.wait_for_earlier_nights(ti)

    @task
    def plan_window(params=None, dag_run=None, run_id=None) -> dict:
        from recsys import pipeline
        return pipeline.plan_window(
            dag_id=dag_run.dag_id, run_id=run_id, run_date=dag_run.logical_date or dag_run.run_after,
            window_days=params["window_days"], force_deploy=params["force_deploy"], force_reason=params["force_reason"],
            hyperparameters=params["hyperparameters"],
        )

    @task
    def ingest_raw_events(run: dict) -> dict:
        from recsys import pipeline
        return pipeline.ingest_raw_events(run)

    dbt_models = DbtTaskGroup(
        group_id="dbt",
        project_config=dbt_config.project_config(settings),
        profile_config=dbt_config.profile_config(settings),
        render_config=dbt_config.render_config(),
        execution_config=dbt_config.execution_config(settings),
        operator_args={
            "vars": {
                "window_start": "{{ ti.xcom_pull(task_ids='plan_window')['window_start'] }}",
                "window_end": "{{ ti.xcom_pull(task_ids='plan_window')['window_end'] }}",
                "raw_schema": settings.raw_schema,
            },
            "install_deps": False,
        },
    )

    @task
    def export_dataset(run: dict) -> dict:
        from recsys import pipeline
        return pipeline.export_dataset(run)

    @task
    def data_gate(run: dict, dataset: dict) -> dict:
        from recsys import pipeline
        return pipeline.data_gate(run, dataset)

    @task
    def model_gate(run: dict, dataset: dict, trained: dict) -> dict:
        from recsys import pipeline
        return pipeline.model_gate(run, dataset, trained)

    @task.short_circuit
    def newer_than_champion(run: dict) -> bool:
        from recsys import pipeline
        return pipeline.newer_than_champion(run)

    @task
    def promote_champion(run: dict, trained: dict) -> dict:
        from recsys import pipeline
        return pipeline.promote_champion(run, trained)

    waited = wait_for_earlier_nights()
    run = plan_window()
    landed = ingest_raw_events(run)
    dataset = export_dataset(run)
    data_checked = data_gate(run, dataset)
    # a SageMaker job or endpoint update is waited for in the triggerer (deferred), a local one in the task
    trained = TrainModelOperator(task_id="train_model", run=run, dataset=dataset,
                                 execution_timeout=timedelta(hours=6)).output
    model_checked = model_gate(run, dataset, trained)
    newest = newer_than_champion(run)
    deployed = UpdateEndpointOperator(task_id="update_endpoint", run=run, dataset=dataset, trained=trained).output
    promoted = promote_champion(run, trained)
    chain(waited, run)
    chain(landed, dbt_models, dataset, data_checked, trained, model_checked, newest, deployed, promoted)


recsys_retrain()
