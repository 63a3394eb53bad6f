"""How Cosmos finds, renders and runs the dbt project.

Rendering reads dbt's manifest (parsing stays well under a second); dbt
itself runs from its own virtualenv as a subprocess. Locally the profile comes
from dbt/profiles.yml (DuckDB); in production from the Airflow connection
``snowflake_default``.
"""

from __future__ import annotations

from cosmos import ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior

from recsys.settings import Settings


def project_config(settings: Settings) -> ProjectConfig:
    config = ProjectConfig(
        dbt_project_path=settings.dbt_project_dir,
        manifest_path=settings.dbt_project_dir / "target" / "manifest.json",
        env_vars={"RECSYS_DUCKDB_PATH": str(settings.duckdb_path)},
    )
    # Cosmos wraps any manifest path in an ObjectStoragePath; opening one makes Airflow import
    # every provider's filesystem (the Amazon one pulls in boto3: about 0.5 s of every parse).
    # The manifest is a local file next to the project, so read it as one.
    config.manifest_path = settings.dbt_project_dir / "target" / "manifest.json"
    return config


def profile_config(settings: Settings) -> ProfileConfig:
    if settings.warehouse == "snowflake":
        from cosmos.profiles import SnowflakeUserPasswordProfileMapping

        return ProfileConfig(
            profile_name="recsys",
            target_name="snowflake",
            profile_mapping=SnowflakeUserPasswordProfileMapping(
                conn_id=settings.snowflake_conn_id, profile_args={"schema": settings.analytics_schema}
            ),
        )
    return ProfileConfig(
        profile_name="recsys",
        target_name="duckdb",
        profiles_yml_filepath=settings.dbt_project_dir / "profiles.yml",
    )


def render_config() -> RenderConfig:
    return RenderConfig(load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.AFTER_EACH)


def execution_config(settings: Settings) -> ExecutionConfig:
    return ExecutionConfig(dbt_executable_path=settings.dbt_executable, invocation_mode=InvocationMode.SUBPROCESS)
