"""Update a SageMaker real-time endpoint to a new model (blue/green), or put the previous one back.

One deploy, in order:

1. a model (the serving image with the run's model.tar.gz) and an endpoint config for
   it, both tagged with who made them;
2. an endpoint still ``Creating``/``Updating`` is waited for, then created or updated
   blue/green, with CloudWatch alarms to roll back on when
   ``RECSYS_SAGEMAKER_ROLLBACK_ALARMS`` names some;
3. SageMaker's own waiter reports success even when an update failed and rolled back,
   so after waiting we check that the endpoint now carries the new config;
4. a smoke test through the runtime API. Traffic has moved by then: if it fails, the
   endpoint is updated back to the previous config, waited for and checked, and the
   deploy fails saying the previous model serves;
5. after a good deploy, models and endpoint configs of this endpoint beyond the newest
   ``RECSYS_SAGEMAKER_KEEP_VERSIONS`` are deleted (never the serving or the previous one).
"""

from __future__ import annotations

import json
import logging

from recsys.endpoint import Deployment, Rollout
from recsys.endpoint.smoke import DeployFailed, check_response
from recsys.settings import Settings, SettingsError
from recsys.training.sagemaker import aws_tags

log = logging.getLogger(__name__)

# states an endpoint leaves by itself: wait for InService before touching it
SETTLING = ("Creating", "Updating", "SystemUpdating", "RollingBack")
WAIT = {"Delay": 30, "MaxAttempts": 120}
BAKE_S = 300  # the old fleet stays up this long after traffic moved: the alarms' window to roll back
ENDPOINT_TAG = "recsys:endpoint"  # only resources carrying it (with this endpoint's name) are ever deleted


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

    def deploy(self, model_artifact_uri: str, model_version: str, smoke_sessions: list[list[str]], k: int,
               *, tags: dict[str, str] | None = None) -> Deployment:
        """Serve ``model_version``, waiting for the endpoint here (the DAG's task waits for it
        deferred instead); ``tags`` (e.g. ``recsys:dag_run_id``) go on every resource this
        creates, and on the endpoint once it serves the new model."""
        rollout = self.start_deploy(model_artifact_uri, model_version, smoke_sessions, k, tags=tags)
        self._wait_in_service(rollout.state["endpoint"])
        return self.finish_deploy(rollout.state, smoke_sessions, k)

    def start_deploy(self, model_artifact_uri: str, model_version: str, smoke_sessions: list[list[str]], k: int,
                     *, tags: dict[str, str] | None = None) -> Rollout:
        """Steps 1 and 2: the model and endpoint config, then the endpoint created or updated.
        Returns what finishing needs, and the trigger that waits until the endpoint is InService."""
        if not self.sm["role_arn"] or not self.settings.sagemaker_serving_image:
            raise SettingsError("the sagemaker endpoint backend needs RECSYS_SAGEMAKER_ROLE_ARN and RECSYS_SAGEMAKER_IMAGE_URI"
                                " (or RECSYS_SAGEMAKER_SERVING_IMAGE_URI)")
        from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

        endpoint = self.sm["endpoint_name"]
        name = f"{endpoint}-{model_version}"[:63]
        resource_tags = aws_tags({ENDPOINT_TAG: endpoint, **(tags or {})})
        self._ensure_model(name, model_artifact_uri, resource_tags)
        self._ensure_config(name, resource_tags)
        described = self._settled(endpoint)
        previous = described["EndpointConfigName"] if described else None
        if described is None:
            log.info("creating endpoint %s with %s", endpoint, name)
            self.client.create_endpoint(EndpointName=endpoint, EndpointConfigName=name, Tags=resource_tags)
        elif previous != name:
            log.info("updating endpoint %s: %s -> %s (blue/green)", endpoint, previous, name)
            self.client.update_endpoint(EndpointName=endpoint, EndpointConfigName=name,
                                        DeploymentConfig=self._deployment_config())
        state = {"endpoint": endpoint, "config": name, "previous": previous, "model_version": model_version,
                 "endpoint_arn": described["EndpointArn"] if described else None, "tags": resource_tags}
        trigger = SageMakerTrigger(job_name=endpoint, job_type="endpoint", waiter_delay=WAIT["Delay"],
                                   waiter_max_attempts=WAIT["MaxAttempts"], aws_conn_id=self.settings.aws_conn_id)
        return Rollout(state, trigger)

    def finish_deploy(self, state: dict, smoke_sessions: list[list[str]], k: int,
                      event: dict | None = None) -> Deployment:
        """Steps 3 to 5, once the endpoint is InService again: it must carry the new config
        (SageMaker's own rollback also ends InService), pass the smoke test (or the previous
        config goes back), then is tagged and old versions pruned."""
        endpoint, name, previous = state["endpoint"], state["config"], state["previous"]
        if event is not None and event.get("status") != "success":
            described = self._describe(endpoint) or {}
            raise DeployFailed(f"endpoint {endpoint} did not come back InService after taking {name}: "
                               f"{event.get('status')} ({described.get('FailureReason') or event.get('message')})")
        now = self._current_config(endpoint)
        if now != name:
            raise DeployFailed(f"endpoint {endpoint} carries {now!r} after the update, not {name!r}: it rolled back")
        try:
            self._smoke_test(endpoint, state["model_version"], smoke_sessions, k)
        except Exception as exc:  # DeployFailed, a ModelError from the container, a body that is not JSON
            self._roll_back(endpoint, name, previous, exc)
        if state["endpoint_arn"] is not None:  # a created endpoint got its tags with CreateEndpoint
            self.client.add_tags(ResourceArn=state["endpoint_arn"], Tags=state["tags"])
        self.prune(endpoint, keep={name, previous} - {None})
        return Deployment(endpoint, state["model_version"], previous)

    # -- the endpoint --------------------------------------------------------------------

    def _describe(self, endpoint: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.describe_endpoint(EndpointName=endpoint)
        except ClientError as exc:
            if "could not find" in str(exc).lower() or "not found" in str(exc).lower():
                return None
            raise

    def _current_config(self, endpoint: str) -> str | None:
        described = self._describe(endpoint)
        return described["EndpointConfigName"] if described else None

    def _settled(self, endpoint: str) -> dict | None:
        """The endpoint (None where there is none), once no earlier create or update is under way:
        updating an endpoint that is not InService fails, and its config is not yet the one it keeps."""
        described = self._describe(endpoint)
        if described is not None and described["EndpointStatus"] in SETTLING:
            log.info("endpoint %s is %s: waiting for it before deploying", endpoint, described["EndpointStatus"])
            self._wait_in_service(endpoint)
            described = self._describe(endpoint)
        return described

    def _wait_in_service(self, endpoint: str) -> None:
        from botocore.exceptions import WaiterError

        try:
            self.client.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig=WAIT)
        except WaiterError as exc:
            described = self._describe(endpoint) or {}
            raise DeployFailed(f"endpoint {endpoint} did not come back InService: {described.get('EndpointStatus')} "
                               f"({described.get('FailureReason', exc)})") from exc

    def _deployment_config(self, *, rolling_back: bool = False) -> dict:
        config = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
                # going back needs no bake: the previous model has served before
                "TerminationWaitInSeconds": 0 if rolling_back else BAKE_S,
            }
        }
        alarms = self.settings.sagemaker_rollback_alarm_names
        if alarms and not rolling_back:  # an alarm still firing must not undo the way back
            config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": alarm} for alarm in alarms]}
        return config

    def _smoke_test(self, endpoint: str, model_version: str, smoke_sessions: list[list[str]], k: int) -> None:
        response = self.runtime.invoke_endpoint(
            EndpointName=endpoint,
            ContentType="application/json",
            Body=json.dumps({"sessions": smoke_sessions, "k": k}),
        )
        check_response(json.loads(response["Body"].read()), model_version, len(smoke_sessions), k)

    def _roll_back(self, endpoint: str, name: str, previous: str | None, failure: Exception) -> None:
        """Put ``previous`` back on the endpoint after ``name`` failed its smoke test; always raises."""
        what = f"the smoke test of {name} on endpoint {endpoint} failed ({failure})"
        if previous is None or previous == name:
            raise DeployFailed(f"the run failed: {what}, and there is no previous endpoint config to go back to: "
                               f"{endpoint} serves {name}") from failure
        log.error("%s: rolling back to %s", what, previous)
        try:
            self.client.update_endpoint(EndpointName=endpoint, EndpointConfigName=previous,
                                        DeploymentConfig=self._deployment_config(rolling_back=True))
            self._wait_in_service(endpoint)
            now = self._current_config(endpoint)
        except Exception as exc:
            raise DeployFailed(f"the run failed: {what}, and rolling back to {previous} failed too ({exc}): "
                               f"check endpoint {endpoint} now") from failure
        if now != previous:
            raise DeployFailed(f"the run failed: {what}, and after rolling back the endpoint carries {now!r}, "
                               f"not {previous!r}: check endpoint {endpoint} now") from failure
        raise DeployFailed(f"the run failed: {what}; endpoint {endpoint} was rolled back and the previous "
                           f"model serves again ({previous})") from failure

    # -- models and endpoint configs -----------------------------------------------------

    def _ensure_model(self, name: str, model_artifact_uri: str, tags: list[dict]) -> None:
        found = self.client.list_models(NameContains=name)["Models"]
        if any(m["ModelName"] == name for m in found):
            return
        self.client.create_model(
            ModelName=name,
            # the endpoint's instances are CPU ones by default: the serving image, not the training one
            PrimaryContainer={"Image": self.settings.sagemaker_serving_image, "ModelDataUrl": model_artifact_uri},
            ExecutionRoleArn=self.sm["role_arn"],
            Tags=tags,
        )

    def _ensure_config(self, name: str, tags: list[dict]) -> None:
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
            Tags=tags,
        )

    def prune(self, endpoint: str, keep: set[str]) -> list[str]:
        """Delete this endpoint's endpoint configs and models beyond the newest
        ``RECSYS_SAGEMAKER_KEEP_VERSIONS``, never one named in ``keep`` (serving, previous), and
        only those tagged as this endpoint's. A failure here is logged: the deploy stands."""
        from botocore.exceptions import ClientError

        deleted = []
        for operation, key, arn_key, delete in (
            ("list_endpoint_configs", "EndpointConfigs", "EndpointConfigArn", "delete_endpoint_config"),
            ("list_models", "Models", "ModelArn", "delete_model"),
        ):
            name_key = key[:-1] + "Name"
            try:
                pages = self.client.get_paginator(operation).paginate(
                    NameContains=f"{endpoint}-", SortBy="CreationTime", SortOrder="Descending")
                newest_first = [item for page in pages for item in page[key]
                                if item[name_key].startswith(f"{endpoint}-")]
                for item in newest_first[self.settings.sagemaker_keep_versions:]:
                    name = item[name_key]
                    if name in keep or not self._tagged_for(item[arn_key], endpoint):
                        continue
                    log.info("deleting %s %s (beyond the newest %d)", name_key[:-4], name,
                             self.settings.sagemaker_keep_versions)
                    getattr(self.client, delete)(**{name_key: name})
                    deleted.append(name)
            except ClientError as exc:
                log.warning("could not delete old %s of endpoint %s: %s", key, endpoint, exc)
        return deleted

    def _tagged_for(self, arn: str, endpoint: str) -> bool:
        tags = self.client.list_tags(ResourceArn=arn)["Tags"]
        return any(tag["Key"] == ENDPOINT_TAG and tag["Value"] == endpoint for tag in tags)
