"""Run the training image as a SageMaker training job (GPU instance).

The dataset prefix's splits become the job's channels, the champion's
model.tar.gz an optional ``champion`` channel; the job's model.tar.gz and
output.tar.gz land under the run's prefix, as the local backend's do.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

from recsys.run import RunLayout
from recsys.settings import Settings, SettingsError
from recsys.storage import download, path_from_uri, unpack, upload
from recsys.training.job import (
    CHAMPION_CHANNEL,
    CHANNELS,
    Started,
    TrainingFailed,
    TrainingJob,
    TrainingResult,
    read_evaluation,
)
from recsys.training.trigger import TrainingJobTrigger

log = logging.getLogger(__name__)

POLL_S = 60
CHECKPOINT_DIR = "/opt/ml/checkpoints"
_TAG_UNSAFE = re.compile(r"[^\w .:/=+\-@]")


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


def aws_tags(tags: dict[str, str]) -> list[dict]:
    """``tags`` as SageMaker's Tags, each ``app=recsys_retrain`` first; characters SageMaker
    refuses in a tag become ``_`` (keys up to 128 characters, values up to 256)."""
    pairs = {"app": "recsys_retrain", **tags}
    return [{"Key": _TAG_UNSAFE.sub("_", str(key))[:128], "Value": _TAG_UNSAFE.sub("_", str(value))[:256]}
            for key, value in pairs.items()]


def checkpoint_uri(job: TrainingJob) -> str:
    """Where a spot job saves /opt/ml/checkpoints, and where every attempt of it resumes from."""
    return job.layout.checkpoints(job.name)


def _stopping_condition(settings: Settings) -> dict:
    try:
        runtime = int(settings.sagemaker_max_runtime_s)
    except ValueError:
        raise SettingsError(f"RECSYS_SAGEMAKER_MAX_RUNTIME_S={settings.sagemaker_max_runtime_s!r} is not an int") from None
    condition = {"MaxRuntimeInSeconds": runtime}
    if settings.sagemaker_spot:
        wait = settings.sagemaker_max_wait_s or 2 * runtime
        if wait < runtime:
            raise SettingsError(f"RECSYS_SAGEMAKER_MAX_WAIT_S={wait} is less than RECSYS_SAGEMAKER_MAX_RUNTIME_S="
                                f"{runtime}: a spot job waits for capacity on top of its run time")
        condition["MaxWaitTimeInSeconds"] = wait
    return condition


def _wait_limit_s(stopping: dict) -> int:
    """How long a job can take: its run time, or for a spot job its wait for capacity too."""
    return int(stopping.get("MaxWaitTimeInSeconds", stopping["MaxRuntimeInSeconds"]))


def training_config(settings: Settings, job: TrainingJob) -> dict:
    sm = settings.sagemaker
    missing = [key for key in ("role_arn", "image_uri") if not sm[key]]
    if missing:
        names = ", ".join(f"RECSYS_SAGEMAKER_{key.upper()}" for key in missing)
        raise SettingsError(f"the sagemaker training backend needs {names}")
    channels = [_s3_channel(name, RunLayout.split_prefix(job.dataset_uri, name)) for name in CHANNELS]
    if job.champion_artifact_uri:
        channels.append(_s3_channel(CHAMPION_CHANNEL, job.champion_artifact_uri))
    config = {
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
        "ResourceConfig": {"InstanceType": sm["training_instance_type"], "InstanceCount": 1,
                           "VolumeSizeInGB": settings.sagemaker_volume_gb},
        "StoppingCondition": _stopping_condition(settings),
        "Tags": aws_tags(job.tags),
    }
    if settings.sagemaker_spot:
        # a spot instance can be reclaimed: SageMaker restarts the job, which resumes from its checkpoints
        config["EnableManagedSpotTraining"] = True
        config["CheckpointConfig"] = {"S3Uri": checkpoint_uri(job), "LocalPath": CHECKPOINT_DIR}
    return config


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

    def start(self, job: TrainingJob) -> Started:
        """Start this run's job, or attach to the one it already has: a retry re-attaches to a
        job still InProgress (or Stopping) and reuses a Completed one; only after a Failed or
        Stopped one does it start ``name-rN``. Returns the job to wait for, with the trigger
        that waits for it in Airflow's triggerer (no worker slot held for hours)."""
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
        limit_s = _wait_limit_s(config["StoppingCondition"])
        trigger = TrainingJobTrigger(
            job_name=name, job_type="training", waiter_delay=POLL_S,
            waiter_max_attempts=limit_s // POLL_S + 10,  # the job's own limit, with room for start-up
            aws_conn_id=self.settings.aws_conn_id)
        return Started(name, trigger)

    def collect(self, job: TrainingJob, name: str) -> TrainingResult:
        """The finished job's result; a job that did not complete raises TrainingFailed with
        SageMaker's FailureReason (the container's /opt/ml/output/failure)."""
        described = self.client.describe_training_job(TrainingJobName=name)
        if described["TrainingJobStatus"] != "Completed":
            raise TrainingFailed(
                f"training job {name} {described['TrainingJobStatus']}: {described.get('FailureReason', 'no reason given')}"
            )
        return self._collect(job.layout, described)

    def stop(self, job_name: str) -> list[str]:
        """Stop this run's training job (``job_name`` or a retry of it, ``job_name-rN``) where it
        is still InProgress: what a killed or timed-out task calls, so no GPU job runs on
        unwatched. Returns the names it asked SageMaker to stop."""
        from botocore.exceptions import ClientError

        found = self.client.list_training_jobs(NameContains=job_name, MaxResults=100)["TrainingJobSummaries"]
        stopped = []
        for summary in found:
            name = summary["TrainingJobName"]
            if not _is_attempt(name, job_name) or summary["TrainingJobStatus"] != "InProgress":
                continue
            log.warning("stopping SageMaker training job %s", name)
            try:
                self.client.stop_training_job(TrainingJobName=name)
            except ClientError as exc:  # it ended meanwhile: nothing left to stop
                log.warning("could not stop training job %s: %s", name, exc)
                continue
            stopped.append(name)
        return stopped

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
        ours = [job for job in found if _is_attempt(job["TrainingJobName"], name)]
        if not ours:
            return None, 0
        newest = max(ours, key=lambda job: job["CreationTime"])
        return self.client.describe_training_job(TrainingJobName=newest["TrainingJobName"]), len(ours)


def _is_attempt(candidate: str, name: str) -> bool:
    """Whether ``candidate`` is the job ``name`` or one of its retries (``name-rN``)."""
    return candidate == name or re.fullmatch(rf"{re.escape(name)}-r\d+", candidate) is not None
