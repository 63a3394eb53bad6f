"""SageMaker backends against botocore's Stubber: requests are checked against
the real API's shapes, responses are the service's documented ones."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from botocore.validate import validate_parameters

from recsys.endpoint import Deployment, DeployFailed
from recsys.endpoint.sagemaker import SageMakerEndpoint
from recsys.run import RunLayout
from recsys.settings import Settings, SettingsError
from recsys.training.job import TrainingJob
from recsys.training.sagemaker import training_config

ROLE = "arn:aws:iam::123456789012:role/recsys-sagemaker"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/recsys-model:1.0.0"


@pytest.fixture
def settings(recsys_home, monkeypatch):
    monkeypatch.setenv("RECSYS_SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("RECSYS_SAGEMAKER_IMAGE_URI", IMAGE)
    monkeypatch.setenv("RECSYS_STORE_URL", "s3://recsys-bucket/nightly")
    return Settings.from_env()


def _client(service: str):
    return boto3.client(service, region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")


LAYOUT = RunLayout("s3://recsys-bucket/nightly", Path("/tmp/recsys"), "r1")
JOB = TrainingJob(
    name="recsys-20260309-1a2b3c4d",
    dataset_uri=LAYOUT.dataset,
    layout=LAYOUT,
    hyperparameters={"model_version": "recsys-20260309-1a2b3c4d", "epochs": "5"},
    champion_artifact_uri="s3://recsys-bucket/nightly/runs/r0/training/old/output/model.tar.gz",
)


def test_training_job_request_matches_the_create_training_job_api(settings):
    config = training_config(settings, JOB)
    shape = _client("sagemaker").meta.service_model.operation_model("CreateTrainingJob").input_shape
    validate_parameters(config, shape)  # raises on any field SageMaker would reject
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in config["InputDataConfig"]}
    assert channels == {
        "train": f"{JOB.dataset_uri}/train/", "validation": f"{JOB.dataset_uri}/validation/",
        "test": f"{JOB.dataset_uri}/test/", "champion": JOB.champion_artifact_uri,
    }
    assert config["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert config["OutputDataConfig"]["S3OutputPath"] == "s3://recsys-bucket/nightly/runs/r1/training"
    assert all(isinstance(v, str) for v in config["HyperParameters"].values())


def test_metric_definitions_follow_top_k(settings, monkeypatch):
    monkeypatch.setenv("RECSYS_TOP_K", "10")
    config = training_config(Settings.from_env(), JOB)
    names = [m["Name"] for m in config["AlgorithmSpecification"]["MetricDefinitions"]]
    assert names == ["val_hr_at_10", "val_mrr_at_10", "test_hr_at_10", "test_mrr_at_10"]
    assert re.search(config["AlgorithmSpecification"]["MetricDefinitions"][3]["Regex"],
                     "epoch 3 test_mrr_at_10=0.4321; done").group(1) == "0.4321"


def test_training_backend_names_missing_settings(recsys_home):
    with pytest.raises(SettingsError, match="RECSYS_SAGEMAKER_ROLE_ARN, RECSYS_SAGEMAKER_IMAGE_URI"):
        training_config(Settings.from_env(), JOB)


def _stub_deploy(stubber: Stubber, *, previous: str, after: str) -> None:
    name = "session-recsys-v2"
    stubber.add_response("list_models", {"Models": []}, {"NameContains": name})
    stubber.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:eu-west-1:1:model/{name}"},
                         {"ModelName": name, "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": "s3://b/m.tar.gz"},
                          "ExecutionRoleArn": ROLE})
    stubber.add_response("list_endpoint_configs", {"EndpointConfigs": []}, {"NameContains": name})
    stubber.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:eu-west-1:1:endpoint-config/{name}"},
                         {"EndpointConfigName": name, "ProductionVariants": ANY})
    endpoint = {"EndpointName": "session-recsys", "EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/session-recsys",
                "EndpointStatus": "InService", "CreationTime": dt.datetime(2026, 3, 1), "LastModifiedTime": dt.datetime(2026, 3, 1)}
    stubber.add_response("describe_endpoint", {**endpoint, "EndpointConfigName": previous}, {"EndpointName": "session-recsys"})
    stubber.add_response("update_endpoint", {"EndpointArn": endpoint["EndpointArn"]},
                         {"EndpointName": "session-recsys", "EndpointConfigName": name, "DeploymentConfig": ANY})
    stubber.add_response("describe_endpoint", {**endpoint, "EndpointConfigName": after}, {"EndpointName": "session-recsys"})
    stubber.add_response("describe_endpoint", {**endpoint, "EndpointConfigName": after}, {"EndpointName": "session-recsys"})


def _invocation(version: str, k: int) -> dict:
    body = json.dumps({"recommendations": [[{"sku": f"s{i}", "score": 0.1} for i in range(k)]], "model_version": version}).encode()
    return {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"}


def test_endpoint_update_switches_config_and_smoke_tests(settings):
    sm, runtime = _client("sagemaker"), _client("sagemaker-runtime")
    with Stubber(sm) as stub_sm, Stubber(runtime) as stub_rt:
        _stub_deploy(stub_sm, previous="session-recsys-v1", after="session-recsys-v2")
        stub_rt.add_response("invoke_endpoint", _invocation("v2", 3),
                             {"EndpointName": "session-recsys", "ContentType": "application/json", "Body": ANY})
        result = SageMakerEndpoint(settings, sm, runtime).deploy("s3://b/m.tar.gz", "v2", [["a"]], k=3)
        stub_sm.assert_no_pending_responses()
    assert result == Deployment(endpoint="session-recsys", model_version="v2", previous="session-recsys-v1")


def test_an_update_that_rolled_back_is_a_failed_deploy(settings):
    """SageMaker's waiter says InService after a failed update rolled back: the
    endpoint still carrying the old config is what gives it away."""
    sm = _client("sagemaker")
    with Stubber(sm) as stub_sm:
        _stub_deploy(stub_sm, previous="session-recsys-v1", after="session-recsys-v1")
        with pytest.raises(DeployFailed, match="carries 'session-recsys-v1' after the update.*rolled back"):
            SageMakerEndpoint(settings, sm, _client("sagemaker-runtime")).deploy("s3://b/m.tar.gz", "v2", [["a"]], k=3)
