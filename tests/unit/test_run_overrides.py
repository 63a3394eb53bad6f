"""A trigger's hyperparameters reach the training job for that run only, and a failed run's
MLflow run says which task failed and why."""

from __future__ import annotations

import datetime as dt

import pytest

from recsys import pipeline, tracking
from recsys.run import RunContext
from recsys.settings import Settings

RUN_DATE = dt.datetime(2026, 3, 10, 2, tzinfo=dt.UTC)


def _plan(run_id: str, hyperparameters=None) -> dict:
    return pipeline.plan_window(dag_id="recsys_retrain", run_id=run_id, run_date=RUN_DATE, window_days=4,
                                force_deploy=False, force_reason="", hyperparameters=hyperparameters)


def test_a_triggers_hyperparameters_override_the_settings_for_that_run(recsys_home, monkeypatch):
    monkeypatch.setenv("RECSYS_HP_EPOCHS", "5")
    monkeypatch.setenv("RECSYS_HP_BATCH_SIZE", "256")
    run = _plan("manual__2026-03-10T02:00:00+00:00", {"epochs": 2, "mixed_precision": True})
    context = RunContext.from_xcom(run)
    assert context.hyperparameters == {"epochs": "2", "mixed_precision": "true"}

    settings = Settings.from_env()
    job = pipeline._training_job(settings, context, {"uri": context.layout(settings).dataset}, champion=False)
    assert job.hyperparameters["epochs"] == "2"  # the trigger's, over RECSYS_HP_EPOCHS
    assert job.hyperparameters["batch_size"] == "256"  # the settings' where the trigger says nothing
    assert job.hyperparameters["mixed_precision"] == "true"
    assert all(isinstance(value, str) for value in job.hyperparameters.values())  # as SageMaker passes them
    tags = tracking.client(settings).get_run(context.mlflow_run_id).data.tags
    assert tags["hyperparameter_overrides"] == "epochs=2, mixed_precision=true"

    plain = RunContext.from_xcom(_plan("scheduled__2026-03-10T02:00:00+00:00"))
    assert plain.hyperparameters == {}
    assert pipeline._training_job(settings, plain, {"uri": "x"}, champion=False).hyperparameters["epochs"] == "5"


@pytest.mark.parametrize("bad", [{"epochs": [1, 2]}, {"layers": {"gru": 2}}, "epochs=2"])
def test_hyperparameters_that_are_not_single_values_are_refused_before_anything_runs(recsys_home, bad):
    with pytest.raises(ValueError, match="hyperparameter"):
        _plan("manual__2026-03-10T03:00:00+00:00", bad)


def test_a_failed_run_is_closed_naming_the_task_and_the_reason(recsys_home):
    run = _plan("manual__2026-03-10T04:00:00+00:00")
    pipeline.close_failed_run(run["run_id"], task_id="train_model",
                              reason="training job recsys-x Failed: epochs must be at least 1")
    mlflow_run = tracking.client(Settings.from_env()).get_run(run["mlflow_run_id"])
    assert mlflow_run.info.status == "FAILED"
    assert mlflow_run.data.tags["failed_task"] == "train_model"
    assert "epochs must be at least 1" in mlflow_run.data.tags["failure_reason"]
