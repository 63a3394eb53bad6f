"""``train_model`` on the SageMaker backend, deferred, against moto's server.

The store is ``s3://`` on moto's S3, training jobs are created on moto's SageMaker
control plane and trained for real by the training image's own ``train`` (see
aws_emulator.py). The task runs in a DAG run: it creates the job, defers, the amazon
provider's trigger polls DescribeTrainingJob through aiobotocore while the job trains,
and the task resumes to collect the job's outputs from S3 and register the challenger.
"""

from __future__ import annotations

import asyncio
import importlib
import datetime as dt
import json

import pandas as pd
import pytest

from tests.cloud.aws_emulator import REGION

BUCKET = "recsys-cloud"
ROLE = "arn:aws:iam::123456789012:role/recsys-sagemaker-training"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/recsys-model:gpu"
WINDOW_END = dt.date(2026, 3, 4)
POLL_S = 2  # the trigger's poll interval here (60 s in production)


@pytest.fixture
def aws(emulated_aws, recsys_home, monkeypatch):
    emulated = emulated_aws
    emulated.client("s3").create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"region_name": REGION, "endpoint_url": emulated.url}}))
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION, "RECSYS_TRAINING_BACKEND": "sagemaker",
                        "RECSYS_STORE_URL": f"s3://{BUCKET}/store", "RECSYS_SAGEMAKER_ROLE_ARN": ROLE,
                        "RECSYS_SAGEMAKER_IMAGE_URI": IMAGE, "RECSYS_HP_EPOCHS": "2"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("recsys.training.sagemaker.POLL_S", POLL_S)
    emulated.calls.clear()
    emulated.described.clear()
    emulated.jobs.clear()
    yield emulated


def _plan_and_export(run_id: str, hyperparameters: dict | None = None) -> tuple[dict, dict]:
    """The run's context (with its MLflow run) and a dataset in the S3 store, as the tasks
    before ``train_model`` leave them."""
    from recsys import pipeline
    from recsys.run import SPLITS, RunContext, RunLayout
    from recsys.settings import Settings
    from recsys.storage import path_from_uri, write_json, write_parquet
    from tests.container.sagemaker_contract import simulated_sessions

    run = pipeline.plan_window(dag_id="recsys_cloud_test", run_id=run_id,
                               run_date=dt.datetime.combine(WINDOW_END + dt.timedelta(days=1), dt.time(2)),
                               window_days=4, force_deploy=False, force_reason="", hyperparameters=hyperparameters)
    settings, layout = Settings.from_env(), RunContext.from_xcom(run).layout(Settings.from_env())
    sessions = pd.concat([simulated_sessions(WINDOW_END - dt.timedelta(days=3 - i)) for i in range(4)])
    split = sessions["session_date"].map(lambda d: "test" if d == WINDOW_END.isoformat() else "validation"
                                         if d == (WINDOW_END - dt.timedelta(days=1)).isoformat() else "train")
    counts = {}
    for name in SPLITS:
        part = sessions.loc[split == name].reset_index(drop=True)
        write_parquet(path_from_uri(settings, RunLayout.split(layout.dataset, name)), part)
        counts[name] = len(part)
    manifest = {"window_start": run["window_start"], "window_end": run["window_end"], "sessions": counts,
                "uri": layout.dataset}
    write_json(path_from_uri(settings, layout.manifest), manifest)
    return run, manifest


def _train_as_airflow_does(run: dict, dataset: dict) -> tuple[dict | Exception, list[dict]]:
    """``train_model`` (the DAG's operator) as Airflow runs a deferring task: ``execute`` until
    it defers, the trigger rebuilt from its serialized form and run to its event (what the
    triggerer does), then the method it named, with the event. Returns the task's result (or
    its error) and the events."""
    from airflow.sdk.exceptions import TaskDeferred

    from recsys.operators import TrainModelOperator

    operator = TrainModelOperator(task_id="train_model", run=run, dataset=dataset)
    events = []
    try:
        operator.execute({})
        raise AssertionError("a SageMaker job must be waited for in the triggerer, not in the task")
    except TaskDeferred as deferred:
        classpath, kwargs = deferred.trigger.serialize()
        module, _, name = classpath.rpartition(".")
        trigger = getattr(importlib.import_module(module), name)(**kwargs)

        async def first_event():
            async for event in trigger.run():
                return event.payload

        events.append(asyncio.run(first_event()))
        try:
            return getattr(operator, deferred.method_name)({}, event=events[-1], **(deferred.kwargs or {})), events
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            return exc, events


def test_a_sagemaker_job_is_waited_for_in_the_triggerer_and_its_outputs_collected(aws):
    from recsys import tracking
    from recsys.settings import Settings
    from recsys.storage import path_from_uri, read_parquet

    run, dataset = _plan_and_export("manual__2026-03-05T02:00:00+00:00")
    trained, events = _train_as_airflow_does(run, dataset)

    assert isinstance(trained, dict), trained
    assert events == [{"status": "success", "job_name": trained["job_name"]}]
    job = trained["job_name"]
    # the task deferred: the trigger polled while the job trained, and saw it end
    statuses = [status for name, status in aws.described if name == job]
    assert statuses[0] == "InProgress" and statuses[-1] == "Completed", statuses
    calls = aws.sagemaker_calls()
    assert calls[:2] == ["ListTrainingJobs", "CreateTrainingJob"], calls
    assert calls.count("CreateTrainingJob") == 1
    # the model and the outputs SageMaker uploaded, under the run's layout, read back by the task
    assert trained["model_artifact_uri"] == f"s3://{BUCKET}/store/runs/{run['run_id'].replace(':', '-').replace('+', '-')}" \
                                            f"/training/{job}/output/model.tar.gz"
    s3_calls = [c for c in aws.calls if c.startswith("s3:")]
    assert any(c.startswith("s3:GetObject") and c.endswith(f"{job}/output/output.tar.gz") for c in s3_calls)
    settings = Settings.from_env()
    predictions = read_parquet(path_from_uri(settings, trained["predictions_uri"]))
    assert len(predictions) > 0 and set(predictions.columns) >= {"session_id"}
    # registered in MLflow as the challenger, its hyperparameters and metrics logged
    mlflow = tracking.client(settings)
    challenger = mlflow.get_model_version_by_alias("session-recsys", "challenger")
    assert str(challenger.version) == trained["registry_version"] and challenger.tags["model_version"] == job
    logged = mlflow.get_run(run["mlflow_run_id"]).data
    assert logged.params["hp_epochs"] == "2" and 0 < logged.metrics["test_hr_at_20"] <= 1


def test_a_failed_job_fails_the_task_with_the_containers_reason(aws):
    from recsys import tracking
    from recsys.settings import Settings
    from recsys.training import TrainingFailed

    run, dataset = _plan_and_export("manual__2026-03-05T03:00:00+00:00", hyperparameters={"epochs": 0})
    error, events = _train_as_airflow_does(run, dataset)

    job = next(name for name in aws.jobs)
    assert [status for name, status in aws.described if name == job][-1] == "Failed"
    # the container's /opt/ml/output/failure reached the trigger's event, and the task's error
    reason = aws._backend_job(job).failure_reason
    assert "epochs" in reason
    assert events[0]["status"] == "failed" and reason in events[0]["message"]
    assert isinstance(error, TrainingFailed) and reason in str(error) and job in str(error)
    assert tracking.client(Settings.from_env()).search_model_versions("name='session-recsys'") == []


def test_killing_the_deferred_task_stops_its_job(aws):
    run, dataset = _plan_and_export("manual__2026-03-05T04:00:00+00:00", hyperparameters={"epochs": 50})
    from recsys import pipeline

    started = pipeline.start_training(run, dataset)
    # the triggerer rebuilds the trigger from this: ours (with on_kill), waiting as long as
    # the job may run (4 h by default), not the amazon operator's default of 30 minutes
    classpath, kwargs = started.trigger.serialize()
    assert classpath == "recsys.training.trigger.TrainingJobTrigger"
    assert kwargs["job_name"] == started.job_name and kwargs["job_type"] == "training"
    assert kwargs["waiter_delay"] * kwargs["waiter_max_attempts"] >= 4 * 3600
    # what the triggerer calls when a user marks the deferred task failed
    asyncio.run(started.trigger.on_kill())
    aws.jobs[started.job_name].done.wait(timeout=60)
    assert aws._backend_job(started.job_name).training_job_status == "Stopped"
    assert aws.sagemaker_calls()[-1] == "StopTrainingJob"
    process = aws.jobs[started.job_name].process
    assert process is None or process.poll() is not None  # stopped before or while it trained
