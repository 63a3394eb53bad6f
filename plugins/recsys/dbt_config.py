"""How Cosmos finds, renders and runs the dbt project.

Rendering reads dbt's manifest (parsing stays well under a second); dbt
itself runs from its own virtualenv as a subprocess. Locally the profile comes
from dbt/profiles.yml (DuckDB). On Snowflake it comes from one place only: the
Airflow connection ``RECSYS_SNOWFLAKE_CONN_ID`` (``snowflake_default``), turned
into a dbt profile by Cosmos' Snowflake profile mappings; the authentication
method (password or key pair) follows from the connection's extras.

``python -m recsys.dbt_config <dbt arguments>`` runs dbt by hand on the project
with the profile the DAG would use, e.g. ``... build --vars '{window_start: ..., window_end: ...}'``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from cosmos import ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior
from cosmos.exceptions import CosmosValueError
from cosmos.profiles import (
    BaseProfileMapping,
    SnowflakeEncryptedPrivateKeyFilePemProfileMapping,
    SnowflakeEncryptedPrivateKeyPemProfileMapping,
    SnowflakePrivateKeyFilePemProfileMapping,
    SnowflakePrivateKeyPemProfileMapping,
    SnowflakeUserPasswordProfileMapping,
)

from recsys.settings import Settings

PROFILE_NAME = "recsys"
# connection extras passed to dbt as they are, beyond what Cosmos maps: `protocol` (with
# the extras `host` and `port`, which Cosmos maps) points dbt at a stand-in server such
# as fakesnow's (protocol http); a real account needs none of them
PASSED_EXTRAS = ("protocol",)


def dbt_env(settings: Settings) -> dict[str, str]:
    """What the project reads from the environment (profiles.yml's DuckDB target)."""
    return {"RECSYS_DUCKDB_PATH": str(settings.duckdb_path)}


def project_config(settings: Settings) -> ProjectConfig:
    config = ProjectConfig(
        dbt_project_path=settings.dbt_project_dir,
        manifest_path=settings.dbt_project_dir / "target" / "manifest.json",
        env_vars=dbt_env(settings),
    )
    # Cosmos wraps any manifest path in an ObjectStoragePath; opening one makes Airflow import
    # every provider's filesystem (the Amazon one pulls in boto3: about 0.5 s of every parse).
    # The manifest is a local file next to the project, so read it as one.
    config.manifest_path = settings.dbt_project_dir / "target" / "manifest.json"
    return config


class SnowflakeConnectionProfileMapping(BaseProfileMapping):
    """The dbt profile of an Airflow Snowflake connection, whatever its authentication.

    The connection's extras choose Cosmos' mapping: ``private_key_content`` gives a key-pair
    profile from the key's PEM text (``SnowflakePrivateKeyPemProfileMapping``),
    ``private_key_file`` one from a key file on the worker
    (``SnowflakePrivateKeyFilePemProfileMapping``); with either, the connection's password
    is the key's passphrase (the ``Encrypted`` variants). Without a key it is user and
    password (``SnowflakeUserPasswordProfileMapping``). The choice waits until a dbt task
    needs the profile, so parsing the DAG never reads the connection. Secrets reach dbt
    as environment variables, never in the profile file.
    """

    airflow_connection_type = "snowflake"
    dbt_profile_type = "snowflake"

    def _extra(self, name: str) -> Any:
        extras = self.conn.extra_dejson
        return extras.get(name) or extras.get(f"extra__snowflake__{name}")

    @cached_property
    def auth_mapping(self) -> BaseProfileMapping:
        """Cosmos' mapping for this connection's authentication method."""
        conn = self.conn
        if conn.conn_type != self.airflow_connection_type:
            raise CosmosValueError(
                f"Airflow connection {self.conn_id!r} is of type {conn.conn_type!r}, not snowflake")
        if self._extra("private_key_content"):
            mapping_class = (SnowflakeEncryptedPrivateKeyPemProfileMapping if conn.password
                             else SnowflakePrivateKeyPemProfileMapping)
        elif self._extra("private_key_file"):
            mapping_class = (SnowflakeEncryptedPrivateKeyFilePemProfileMapping if conn.password
                             else SnowflakePrivateKeyFilePemProfileMapping)
        else:
            mapping_class = SnowflakeUserPasswordProfileMapping
        # the same profile_args object: Cosmos may set its schema after this mapping is built
        mapping = mapping_class(self.conn_id, self.profile_args, dbt_config_vars=self.dbt_config_vars)
        mapping._conn = conn
        profile = mapping.profile
        missing = [name for name in mapping.required_fields
                   if not (mapping.get_dbt_value(name) if name in mapping.secret_fields else profile.get(name))]
        if missing:
            raise CosmosValueError(
                f"Airflow connection {self.conn_id!r} lacks {', '.join(missing)} for a dbt profile "
                f"({mapping_class.__name__})")
        return mapping

    def can_claim_connection(self) -> bool:
        return self.auth_mapping.can_claim_connection()

    @property
    def profile(self) -> dict[str, Any]:
        profile = dict(self.auth_mapping.profile)
        for name in PASSED_EXTRAS:
            if (value := self._extra(name)) is not None and name not in self.profile_args:
                profile[name] = value
        return profile

    @property
    def mock_profile(self) -> dict[str, Any]:
        # for parsing only: no connection needed, so the password mapping's shape will do
        return SnowflakeUserPasswordProfileMapping(self.conn_id, self.profile_args).mock_profile

    @property
    def env_vars(self) -> dict[str, str]:
        return self.auth_mapping.env_vars


def profile_config(settings: Settings) -> ProfileConfig:
    if settings.warehouse == "snowflake":
        return ProfileConfig(
            profile_name=PROFILE_NAME,
            target_name="snowflake",
            profile_mapping=SnowflakeConnectionProfileMapping(
                conn_id=settings.snowflake_conn_id, profile_args={"schema": settings.analytics_schema}
            ),
        )
    return ProfileConfig(
        profile_name=PROFILE_NAME,
        target_name="duckdb",
        profiles_yml_filepath=settings.dbt_project_dir / "profiles.yml",
    )


def render_config() -> RenderConfig:
    return RenderConfig(load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.AFTER_EACH)


def execution_config(settings: Settings) -> ExecutionConfig:
    return ExecutionConfig(dbt_executable_path=settings.dbt_executable, invocation_mode=InvocationMode.SUBPROCESS)


def run_dbt(settings: Settings, args: Sequence[str], **run_kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``dbt <args>`` on the project with the profile, target and environment the DAG's
    dbt tasks get (the profile rendered from the connection on Snowflake)."""
    config = profile_config(settings)
    with config.ensure_profile() as (profile_path, profile_env):
        command = [
            settings.dbt_executable, *args,
            "--project-dir", str(settings.dbt_project_dir),
            "--profiles-dir", str(profile_path.parent),
            "--profile", config.profile_name,
            "--target", config.target_name,
        ]
        env = {**(run_kwargs.pop("env", None) or os.environ), **dbt_env(settings), **profile_env}
        return subprocess.run(command, env=env, check=False, **run_kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    return run_dbt(Settings.from_env(), sys.argv[1:] if argv is None else argv).returncode


if __name__ == "__main__":
    raise SystemExit(main())
