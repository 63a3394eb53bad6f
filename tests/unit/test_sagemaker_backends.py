"""SageMaker backends against botocore's Stubber: requests are checked against
the real API's shapes, responses are the service's documented ones."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from unittest import mock

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from botocore.validate import validate_parameters

from recsys.endpoint import Deployment, DeployFailed
from recsys.endpoint.sagemaker import BAKE_S, SageMakerEndpoint
from recsys.run import RunLayout
from recsys.settings import Settings, SettingsError
from recsys.training.job import TrainingJob
from recsys.training.sagemaker import training_config

ROLE = "arn:aws:iam::123456789012:role/recsys-sagemaker"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/recsys-model:1.0.0"
SERVING_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/recsys-model:1.0.0-cpu"


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


ENDPOINT = "session-recsys"
NEW, OLD = "session-recsys-v2", "session-recsys-v1"
RUN_TAGS = {"recsys:dag_run_id": "scheduled__2026-03-10T02:00:00+00:00", "recsys:model_version": "v2"}
TAGS = [{"Key": "app", "Value": "recsys_retrain"}, {"Key": "recsys:endpoint", "Value": ENDPOINT},
        {"Key": "recsys:dag_run_id", "Value": "scheduled__2026-03-10T02:00:00+00:00"},
        {"Key": "recsys:model_version", "Value": "v2"}]
ENDPOINT_ARN = f"arn:aws:sagemaker:eu-west-1:1:endpoint/{ENDPOINT}"
BLUE_GREEN = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
                                        "TerminationWaitInSeconds": BAKE_S}}
BACK = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
                                  "TerminationWaitInSeconds": 0}}


def _endpoint(config: str, status: str = "InService") -> dict:
    return {"EndpointName": ENDPOINT, "EndpointArn": ENDPOINT_ARN, "EndpointConfigName": config,
            "EndpointStatus": status, "CreationTime": dt.datetime(2026, 3, 1), "LastModifiedTime": dt.datetime(2026, 3, 1)}


def _describe(stub: Stubber, config: str, status: str = "InService") -> None:
    stub.add_response("describe_endpoint", _endpoint(config, status), {"EndpointName": ENDPOINT})


def _stub_resources(stub: Stubber, *, image: str = IMAGE, tags: list[dict] = ANY) -> None:
    """The new version's model and endpoint config, created."""
    stub.add_response("list_models", {"Models": []}, {"NameContains": NEW})
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:eu-west-1:1:model/{NEW}"},
                      {"ModelName": NEW, "PrimaryContainer": {"Image": image, "ModelDataUrl": "s3://b/m.tar.gz"},
                       "ExecutionRoleArn": ROLE, "Tags": tags})
    stub.add_response("list_endpoint_configs", {"EndpointConfigs": []}, {"NameContains": NEW})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:eu-west-1:1:endpoint-config/{NEW}"},
                      {"EndpointConfigName": NEW, "ProductionVariants": [
                          {"VariantName": "AllTraffic", "ModelName": NEW, "InitialInstanceCount": 1,
                           "InstanceType": "ml.m5.large"}], "Tags": tags})


def _stub_update(stub: Stubber, *, previous: str = OLD, after: str = NEW, deployment: dict = BLUE_GREEN) -> None:
    _describe(stub, previous)
    stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN},
                      {"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": deployment})
    _describe(stub, after)  # the waiter's poll
    _describe(stub, after)  # which config the endpoint carries now


def _stub_prune(stub: Stubber, configs: list[str] = (NEW, OLD), models: list[str] = (NEW, OLD)) -> None:
    created = dt.datetime(2026, 3, 10)
    stub.add_response("list_endpoint_configs", {"EndpointConfigs": [
        {"EndpointConfigName": c, "EndpointConfigArn": f"arn:aws:sagemaker:eu-west-1:1:endpoint-config/{c}",
         "CreationTime": created} for c in configs]},
        {"NameContains": f"{ENDPOINT}-", "SortBy": "CreationTime", "SortOrder": "Descending"})
    stub.add_response("list_models", {"Models": [
        {"ModelName": m, "ModelArn": f"arn:aws:sagemaker:eu-west-1:1:model/{m}", "CreationTime": created} for m in models]},
        {"NameContains": f"{ENDPOINT}-", "SortBy": "CreationTime", "SortOrder": "Descending"})


def _invocation(version: str, k: int) -> dict:
    body = json.dumps({"recommendations": [[{"sku": f"s{i}", "score": 0.1} for i in range(k)]], "model_version": version}).encode()
    return {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"}


def _stub_smoke(stub: Stubber, answered_by: str = "v2") -> None:
    stub.add_response("invoke_endpoint", _invocation(answered_by, 3),
                      {"EndpointName": ENDPOINT, "ContentType": "application/json", "Body": ANY})


def _deploy(settings, sm, runtime, **kwargs) -> Deployment:
    return SageMakerEndpoint(settings, sm, runtime).deploy("s3://b/m.tar.gz", "v2", [["a"]], k=3, **kwargs)


def test_endpoint_update_switches_config_and_smoke_tests(settings):
    sm, runtime = _client("sagemaker"), _client("sagemaker-runtime")
    with Stubber(sm) as stub_sm, Stubber(runtime) as stub_rt:
        _stub_resources(stub_sm)
        _stub_update(stub_sm)
        _stub_smoke(stub_rt)
        stub_sm.add_response("add_tags", {"Tags": TAGS}, {"ResourceArn": ENDPOINT_ARN, "Tags": TAGS})
        _stub_prune(stub_sm)
        result = _deploy(settings, sm, runtime, tags=RUN_TAGS)
        stub_sm.assert_no_pending_responses()
        stub_rt.assert_no_pending_responses()
    assert result == Deployment(endpoint=ENDPOINT, model_version="v2", previous=OLD)


def test_an_update_that_rolled_back_is_a_failed_deploy(settings):
    """SageMaker's waiter says InService after a failed update rolled back: the
    endpoint still carrying the old config is what gives it away."""
    sm = _client("sagemaker")
    with Stubber(sm) as stub_sm:
        _stub_resources(stub_sm)
        _stub_update(stub_sm, after=OLD)
        with pytest.raises(DeployFailed, match="carries 'session-recsys-v1' after the update.*rolled back"):
            _deploy(settings, sm, _client("sagemaker-runtime"))
        stub_sm.assert_no_pending_responses()


def _model_error(stub: Stubber) -> None:
    stub.add_client_error("invoke_endpoint", "ModelError", "Received server error (500) from primary", 424,
                          expected_params={"EndpointName": ENDPOINT, "ContentType": "application/json", "Body": ANY})


@pytest.mark.parametrize("smoke", ["answered by the old model", "container error"])
def test_a_failed_smoke_test_puts_the_previous_config_back(settings, smoke):
    """Traffic has moved when the smoke test runs: a failure must not leave the new model live."""
    sm, runtime = _client("sagemaker"), _client("sagemaker-runtime")
    with Stubber(sm) as stub_sm, Stubber(runtime) as stub_rt:
        _stub_resources(stub_sm)
        _stub_update(stub_sm)
        if smoke == "container error":
            _model_error(stub_rt)
        else:
            _stub_smoke(stub_rt, answered_by="v1")
        stub_sm.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN},
                             {"EndpointName": ENDPOINT, "EndpointConfigName": OLD, "DeploymentConfig": BACK})
        _describe(stub_sm, OLD, "Updating")  # the waiter polls until InService
        _describe(stub_sm, OLD)
        _describe(stub_sm, OLD)  # the check: the previous config is back
        with mock.patch("time.sleep"), pytest.raises(
                DeployFailed, match=r"the run failed: the smoke test of session-recsys-v2 .* failed .*; endpoint "
                                    r"session-recsys was rolled back and the previous model serves again \(session-recsys-v1\)"):
            _deploy(settings, sm, runtime, tags=RUN_TAGS)
        stub_sm.assert_no_pending_responses()  # neither tagged as serving nor pruned
        stub_rt.assert_no_pending_responses()


def test_a_rollback_that_does_not_take_says_so(settings):
    sm, runtime = _client("sagemaker"), _client("sagemaker-runtime")
    with Stubber(sm) as stub_sm, Stubber(runtime) as stub_rt:
        _stub_resources(stub_sm)
        _stub_update(stub_sm)
        _stub_smoke(stub_rt, answered_by="v1")
        stub_sm.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN},
                             {"EndpointName": ENDPOINT, "EndpointConfigName": OLD, "DeploymentConfig": BACK})
        _describe(stub_sm, NEW)
        _describe(stub_sm, NEW)
        with pytest.raises(DeployFailed, match="after rolling back the endpoint carries 'session-recsys-v2', not "
                                               "'session-recsys-v1': check endpoint session-recsys now"):
            _deploy(settings, sm, runtime)
        stub_sm.assert_no_pending_responses()


def test_a_failed_first_deploy_has_nothing_to_go_back_to(settings):
    sm, runtime = _client("sagemaker"), _client("sagemaker-runtime")
    with Stubber(sm) as stub_sm, Stubber(runtime) as stub_rt:
        _stub_resources(stub_sm)
        stub_sm.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint \"session-recsys\".",
                                 expected_params={"EndpointName": ENDPOINT})
        stub_sm.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN},
                             {"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "Tags": ANY})
        _describe(stub_sm, NEW)
        _describe(stub_sm, NEW)
        _model_error(stub_rt)
        with pytest.raises(DeployFailed, match="no previous endpoint config to go back to: session-recsys serves "
                                               "session-recsys-v2"):
            _deploy(settings, sm, runtime)
        stub_sm.assert_no_pending_responses()


def test_an_endpoint_still_updating_is_waited_for_before_it_is_updated(settings):
    """UpdateEndpoint fails on an endpoint that is not InService; the config it settles on is the previous one."""
    sm, runtime = _client("sagemaker"), _client("sagemaker-runtime")
    with Stubber(sm) as stub_sm, Stubber(runtime) as stub_rt:
        _stub_resources(stub_sm)
        _describe(stub_sm, "session-recsys-v0", "Updating")
        _describe(stub_sm, "session-recsys-v0", "Updating")  # the waiter's first poll
        _describe(stub_sm, OLD)  # ... and its second: InService
        _stub_update(stub_sm, previous=OLD)
        _stub_smoke(stub_rt)
        stub_sm.add_response("add_tags", {}, {"ResourceArn": ENDPOINT_ARN, "Tags": ANY})
        _stub_prune(stub_sm)
        with mock.patch("time.sleep") as slept:
            result = _deploy(settings, sm, runtime)
        stub_sm.assert_no_pending_responses()
    assert slept.call_count == 1
    assert result.previous == OLD


def test_rollback_alarms_guard_the_update(settings, monkeypatch):
    monkeypatch.setenv("RECSYS_SAGEMAKER_ROLLBACK_ALARMS", "recsys-5xx, recsys-latency-p99,")
    settings = Settings.from_env()
    sm, runtime = _client("sagemaker"), _client("sagemaker-runtime")
    guarded = BLUE_GREEN | {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "recsys-5xx"},
                                                                     {"AlarmName": "recsys-latency-p99"}]}}
    with Stubber(sm) as stub_sm, Stubber(runtime) as stub_rt:
        _stub_resources(stub_sm)
        _stub_update(stub_sm, deployment=guarded)
        _stub_smoke(stub_rt, answered_by="v1")
        # going back: no alarms (one still firing would undo the way back)
        stub_sm.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN},
                             {"EndpointName": ENDPOINT, "EndpointConfigName": OLD, "DeploymentConfig": BACK})
        _describe(stub_sm, OLD)
        _describe(stub_sm, OLD)
        with pytest.raises(DeployFailed, match="previous model serves again"):
            _deploy(settings, sm, runtime)
        stub_sm.assert_no_pending_responses()


def test_created_resources_carry_the_run_and_the_serving_image(settings, monkeypatch):
    """The endpoint's CPU instances run the serving image; the model, its endpoint config and
    the endpoint are tagged with the DAG run that made them."""
    monkeypatch.setenv("RECSYS_SAGEMAKER_SERVING_IMAGE_URI", SERVING_IMAGE)
    settings = Settings.from_env()
    sm, runtime = _client("sagemaker"), _client("sagemaker-runtime")
    with Stubber(sm) as stub_sm, Stubber(runtime) as stub_rt:
        _stub_resources(stub_sm, image=SERVING_IMAGE, tags=TAGS)
        stub_sm.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint \"session-recsys\".",
                                 expected_params={"EndpointName": ENDPOINT})
        stub_sm.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN},
                             {"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "Tags": TAGS})
        _describe(stub_sm, NEW)
        _describe(stub_sm, NEW)
        _stub_smoke(stub_rt)
        _stub_prune(stub_sm, configs=[NEW], models=[NEW])
        result = _deploy(settings, sm, runtime, tags=RUN_TAGS)
        stub_sm.assert_no_pending_responses()
    assert result.previous is None


def test_the_endpoint_needs_a_role_and_an_image(recsys_home, monkeypatch):
    with pytest.raises(SettingsError, match="RECSYS_SAGEMAKER_ROLE_ARN and RECSYS_SAGEMAKER_IMAGE_URI"):
        _deploy(Settings.from_env(), _client("sagemaker"), _client("sagemaker-runtime"))
    monkeypatch.setenv("RECSYS_SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("RECSYS_SAGEMAKER_SERVING_IMAGE_URI", SERVING_IMAGE)  # enough for serving alone
    assert Settings.from_env().sagemaker_serving_image == SERVING_IMAGE


def test_old_versions_beyond_the_newest_few_are_deleted_never_serving_or_previous(settings, monkeypatch):
    monkeypatch.setenv("RECSYS_SAGEMAKER_KEEP_VERSIONS", "2")
    settings = Settings.from_env()
    sm = _client("sagemaker")
    created = dt.datetime(2026, 3, 10)
    newest_first = ["session-recsys-v7", "session-recsys-v6", "session-recsys-v5", "session-recsys-canary-v1",
                    "session-recsys-v3", "session-recsys-v2", "session-recsys-v1"]
    ours = {"session-recsys-v7", "session-recsys-v6", "session-recsys-v5", "session-recsys-v3", "session-recsys-v1"}
    query = {"NameContains": "session-recsys-", "SortBy": "CreationTime", "SortOrder": "Descending"}

    def tags(name):
        return {"Tags": [{"Key": "recsys:endpoint", "Value": ENDPOINT}] if name in ours else
                [{"Key": "recsys:endpoint", "Value": "session-recsys-canary"}]}

    with Stubber(sm) as stub:
        for kind, arn, delete in (("EndpointConfig", "endpoint-config", "delete_endpoint_config"),
                                  ("Model", "model", "delete_model")):
            listing = [{f"{kind}Name": n, f"{kind}Arn": f"arn:aws:sagemaker:eu-west-1:1:{arn}/{n}",
                        "CreationTime": created} for n in newest_first]
            # two pages: the paginator follows NextToken
            stub.add_response(f"list_{arn.replace('-', '_')}s", {f"{kind}s": listing[:4], "NextToken": "t"}, query)
            stub.add_response(f"list_{arn.replace('-', '_')}s", {f"{kind}s": listing[4:]}, query | {"NextToken": "t"})
            # v7 serves and v5 served before (kept); v6 is among the newest two; the canary endpoint's
            # config is not ours; v3 goes; v2 carries no tag of ours; v1 goes
            for name in ("session-recsys-canary-v1", "session-recsys-v3", "session-recsys-v2", "session-recsys-v1"):
                stub.add_response("list_tags", tags(name), {"ResourceArn": f"arn:aws:sagemaker:eu-west-1:1:{arn}/{name}"})
                if name in ours:
                    stub.add_response(delete, {}, {f"{kind}Name": name})
        deleted = SageMakerEndpoint(settings, sm).prune(ENDPOINT, keep={"session-recsys-v7", "session-recsys-v5"})
        stub.assert_no_pending_responses()
    assert deleted == ["session-recsys-v3", "session-recsys-v1"] * 2


# --- the deferred path: the update_endpoint task waits in the triggerer -----------------------


def test_the_endpoint_update_is_waited_for_by_a_trigger_then_finished(settings):
    """start_deploy sends the update and returns what to wait with (no DescribeEndpoint poll in
    the task); finish_deploy, after the trigger's event, checks, smoke-tests, tags and prunes."""
    sm, runtime = _client("sagemaker"), _client("sagemaker-runtime")
    backend = SageMakerEndpoint(settings, sm, runtime)
    with Stubber(sm) as stub_sm, Stubber(runtime) as stub_rt:
        _stub_resources(stub_sm)
        _describe(stub_sm, OLD)
        stub_sm.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN},
                             {"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": BLUE_GREEN})
        rollout = backend.start_deploy("s3://b/m.tar.gz", "v2", [["a"]], 3, tags=RUN_TAGS)
        stub_sm.assert_no_pending_responses()

        classpath, kwargs = rollout.trigger.serialize()
        assert classpath.endswith("SageMakerTrigger")
        assert (kwargs["job_name"], kwargs["job_type"]) == (ENDPOINT, "endpoint")
        assert kwargs["waiter_delay"] * kwargs["waiter_max_attempts"] >= BAKE_S  # outlasts the blue/green bake
        assert json.loads(json.dumps(rollout.state)) == rollout.state  # travels through the deferral

        _describe(stub_sm, NEW)  # which config the endpoint carries now
        _stub_smoke(stub_rt)
        stub_sm.add_response("add_tags", {"Tags": TAGS}, {"ResourceArn": ENDPOINT_ARN, "Tags": TAGS})
        _stub_prune(stub_sm)
        result = backend.finish_deploy(rollout.state, [["a"]], 3, {"status": "success", "job_name": ENDPOINT})
        stub_sm.assert_no_pending_responses()
        stub_rt.assert_no_pending_responses()
    assert result == Deployment(endpoint=ENDPOINT, model_version="v2", previous=OLD)


def test_an_endpoint_that_failed_while_the_trigger_waited_fails_the_deploy_with_its_reason(settings):
    sm = _client("sagemaker")
    state = {"endpoint": ENDPOINT, "config": NEW, "previous": None, "model_version": "v2",
             "endpoint_arn": None, "tags": TAGS}
    with Stubber(sm) as stub_sm:
        failed = {**_endpoint(NEW, "Failed"), "FailureReason": "The primary container did not pass the ping health check"}
        stub_sm.add_response("describe_endpoint", failed, {"EndpointName": ENDPOINT})
        with pytest.raises(DeployFailed, match="did not come back InService.*failed.*ping health check"):
            SageMakerEndpoint(settings, sm, _client("sagemaker-runtime")).finish_deploy(
                state, [["a"]], 3, {"status": "failed", "message": "Endpoint Failed"})
        stub_sm.assert_no_pending_responses()  # neither smoke-tested, tagged nor pruned
