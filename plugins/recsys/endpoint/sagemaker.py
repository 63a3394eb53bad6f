"""Update a SageMaker real-time endpoint to a new model (blue/green).

SageMaker's own waiter reports success even when an update failed and rolled
back, so after waiting we check that the endpoint now carries the new config,
then smoke-test it through the runtime API.
"""

from __future__ import annotations

import json
import logging

from recsys.endpoint import Deployment
from recsys.endpoint.smoke import DeployFailed, check_response
from recsys.settings import Settings, SettingsError

log = logging.getLogger(__name__)


class SageMakerEndpoint:
    def __init__(self, settings: Settings, sagemaker_client=None, runtime_client=None):
        self.settings = settings
        self.sm = settings.sagemaker
        self._client = sagemaker_client
        self._runtime = runtime_client

    @property
    def client(self):
        if self._client is None:
            from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

            self._client = SageMakerHook(aws_conn_id=self.settings.aws_conn_id).get_conn()
        return self._client

    @property
    def runtime(self):
        if self._runtime is None:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            self._runtime = AwsBaseHook(aws_conn_id=self.settings.aws_conn_id, client_type="sagemaker-runtime").get_conn()
        return self._runtime

    def deploy(self, model_artifact_uri: str, model_version: str, smoke_sessions: list[list[str]], k: int) -> Deployment:
        if not self.sm["role_arn"] or not self.sm["image_uri"]:
            raise SettingsError("the sagemaker endpoint backend needs RECSYS_SAGEMAKER_ROLE_ARN and RECSYS_SAGEMAKER_IMAGE_URI")
        endpoint = self.sm["endpoint_name"]
        name = f"{endpoint}-{model_version}"[:63]
        self._ensure_model(name, model_artifact_uri)
        self._ensure_config(name)
        previous = self._current_config(endpoint)
        if previous is None:
            log.info("creating endpoint %s with %s", endpoint, name)
            self.client.create_endpoint(EndpointName=endpoint, EndpointConfigName=name)
        elif previous != name:
            log.info("updating endpoint %s: %s -> %s (blue/green)", endpoint, previous, name)
            self.client.update_endpoint(
                EndpointName=endpoint,
                EndpointConfigName=name,
                DeploymentConfig={
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
                        "TerminationWaitInSeconds": 300,
                    }
                },
            )
        self.client.get_waiter("endpoint_in_service").wait(
            EndpointName=endpoint, WaiterConfig={"Delay": 30, "MaxAttempts": 120}
        )
        now = self._current_config(endpoint)
        if now != name:
            raise DeployFailed(f"endpoint {endpoint} carries {now!r} after the update, not {name!r}: it rolled back")
        response = self.runtime.invoke_endpoint(
            EndpointName=endpoint,
            ContentType="application/json",
            Body=json.dumps({"sessions": smoke_sessions, "k": k}),
        )
        check_response(json.loads(response["Body"].read()), model_version, len(smoke_sessions), k)
        return Deployment(endpoint, model_version, previous)

    def _current_config(self, endpoint: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        except ClientError as exc:
            if "could not find" in str(exc).lower() or "not found" in str(exc).lower():
                return None
            raise

    def _ensure_model(self, name: str, model_artifact_uri: str) -> None:
        found = self.client.list_models(NameContains=name)["Models"]
        if any(m["ModelName"] == name for m in found):
            return
        self.client.create_model(
            ModelName=name,
            PrimaryContainer={"Image": self.sm["image_uri"], "ModelDataUrl": model_artifact_uri},
            ExecutionRoleArn=self.sm["role_arn"],
        )

    def _ensure_config(self, name: str) -> None:
        found = self.client.list_endpoint_configs(NameContains=name)["EndpointConfigs"]
        if any(c["EndpointConfigName"] == name for c in found):
            return
        self.client.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InitialInstanceCount": 1,
                    "InstanceType": self.sm["serving_instance_type"],
                }
            ],
        )
