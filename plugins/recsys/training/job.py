"""What a training job is given and what it gives back, whatever runs it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recsys.run import EVALUATION_FILE, SPLITS, RunLayout

# The job's input channels: the dataset's splits, and optionally the champion's model.tar.gz.
CHANNELS = SPLITS
CHAMPION_CHANNEL = "champion"


class TrainingFailed(RuntimeError):
    """The training job failed; the message carries the container's failure reason."""


@dataclass(frozen=True)
class TrainingJob:
    name: str
    dataset_uri: str
    layout: RunLayout
    hyperparameters: dict[str, str]
    champion_artifact_uri: str | None = None
    # who made the job (e.g. ``recsys:dag_run_id``): a cloud backend tags what it creates with them
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingResult:
    """What a finished job wrote, as URIs in the store (the layout's), and its evaluation.
    ``output_dir`` is a local copy of the job's outputs on the worker that ran the task."""

    job_name: str
    model_artifact_uri: str
    predictions_uri: str
    output_dir: Path
    evaluation: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Started:
    """A job under way: its name (a retry's may differ from the job's), and the trigger to
    wait for it with in Airflow's triggerer, or None where it has already finished (a
    local process runs to its end inside the task)."""

    job_name: str
    trigger: Any = None


class TrainingBackend(Protocol):
    def start(self, job: TrainingJob) -> Started:
        """Start the job (or attach to this run's job already under way)."""

    def collect(self, job: TrainingJob, job_name: str) -> TrainingResult:
        """The finished job's result; raises TrainingFailed, with the reason, if it failed."""

    def stop(self, job_name: str) -> list[str]:
        """Stop this run's attempts of the job still running; returns their names."""


def job_name(run_id: str, window_end: str) -> str:
    """Unique per DAG run and valid for SageMaker (63 chars of [A-Za-z0-9-])."""
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    return f"recsys-{window_end.replace('-', '')}-{digest}"


def hyperparameters(job: str, overrides: dict[str, str], top_k: int) -> dict[str, str]:
    # SageMaker passes every hyperparameter as a string; so does the local run.
    values = {"model_version": job, "top_k": str(top_k)}
    values.update({k: str(v) for k, v in overrides.items()})
    return values


def read_evaluation(output_dir: Path) -> dict:
    return json.loads((output_dir / EVALUATION_FILE).read_text())
