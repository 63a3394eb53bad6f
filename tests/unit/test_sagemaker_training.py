"""SageMakerTraining.train end to end against botocore's Stubber (requests checked against
the real API's shapes) and a local store holding what the job uploads: the model gate
then reads the predictions the job produced, from the layout's place."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import boto3
import pandas as pd
import pytest
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from recsys import pipeline, tracking
from recsys.run import RunContext, RunLayout
from recsys.settings import Settings, SettingsError
from recsys.storage import pack, path_from_uri, upload, write_parquet
from recsys.training import TrainingFailed, TrainingJob
from recsys.training.job import job_name
from recsys.training.sagemaker import SageMakerTraining, training_config

ROLE = "arn:aws:iam::123456789012:role/recsys-sagemaker"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/recsys-model:1.0.0"
NAME = "recsys-20260309-1a2b3c4d"
CREATED = dt.datetime(2026, 3, 10, 2, 5)


@pytest.fixture
def settings(recsys_home, monkeypatch) -> Settings:
    monkeypatch.setenv("RECSYS_SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("RECSYS_SAGEMAKER_IMAGE_URI", IMAGE)
    return Settings.from_env()


@pytest.fixture
def tracked_context(settings) -> RunContext:
    run = tracking.Run.start(settings, dag_id="recsys_retrain", airflow_run_id="scheduled__2026-03-10T02:00:00+00:00",
                             tags={})
    return RunContext(dag_id="recsys_retrain", run_id="scheduled__2026-03-10T02:00:00+00:00",
                      window_start=dt.date(2026, 3, 6), window_end=dt.date(2026, 3, 9),
                      mlflow_run_id=run.run_id, mlflow_url=run.url)


@pytest.fixture
def context() -> RunContext:
    """The same run, without an MLflow run behind it: enough for a job's names and places."""
    return RunContext(dag_id="recsys_retrain", run_id="scheduled__2026-03-10T02:00:00+00:00",
                      window_start=dt.date(2026, 3, 6), window_end=dt.date(2026, 3, 9),
                      mlflow_run_id="0" * 32, mlflow_url="")


def _job(settings: Settings, context: RunContext) -> TrainingJob:
    layout = context.layout(settings)
    return TrainingJob(name=NAME, dataset_uri=layout.dataset, layout=layout,
                       hyperparameters={"model_version": NAME, "top_k": "20"})


def _upload_job_outputs(settings, layout, name, tmp_path, challenger_ranks) -> None:
    """What SageMaker leaves in S3 after a job: model.tar.gz, and output.tar.gz holding
    /opt/ml/output/data."""
    data = tmp_path / name / "data"
    data.mkdir(parents=True)
    n = len(challenger_ranks)
    pd.DataFrame({
        "session_id": [f"s{i}" for i in range(n)], "position": [1] * n,
        "challenger_rank": pd.array(challenger_ranks, dtype="Int32"),
        "baseline_rank": pd.array([None] * (n - 1) + [19], dtype="Int32"),
        "champion_rank": pd.array([None] * n, dtype="Int32"),
    }).to_parquet(data / "test_predictions.parquet")
    (data / "evaluation.json").write_text(json.dumps({"challenger": {"test_hr_at_20": 0.9}}))
    upload(pack(data, tmp_path / name / "output.tar.gz"), path_from_uri(settings, layout.packed_outputs(name)))


def _summary(name: str, status: str) -> dict:
    return {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:eu-west-1:1:training-job/{name}",
            "CreationTime": CREATED, "TrainingJobStatus": status}


def _described(settings, layout, name: str, status: str, reason: str | None = None) -> dict:
    described = {
        "TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:eu-west-1:1:training-job/{name}",
        "TrainingJobStatus": status, "SecondaryStatus": status, "CreationTime": CREATED,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 14400},
        "ModelArtifacts": {"S3ModelArtifacts": layout.model_artifact(name)},
    }
    if reason:
        described["FailureReason"] = reason
    return described


def _train(backend: SageMakerTraining, job: TrainingJob):
    """What train_model does around its deferral: start (or re-attach), then collect."""
    return backend.collect(job, backend.start(job).job_name)


def _client():
    return boto3.client("sagemaker", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_a_sagemaker_job_feeds_the_model_gate_from_the_layout(settings, tracked_context, tmp_path):
    context = tracked_context
    job = _job(settings, context)
    layout = job.layout
    _upload_job_outputs(settings, layout, NAME, tmp_path, challenger_ranks=[1, 2, 3, None, 5])
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": []}, {"NameContains": NAME, "MaxResults": 100})
        stub.add_response("create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:eu-west-1:1:training-job/{NAME}"},
                          training_config(settings, job))
        stub.add_response("describe_training_job", _described(settings, layout, NAME, "Completed"),
                          {"TrainingJobName": NAME})  # read when the task resumes
        result = _train(SageMakerTraining(settings, client), job)
        stub.assert_no_pending_responses()

    assert result.predictions_uri == layout.predictions(NAME)
    assert result.predictions_uri == f"{settings.store_url}/runs/{context.key}/training/{NAME}/output/data/test_predictions.parquet"
    assert path_from_uri(settings, result.predictions_uri).exists()
    assert result.model_artifact_uri == layout.model_artifact(NAME)
    assert result.evaluation == {"challenger": {"test_hr_at_20": 0.9}}

    # the run's dataset, whose holdout the job scored: five two-item sessions
    test = pd.DataFrame({"session_id": [f"s{i}" for i in range(5)], "session_date": "2026-03-09",
                         "items": [[f"a{i}", f"b{i}"] for i in range(5)]})
    train = pd.DataFrame({"session_id": ["t0", "t1"], "session_date": "2026-03-07", "items": [["a0", "c"], ["c", "d"]]})
    for split, frame in (("train", train), ("validation", train), ("test", test)):
        write_parquet(path_from_uri(settings, RunLayout.split(layout.dataset, split)), frame)
    trained = pipeline.Trained(job_name=result.job_name, registry_version="1", model_artifact_uri=result.model_artifact_uri,
                               predictions_uri=result.predictions_uri, evaluation=result.evaluation)
    verdict = pipeline.model_gate(context.to_xcom(), {"uri": layout.dataset}, trained.to_xcom())
    assert verdict["passed"] is True
    assert verdict["summary"]["n_test_examples"] == 5
    assert verdict["summary"]["challenger_hr_at_20"] == pytest.approx(0.8)
    assert path_from_uri(settings, layout.report("model_report.html")).exists()


def test_a_retry_attaches_to_the_job_still_running(settings, context, tmp_path):
    """A retried task must not start a second GPU job beside the one still running."""
    job = _job(settings, context)
    _upload_job_outputs(settings, job.layout, NAME, tmp_path, challenger_ranks=[1])
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": [_summary(NAME, "InProgress")]},
                          {"NameContains": NAME, "MaxResults": 100})
        stub.add_response("describe_training_job", _described(settings, job.layout, NAME, "InProgress"),
                          {"TrainingJobName": NAME})
        stub.add_response("describe_training_job", _described(settings, job.layout, NAME, "Completed"),
                          {"TrainingJobName": NAME})
        result = _train(SageMakerTraining(settings, client), job)  # no create_training_job stubbed: none may be sent
        stub.assert_no_pending_responses()
    assert result.job_name == NAME


def test_a_failed_job_is_retried_under_a_new_name_and_its_reason_reported(settings, context, tmp_path):
    job = _job(settings, context)
    client = _client()
    retry = f"{NAME}-r1"
    with Stubber(client) as stub:
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": [_summary(NAME, "Failed")]},
                          {"NameContains": NAME, "MaxResults": 100})
        stub.add_response("describe_training_job", _described(settings, job.layout, NAME, "Failed", "AlgorithmError: x"),
                          {"TrainingJobName": NAME})
        stub.add_response("create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:eu-west-1:1:training-job/{retry}"},
                          training_config(settings, job) | {"TrainingJobName": retry})
        stub.add_response("describe_training_job",  # read when the task resumes: it carries the reason
                          _described(settings, job.layout, retry, "Failed", "AlgorithmError: epochs must be >= 1"),
                          {"TrainingJobName": retry})
        with pytest.raises(TrainingFailed, match=f"{retry} Failed: AlgorithmError: epochs must be >= 1"):
            _train(SageMakerTraining(settings, client), job)
        stub.assert_no_pending_responses()


def _validate(config: dict) -> None:
    shape = _client().meta.service_model.operation_model("CreateTrainingJob").input_shape
    validate_parameters(config, shape)  # raises on any field SageMaker would reject


def test_spot_training_waits_twice_the_run_time_and_checkpoints_under_the_run(settings, context, monkeypatch):
    job = _job(settings, context)
    assert "EnableManagedSpotTraining" not in training_config(settings, job)  # on demand unless asked

    monkeypatch.setenv("RECSYS_SAGEMAKER_SPOT", "true")
    config = training_config(Settings.from_env(), job)
    _validate(config)
    assert config["EnableManagedSpotTraining"] is True
    assert config["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400, "MaxWaitTimeInSeconds": 28800}
    assert config["CheckpointConfig"]["S3Uri"] == f"{job.layout.training}/{NAME}/checkpoints"
    assert config["CheckpointConfig"]["S3Uri"] == f"{settings.store_url}/runs/{context.key}/training/{NAME}/checkpoints"

    monkeypatch.setenv("RECSYS_SAGEMAKER_MAX_WAIT_S", "20000")
    assert training_config(Settings.from_env(), job)["StoppingCondition"]["MaxWaitTimeInSeconds"] == 20000
    monkeypatch.setenv("RECSYS_SAGEMAKER_MAX_WAIT_S", "3600")
    with pytest.raises(SettingsError, match="RECSYS_SAGEMAKER_MAX_WAIT_S=3600 is less than RECSYS_SAGEMAKER_MAX_RUNTIME_S"):
        training_config(Settings.from_env(), job)


def test_a_spot_retry_resumes_from_the_checkpoints_of_the_run(settings, context, monkeypatch):
    monkeypatch.setenv("RECSYS_SAGEMAKER_SPOT", "true")
    settings = Settings.from_env()
    job = _job(settings, context)
    client, retry = _client(), f"{NAME}-r1"
    expected = training_config(settings, job) | {"TrainingJobName": retry}
    with Stubber(client) as stub:
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": [_summary(NAME, "Stopped")]},
                          {"NameContains": NAME, "MaxResults": 100})
        stub.add_response("describe_training_job", _described(settings, job.layout, NAME, "Stopped"), {"TrainingJobName": NAME})
        stub.add_response("create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:eu-west-1:1:training-job/{retry}"},
                          expected)
        stub.add_response("describe_training_job", _described(settings, job.layout, retry, "Failed", "x"),
                          {"TrainingJobName": retry})
        with pytest.raises(TrainingFailed):
            _train(SageMakerTraining(settings, client), job)
        stub.assert_no_pending_responses()
    assert expected["CheckpointConfig"]["S3Uri"].endswith(f"/training/{NAME}/checkpoints")


def test_volume_size_is_a_setting(settings, context, monkeypatch):
    assert training_config(settings, _job(settings, context))["ResourceConfig"]["VolumeSizeInGB"] == 30
    monkeypatch.setenv("RECSYS_SAGEMAKER_VOLUME_GB", "100")
    config = training_config(Settings.from_env(), _job(settings, context))
    _validate(config)
    assert config["ResourceConfig"]["VolumeSizeInGB"] == 100


def test_the_job_is_tagged_with_the_dag_run(settings, context):
    job = dataclasses.replace(_job(settings, context), tags={"recsys:dag_run_id": context.run_id,
                                                             "recsys:model_version": NAME})
    config = training_config(settings, job)
    _validate(config)
    assert config["Tags"] == [
        {"Key": "app", "Value": "recsys_retrain"},
        {"Key": "recsys:dag_run_id", "Value": "scheduled__2026-03-10T02:00:00+00:00"},
        {"Key": "recsys:model_version", "Value": NAME},
    ]
    odd = dataclasses.replace(job, tags={"recsys:dag_run_id": "manual run #3 (retry)"})
    assert training_config(settings, odd)["Tags"][1]["Value"] == "manual run _3 _retry_"


def test_stop_stops_the_attempts_of_this_run_still_in_progress(settings):
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": [
            _summary(NAME, "Failed"), _summary(f"{NAME}-r1", "InProgress"),
            _summary(f"{NAME}-other", "InProgress"), _summary(f"x-{NAME}", "InProgress"),
        ]}, {"NameContains": NAME, "MaxResults": 100})
        stub.add_response("stop_training_job", {}, {"TrainingJobName": f"{NAME}-r1"})
        assert SageMakerTraining(settings, client).stop(NAME) == [f"{NAME}-r1"]
        stub.assert_no_pending_responses()


def test_stop_leaves_finished_jobs_alone_and_tolerates_one_that_just_ended(settings):
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": [_summary(NAME, "Completed")]},
                          {"NameContains": NAME, "MaxResults": 100})
        assert SageMakerTraining(settings, client).stop(NAME) == []
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": [_summary(NAME, "InProgress")]},
                          {"NameContains": NAME, "MaxResults": 100})
        stub.add_client_error("stop_training_job", "ValidationException",
                              "The request was rejected because the training job is in status Completed.",
                              expected_params={"TrainingJobName": NAME})
        assert SageMakerTraining(settings, client).stop(NAME) == []
        stub.assert_no_pending_responses()


def test_a_wait_that_runs_out_stops_the_job_and_fails_the_task(settings, tracked_context, monkeypatch):
    """The triggerer gave up (the job ran past its own limit and more): the resumed task stops
    the job rather than leave a GPU running unwatched, and fails saying so."""
    client = _client()
    monkeypatch.setattr("recsys.training.get_backend", lambda s: SageMakerTraining(s, client))
    run = tracked_context.to_xcom()
    dataset = {"uri": tracked_context.layout(settings).dataset}
    name = job_name(tracked_context.run_id, tracked_context.window_end.isoformat())
    with Stubber(client) as stub:
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": [_summary(name, "InProgress")]},
                          {"NameContains": name, "MaxResults": 100})
        stub.add_response("stop_training_job", {}, {"TrainingJobName": name})
        with pytest.raises(TrainingFailed, match=rf"{name} did not finish within its wait limit.*stopped: {name}"):
            pipeline.finish_training(run, dataset, name, {"status": "timeout", "job_name": name,
                                                          "message": "Waiter has reached max attempts"})
        stub.assert_no_pending_responses()
    assert tracking.client(settings).search_model_versions("name='session-recsys'") == []
