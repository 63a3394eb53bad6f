"""The run: who it is (``RunContext``) and where each of its artifacts lives (``RunLayout``).

One nightly run travels between tasks as a ``RunContext`` (through XCom, as a plain
dict). Every path a run writes is named here once; the boxes (export, training,
gates, endpoint) ask the layout instead of formatting store paths themselves:

    <store>/runs/<key>/dataset/{train,validation,test}/sessions.parquet
    <store>/runs/<key>/dataset/manifest.json
    <store>/runs/<key>/training/<job>/output/model.tar.gz         the model artifact
    <store>/runs/<key>/training/<job>/output/output.tar.gz        SageMaker's packed outputs
    <store>/runs/<key>/training/<job>/output/data/<file>          the outputs, unpacked (predictions)
    <store>/runs/<key>/reports/<gate>_report.{html,json}
    $RECSYS_HOME/reports/<key>/                                   reports as the gates write them
    $RECSYS_HOME/training/<job>/                                  the local job's /opt/ml
    $RECSYS_ENDPOINT_DIR/models/<model_version>/                  models the local endpoint can serve
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from recsys.settings import Settings

# The dataset's splits, in time order: the window's last day is the holdout (test),
# the day before it validation, the rest train. They are also the training job's channels.
SPLITS = ("train", "validation", "test")
PREDICTIONS_FILE = "test_predictions.parquet"
EVALUATION_FILE = "evaluation.json"


def run_key(run_id: str) -> str:
    """An Airflow run id made safe for object keys and job names (``:`` and ``+`` are not)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-")


@dataclass(frozen=True)
class RunContext:
    """One DAG run, as every task after ``plan_window`` sees it."""

    dag_id: str
    run_id: str
    window_start: dt.date
    window_end: dt.date
    mlflow_run_id: str
    mlflow_url: str
    force_deploy: bool = False
    # this run's hyperparameters, over the settings' RECSYS_HP_* (a trigger's `hyperparameters`)
    hyperparameters: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        return run_key(self.run_id)

    @property
    def window_days(self) -> int:
        return (self.window_end - self.window_start).days + 1

    @property
    def holdout_day(self) -> dt.date:
        return self.window_end

    def layout(self, settings: Settings) -> RunLayout:
        return RunLayout.of(settings, self.key)

    def to_xcom(self) -> dict:
        """A JSON-able dict (dates as ISO strings): dbt's vars read ``window_start`` and
        ``window_end`` from it in templates."""
        payload = dataclasses.asdict(self)
        payload["window_start"] = self.window_start.isoformat()
        payload["window_end"] = self.window_end.isoformat()
        return payload

    @classmethod
    def from_xcom(cls, payload: dict) -> RunContext:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - set(payload) - {"force_deploy", "hyperparameters"}
        if missing:
            raise ValueError(f"run context from XCom lacks {', '.join(sorted(missing))}: {payload!r}")
        values = {name: payload[name] for name in names if name in payload}
        values["window_start"] = dt.date.fromisoformat(str(payload["window_start"]))
        values["window_end"] = dt.date.fromisoformat(str(payload["window_end"]))
        values["force_deploy"] = bool(payload.get("force_deploy", False))
        values["hyperparameters"] = {str(k): str(v) for k, v in (payload.get("hyperparameters") or {}).items()}
        return cls(**values)


@dataclass(frozen=True)
class RunLayout:
    """Where one run's artifacts live: URIs in the object store, folders on the worker."""

    store_url: str
    home: Path
    key: str

    @classmethod
    def of(cls, settings: Settings, key: str) -> RunLayout:
        return cls(settings.store_url.rstrip("/"), settings.home, key)

    @property
    def root(self) -> str:
        return f"{self.store_url}/runs/{self.key}"

    # dataset -----------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return f"{self.root}/dataset"

    @property
    def manifest(self) -> str:
        return f"{self.dataset}/manifest.json"

    @staticmethod
    def split_prefix(dataset_uri: str, split: str) -> str:
        """A split's folder under any run's dataset (the champion's too): a training channel."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: not one of {', '.join(SPLITS)}")
        return f"{dataset_uri}/{split}/"

    @staticmethod
    def split(dataset_uri: str, split: str) -> str:
        """A split's sessions file under any run's dataset."""
        return f"{RunLayout.split_prefix(dataset_uri, split)}sessions.parquet"

    # training ----------------------------------------------------------------
    @property
    def training(self) -> str:
        """The training jobs' output prefix (SageMaker's ``S3OutputPath``)."""
        return f"{self.root}/training"

    def model_artifact(self, job_name: str) -> str:
        return f"{self.training}/{job_name}/output/model.tar.gz"

    def packed_outputs(self, job_name: str) -> str:
        """SageMaker uploads ``/opt/ml/output/data`` only inside this archive."""
        return f"{self.training}/{job_name}/output/output.tar.gz"

    def outputs(self, job_name: str) -> str:
        """The job's output files, unpacked, whichever backend trained."""
        return f"{self.training}/{job_name}/output/data"

    def output(self, job_name: str, name: str) -> str:
        return f"{self.outputs(job_name)}/{name}"

    def checkpoints(self, job_name: str) -> str:
        """Where a job's /opt/ml/checkpoints is kept, shared by every attempt of it."""
        return f"{self.training}/{job_name}/checkpoints"

    def predictions(self, job_name: str) -> str:
        return self.output(job_name, PREDICTIONS_FILE)

    def scratch(self, job_name: str) -> Path:
        """The local training job's ``/opt/ml``."""
        return self.home / "training" / job_name

    # reports -----------------------------------------------------------------
    @property
    def reports(self) -> str:
        return f"{self.root}/reports"

    def report(self, name: str) -> str:
        return f"{self.reports}/{name}"

    @property
    def report_dir(self) -> Path:
        """Where the gates write their reports before they are published."""
        return self.home / "reports" / self.key


def endpoint_models(endpoint_dir: Path) -> Path:
    """The models the local endpoint can serve, one folder per model_version."""
    return endpoint_dir / "models"


def endpoint_current(endpoint_dir: Path) -> Path:
    """The symlink the local endpoint serves."""
    return endpoint_dir / "current"
