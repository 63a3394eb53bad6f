"""One settings object for the whole pipeline, read from ``RECSYS_*`` variables.

Every box (warehouse, object store, training, endpoint) has one switch that
defaults to its local implementation, so the same DAG runs on a laptop and in
production; only these settings differ. `.env` documents each of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

WAREHOUSES = ("duckdb", "snowflake")
TRAINING_BACKENDS = ("local", "sagemaker")
ENDPOINT_BACKENDS = ("local", "sagemaker")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse: str
    duckdb_path: Path
    snowflake_conn_id: str
    raw_schema: str
    analytics_schema: str
    store_url: str
    landing_url: str
    aws_conn_id: str
    training_backend: str
    endpoint_backend: str
    endpoint_url: str
    endpoint_dir: Path
    train_command: str
    dbt_executable: str
    dbt_project_dir: Path
    mlflow_tracking_uri: str
    mlflow_ui_url: str
    airflow_ui_url: str
    sim_generate_missing: bool
    sim_preset: str
    sim_scenario: str
    sim_seed: int
    window_days: int
    top_k: int
    gate_max_regression: float
    gate_max_drift: float
    gate_max_new_sku_share: float
    hyperparameters: dict[str, str] = field(default_factory=dict)
    sagemaker: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            value = env.get(name, "")
            return value.strip() if value.strip() else default

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = get(name, default).lower()
            if value not in allowed:
                raise SettingsError(f"{name}={value!r} is not one of {', '.join(allowed)}")
            return value

        def number(name: str, default: str, kind: type, low: float, high: float):
            raw = get(name, default)
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}") from None
            if not low <= value <= high:
                raise SettingsError(f"{name}={value} is outside [{low}, {high}]")
            return value

        def flag(name: str, default: str) -> bool:
            raw = get(name, default).lower()
            if raw not in ("1", "0", "true", "false", "yes", "no"):
                raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")
            return raw in ("1", "true", "yes")

        home = Path(get("RECSYS_HOME", str(REPO_ROOT / ".recsys"))).expanduser().resolve()
        venv_bin = lambda name: str(REPO_ROOT / name / "bin")  # noqa: E731
        hyperparameters = {
            key[len("RECSYS_HP_"):].lower(): value
            for key, value in env.items()
            if key.startswith("RECSYS_HP_") and value.strip()
        }
        sagemaker = {
            "role_arn": get("RECSYS_SAGEMAKER_ROLE_ARN", ""),
            "image_uri": get("RECSYS_SAGEMAKER_IMAGE_URI", ""),
            "training_instance_type": get("RECSYS_SAGEMAKER_TRAINING_INSTANCE_TYPE", "ml.g5.xlarge"),
            "max_runtime_s": get("RECSYS_SAGEMAKER_MAX_RUNTIME_S", "14400"),
            "endpoint_name": get("RECSYS_SAGEMAKER_ENDPOINT_NAME", "session-recsys"),
            "serving_instance_type": get("RECSYS_SAGEMAKER_SERVING_INSTANCE_TYPE", "ml.m5.large"),
        }
        settings = cls(
            home=home,
            warehouse=choice("RECSYS_WAREHOUSE", "duckdb", WAREHOUSES),
            duckdb_path=Path(get("RECSYS_DUCKDB_PATH", str(home / "warehouse.duckdb"))),
            snowflake_conn_id=get("RECSYS_SNOWFLAKE_CONN_ID", "snowflake_default"),
            raw_schema=get("RECSYS_RAW_SCHEMA", "raw"),
            analytics_schema=get("RECSYS_ANALYTICS_SCHEMA", "analytics"),
            store_url=get("RECSYS_STORE_URL", (home / "store").as_uri()).rstrip("/"),
            landing_url=get("RECSYS_LANDING_URL", (home / "landing").as_uri()).rstrip("/"),
            aws_conn_id=get("RECSYS_AWS_CONN_ID", "aws_default"),
            training_backend=choice("RECSYS_TRAINING_BACKEND", "local", TRAINING_BACKENDS),
            endpoint_backend=choice("RECSYS_ENDPOINT_BACKEND", "local", ENDPOINT_BACKENDS),
            endpoint_url=get("RECSYS_ENDPOINT_URL", "http://127.0.0.1:8081").rstrip("/"),
            endpoint_dir=Path(get("RECSYS_ENDPOINT_DIR", str(home / "endpoint"))),
            train_command=get("RECSYS_TRAIN_COMMAND", venv_bin(".venv-train") + "/train"),
            dbt_executable=get("RECSYS_DBT_EXECUTABLE", venv_bin(".venv-dbt") + "/dbt"),
            dbt_project_dir=Path(get("RECSYS_DBT_PROJECT_DIR", str(REPO_ROOT / "dbt"))).resolve(),
            mlflow_tracking_uri=get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
            mlflow_ui_url=get("RECSYS_MLFLOW_UI_URL", "").rstrip("/"),
            airflow_ui_url=get("RECSYS_AIRFLOW_UI_URL", "http://localhost:8080").rstrip("/"),
            sim_generate_missing=flag("RECSYS_SIM_GENERATE_MISSING", "true"),
            sim_preset=get("RECSYS_SIM_PRESET", "demo"),
            sim_scenario=get("RECSYS_SIM_SCENARIO", "steady"),
            sim_seed=number("RECSYS_SIM_SEED", "7", int, 0, 2**31 - 1),
            window_days=number("RECSYS_WINDOW_DAYS", "14", int, 3, 120),
            top_k=number("RECSYS_TOP_K", "20", int, 1, 100),
            gate_max_regression=number("RECSYS_GATE_MAX_REGRESSION", "0.05", float, 0.0, 1.0),
            gate_max_drift=number("RECSYS_GATE_MAX_DRIFT", "0.2", float, 0.0, 1.0),
            gate_max_new_sku_share=number("RECSYS_GATE_MAX_NEW_SKU_SHARE", "0.3", float, 0.0, 1.0),
            hyperparameters=hyperparameters,
            sagemaker=sagemaker,
        )
        settings._check_simulator()
        return settings

    def _check_simulator(self) -> None:
        from recsys.dev.simulator import PRESETS, SCENARIOS

        if self.sim_preset not in PRESETS:
            raise SettingsError(f"RECSYS_SIM_PRESET={self.sim_preset!r} is not one of {', '.join(PRESETS)}")
        if self.sim_scenario not in SCENARIOS:
            raise SettingsError(f"RECSYS_SIM_SCENARIO={self.sim_scenario!r} is not one of {', '.join(SCENARIOS)}")
