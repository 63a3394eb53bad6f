"""Run the training image as a SageMaker training job (GPU instance).

The dataset prefix's splits become the job's channels, the champion's
model.tar.gz an optional ``champion`` channel; the job's model.tar.gz and
output.tar.gz land under the run's prefix, as the local backend's do.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from recsys.settings import Settings, SettingsError
from recsys.storage import download, path_from_uri
from recsys.training.job import CHANNELS, TrainingFailed, TrainingJob, TrainingResult, extract_tarball, read_output

log = logging.getLogger(__name__)

# Lines the container prints, turned into CloudWatch metrics by SageMaker.
METRIC_DEFINITIONS = [
    {"Name": name, "Regex": f"{name}=([0-9.]+);"}
    for name in ("val_hr_at_20", "val_mrr_at_20", "test_hr_at_20", "test_mrr_at_20")
]


def _s3_channel(name: str, uri: str) -> dict:
    return {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": "File",
    }


def training_config(settings: Settings, job: TrainingJob) -> dict:
    sm = settings.sagemaker
    missing = [key for key in ("role_arn", "image_uri") if not sm[key]]
    if missing:
        names = ", ".join(f"RECSYS_SAGEMAKER_{key.upper()}" for key in missing)
        raise SettingsError(f"the sagemaker training backend needs {names}")
    channels = [_s3_channel(name, f"{job.dataset_uri}/{name}/") for name in CHANNELS]
    if job.champion_artifact_uri:
        channels.append(_s3_channel("champion", job.champion_artifact_uri))
    return {
        "TrainingJobName": job.name,
        "AlgorithmSpecification": {
            "TrainingImage": sm["image_uri"],
            "TrainingInputMode": "File",
            "MetricDefinitions": METRIC_DEFINITIONS,
        },
        "RoleArn": sm["role_arn"],
        "HyperParameters": job.hyperparameters,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": job.output_uri},
        "ResourceConfig": {"InstanceType": sm["training_instance_type"], "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(sm["max_runtime_s"])},
        "Tags": [{"Key": "app", "Value": "recsys_retrain"}],
    }


class SageMakerTraining:
    def __init__(self, settings: Settings, hook=None):
        self.settings = settings
        self._hook = hook

    @property
    def hook(self):
        if self._hook is None:
            from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

            self._hook = SageMakerHook(aws_conn_id=self.settings.aws_conn_id)
        return self._hook

    def train(self, job: TrainingJob) -> TrainingResult:
        config = training_config(self.settings, job)
        described = self._existing(job.name)
        if described and described["TrainingJobStatus"] == "Completed":
            log.info("training job %s already completed: reusing its model", job.name)
        else:
            if described:  # a failed or stopped attempt keeps its name: the retry gets a new one
                config["TrainingJobName"] = f"{job.name}-r{len(self._attempts(job.name))}"
            log.info("starting SageMaker training job %s on %s", config["TrainingJobName"],
                     config["ResourceConfig"]["InstanceType"])
            self.hook.create_training_job(config, wait_for_completion=True, print_log=True, check_interval=30)
            described = self.hook.describe_training_job(config["TrainingJobName"])
        name = described["TrainingJobName"]
        if described["TrainingJobStatus"] != "Completed":
            raise TrainingFailed(f"training job {name} {described['TrainingJobStatus']}: {described.get('FailureReason', '')}")
        model_uri = described["ModelArtifacts"]["S3ModelArtifacts"]
        output_dir = Path(tempfile.mkdtemp(prefix=f"{name}-")) / "output"
        archive = download(
            path_from_uri(self.settings, f"{job.output_uri}/{name}/output/output.tar.gz"), output_dir.parent / "output.tar.gz"
        )
        extract_tarball(archive, output_dir)
        return TrainingResult(name, model_uri, output_dir, read_output(output_dir))

    def _existing(self, name: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.hook.get_conn().describe_training_job(TrainingJobName=name)
        except ClientError as exc:  # SageMaker answers ValidationException for an unknown job
            if "not found" in str(exc).lower():
                return None
            raise

    def _attempts(self, name: str) -> list[str]:
        client = self.hook.get_conn()
        found = client.list_training_jobs(NameContains=name, MaxResults=100)["TrainingJobSummaries"]
        return [job["TrainingJobName"] for job in found]
