from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]


def test_every_box_defaults_to_its_local_implementation(tmp_path):
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path)})
    assert (settings.warehouse, settings.training_backend, settings.endpoint_backend) == ("duckdb", "local", "local")
    assert settings.store_url == (tmp_path / "store").as_uri()
    assert settings.duckdb_path == tmp_path / "warehouse.duckdb"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_hyperparameters_come_from_recsys_hp_variables(tmp_path):
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_HP_EPOCHS": "7", "RECSYS_HP_BATCH_SIZE": "64"})
    assert settings.hyperparameters == {"epochs": "7", "batch_size": "64"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RECSYS_WAREHOUSE", "postgres", "RECSYS_WAREHOUSE='postgres' is not one of duckdb, snowflake"),
        ("RECSYS_WINDOW_DAYS", "two", "RECSYS_WINDOW_DAYS='two' is not a int"),
        ("RECSYS_WINDOW_DAYS", "2", r"RECSYS_WINDOW_DAYS=2 is outside \[3, 120\]"),
        ("RECSYS_SIM_SCENARIO", "chaos", "RECSYS_SIM_SCENARIO='chaos' is not one of"),
        ("RECSYS_SIM_GENERATE_MISSING", "maybe", "not a boolean"),
    ],
)
def test_a_bad_setting_is_named(tmp_path, name, value, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"RECSYS_HOME": str(tmp_path), name: value})


def test_bounds_and_choices_are_named(tmp_path):
    with pytest.raises(SettingsError, match=r"RECSYS_TOP_K=500 is outside \[1, 100\]"):
        Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_TOP_K": "500"})
    with pytest.raises(SettingsError, match=r"RECSYS_GATE_MAX_DRIFT=1.5 is outside \[0.0, 1.0\]"):
        Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_GATE_MAX_DRIFT": "1.5"})
    with pytest.raises(SettingsError, match="RECSYS_SIM_PRESET='huge' is not one of tiny, demo, coveo"):
        Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_SIM_PRESET": "huge"})


def test_blank_values_are_unset_and_switches_ignore_case(tmp_path):
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_TOP_K": " ", "RECSYS_WAREHOUSE": " Snowflake ",
                                  "RECSYS_SIM_GENERATE_MISSING": "No", "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert (settings.top_k, settings.warehouse, settings.sim_generate_missing) == (20, "snowflake", False)
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"


def test_sagemaker_settings_and_frozen(tmp_path):
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_SAGEMAKER_ROLE_ARN": "arn:aws:iam::1:role/r"})
    assert settings.sagemaker["role_arn"] == "arn:aws:iam::1:role/r"
    assert settings.sagemaker["training_instance_type"] == "ml.g5.xlarge"
    with pytest.raises(ValueError):
        settings.top_k = 5


def test_settings_are_read_without_pandas_numpy_or_the_development_tools():
    """The DAG file builds the settings at parse time: that must not load the data stack."""
    code = ("import sys; from recsys.settings import Settings; Settings.from_env(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'numpy') "
            "or m == 'recsys.dev' or m.startswith('recsys.dev.')))")
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"
