"""The Snowflake warehouse, through SnowflakeHook, against fakesnow in-process."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from unittest import mock

import fakesnow
import pandas as pd
import pytest
import snowflake.connector.pandas_tools
from fakesnow.cursor import FakeSnowflakeCursor

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


# --- Snowflake's transaction rules, where fakesnow does not play them ---------------------
#
# Real Snowflake commits an open transaction before any DDL statement, and the connector's
# write_pandas runs DDL (CREATE TEMPORARY STAGE, CREATE FILE FORMAT) before its COPY INTO.
# fakesnow plays the DDL rule only on connections opened with autocommit off (SnowflakeHook
# leaves it on), and its write_pandas inserts straight into DuckDB without a stage. The
# fixture below puts both rules back by wrapping fakesnow's cursor and write_pandas, and lets
# a test make one statement or the bulk load fail, as a dropped connection would.

_DDL = re.compile(r"^\s*(create|drop|alter|comment|undrop|grant|revoke)\b", re.IGNORECASE)
_BEGIN = re.compile(r"^\s*(begin|start\s+transaction)\b", re.IGNORECASE)
_END = re.compile(r"^\s*(commit|rollback)\b", re.IGNORECASE)


class LoadFailed(RuntimeError):
    pass


@dataclass
class SnowflakeRules:
    statements: list[str] = field(default_factory=list)
    fail_statement: re.Pattern | None = None  # a statement matching this raises
    fail_bulk_load: bool = False  # write_pandas raises after its stage DDL, before COPY INTO


@pytest.fixture
def snowflake_rules(warehouse):
    rules = SnowflakeRules()
    fake_execute = FakeSnowflakeCursor.execute
    fake_write_pandas = snowflake.connector.pandas_tools.write_pandas
    in_transaction: dict[int, bool] = {}

    def execute(cursor, command, *args, **kwargs):
        conn = id(cursor._conn)
        rules.statements.append(command)
        if rules.fail_statement is not None and rules.fail_statement.search(command):
            raise LoadFailed(f"injected failure of: {command}")
        if _BEGIN.match(command):
            in_transaction[conn] = True
        elif _END.match(command):
            in_transaction[conn] = False
        elif _DDL.match(command) and in_transaction.get(conn):
            cursor._duck_conn.commit()  # https://docs.snowflake.com/en/sql-reference/transactions#ddl
            in_transaction[conn] = False
        return fake_execute(cursor, command, *args, **kwargs)

    def write_pandas(conn, df, table_name, *args, **kwargs):
        conn.cursor().execute("create temporary stage if not exists recsys_write_pandas_stage")
        if rules.fail_bulk_load:
            raise LoadFailed(f"injected failure of the bulk load into {table_name}")
        return fake_write_pandas(conn, df, table_name, *args, **kwargs)

    with mock.patch.object(FakeSnowflakeCursor, "execute", execute), \
            mock.patch("snowflake.connector.pandas_tools.write_pandas", write_pandas):
        yield rules


def _loaded_at(warehouse) -> dict[str, str]:
    rows = warehouse.query("select event_date, max(loaded_at) as t from raw.browsing_events group by 1 order by 1")
    return {str(pd.Timestamp(d).date()): str(pd.Timestamp(t)) for d, t in zip(rows["event_date"], rows["t"])}


def _reload(days: list[dt.date], n: int) -> pd.DataFrame:
    frame = pd.concat([_frame(day).head(n) for day in days], ignore_index=True)
    frame["loaded_at"] = pd.Timestamp("2026-03-04")
    return frame


@pytest.mark.parametrize("failure", ["bulk load", "insert from staging", "delete"])
def test_a_load_that_fails_midway_keeps_the_previous_rows_of_its_days(warehouse, snowflake_rules, failure):
    warehouse.replace_days(pd.concat([_frame(day) for day in DAYS], ignore_index=True), DAYS)
    before = _loaded_at(warehouse)
    if failure == "bulk load":
        snowflake_rules.fail_bulk_load = True
    elif failure == "insert from staging":
        snowflake_rules.fail_statement = re.compile(r"^\s*insert into RAW\.BROWSING_EVENTS\b", re.IGNORECASE)
    else:
        snowflake_rules.fail_statement = re.compile(r"^\s*delete from RAW\.BROWSING_EVENTS\b", re.IGNORECASE)

    with pytest.raises(LoadFailed):
        warehouse.replace_days(_reload(DAYS, 20), DAYS)

    assert _counts(warehouse) == {"2026-03-01": 50, "2026-03-02": 50}
    assert _loaded_at(warehouse) == before
    # the re-run (the task's retry) replaces the days once, and leaves no staging table behind
    snowflake_rules.fail_bulk_load, snowflake_rules.fail_statement = False, None
    warehouse.replace_days(_reload(DAYS, 20), DAYS)
    warehouse.replace_days(_reload(DAYS, 20), DAYS)
    assert _counts(warehouse) == {"2026-03-01": 20, "2026-03-02": 20}
    assert set(_loaded_at(warehouse).values()) == {"2026-03-04 00:00:00"}
    tables = warehouse.query("select table_name from information_schema.tables where table_schema = 'RAW'")
    assert list(tables["table_name"].str.upper()) == ["BROWSING_EVENTS"]


def test_days_are_replaced_by_dml_alone_inside_one_transaction(warehouse, snowflake_rules):
    """No DDL (write_pandas' stage included) may run between BEGIN and COMMIT: Snowflake
    would commit the DELETE on its own, before the new rows are in."""
    warehouse.replace_days(_reload(DAYS, 5), DAYS)
    statements = [s.strip().split()[0].lower() for s in snowflake_rules.statements]
    begin, commit = statements.index("begin"), statements.index("commit")
    inside = snowflake_rules.statements[begin + 1:commit]
    assert [s.strip().split()[0].lower() for s in inside] == ["delete", "insert"]
    assert "create temporary stage" in " ".join(snowflake_rules.statements[:begin]).lower()
