"""The Snowflake warehouse, through SnowflakeHook, against fakesnow in-process."""

from __future__ import annotations

import datetime as dt
import json

import fakesnow
import pandas as pd
import pytest

from recsys.dev import simulator
from recsys.settings import Settings
from recsys.warehouse import SnowflakeWarehouse

DAYS = [dt.date(2026, 3, 1), dt.date(2026, 3, 2)]


@pytest.fixture
def warehouse(recsys_home, monkeypatch):
    monkeypatch.setenv("RECSYS_WAREHOUSE", "snowflake")
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps({
        "conn_type": "snowflake", "login": "recsys", "password": "not-a-secret", "schema": "RAW",
        "extra": {"account": "test-account", "database": "RECSYS", "warehouse": "COMPUTE_WH"},
    }))
    with fakesnow.patch(create_database_on_connect=True, create_schema_on_connect=True):
        yield SnowflakeWarehouse(Settings.from_env())


def _frame(day: dt.date) -> pd.DataFrame:
    frame = simulator.generate_day(day, preset="tiny").head(50).copy()
    frame["event_date"] = day
    frame["loaded_at"] = pd.Timestamp("2026-03-03")
    return frame


def _counts(warehouse) -> dict[str, int]:
    rows = warehouse.query("select event_date, count(*) as n from raw.browsing_events group by 1 order by 1")
    return {str(pd.Timestamp(d).date()): int(n) for d, n in zip(rows["event_date"], rows["n"])}


def test_replacing_days_is_idempotent(warehouse):
    frame = pd.concat([_frame(day) for day in DAYS], ignore_index=True)
    warehouse.replace_days(frame, DAYS)
    warehouse.replace_days(frame, DAYS)
    assert _counts(warehouse) == {"2026-03-01": 50, "2026-03-02": 50}


def test_replacing_one_day_keeps_the_others(warehouse):
    warehouse.replace_days(pd.concat([_frame(day) for day in DAYS], ignore_index=True), DAYS)
    warehouse.replace_days(_frame(DAYS[1]).head(7), [DAYS[1]])
    assert _counts(warehouse) == {"2026-03-01": 50, "2026-03-02": 7}
