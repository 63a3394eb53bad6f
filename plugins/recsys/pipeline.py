"""The bodies of the nightly run's tasks, one function per task, named as the task.

The DAG file wires these together. The run travels between them as a
``RunContext`` (through XCom, as a dict); each body reads its settings from the
environment, asks the run's ``RunLayout`` where things live, and logs to the
run's MLflow run.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass

from recsys import endpoint, export, tracking, training
from recsys.gates import GateFailed, GateResult
from recsys.gates import data_gate as data_checks
from recsys.gates import model_gate as model_checks
from recsys.ingest import ingest_window
from recsys.run import RunContext
from recsys.settings import Settings
from recsys.storage import path_from_uri, read_parquet, upload
from recsys.training.job import hyperparameters, job_name

log = logging.getLogger(__name__)

SMOKE_SESSIONS = 5


@dataclass(frozen=True)
class Trained:
    """A trained, registered challenger, as the tasks after ``train_model`` see it."""

    job_name: str
    registry_version: str
    model_artifact_uri: str
    predictions_uri: str
    evaluation: dict

    @property
    def model_version(self) -> str:
        return self.job_name

    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, payload: dict) -> Trained:
        return cls(**payload)


def wait_for_earlier_nights(ti) -> bool:
    """Whether every earlier night of this DAG has finished. A backfill runs its nights
    side by side (its own max_active_runs, not the DAG's), but the warehouse's dbt models,
    the DuckDB file and the endpoint take one night at a time: each night waits for the
    ones before it, so a backfill of any concurrency runs its nights in date order."""
    for state in ("running", "queued"):
        earlier = ti.get_previous_dagrun(state=state)
        if earlier is not None:
            log.info("waiting: the earlier night %s is still %s", earlier.run_id, state)
            return False
    return True


def plan_window(*, dag_id: str, run_id: str, run_date: dt.datetime, window_days: int,
                force_deploy: bool, force_reason: str, hyperparameters: dict | None = None) -> dict:
    """The run's data window ends the day before the run's date (its logical date, or
    for a manual run with none, when it was triggered). ``hyperparameters`` (a trigger's)
    override the settings' for this run; the training image checks them."""
    settings = Settings.from_env()
    if force_deploy and not force_reason.strip():
        raise ValueError("force_deploy needs a force_reason: it is recorded in MLflow for the audit trail")
    overrides = _hyperparameter_overrides(hyperparameters)
    end = run_date.date() - dt.timedelta(days=1)
    start = end - dt.timedelta(days=window_days - 1)
    tags = {"window_start": start.isoformat(), "window_end": end.isoformat(), "scenario": settings.sim_scenario}
    if force_deploy:
        tags |= {"force_deploy": "true", "force_reason": force_reason}
        log.warning("force_deploy is set (%s): failed gates will not block this deploy", force_reason)
    if overrides:
        tags |= {"hyperparameter_overrides": ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))}
        log.info("this run's hyperparameters: %s", overrides)
    mlflow_run = tracking.Run.start(settings, dag_id=dag_id, airflow_run_id=run_id, tags=tags)
    mlflow_run.log_params({"window_days": window_days, "window_start": start, "window_end": end,
                           "warehouse": settings.warehouse, "training_backend": settings.training_backend})
    context = RunContext(dag_id=dag_id, run_id=run_id, window_start=start, window_end=end,
                         mlflow_run_id=mlflow_run.run_id, mlflow_url=mlflow_run.url, force_deploy=force_deploy,
                         hyperparameters=overrides)
    log.info("window %s..%s (%d days), run key %s", start, end, window_days, context.key)
    return context.to_xcom()


def ingest_raw_events(run: dict) -> dict:
    settings, context, mlflow_run = _open(run)
    loaded = ingest_window(settings, context.window_start, context.window_end)
    mlflow_run.log_metrics({"raw_rows": loaded["rows"]})
    return loaded


def export_dataset(run: dict) -> dict:
    settings, context, mlflow_run = _open(run)
    manifest = export.export_dataset(settings, context.window_start, context.window_end, context.layout(settings))
    mlflow_run.log_metrics({f"{split}_sessions": n for split, n in manifest["sessions"].items()})
    mlflow_run.set_tags({"dataset_uri": manifest["uri"]})
    return manifest


def data_gate(run: dict, dataset: dict) -> dict:
    settings, context, mlflow_run = _open(run)
    current = export.load_sessions(settings, dataset["uri"])
    champion = tracking.current_champion(settings)
    reference, reference_end = None, None
    if champion and champion.dataset_uri:
        reference = export.load_sessions(settings, champion.dataset_uri)
        reference_end = dt.date.fromisoformat(champion.window_end)
        log.info("drift reference: champion %s, window %s..%s", champion.model_version,
                 champion.window_start, champion.window_end)
    else:
        log.info("no champion yet: checking data quality only")
    result = data_checks.evaluate(
        current, reference, reference_end,
        max_drift=settings.gate_max_drift, max_new_sku_share=settings.gate_max_new_sku_share,
        volume_ratio=(settings.gate_min_volume_ratio, settings.gate_max_volume_ratio),
        report_dir=context.layout(settings).report_dir,
    )
    return _settle(settings, context, mlflow_run, result)


def start_training(run: dict, dataset: dict) -> training.Started:
    """The first half of the ``train_model`` task (``recsys.operators.TrainModelOperator``):
    start the run's training job, or attach to the one it has. A local job has finished when
    this returns; a SageMaker job comes with the trigger that waits for it."""
    settings, context, _ = _open(run)
    return training.get_backend(settings).start(_training_job(settings, context, dataset))


def finish_training(run: dict, dataset: dict, job_name: str, event: dict | None = None) -> dict:
    """The second half of ``train_model``: collect the finished job (``event``: what the
    trigger that waited for it said), log it to MLflow and register the challenger."""
    settings, context, mlflow_run = _open(run)
    job = _training_job(settings, context, dataset, champion=False)
    backend = training.get_backend(settings)
    if event is not None and event.get("status") == "timeout":
        stopped = backend.stop(job.name)
        raise training.TrainingFailed(f"training job {job_name} did not finish within its wait limit "
                                      f"({event.get('message')}); stopped: {', '.join(stopped) or 'none running'}")
    result = backend.collect(job, job_name)  # raises TrainingFailed with the job's failure reason
    mlflow_run.log_params({f"hp_{k}": v for k, v in job.hyperparameters.items()})
    mlflow_run.log_metrics(_flat_metrics(result.evaluation))
    mlflow_run.log_artifacts(result.output_dir, "training")
    version = mlflow_run.register_challenger(
        artifact_uri=result.model_artifact_uri,
        tags={"model_version": result.job_name, "dataset_uri": dataset["uri"],
              "window_start": context.window_start.isoformat(), "window_end": context.window_end.isoformat()},
    )
    return Trained(job_name=result.job_name, registry_version=version, model_artifact_uri=result.model_artifact_uri,
                   predictions_uri=result.predictions_uri, evaluation=result.evaluation).to_xcom()


def _training_job(settings: Settings, context: RunContext, dataset: dict, *, champion: bool = True
                  ) -> training.TrainingJob:
    comparable = _comparable_champion(settings, context) if champion else None
    name = job_name(context.run_id, context.window_end.isoformat())
    return training.TrainingJob(
        name=name,
        dataset_uri=dataset["uri"],
        layout=context.layout(settings),
        hyperparameters=hyperparameters(name, settings.hyperparameters | context.hyperparameters, settings.top_k),
        champion_artifact_uri=comparable.artifact_uri if comparable else None,
        tags={"recsys:dag_run_id": context.run_id, "recsys:model_version": name},
    )


def model_gate(run: dict, dataset: dict, trained: dict) -> dict:
    settings, context, mlflow_run = _open(run)
    challenger = Trained.from_xcom(trained)
    predictions = read_parquet(path_from_uri(settings, challenger.predictions_uri))
    result = model_checks.evaluate(
        predictions,
        export.load_sessions(settings, dataset["uri"], splits=("train",)),
        export.load_sessions(settings, dataset["uri"], splits=("test",)),
        k=settings.top_k, report_dir=context.layout(settings).report_dir,
    )
    return _settle(settings, context, mlflow_run, result)


def newer_than_champion(run: dict) -> bool:
    """Whether this run may replace the champion: only a run whose window ends no earlier than
    the champion's (a backfill of older days trains, gates and registers its model, but never
    rolls serving back to older data). ``force_deploy`` overrides this too. A run that stops
    here closes its MLflow run, saying why it was not deployed."""
    settings, context, mlflow_run = _open(run)
    champion = tracking.current_champion(settings)
    end = context.window_end.isoformat()
    if champion is None or not champion.trained_after(end):
        return True
    reason = (f"the champion {champion.model_version} was trained on data up to {champion.window_end}, "
              f"newer than this run's window (ending {end})")
    if context.force_deploy:
        log.warning("%s -- deploying anyway: force_deploy", reason)
        return True
    log.info("not deploying: %s. The model stays registered as a challenger; the champion keeps serving. "
             "MLflow run %s", reason, context.mlflow_url)
    mlflow_run.set_tags({"deploy_skipped": reason})
    mlflow_run.end()
    return False


def start_update_endpoint(run: dict, dataset: dict, trained: dict) -> endpoint.Rollout:
    """The first half of the ``update_endpoint`` task (``recsys.operators.UpdateEndpointOperator``):
    hand the endpoint the challenger. The local endpoint is done when this returns; a SageMaker
    endpoint comes with the trigger that waits until it is InService again."""
    settings, context, _ = _open(run)
    challenger = Trained.from_xcom(trained)
    return endpoint.get_backend(settings).start_deploy(
        challenger.model_artifact_uri, challenger.model_version, _smoke_sessions(settings, dataset), settings.top_k,
        tags={"recsys:dag_run_id": context.run_id, "recsys:model_version": challenger.model_version},
    )


def finish_update_endpoint(run: dict, dataset: dict, state: dict, event: dict | None = None) -> dict:
    """The second half: check the endpoint took the model up, smoke-test it (putting the
    previous model back if it fails), and record the deployment on the MLflow run."""
    settings, context, mlflow_run = _open(run)
    deployed = endpoint.get_backend(settings).finish_deploy(state, _smoke_sessions(settings, dataset),
                                                            settings.top_k, event)
    mlflow_run.set_tags({"endpoint": deployed.endpoint, "deployed_model_version": deployed.model_version})
    return deployed.to_xcom()


def _smoke_sessions(settings: Settings, dataset: dict) -> list[list[str]]:
    """A few holdout sessions (without their last item) and one of an unknown SKU."""
    test = export.load_sessions(settings, dataset["uri"], splits=("test",))
    return [list(items[:-1]) for items in test["items"].head(SMOKE_SESSIONS)] + [["unknown-sku"]]


def promote_champion(run: dict, trained: dict) -> dict:
    settings, context, mlflow_run = _open(run)
    challenger = Trained.from_xcom(trained)
    tracking.promote_champion(settings, challenger.registry_version)
    mlflow_run.end()
    log.info("champion is now %s (registry version %s); MLflow run %s", challenger.model_version,
             challenger.registry_version, context.mlflow_url)
    return {"champion": challenger.registry_version, "model_version": challenger.model_version}


def close_failed_run(airflow_run_id: str, task_id: str | None = None, reason: str | None = None) -> None:
    """On a failed DAG run, its MLflow run fails too, so none stays RUNNING; the task that
    failed and why (e.g. the training container's failure reason) go on it as tags."""
    settings = Settings.from_env()
    found = tracking.find_run(settings, airflow_run_id)
    if found is not None and found.info.status == "RUNNING":
        run = tracking.Run(settings, found.info.run_id)
        failure = {"failed_task": task_id, "failure_reason": (reason or "")[:5000]}
        run.set_tags({name: value for name, value in failure.items() if value})
        run.end("FAILED")
        log.info("MLflow run %s of %s marked FAILED", found.info.run_id, airflow_run_id)


def _hyperparameter_overrides(values: dict | None) -> dict[str, str]:
    """A trigger's hyperparameters as SageMaker passes them (names and values as strings)."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"hyperparameters must be an object of name: value, not {values!r}")
    nested = [name for name, value in values.items() if isinstance(value, (dict, list))]
    if nested:
        raise ValueError(f"hyperparameter(s) {', '.join(map(str, nested))} must be a single value, not a list or object")
    return {str(name): str(value).lower() if isinstance(value, bool) else str(value) for name, value in values.items()}


def _open(run: dict) -> tuple[Settings, RunContext, tracking.Run]:
    settings = Settings.from_env()
    context = RunContext.from_xcom(run)
    return settings, context, tracking.Run(settings, context.mlflow_run_id, context.mlflow_url)


def _settle(settings: Settings, context: RunContext, mlflow_run: tracking.Run, result: GateResult) -> dict:
    """Publish a gate's report (store + MLflow), then pass or stop the run."""
    layout = context.layout(settings)
    for report in result.report_dir.glob(f"{result.gate}_report.*"):
        upload(report, path_from_uri(settings, layout.report(report.name)))
    mlflow_run.log_artifacts(result.report_dir, "reports")
    numbers = {f"{result.gate}_gate_{k}": v for k, v in result.summary.items() if isinstance(v, (int, float))}
    mlflow_run.log_metrics(numbers | {f"{result.gate}_gate_passed": float(result.passed)})
    report = result.report_dir / f"{result.gate}_report.html"
    log.info("%s report: %s (MLflow run %s)", result.gate, report, context.mlflow_url)
    if result.passed:
        log.info(result.message())
    elif context.force_deploy:
        log.warning("%s -- overridden by force_deploy", result.message())
        mlflow_run.set_tags({f"{result.gate}_gate_overridden": "true"})
    else:
        mlflow_run.set_tags({f"{result.gate}_gate_failed": "; ".join(result.failed_checks)})
        mlflow_run.end("FAILED")
        raise GateFailed(result.message())
    return {"passed": result.passed, "failed_checks": result.failed_checks, "report": str(report),
            "summary": result.summary}


def _comparable_champion(settings: Settings, context: RunContext) -> tracking.Champion | None:
    """The champion, if comparing with it on this run's holdout day is fair: a champion whose
    window ends after that day has trained or early-stopped on it (a backfill of older days)."""
    champion = tracking.current_champion(settings)
    holdout = context.holdout_day.isoformat()
    if champion is not None and champion.trained_after(holdout):
        log.info("champion %s saw this run's holdout day %s (its window ends %s): the challenger is "
                 "compared against the baselines only", champion.model_version, holdout,
                 champion.window_end)
        return None
    return champion


def _flat_metrics(evaluation: dict) -> dict[str, float]:
    metrics = dict(evaluation.get("challenger") or {})
    for name in ("popularity_baseline", "champion"):
        for key, value in (evaluation.get(name) or {}).items():
            if isinstance(value, (int, float)):
                metrics[f"{name}_{key}"] = value
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
