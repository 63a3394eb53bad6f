"""recsys_retrain: nightly retraining of the session-based next-item recommender.

    plan window ─► ingest raw events ─► dbt models + tests (Cosmos)
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
from recsys.settings import Settings

settings = Settings.from_env()


def _close_failed_run(context):
    from recsys import pipeline

    pipeline.close_failed_run(context)


@dag(
    dag_id="recsys_retrain",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "window_days": Param(settings.window_days, type="integer", minimum=3, maximum=120,
                             description="Days of sessions to train on; the last is the holdout, the one before validation."),
        "force_deploy": Param(False, type="boolean",
                              description="Deploy even if a gate fails. Needs force_reason; recorded in MLflow."),
        "force_reason": Param("", type="string", description="Why the gates are overridden (audit trail)."),
    },
    tags=["recsys", "training"],
    on_failure_callback=_close_failed_run,
    doc_md=__doc__,
)
def recsys_retrain():
    @task
    def plan_window(params=None, dag_run=None, run_id=None) -> dict:
        from recsys import pipeline  # heavy (Evidently, MLflow): imported at run time, not parse time
        return pipeline.plan_window(
            dag_id=dag_run.dag_id, run_id=run_id, run_date=dag_run.logical_date or dag_run.run_after,
            window_days=params["window_days"], force_deploy=params["force_deploy"], force_reason=params["force_reason"],
        )

    @task
    def ingest_raw_events(window: dict) -> dict:
        from recsys import pipeline
        return pipeline.ingest(window)

    dbt_models = DbtTaskGroup(
        group_id="dbt",
        project_config=dbt_config.project_config(settings),
        profile_config=dbt_config.profile_config(settings),
        render_config=dbt_config.render_config(),
        execution_config=dbt_config.execution_config(settings),
        operator_args={
            "vars": {
                "window_start": "{{ ti.xcom_pull(task_ids='plan_window')['start'] }}",
                "window_end": "{{ ti.xcom_pull(task_ids='plan_window')['end'] }}",
                "raw_schema": settings.raw_schema,
            },
            "install_deps": False,
        },
    )

    @task
    def export_dataset(window: dict) -> dict:
        from recsys import pipeline
        return pipeline.export(window)

    @task
    def data_gate(window: dict, dataset: dict) -> dict:
        from recsys import pipeline
        return pipeline.check_data(window, dataset)

    @task(execution_timeout=timedelta(hours=6))
    def train_model(window: dict, dataset: dict) -> dict:
        from recsys import pipeline
        return pipeline.train(window, dataset)

    @task
    def model_gate(window: dict, trained: dict) -> dict:
        from recsys import pipeline
        return pipeline.check_model(window, trained)

    @task.short_circuit
    def newer_than_champion(window: dict) -> bool:
        from recsys import pipeline
        return pipeline.is_newest(window)

    @task
    def update_endpoint(window: dict, dataset: dict, trained: dict) -> dict:
        from recsys import pipeline
        return pipeline.deploy(window, dataset, trained)

    @task
    def promote_champion(window: dict, trained: dict) -> dict:
        from recsys import pipeline
        return pipeline.promote(window, trained)

    window = plan_window()
    landed = ingest_raw_events(window)
    dataset = export_dataset(window)
    data_checked = data_gate(window, dataset)
    trained = train_model(window, dataset)
    model_checked = model_gate(window, trained)
    newest = newer_than_champion(window)
    deployed = update_endpoint(window, dataset, trained)
    promoted = promote_champion(window, trained)
    chain(landed, dbt_models, dataset, data_checked, trained, model_checked, newest, deployed, promoted)


recsys_retrain()
