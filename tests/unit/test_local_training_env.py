"""The local training process gets a scrubbed environment: none of the worker's secrets.

The backend runs a fake ``train`` (a script that prints its environment, as a hostile or
careless training job could); nothing of Airflow's configuration, connections or cloud
credentials reaches it, and so none reaches the task log either.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from recsys.settings import Settings
from recsys.training.job import TrainingFailed, TrainingJob
from recsys.training.local import LocalTraining, training_environment

SECRETS = {
    "AIRFLOW__CORE__FERNET_KEY": "fernet-secret-0123456789abcdef=",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-0123456789",
    "AIRFLOW__API__SECRET_KEY": "api-secret-key-0123456789",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:db-password-1@postgres/airflow",
    "AIRFLOW__CELERY__RESULT_BACKEND": "db+postgresql://airflow:db-password-2@postgres/airflow",
    "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": "snowflake://user:snowflake-password@account/db",
    "AIRFLOW_CONN_AWS_DEFAULT": "aws://AKIAFAKE:aws-conn-secret@",
    "AIRFLOW_VAR_API_TOKEN": "airflow-variable-token",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEACCESSKEY",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key-value",
    "AWS_SESSION_TOKEN": "aws-session-token-value",
    "SNOWFLAKE_PASSWORD": "snowflake-env-password",
    "SNOWFLAKE_PRIVATE_KEY": "snowflake-private-key-value",
    "POSTGRES_PASSWORD": "postgres-password-value",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password-value",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-value",
    "AIRFLOW_PASSWORD": "airflow-login-password",
    # credential-looking names under a kept prefix are dropped too
    "TF_API_TOKEN": "tf-prefixed-token",
    "PYTHON_SECRET": "python-prefixed-secret",
    # Terraform shares TensorFlow's TF_ prefix
    "TF_VAR_db_admin": "terraform-variable-value",
    "TF_CLI_CONFIG_FILE": "/home/someone/.terraformrc-with-tokens",
}

KEPT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/airflow",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "PYTHONHASHSEED": "0",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_NUM_INTRAOP_THREADS": "2",
    "OMP_NUM_THREADS": "2",
    "KERAS_HOME": "/tmp/keras",
}

# prints the whole environment, then the job contract's failure file when asked to fail
FAKE_TRAIN = """\
import json, os, sys
from pathlib import Path
print(json.dumps(dict(os.environ)))
Path(os.environ["RECSYS_ML_ROOT"], "env.json").write_text(json.dumps(dict(os.environ)))
if len(sys.argv) > 1 and sys.argv[1] == "fail":
    Path(os.environ["RECSYS_ML_ROOT"], "output", "failure").write_text("the fake job fails on purpose")
    sys.exit(3)
"""


@pytest.fixture
def fake_train(tmp_path) -> Path:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return script


def _run(tmp_path: Path, monkeypatch, fake_train: Path, *args: str) -> tuple[dict[str, str], Path]:
    for name, value in {**SECRETS, **KEPT}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path / "home"),
                                  "RECSYS_TRAIN_COMMAND": " ".join([sys.executable, str(fake_train), *args])})
    root = tmp_path / "ml"
    (root / "output").mkdir(parents=True)
    # _run reads only the job's name (and the settings' command)
    job = TrainingJob(name="recsys-test-job", dataset_uri="file:///nowhere", layout=None, hyperparameters={})
    LocalTraining(settings)._run(job, root)
    return json.loads((root / "env.json").read_text()), root


def _assert_no_secret(env: dict[str, str], text: str) -> None:
    leaked = sorted(name for name in SECRETS if name in env)
    assert not leaked, f"the training process inherited {leaked}"
    for name in env:
        assert not name.startswith(("AIRFLOW", "AWS_", "SNOWFLAKE", "MLFLOW_TRACKING_")), name
    shown = sorted(name for name, value in SECRETS.items() if value in text)
    assert not shown, f"the task log shows the values of {shown}"


def test_training_process_gets_no_secret(tmp_path, monkeypatch, fake_train, caplog):
    caplog.set_level(logging.INFO, logger="recsys.training.local")
    env, root = _run(tmp_path, monkeypatch, fake_train)

    _assert_no_secret(env, caplog.text)
    # the job's own dump went through the log: the log shows the scrubbed environment only
    assert "RECSYS_ML_ROOT" in caplog.text
    for name, value in KEPT.items():
        assert env.get(name) == value, name
    assert env["RECSYS_ML_ROOT"] == str(root)
    assert env["PYTHONUNBUFFERED"] == "1"


def test_failed_training_leaks_no_secret_either(tmp_path, monkeypatch, fake_train, caplog):
    caplog.set_level(logging.INFO, logger="recsys.training.local")
    with pytest.raises(TrainingFailed, match="the fake job fails on purpose") as failure:
        _run(tmp_path, monkeypatch, fake_train, "fail")
    env = json.loads((tmp_path / "ml" / "env.json").read_text())
    _assert_no_secret(env, caplog.text + str(failure.value))


def test_training_environment_is_an_allow_list():
    environ = {**SECRETS, **KEPT, "SOME_NEW_TOOL_SETTING": "x", "RECSYS_STORE_URL": "s3://bucket/prefix"}
    env = training_environment(environ, Path("/tmp/ml"))
    assert env == {**KEPT, "RECSYS_ML_ROOT": "/tmp/ml", "PYTHONUNBUFFERED": "1"}
