"""Ingest on Snowflake with COPY INTO from an external stage over the landing bucket
(RECSYS_SNOWFLAKE_LANDING_STAGE): the worker checks each file's header and end, Snowflake
reads and loads the files, and the days are swapped in as with write_pandas.

fakesnow runs the COPY INTO statements for real; its stage points at a local folder that
stands in for the landing bucket (fakesnow reads no S3)."""

from __future__ import annotations

import datetime as dt
import json
from unittest import mock

import fakesnow
import pandas as pd
import pytest
import snowflake.connector
from fakesnow.cursor import FakeSnowflakeCursor

from recsys.ingest import LandingError, ingest_window, landing_name
from recsys.settings import Settings
from recsys.warehouse import SnowflakeWarehouse

START, END = dt.date(2026, 3, 1), dt.date(2026, 3, 3)
DAYS = [START + dt.timedelta(days=i) for i in range(3)]

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")


@pytest.fixture
def snowflake_stage(recsys_home, tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    landing.mkdir()
    for name, value in {"RECSYS_WAREHOUSE": "snowflake", "RECSYS_LANDING_URL": landing.as_uri(),
                        "RECSYS_SNOWFLAKE_LANDING_STAGE": "RAW.LANDING", "RECSYS_SIM_GENERATE_MISSING": "true",
                        "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": json.dumps({
                            "conn_type": "snowflake", "login": "recsys", "password": "not-a-secret", "schema": "RAW",
                            "extra": {"account": "test-account", "database": "RECSYS", "warehouse": "COMPUTE_WH"}})
                        }.items():
        monkeypatch.setenv(name, value)
    statements: list[str] = []
    real_execute = FakeSnowflakeCursor.execute

    def recording(self, command, *args, **kwargs):
        statements.append(" ".join(str(command).split()).lower())
        return real_execute(self, command, *args, **kwargs)

    with fakesnow.patch(), mock.patch.object(FakeSnowflakeCursor, "execute", recording), \
            mock.patch("snowflake.connector.pandas_tools.write_pandas",
                       side_effect=AssertionError("rows went through the worker")):
        cur = snowflake.connector.connect(database="RECSYS", schema="RAW").cursor()
        cur.execute("create schema if not exists raw")
        cur.execute(f"create stage raw.landing url='{landing.as_uri()}/'")
        statements.clear()
        yield landing, statements


def _raw(settings: Settings) -> pd.DataFrame:
    return SnowflakeWarehouse(settings).query(
        "select event_date, session_id_hash, server_timestamp_epoch_ms, product_sku_hash, loaded_at "
        "from raw.browsing_events")


def _rows_of(frame: pd.DataFrame) -> list[tuple]:
    return sorted((str(s), int(t), None if pd.isna(k) else str(k))
                  for s, t, k in zip(frame["session_id_hash"], frame["server_timestamp_epoch_ms"],
                                     frame["product_sku_hash"]))


def test_snowflake_loads_the_landing_files_itself(snowflake_stage):
    landing, statements = snowflake_stage
    loaded = ingest_window(Settings.from_env(), START, END)

    files = {day: pd.read_csv(landing / landing_name(day), dtype=str, keep_default_na=False, na_values=[""])
             for day in DAYS}
    assert loaded["rows_per_day"] == {day.isoformat(): len(files[day]) for day in DAYS}
    raw = _raw(Settings.from_env())
    for day in DAYS:  # every row of every file, under its own day
        on_day = raw[pd.to_datetime(raw["event_date"]).dt.date == day]
        assert _rows_of(on_day) == _rows_of(files[day].astype({"server_timestamp_epoch_ms": "int64"}))
    assert raw["loaded_at"].notna().all()
    copies = [s for s in statements if s.startswith("copy into")]
    assert [c.split("files = ('")[1].split("'")[0] for c in copies] == [landing_name(day) for day in DAYS]
    assert all("from @raw.landing" in c and "on_error = abort_statement" in c for c in copies)
    swap = [s.split(" ")[0] for s in statements[statements.index(copies[-1]):] if s.split(" ")[0] in
            ("begin", "delete", "insert", "commit", "drop")]
    assert swap == ["begin", "delete", "insert", "commit", "drop"]


def test_a_rerun_replaces_the_days_instead_of_duplicating_them(snowflake_stage):
    settings = Settings.from_env()
    first = ingest_window(settings, START, END)
    again = ingest_window(settings, START, END)  # COPY skips files a table has loaded: a fresh staging table
    assert again["rows_per_day"] == first["rows_per_day"]
    assert len(_raw(settings)) == first["rows"]


def _rename_column(text: str) -> str:
    return text.replace("hashed_url", "page_url_hash", 1)


def _swap_columns(text: str) -> str:
    header, rest = text.split("\n", 1)
    return header.replace("event_type,product_action", "product_action,event_type") + "\n" + rest


def _cut(text: str) -> str:
    return text[: len(text) - 25]


@pytest.mark.parametrize(("damage", "says"), [
    (_rename_column, "lacks column(s) hashed_url"),
    (_swap_columns, "in another order"),
    (_cut, "is truncated"),
], ids=["renamed column", "columns reordered", "truncated"])
def test_a_bad_file_stops_the_load_before_any_day_is_replaced(snowflake_stage, damage, says):
    landing, statements = snowflake_stage
    settings = Settings.from_env()
    ingest_window(settings, START, END)
    before = _rows_of(_raw(settings))
    bad = landing / landing_name(DAYS[1])
    bad.write_text(damage(bad.read_text()))
    statements.clear()

    with pytest.raises(LandingError, match=rf"{landing_name(DAYS[1])}.*{says}".replace("(", r"\(").replace(")", r"\)")):
        ingest_window(settings, START, END)
    assert not [s for s in statements if s.startswith("copy into")]  # checked before anything is loaded
    assert _rows_of(_raw(settings)) == before
