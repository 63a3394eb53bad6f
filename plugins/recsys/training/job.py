"""What a training job is given and what it gives back, whatever runs it."""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

CHANNELS = ("train", "validation", "test")


class TrainingFailed(RuntimeError):
    """The training job failed; the message carries the container's failure reason."""


@dataclass(frozen=True)
class TrainingJob:
    name: str
    dataset_uri: str
    output_uri: str
    hyperparameters: dict[str, str]
    champion_artifact_uri: str | None = None


@dataclass
class TrainingResult:
    job_name: str
    model_artifact_uri: str
    output_dir: Path
    evaluation: dict = field(default_factory=dict)


def job_name(run_id: str, window_end: str) -> str:
    """Unique per DAG run and valid for SageMaker (63 chars of [A-Za-z0-9-])."""
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    return f"recsys-{window_end.replace('-', '')}-{digest}"


def hyperparameters(job: str, overrides: dict[str, str], top_k: int) -> dict[str, str]:
    # SageMaker passes every hyperparameter as a string; so does the local run.
    values = {"model_version": job, "top_k": str(top_k)}
    values.update({k: str(v) for k, v in overrides.items()})
    return values


def read_output(output_dir: Path) -> dict:
    return json.loads((output_dir / "evaluation.json").read_text())


def make_tarball(source_dir: Path, target: Path) -> Path:
    """SageMaker's model.tar.gz: the model dir's contents at the archive root."""
    with tarfile.open(target, "w:gz") as tar:
        for item in sorted(source_dir.iterdir()):
            tar.add(item, arcname=item.name)
    return target


def extract_tarball(archive: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target
