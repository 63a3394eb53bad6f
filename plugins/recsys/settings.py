"""One settings object for the whole pipeline, read from ``RECSYS_*`` variables.

Every box (warehouse, object store, training, endpoint) has one switch that
defaults to its local implementation, so the same DAG runs on a laptop and in
production; only these settings differ. `.env` documents each of them.

The DAG file builds this object at parse time: importing this module and calling
``Settings.from_env()`` stays free of pandas, numpy and the development tools.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFIX = "RECSYS_"
HYPERPARAMETER_PREFIX = "RECSYS_HP_"

Warehouse = Literal["duckdb", "snowflake"]
Backend = Literal["local", "sagemaker"]
# The simulated feed's presets and scenarios (recsys.dev.simulator implements them;
# its tests check that these names are the ones it knows).
SimPreset = Literal["tiny", "demo", "coveo"]
SimScenario = Literal["steady", "popularity_shift", "catalog_churn", "broken_feed"]

WAREHOUSES: tuple[str, ...] = get_args(Warehouse)
TRAINING_BACKENDS: tuple[str, ...] = get_args(Backend)
ENDPOINT_BACKENDS: tuple[str, ...] = get_args(Backend)
SIM_PRESETS: tuple[str, ...] = get_args(SimPreset)
SIM_SCENARIOS: tuple[str, ...] = get_args(SimScenario)

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _flag(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in _TRUE + _FALSE:
        raise PydanticCustomError("recsys_flag", "is not a boolean (true/false)", {"text": text})
    return text in _TRUE


def _no_trailing_slash(value: str) -> str:
    return value.rstrip("/")


def _absolute(path: Path) -> Path:
    return path.expanduser().resolve()


Choice = BeforeValidator(_lower)
Flag = Annotated[bool, BeforeValidator(_flag)]
Url = Annotated[str, AfterValidator(_no_trailing_slash)]


def _under_home(*parts: str):
    return lambda data: data["home"].joinpath(*parts)


def _venv_bin(venv: str, name: str) -> str:
    return str(REPO_ROOT / venv / "bin" / name)


class Settings(BaseSettings):
    """``RECSYS_<FIELD>`` sets each field (``MLFLOW_TRACKING_URI`` keeps its own name); a blank
    variable counts as unset. ``RECSYS_HP_<NAME>`` variables become ``hyperparameters``."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore", str_strip_whitespace=True)

    home: Annotated[Path, AfterValidator(_absolute)] = REPO_ROOT / ".recsys"
    warehouse: Annotated[Warehouse, Choice] = "duckdb"
    duckdb_path: Path = Field(default_factory=_under_home("warehouse.duckdb"))
    snowflake_conn_id: str = "snowflake_default"
    # an external stage whose URL is store_url: the export unloads there with COPY INTO (blank: the worker writes)
    snowflake_store_stage: str = ""
    # an external stage whose URL is landing_url: ingest loads the days with COPY INTO from it
    # (blank: the worker reads the files and loads them with write_pandas)
    snowflake_landing_stage: str = ""
    raw_schema: str = "raw"
    analytics_schema: str = "analytics"
    store_url: Url = Field(default_factory=lambda data: (data["home"] / "store").as_uri())
    landing_url: Url = Field(default_factory=lambda data: (data["home"] / "landing").as_uri())
    aws_conn_id: str = "aws_default"
    training_backend: Annotated[Backend, Choice] = "local"
    endpoint_backend: Annotated[Backend, Choice] = "local"
    endpoint_url: Url = "http://127.0.0.1:8081"
    endpoint_dir: Path = Field(default_factory=_under_home("endpoint"))
    train_command: str = _venv_bin(".venv-train", "train")
    dbt_executable: str = _venv_bin(".venv-dbt", "dbt")
    dbt_project_dir: Annotated[Path, AfterValidator(Path.resolve)] = REPO_ROOT / "dbt"
    mlflow_tracking_uri: str = Field(default_factory=lambda data: f"sqlite:///{data['home'] / 'mlflow.db'}",
                                     validation_alias="MLFLOW_TRACKING_URI")
    mlflow_ui_url: Url = ""
    airflow_ui_url: Url = "http://localhost:8080"
    # a real feed is the default: a missing landing day is an error, never silently invented
    sim_generate_missing: Flag = False
    sim_preset: SimPreset = "demo"
    sim_scenario: SimScenario = "steady"
    sim_seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 7
    window_days: Annotated[int, Field(ge=3, le=120)] = 14
    top_k: Annotated[int, Field(ge=1, le=100)] = 20
    gate_max_drift: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    gate_max_new_sku_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    # interactions per new day against the champion's window, as a ratio: outside it, no normal day
    gate_min_volume_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    gate_max_volume_ratio: Annotated[float, Field(ge=1.0, le=100.0)] = 2.0
    sagemaker_role_arn: str = ""
    sagemaker_image_uri: str = ""
    sagemaker_training_instance_type: str = "ml.g5.xlarge"
    sagemaker_max_runtime_s: str = "14400"
    sagemaker_endpoint_name: str = "session-recsys"
    sagemaker_serving_instance_type: str = "ml.m5.large"
    sagemaker_serving_image_uri: str = ""  # blank: RECSYS_SAGEMAKER_IMAGE_URI
    sagemaker_volume_gb: Annotated[int, Field(ge=1, le=16384)] = 30
    sagemaker_spot: Flag = False
    sagemaker_max_wait_s: Annotated[int, Field(ge=0, le=2419200)] = 0  # 0: twice RECSYS_SAGEMAKER_MAX_RUNTIME_S
    sagemaker_rollback_alarms: str = ""  # CloudWatch alarm names, comma-separated
    sagemaker_keep_versions: Annotated[int, Field(ge=1, le=100)] = 3
    hyperparameters: dict[str, str] = Field(default_factory=dict)

    @property
    def sagemaker(self) -> dict[str, str]:
        """The SageMaker backends' settings (``RECSYS_SAGEMAKER_*``), keyed without the prefix."""
        return {name: getattr(self, f"sagemaker_{name}") for name in (
            "role_arn", "image_uri", "training_instance_type", "max_runtime_s", "endpoint_name",
            "serving_instance_type")}

    @property
    def sagemaker_serving_image(self) -> str:
        """The image the endpoint's model runs: the serving image, else the training image."""
        return self.sagemaker_serving_image_uri or self.sagemaker_image_uri

    @property
    def sagemaker_rollback_alarm_names(self) -> list[str]:
        """``RECSYS_SAGEMAKER_ROLLBACK_ALARMS`` as a list (blank items dropped)."""
        return [name.strip() for name in self.sagemaker_rollback_alarms.split(",") if name.strip()]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of `env` (default: the process environment), or a SettingsError naming
        the variable that is wrong."""
        token = _ENVIRON.set(os.environ if env is None else env)
        try:
            return cls()
        except ValidationError as exc:
            # a default derived from RECSYS_HOME is not computed once any field is wrong: name only the wrong ones
            wrong = [error for error in exc.errors() if error["type"] != "default_factory_not_called"]
            raise SettingsError("; ".join(_explain(error) for error in wrong)) from None
        finally:
            _ENVIRON.reset(token)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, _Environment(settings_cls, _ENVIRON.get())


_ENVIRON: ContextVar[Mapping[str, str]] = ContextVar("recsys_settings_environ", default=os.environ)


class _Environment(EnvSettingsSource):
    """The variables of one mapping: upper-case names only (as `os.environ` spells them),
    blank values unset, and the ``RECSYS_HP_*`` family gathered into ``hyperparameters``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self.environ = environ
        super().__init__(settings_cls, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str]:
        return {name.lower(): value.strip() for name, value in self.environ.items()
                if name == name.upper() and value.strip() and not name.startswith(HYPERPARAMETER_PREFIX)
                and name != f"{PREFIX}HYPERPARAMETERS"}

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        values["hyperparameters"] = {
            name[len(HYPERPARAMETER_PREFIX):].lower(): value for name, value in self.environ.items()
            if name.startswith(HYPERPARAMETER_PREFIX) and value.strip()
        }
        return values


def _variable(field_name: str) -> str:
    alias = Settings.model_fields[field_name].validation_alias
    return alias if isinstance(alias, str) else f"{PREFIX}{field_name.upper()}"


def _explain(error: dict) -> str:
    """One validation error as today's message: the variable, its value, what is wrong."""
    field_name = str(error["loc"][0]) if error["loc"] else ""
    if field_name not in Settings.model_fields:
        return error["msg"]
    field, name, raw, kind = Settings.model_fields[field_name], _variable(field_name), error["input"], error["type"]
    if kind == "literal_error":
        return f"{name}={raw!r} is not one of {', '.join(get_args(field.annotation))}"
    if kind in ("int_parsing", "int_from_float", "float_parsing"):
        return f"{name}={raw!r} is not a {field.annotation.__name__}"
    if kind in ("greater_than_equal", "less_than_equal"):
        low = next(m.ge for m in field.metadata if hasattr(m, "ge"))
        high = next(m.le for m in field.metadata if hasattr(m, "le"))
        return f"{name}={field.annotation(raw)} is outside [{low}, {high}]"
    if kind == "recsys_flag":
        return f"{name}={error['ctx']['text']!r} {error['msg']}"
    return f"{name}={raw!r}: {error['msg']}"
