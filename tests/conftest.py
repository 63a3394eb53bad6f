"""Shared test set-up: an isolated RECSYS_HOME and Airflow home per session.

Airflow reads its configuration when first imported, so the environment is set
here, before any test module imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="recsys-tests-"))

os.environ.update(
    {
        "RECSYS_HOME": str(_SESSION_HOME / "recsys"),
        "RECSYS_SIM_PRESET": "tiny",
        "RECSYS_WINDOW_DAYS": "4",
        "RECSYS_SIM_GENERATE_MISSING": "true",  # the tests' feed is the simulator
        "AIRFLOW_HOME": str(_SESSION_HOME / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_SESSION_HOME / 'airflow' / 'airflow.db'}",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    }
)
for name in ("MLFLOW_TRACKING_URI", "RECSYS_SIM_SCENARIO", "RECSYS_STORE_URL", "RECSYS_LANDING_URL"):
    os.environ.pop(name, None)


DERIVED_FROM_HOME = ("RECSYS_DUCKDB_PATH", "RECSYS_STORE_URL", "RECSYS_LANDING_URL", "RECSYS_ENDPOINT_DIR",
                     "MLFLOW_TRACKING_URI")


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata database (SQLite) for tests that run the DAG."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


@pytest.fixture
def recsys_home(tmp_path, monkeypatch) -> Path:
    """A fresh RECSYS_HOME for one test."""
    home = tmp_path / "recsys"
    monkeypatch.setenv("RECSYS_HOME", str(home))
    # paths derived from RECSYS_HOME must follow it, whatever an earlier test left set
    for name in DERIVED_FROM_HOME:
        monkeypatch.delenv(name, raising=False)
    return home
