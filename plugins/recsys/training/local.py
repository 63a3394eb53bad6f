"""Run the training image's ``train`` entry as a local process.

The job gets SageMaker's /opt/ml layout rooted in a scratch folder
(RECSYS_ML_ROOT), its channels copied from the object store, and its model and
outputs copied back to the store, as SageMaker would.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from recsys.run import RunLayout
from recsys.settings import Settings
from recsys.storage import download, pack, path_from_uri, upload
from recsys.training.job import (
    CHAMPION_CHANNEL,
    CHANNELS,
    Started,
    TrainingFailed,
    TrainingJob,
    TrainingResult,
    read_evaluation,
)

log = logging.getLogger(__name__)

# The training process gets what a Python program and TensorFlow need, and nothing the
# worker holds for Airflow: its configuration (AIRFLOW__*: Fernet key, JWT secret, database
# URL), its connections (AIRFLOW_CONN_*), cloud and warehouse credentials. It reads its
# inputs from RECSYS_ML_ROOT only, as in a SageMaker container.
_KEPT_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ",
    "TMPDIR", "TEMP", "TMP", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR",
})
_KEPT_PREFIXES = ("LC_", "PYTHON", "TF_", "KERAS_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "CUDA_", "NVIDIA_", "XLA_")
# TF_ is TensorFlow's, and Terraform's too: its variables and CLI settings stay out
_DROPPED_PREFIXES = ("TF_VAR_", "TF_CLI_", "TF_TOKEN_", "TF_WORKSPACE", "TF_DATA_DIR", "TF_PLUGIN_", "TF_REGISTRY_")
# refused even under a kept prefix: anything named like a credential
_SECRET_NAME = re.compile(r"SECRET|PASSW|TOKEN|CREDENTIAL|PRIVATE|(^|_)KEY($|_)|_CONN($|_)|(^|_)DSN($|_)")


def training_environment(environ: Mapping[str, str], ml_root: Path) -> dict[str, str]:
    """The environment of the training process: `environ` scrubbed to the allowed names."""
    env = {
        name: value
        for name, value in environ.items()
        if (name in _KEPT_NAMES or name.startswith(_KEPT_PREFIXES))
        and not name.startswith(_DROPPED_PREFIXES) and not _SECRET_NAME.search(name)
    }
    env["RECSYS_ML_ROOT"] = str(ml_root)
    env["PYTHONUNBUFFERED"] = "1"
    return env


CHECKPOINTS = "checkpoints"  # the job's last epoch, kept across retries (SageMaker's /opt/ml/checkpoints)
STOP_GRACE_S = 10


def _first_to_go_out_of_memory() -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
    except OSError:  # not Linux, or not allowed: the limit is a safeguard, not a requirement
        pass


def _stop(proc: subprocess.Popen, name: str) -> None:
    """Terminate the training's whole process group, then kill what is left."""
    if proc.poll() is not None:
        return
    log.warning("stopping training job %s (process group %d)", name, proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


class LocalTraining:
    def __init__(self, settings: Settings):
        self.settings = settings

    def stop(self, job_name: str) -> list[str]:
        """Nothing to stop: the process ends with the task that runs it (see ``_run``)."""
        return []

    def start(self, job: TrainingJob) -> Started:
        """Run the job to its end as a local process: nothing is left to wait for."""
        root = job.layout.scratch(job.name)
        if root.exists():  # a retry starts from a clean layout, but resumes from the last epoch
            for child in root.iterdir():
                if child.name == CHECKPOINTS:
                    continue
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        self._prepare(job, root)
        self._run(job, root)
        return Started(job.name)

    def _prepare(self, job: TrainingJob, root: Path) -> None:
        config = root / "input" / "config"
        config.mkdir(parents=True)
        (root / CHECKPOINTS).mkdir(exist_ok=True)
        (config / "hyperparameters.json").write_text(json.dumps(job.hyperparameters, indent=2))
        data = root / "input" / "data"
        for channel in CHANNELS:
            source = path_from_uri(self.settings, RunLayout.split(job.dataset_uri, channel))
            download(source, data / channel / "sessions.parquet")
        if job.champion_artifact_uri:
            download(path_from_uri(self.settings, job.champion_artifact_uri), data / CHAMPION_CHANNEL / "model.tar.gz")
        (root / "model").mkdir()
        (root / "output").mkdir()

    def _run(self, job: TrainingJob, root: Path) -> None:
        command = shlex.split(self.settings.train_command)
        if not Path(command[0]).exists() and shutil.which(command[0]) is None:
            raise TrainingFailed(
                f"training command {command[0]!r} not found: set RECSYS_TRAIN_COMMAND or run `make venvs`"
            )
        log.info("training job %s: %s (RECSYS_ML_ROOT=%s)", job.name, " ".join(command), root)
        env = training_environment(os.environ, root)
        # Its own process group, so that stopping the task stops all of it; first in line for
        # the kernel's out-of-memory killer, so that running out of memory ends the training,
        # not the scheduler or the worker beside it.
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=_first_to_go_out_of_memory,
        ) as proc:
            try:
                for line in proc.stdout:  # stream the job's progress into the task log
                    log.info("[%s] %s", job.name, line.rstrip())
                proc.wait()
            except BaseException:  # killed, timed out, or the worker shutting down
                _stop(proc, job.name)
                raise
        if proc.returncode != 0:
            failure = root / "output" / "failure"
            reason = failure.read_text().strip() if failure.exists() else "no failure reason written"
            raise TrainingFailed(f"training job {job.name} failed (exit {proc.returncode}): {reason}")

    def collect(self, job: TrainingJob, job_name: str) -> TrainingResult:
        """Pack the model as SageMaker would and copy it and the outputs to the store."""
        root = job.layout.scratch(job_name)
        layout = job.layout
        archive = pack(root / "model", root / "model.tar.gz")
        model_uri = layout.model_artifact(job_name)
        upload(archive, path_from_uri(self.settings, model_uri))
        output_dir = root / "output" / "data"
        for item in output_dir.iterdir():
            upload(item, path_from_uri(self.settings, layout.output(job_name, item.name)))
        log.info("model artifact: %s", model_uri)
        return TrainingResult(job_name, model_uri, layout.predictions(job_name), output_dir, read_evaluation(output_dir))
