"""Run the training image as a SageMaker training job (GPU instance).

The dataset prefix's splits become the job's channels, the champion's
model.tar.gz an optional ``champion`` channel; the job's model.tar.gz and
output.tar.gz land under the run's prefix, as the local backend's do.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from recsys.run import RunLayout
from recsys.settings import Settings, SettingsError
from recsys.storage import download, path_from_uri, unpack, upload
from recsys.training.job import (
    CHAMPION_CHANNEL,
    CHANNELS,
    TrainingFailed,
    TrainingJob,
    TrainingResult,
    read_evaluation,
)

log = logging.getLogger(__name__)

POLL_S = 60


def metric_definitions(top_k: int) -> list[dict]:
    """Lines the container prints (``name=value;``), turned into CloudWatch metrics by SageMaker."""
    names = [f"{split}_{metric}_at_{top_k}" for split in ("val", "test") for metric in ("hr", "mrr")]
    return [{"Name": name, "Regex": f"{name}=([0-9.]+);"} for name in names]


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
    channels = [_s3_channel(name, RunLayout.split_prefix(job.dataset_uri, name)) for name in CHANNELS]
    if job.champion_artifact_uri:
        channels.append(_s3_channel(CHAMPION_CHANNEL, job.champion_artifact_uri))
    return {
        "TrainingJobName": job.name,
        "AlgorithmSpecification": {
            "TrainingImage": sm["image_uri"],
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(settings.top_k),
        },
        "RoleArn": sm["role_arn"],
        "HyperParameters": job.hyperparameters,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": job.layout.training},
        "ResourceConfig": {"InstanceType": sm["training_instance_type"], "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(sm["max_runtime_s"])},
        "Tags": [{"Key": "app", "Value": "recsys_retrain"}],
    }


class SageMakerTraining:
    def __init__(self, settings: Settings, client=None):
        self.settings = settings
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

            self._client = SageMakerHook(aws_conn_id=self.settings.aws_conn_id).get_conn()
        return self._client

    def train(self, job: TrainingJob) -> TrainingResult:
        config = training_config(self.settings, job)
        latest, attempts = self._latest_attempt(job.name)
        status = latest["TrainingJobStatus"] if latest else None
        if status in (None, "Failed", "Stopped"):
            # a failed or stopped attempt keeps its name: a new attempt gets the next one
            name = job.name if latest is None else f"{job.name}-r{attempts}"
            config["TrainingJobName"] = name
            log.info("starting SageMaker training job %s on %s", name, config["ResourceConfig"]["InstanceType"])
            self.client.create_training_job(**config)
        else:  # InProgress, Stopping or Completed: this run's job, never a second one beside it
            name = latest["TrainingJobName"]
            log.info("training job %s is already %s: attaching to it", name, status)
        described = self._wait(name, int(config["StoppingCondition"]["MaxRuntimeInSeconds"]))
        if described["TrainingJobStatus"] != "Completed":
            raise TrainingFailed(
                f"training job {name} {described['TrainingJobStatus']}: {described.get('FailureReason', 'no reason given')}"
            )
        return self._collect(job.layout, described)

    def _wait(self, name: str, max_runtime_s: int) -> dict:
        from botocore.exceptions import WaiterError

        attempts = max_runtime_s // POLL_S + 10  # the job's own limit, with room for start-up
        try:
            self.client.get_waiter("training_job_completed_or_stopped").wait(
                TrainingJobName=name, WaiterConfig={"Delay": POLL_S, "MaxAttempts": attempts}
            )
        except WaiterError as exc:  # a failed job ends the wait early: its FailureReason says why
            log.warning("waiting for training job %s ended: %s", name, exc)
        return self.client.describe_training_job(TrainingJobName=name)

    def _collect(self, layout: RunLayout, described: dict) -> TrainingResult:
        """SageMaker packs /opt/ml/output/data into output.tar.gz: unpack it to where the
        layout keeps a job's outputs, so the model gate reads the same place whichever
        backend trained."""
        name = described["TrainingJobName"]
        scratch = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        archive = download(path_from_uri(self.settings, layout.packed_outputs(name)), scratch / "output.tar.gz")
        output_dir = unpack(archive, scratch / "data")
        for item in sorted(output_dir.iterdir()):
            upload(item, path_from_uri(self.settings, layout.output(name, item.name)))
        model_uri = described["ModelArtifacts"]["S3ModelArtifacts"]
        log.info("model artifact: %s; outputs: %s", model_uri, layout.outputs(name))
        return TrainingResult(name, model_uri, layout.predictions(name), output_dir, read_evaluation(output_dir))

    def _latest_attempt(self, name: str) -> tuple[dict | None, int]:
        """The newest job of this run (``name`` or ``name-rN``) and how many there are."""
        found = self.client.list_training_jobs(NameContains=name, MaxResults=100)["TrainingJobSummaries"]
        ours = [job for job in found if job["TrainingJobName"] == name or job["TrainingJobName"].startswith(f"{name}-r")]
        if not ours:
            return None, 0
        newest = max(ours, key=lambda job: job["CreationTime"])
        return self.client.describe_training_job(TrainingJobName=newest["TrainingJobName"]), len(ours)
