"""The bodies of the nightly run's tasks, one function per box.

The DAG file wires these together; each takes and returns plain dicts (XCom),
reads its settings from the environment, and logs to the run's MLflow run.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path


from recsys import endpoint, tracking, training
from recsys.export import export_dataset, load_sessions
from recsys.gates import GateFailed, GateResult, data_gate, model_gate
from recsys.ingest import ingest_window
from recsys.settings import Settings
from recsys.storage import path_from_uri, read_parquet, run_key, store_path, upload
from recsys.training.job import hyperparameters, job_name

log = logging.getLogger(__name__)

SMOKE_SESSIONS = 5


def plan_window(*, dag_id: str, run_id: str, run_date: dt.datetime, window_days: int,
                force_deploy: bool, force_reason: str) -> dict:
    """The run's data window ends the day before the run's date (its logical date, or
    for a manual run with none, when it was triggered)."""
    settings = Settings.from_env()
    if force_deploy and not force_reason.strip():
        raise ValueError("force_deploy needs a force_reason: it is recorded in MLflow for the audit trail")
    end = run_date.date() - dt.timedelta(days=1)
    start = end - dt.timedelta(days=window_days - 1)
    key = run_key(run_id)
    tags = {"window_start": start.isoformat(), "window_end": end.isoformat(), "scenario": settings.sim_scenario}
    if force_deploy:
        tags |= {"force_deploy": "true", "force_reason": force_reason}
        log.warning("force_deploy is set (%s): failed gates will not block this deploy", force_reason)
    mlflow_run = tracking.start_run(settings, dag_id=dag_id, airflow_run_id=run_id, tags=tags)
    tracking.log_params(settings, mlflow_run["run_id"], {"window_days": window_days, "window_start": start,
                                                         "window_end": end, "warehouse": settings.warehouse,
                                                         "training_backend": settings.training_backend})
    log.info("window %s..%s (%d days), run key %s", start, end, window_days, key)
    return {"start": start.isoformat(), "end": end.isoformat(), "run_key": key, "run_id": run_id,
            "mlflow_run_id": mlflow_run["run_id"], "mlflow_url": mlflow_run["url"], "force_deploy": force_deploy}


def ingest(window: dict) -> dict:
    settings = Settings.from_env()
    loaded = ingest_window(settings, _day(window["start"]), _day(window["end"]))
    tracking.log_metrics(settings, window["mlflow_run_id"], {"raw_rows": loaded["rows"]})
    return loaded


def export(window: dict) -> dict:
    settings = Settings.from_env()
    manifest = export_dataset(settings, _day(window["start"]), _day(window["end"]), window["run_key"])
    tracking.log_metrics(settings, window["mlflow_run_id"],
                         {f"{split}_sessions": n for split, n in manifest["sessions"].items()})
    tracking.set_tags(settings, window["mlflow_run_id"], {"dataset_uri": manifest["uri"]})
    return manifest


def check_data(window: dict, dataset: dict) -> dict:
    settings = Settings.from_env()
    current = load_sessions(settings, dataset["uri"])
    champion = tracking.current_champion(settings)
    reference, reference_end = None, None
    if champion and champion.dataset_uri:
        reference = load_sessions(settings, champion.dataset_uri)
        reference_end = _day(champion.window_end)
        log.info("drift reference: champion %s, window %s..%s", champion.model_version,
                 champion.window_start, champion.window_end)
    else:
        log.info("no champion yet: checking data quality only")
    result = data_gate.evaluate(
        current, reference, reference_end,
        max_drift=settings.gate_max_drift, max_new_sku_share=settings.gate_max_new_sku_share,
        report_dir=_report_dir(settings, window),
    )
    return _settle(settings, window, result)


def train(window: dict, dataset: dict) -> dict:
    settings = Settings.from_env()
    champion = _comparable_champion(settings, window)
    name = job_name(window["run_id"], window["end"])
    job = training.TrainingJob(
        name=name,
        dataset_uri=dataset["uri"],
        output_uri=str(store_path(settings, "runs", window["run_key"], "training")),
        hyperparameters=hyperparameters(name, settings.hyperparameters, settings.top_k),
        champion_artifact_uri=champion.artifact_uri if champion else None,
    )
    result = training.get_backend(settings).train(job)
    run_id = window["mlflow_run_id"]
    tracking.log_params(settings, run_id, {f"hp_{k}": v for k, v in job.hyperparameters.items()})
    tracking.log_metrics(settings, run_id, _flat_metrics(result.evaluation))
    tracking.log_artifacts(settings, run_id, result.output_dir, "training")
    version = tracking.register_challenger(
        settings,
        run_id=run_id,
        artifact_uri=result.model_artifact_uri,
        tags={"model_version": result.job_name, "dataset_uri": dataset["uri"],
              "window_start": window["start"], "window_end": window["end"]},
    )
    return {"job_name": result.job_name, "model_version": result.job_name, "registry_version": version,
            "model_artifact_uri": result.model_artifact_uri, "evaluation": result.evaluation,
            "predictions_uri": f"{job.output_uri}/{result.job_name}/output/data/test_predictions.parquet"}


def check_model(window: dict, trained: dict) -> dict:
    settings = Settings.from_env()
    predictions = read_parquet(path_from_uri(settings, trained["predictions_uri"]))
    result = model_gate.evaluate(
        predictions, k=settings.top_k, max_regression=settings.gate_max_regression,
        report_dir=_report_dir(settings, window),
    )
    return _settle(settings, window, result)


def is_newest(window: dict) -> bool:
    """Whether this run may replace the champion: only a run whose window ends no earlier than
    the champion's (a backfill of older days trains, gates and registers its model, but never
    rolls serving back to older data). ``force_deploy`` overrides this too. A run that stops
    here closes its MLflow run, saying why it was not deployed."""
    settings = Settings.from_env()
    champion = tracking.current_champion(settings)
    if champion is None or not champion.trained_after(window["end"]):
        return True
    reason = (f"the champion {champion.model_version} was trained on data up to {champion.window_end}, "
              f"newer than this run's window (ending {window['end']})")
    if window.get("force_deploy"):
        log.warning("%s -- deploying anyway: force_deploy", reason)
        return True
    log.info("not deploying: %s. The model stays registered as a challenger; the champion keeps serving. "
             "MLflow run %s", reason, window["mlflow_url"])
    tracking.set_tags(settings, window["mlflow_run_id"], {"deploy_skipped": reason})
    tracking.end_run(settings, window["mlflow_run_id"])
    return False


def deploy(window: dict, dataset: dict, trained: dict) -> dict:
    settings = Settings.from_env()
    test = load_sessions(settings, dataset["uri"], splits=("test",))
    smoke = [list(items[:-1]) for items in test["items"].head(SMOKE_SESSIONS)] + [["unknown-sku"]]
    deployed = endpoint.get_backend(settings).deploy(
        trained["model_artifact_uri"], trained["model_version"], smoke, settings.top_k
    )
    tracking.set_tags(settings, window["mlflow_run_id"], {"endpoint": deployed["endpoint"],
                                                         "deployed_model_version": trained["model_version"]})
    return deployed


def promote(window: dict, trained: dict) -> dict:
    settings = Settings.from_env()
    tracking.promote_champion(settings, trained["registry_version"])
    tracking.end_run(settings, window["mlflow_run_id"])
    log.info("champion is now %s (registry version %s); MLflow run %s", trained["model_version"],
             trained["registry_version"], window["mlflow_url"])
    return {"champion": trained["registry_version"], "model_version": trained["model_version"]}


def close_failed_run(context: dict) -> None:
    """DAG failure callback: the run's MLflow run fails too, so none stays RUNNING."""
    settings = Settings.from_env()
    run_id = context["dag_run"].run_id
    found = tracking.find_run(settings, run_id)
    if found is not None and found.info.status == "RUNNING":
        tracking.end_run(settings, found.info.run_id, "FAILED")
        log.info("MLflow run %s of %s marked FAILED", found.info.run_id, run_id)


def _settle(settings: Settings, window: dict, result: GateResult) -> dict:
    """Publish a gate's report (store + MLflow), then pass or stop the run."""
    run_id = window["mlflow_run_id"]
    for report in result.report_dir.glob(f"{result.gate}_report.*"):
        upload(report, store_path(settings, "runs", window["run_key"], "reports", report.name))
    tracking.log_artifacts(settings, run_id, result.report_dir, "reports")
    numbers = {f"{result.gate}_gate_{k}": v for k, v in result.summary.items() if isinstance(v, (int, float))}
    tracking.log_metrics(settings, run_id, numbers | {f"{result.gate}_gate_passed": float(result.passed)})
    report = result.report_dir / f"{result.gate}_report.html"
    log.info("%s report: %s (MLflow run %s)", result.gate, report, window["mlflow_url"])
    if result.passed:
        log.info(result.message())
    elif window.get("force_deploy"):
        log.warning("%s -- overridden by force_deploy", result.message())
        tracking.set_tags(settings, run_id, {f"{result.gate}_gate_overridden": "true"})
    else:
        tracking.set_tags(settings, run_id, {f"{result.gate}_gate_failed": "; ".join(result.failed_checks)})
        tracking.end_run(settings, run_id, "FAILED")
        raise GateFailed(result.message())
    return {"passed": result.passed, "failed_checks": result.failed_checks, "report": str(report),
            "summary": result.summary}


def _comparable_champion(settings: Settings, window: dict) -> tracking.Champion | None:
    """The champion, if comparing with it on this run's holdout day is fair: a champion whose
    window ends after that day has trained or early-stopped on it (a backfill of older days)."""
    champion = tracking.current_champion(settings)
    if champion is not None and champion.trained_after(window["end"]):
        log.info("champion %s saw this run's holdout day %s (its window ends %s): the challenger is "
                 "compared against the most-popular baseline only", champion.model_version, window["end"],
                 champion.window_end)
        return None
    return champion


def _report_dir(settings: Settings, window: dict) -> Path:
    return settings.home / "reports" / window["run_key"]


def _flat_metrics(evaluation: dict) -> dict[str, float]:
    metrics = dict(evaluation.get("challenger") or {})
    for name in ("popularity_baseline", "champion"):
        for key, value in (evaluation.get(name) or {}).items():
            if isinstance(value, (int, float)):
                metrics[f"{name}_{key}"] = value
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _day(value: str) -> dt.date:
    return dt.date.fromisoformat(value)
