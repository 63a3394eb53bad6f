"""MLflow: one run per DAG run, the model registry and its aliases.

Experiment ``recsys-retrain``; every trained model is a version of
``session-recsys`` with alias ``challenger``; ``champion`` moves only after a
successful deploy. The champion's run tells the next night which data window
is the drift reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from recsys.settings import Settings

log = logging.getLogger(__name__)

EXPERIMENT = "recsys-retrain"
REGISTERED_MODEL = "session-recsys"
CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT_TAG = "model_artifact_uri"


class RegistryUnavailable(RuntimeError):
    """The model registry could not be read; the run must not go on as if it had no champion."""


@dataclass(frozen=True)
class Champion:
    version: str
    model_version: str
    artifact_uri: str
    dataset_uri: str
    window_start: str
    window_end: str
    run_id: str

    def trained_after(self, day: str) -> bool:
        """Whether this champion's window ends after ``day`` (ISO date): it has trained, or
        early-stopped, on that day's data."""
        return bool(self.window_end) and self.window_end > day


def client(settings: Settings) -> MlflowClient:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri)


def _experiment_id(settings: Settings, mlflow_client: MlflowClient) -> str:
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if experiment:
        return experiment.experiment_id
    # A local store keeps its artifacts beside it; a server decides for itself.
    location = None
    if settings.mlflow_tracking_uri.startswith(("sqlite:", "file:", "/")):
        location = (settings.home / "mlartifacts").as_uri()
    try:
        return mlflow_client.create_experiment(EXPERIMENT, artifact_location=location)
    except MlflowException:  # created meanwhile by another task
        return mlflow_client.get_experiment_by_name(EXPERIMENT).experiment_id


def run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI (or, with a local store, where to find it)."""
    base = settings.mlflow_ui_url
    if not base and settings.mlflow_tracking_uri.startswith("http"):
        base = settings.mlflow_tracking_uri.rstrip("/")
    if not base:
        return f"run {run_id} in {settings.mlflow_tracking_uri} (open it with `mlflow ui --backend-store-uri ...`)"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def find_run(settings: Settings, airflow_run_id: str):
    """The MLflow run of a DAG run, or None."""
    mlflow_client = client(settings)
    experiment_id = _experiment_id(settings, mlflow_client)
    found = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.`airflow.run_id` = '{airflow_run_id}'", max_results=1
    )
    return found[0] if found else None


class Run:
    """The MLflow run of one DAG run: every task logs through this handle."""

    def __init__(self, settings: Settings, run_id: str, url: str = ""):
        self.settings = settings
        self.run_id = run_id
        self.url = url or run_id
        self._client = client(settings)

    @classmethod
    def start(cls, settings: Settings, *, dag_id: str, airflow_run_id: str, tags: dict[str, str]) -> Run:
        """The MLflow run of this DAG run, created once (a retried task finds it again)."""
        mlflow_client = client(settings)
        experiment_id = _experiment_id(settings, mlflow_client)
        run = find_run(settings, airflow_run_id)
        if run is not None:
            for key, value in tags.items():
                mlflow_client.set_tag(run.info.run_id, key, value)
        else:
            airflow_link = f"{settings.airflow_ui_url}/dags/{dag_id}/runs/{airflow_run_id}"
            run = mlflow_client.create_run(
                experiment_id,
                run_name=airflow_run_id,
                tags={"airflow.dag_id": dag_id, "airflow.run_id": airflow_run_id, "airflow.url": airflow_link, **tags},
            )
        url = run_url(settings, experiment_id, run.info.run_id)
        log.info("MLflow run: %s", url)
        return cls(settings, run.info.run_id, url)

    @property
    def status(self) -> str:
        return self._client.get_run(self.run_id).info.status

    def log_params(self, params: dict) -> None:
        existing = self._client.get_run(self.run_id).data.params
        # MLflow params are immutable; a retry logs only what it has not logged yet.
        for key, value in params.items():
            if key not in existing:
                self._client.log_param(self.run_id, key, str(value))

    def log_metrics(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if value is not None:
                self._client.log_metric(self.run_id, key, float(value))

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, str(value))

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        self._client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status)

    def register_challenger(self, *, artifact_uri: str, tags: dict[str, str]) -> str:
        """Register this run's model (once per model_version) and alias it ``challenger``."""
        return register_challenger(self.settings, run_id=self.run_id, artifact_uri=artifact_uri, tags=tags)


def _registered_model(mlflow_client: MlflowClient) -> None:
    try:
        mlflow_client.get_registered_model(REGISTERED_MODEL)
    except (MlflowException, RestException):
        try:
            mlflow_client.create_registered_model(
                REGISTERED_MODEL, description="Next-item recommender over shopping sessions (recsys_retrain)."
            )
        except MlflowException:  # created meanwhile
            pass


def _registry_source(settings: Settings, run_id: str, artifact_uri: str) -> str:
    """The version's ``source``. A tracking server accepts a local path only inside the run's
    own artifacts, so with a server a ``file:`` model points at the run's logged training
    outputs; the model's store URI is kept in the ``model_artifact_uri`` tag either way."""
    local_store = settings.mlflow_tracking_uri.startswith(("sqlite:", "file:", "/"))
    if artifact_uri.startswith("file:") and not local_store:
        return f"runs:/{run_id}/training"
    return artifact_uri


def register_challenger(settings: Settings, *, run_id: str, artifact_uri: str, tags: dict[str, str]) -> str:
    """Register the trained model (once per model_version) and alias it ``challenger``."""
    mlflow_client = client(settings)
    _registered_model(mlflow_client)
    model_version = tags["model_version"]
    existing = mlflow_client.search_model_versions(
        f"name = '{REGISTERED_MODEL}' and tags.model_version = '{model_version}'"
    )
    if existing:
        version = existing[0]
    else:
        version = mlflow_client.create_model_version(
            REGISTERED_MODEL, source=_registry_source(settings, run_id, artifact_uri), run_id=run_id,
            tags={**tags, MODEL_ARTIFACT_TAG: artifact_uri},
        )
    mlflow_client.set_registered_model_alias(REGISTERED_MODEL, CHALLENGER, version.version)
    log.info("registered %s version %s as %s", REGISTERED_MODEL, version.version, CHALLENGER)
    return str(version.version)


def _version_by_alias(mlflow_client: MlflowClient, alias: str) -> ModelVersion | None:
    """The version an alias points at; None only when the registry answers that there is
    no such model or alias. Any other failure (the server unreachable or erroring) is
    raised: a registry that cannot be read must never pass for one with no champion."""
    try:
        return mlflow_client.get_model_version_by_alias(REGISTERED_MODEL, alias)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # no registered model yet
            return None
        if exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc) and "not found" in str(exc):
            return None
        raise RegistryUnavailable(f"cannot read the {alias!r} alias of {REGISTERED_MODEL} from "
                                  f"{mlflow_client.tracking_uri}: {exc}") from exc


def current_champion(settings: Settings) -> Champion | None:
    version = _version_by_alias(client(settings), CHAMPION)
    if version is None:
        return None
    tags = version.tags
    return Champion(
        version=str(version.version),
        model_version=tags.get("model_version", ""),
        artifact_uri=version.tags.get(MODEL_ARTIFACT_TAG) or version.source,
        dataset_uri=tags.get("dataset_uri", ""),
        window_start=tags.get("window_start", ""),
        window_end=tags.get("window_end", ""),
        run_id=version.run_id or "",
    )


def promote_champion(settings: Settings, version: str) -> None:
    client(settings).set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version)
    log.info("%s version %s is now %s", REGISTERED_MODEL, version, CHAMPION)
