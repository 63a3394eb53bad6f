from __future__ import annotations

import pytest

from recsys.settings import Settings, SettingsError


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
