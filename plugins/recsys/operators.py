"""Tasks that wait on other machines (minutes to hours): they wait in Airflow's triggerer, not in a
worker slot. Their bodies are in ``recsys.pipeline``, as every other task's."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseOperator

# the triggerer's wait ends at the job's own limit; this only catches a trigger that never fires
TRIGGER_GRACE = dt.timedelta(minutes=30)
ROLLOUT_XCOM = "rollout"


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
        self.defer(trigger=started.trigger, method_name="execute_complete", timeout=limit + TRIGGER_GRACE)

    def execute_complete(self, context, event: dict) -> dict:
        from recsys import pipeline

        job_name = event["job_name"]  # every event of the trigger names its job
        self.log.info("training job %s ended: %s", job_name, event.get("status"))
        return pipeline.finish_training(self.run, self.dataset, job_name, event)


class UpdateEndpointOperator(BaseOperator):
    """``update_endpoint``: hand the endpoint the challenger; a SageMaker endpoint's blue/green
    update (minutes) is waited for by the amazon provider's trigger while the task is
    deferred, then checked, smoke-tested (the previous model goes back if it fails) and
    recorded. The local endpoint takes a model up within the task. Returns the ``Deployment``."""

    template_fields = ("run", "dataset", "trained")
    ui_color = "#e4f0ff"

    def __init__(self, *, run: Any, dataset: Any, trained: Any, **kwargs):
        super().__init__(**kwargs)
        self.run = run
        self.dataset = dataset
        self.trained = trained

    def execute(self, context) -> dict:
        from recsys import pipeline

        rollout = pipeline.start_update_endpoint(self.run, self.dataset, self.trained)
        if rollout.trigger is None:
            return pipeline.finish_update_endpoint(self.run, self.dataset, rollout.state)
        limit = dt.timedelta(seconds=rollout.trigger.waiter_delay * rollout.trigger.attempts)
        self.log.info("endpoint %s is taking up %s: waiting for it in the triggerer (up to %s)",
                      rollout.state["endpoint"], rollout.state["config"], limit)
        # the rollout's state waits in XCom: the task resumes with the trigger's event alone
        context["ti"].xcom_push(key=ROLLOUT_XCOM, value=rollout.state)
        self.defer(trigger=rollout.trigger, method_name="execute_complete", timeout=limit + TRIGGER_GRACE)

    def execute_complete(self, context, event: dict) -> dict:
        from recsys import pipeline

        state = context["ti"].xcom_pull(task_ids=self.task_id, key=ROLLOUT_XCOM)
        self.log.info("endpoint %s: %s", state["endpoint"], event.get("status"))
        return pipeline.finish_update_endpoint(self.run, self.dataset, state, event)
