"""Waiting for a SageMaker training job in Airflow's triggerer, and stopping it when a user
kills the waiting task (mark failed, clear): the amazon provider's trigger, plus ``on_kill``."""

from __future__ import annotations

import logging

from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

log = logging.getLogger(__name__)


class TrainingJobTrigger(SageMakerTrigger):
    """Fires when the training job ends (its event carries FailureReason when it failed).
    A user killing the deferred task stops the job, so no GPU runs on unwatched; a triggerer
    restart does not (the wait moves to another triggerer)."""

    async def on_kill(self) -> None:
        from botocore.exceptions import ClientError

        async with await self.hook().get_async_conn() as client:
            described = await client.describe_training_job(TrainingJobName=self.job_name)
            if described["TrainingJobStatus"] != "InProgress":
                return
            log.warning("the task waiting for training job %s was killed: stopping the job", self.job_name)
            try:
                await client.stop_training_job(TrainingJobName=self.job_name)
            except ClientError as exc:  # it ended meanwhile: nothing left to stop
                log.warning("could not stop training job %s: %s", self.job_name, exc)
