"""Tasks that wait on other machines for long: they wait in Airflow's triggerer, not in a
worker slot. Their bodies are in ``recsys.pipeline``, as every other task's."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseOperator

# the triggerer's wait ends at the job's own limit; this only catches a trigger that never fires
TRIGGER_GRACE = dt.timedelta(minutes=30)


class TrainModelOperator(BaseOperator):
    """``train_model``: start the run's training job; a job that runs elsewhere (a SageMaker
    training job, for hours on a GPU) is waited for by its trigger while the task is
    deferred, then collected and registered as the challenger. A local job runs to its end
    inside the task. Returns the ``Trained`` challenger (as a dict)."""

    template_fields = ("run", "dataset")
    ui_color = "#f0e4ff"

    def __init__(self, *, run: Any, dataset: Any, **kwargs):
        super().__init__(**kwargs)
        self.run = run
        self.dataset = dataset

    def execute(self, context) -> dict:
        from recsys import pipeline

        started = pipeline.start_training(self.run, self.dataset)
        if started.trigger is None:
            return pipeline.finish_training(self.run, self.dataset, started.job_name)
        limit = dt.timedelta(seconds=started.trigger.waiter_delay * started.trigger.attempts)
        self.log.info("training job %s is running: waiting for it in the triggerer (up to %s)",
                      started.job_name, limit)
        self.defer(trigger=started.trigger, method_name="execute_complete",
                   kwargs={"job_name": started.job_name}, timeout=limit + TRIGGER_GRACE)

    def execute_complete(self, context, event: dict, job_name: str) -> dict:
        from recsys import pipeline

        self.log.info("training job %s ended: %s", job_name, event.get("status"))
        return pipeline.finish_training(self.run, self.dataset, job_name, event)
