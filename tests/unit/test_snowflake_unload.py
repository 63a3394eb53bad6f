"""The export's Snowflake unload path (RECSYS_SNOWFLAKE_STORE_STAGE), against fakesnow in-process.

fakesnow runs the SQL that builds the sessions, counts them and selects each split, for
real; it cannot run COPY INTO <stage> (no unload, no S3 behind a stage). So the COPY INTO
statements are recorded instead of sent, and the SELECT inside each one is then run on
fakesnow on its own, to check what the unload would have written.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from unittest import mock

import fakesnow
import pandas as pd
import pytest
from fakesnow.cursor import FakeSnowflakeCursor

from recsys import export
from recsys.export import (
    ExportError,
    counts_sql,
    export_dataset,
    sessions_from_events,
    sessions_sql,
    split_of,
    split_sql,
    stage_location,
)
from recsys.run import SPLITS, RunLayout
from recsys.settings import Settings
from recsys.storage import path_from_uri, read_json
from recsys.warehouse import SnowflakeWarehouse

START, END = dt.date(2026, 3, 1), dt.date(2026, 3, 5)
STAGE = "RAW.RECSYS_STORE"

# (session_id, session_date, position, sku): positions out of order on purpose, a session of
# one item, a day (the validation day) with one session only, and days outside the window.
EVENTS = [
    ("s10", "2026-03-01", 3, "c"), ("s10", "2026-03-01", 1, "a"), ("s10", "2026-03-01", 2, "b"),
    ("s02", "2026-03-02", 2, "z"), ("s02", "2026-03-02", 1, "y"),
    ("s03", "2026-03-03", 1, "only"),
    ("s04", "2026-03-04", 2, "v2"), ("s04", "2026-03-04", 1, "v1"), ("s04", "2026-03-04", 3, "v3"),
    ("s05", "2026-03-05", 1, "t1"), ("s05", "2026-03-05", 2, "t2"),
    ("s01", "2026-03-05", 2, "u2"), ("s01", "2026-03-05", 1, "u1"),
    ("old", "2026-02-28", 1, "x1"), ("old", "2026-02-28", 2, "x2"),
    ("new", "2026-03-06", 1, "n1"), ("new", "2026-03-06", 2, "n2"),
]


@pytest.fixture
def snowflake(recsys_home, monkeypatch):
    monkeypatch.setenv("RECSYS_WAREHOUSE", "snowflake")
    monkeypatch.setenv("RECSYS_SNOWFLAKE_STORE_STAGE", STAGE)
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", json.dumps({
        "conn_type": "snowflake", "login": "recsys", "password": "not-a-secret", "schema": "RAW",
        "extra": {"account": "test-account", "database": "RECSYS", "warehouse": "COMPUTE_WH"},
    }))
    with fakesnow.patch(create_database_on_connect=True, create_schema_on_connect=True):
        yield Settings.from_env()


def _load(settings: Settings, events) -> None:
    """analytics.training_events with the columns dbt's model gives it."""
    values = ", ".join(f"('{s}', '{d}', {p}, '{k}', {i})" for i, (s, d, p, k) in enumerate(events))
    SnowflakeWarehouse(settings).execute([
        "create schema if not exists analytics",
        "create or replace table analytics.training_events "
        "(session_id varchar, session_date date, position bigint, sku varchar, event_ms bigint)",
        f"insert into analytics.training_events values {values}",
    ])


def _expected(events) -> pd.DataFrame:
    """What the worker path makes of the same rows: sessions_from_events + split_of."""
    frame = pd.DataFrame(events, columns=["session_id", "session_date", "position", "sku"])
    frame["session_date"] = pd.to_datetime(frame["session_date"]).dt.date
    frame = frame[(frame["session_date"] >= START) & (frame["session_date"] <= END)]
    sessions = sessions_from_events(frame)
    sessions["split"] = split_of(sessions["session_date"], END)
    sessions["session_date"] = sessions["session_date"].map(dt.date.isoformat)
    return sessions


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return [(sid, day, list(items), split) for sid, day, items, split
            in frame[["session_id", "session_date", "items", "split"]].itertuples(index=False)]


def test_the_sessions_query_gives_the_worker_paths_sessions(snowflake):
    _load(snowflake, EVENTS)
    (rows,) = SnowflakeWarehouse(snowflake).execute([sessions_sql(snowflake, START, END)])
    # an ARRAY comes back from Snowflake as JSON text, as it lands in the unloaded parquet
    got = sorted((sid, day, json.loads(items), split) for sid, day, items, split, _ in rows)
    expected = _expected(EVENTS)
    assert got == _rows(expected)
    assert ("s10", "2026-03-01", ["a", "b", "c"], "train") in got
    assert ("s03", "2026-03-03", ["only"], "train") in got
    assert {sid for sid, *_ in got} == {"s10", "s02", "s03", "s04", "s05", "s01"}


def test_the_counts_query_counts_sessions_and_interactions_per_split(snowflake):
    _load(snowflake, EVENTS)
    (rows,) = SnowflakeWarehouse(snowflake).execute([counts_sql(sessions_sql(snowflake, START, END))])
    assert sorted((split, int(n), int(m)) for split, n, m in rows) == [
        ("test", 2, 4), ("train", 3, 6), ("validation", 1, 3)]


@pytest.mark.parametrize("split", SPLITS)
def test_each_split_select_gives_that_splits_file(snowflake, split):
    _load(snowflake, EVENTS)
    conn = SnowflakeWarehouse(snowflake)._hook().get_conn()
    try:
        cur = conn.cursor()
        cur.execute(split_sql(sessions_sql(snowflake, START, END), split))
        columns = [d.name for d in cur.description]
        rows = cur.fetchall()
    finally:
        conn.close()
    # the parquet columns are named after these: lower case, as the readers expect
    assert columns == ["session_id", "session_date", "items"]
    expected = _expected(EVENTS)
    expected = expected[expected["split"] == split]
    assert [(sid, day, json.loads(items)) for sid, day, items in rows] == \
        [(sid, day, list(items)) for sid, day, items in
         expected[["session_id", "session_date", "items"]].itertuples(index=False)]


class Recorded:
    def __init__(self):
        self.unloads: list[str] = []  # COPY INTO statements, recorded, not sent
        self.sent: list[str] = []  # every statement that reached (fake) Snowflake


@pytest.fixture
def recorded(snowflake):
    record = Recorded()
    real_execute = SnowflakeWarehouse.execute
    fake_cursor_execute = FakeSnowflakeCursor.execute

    def execute(self, statements):
        # fakesnow cannot unload: COPY INTO is recorded, and gets no result (no rows_unloaded)
        results = []
        for sql in statements:
            if sql.lstrip().lower().startswith("copy into"):
                record.unloads.append(sql)
                results.append([])
            else:
                results.extend(real_execute(self, [sql]))
        return results

    def cursor_execute(cursor, command, *args, **kwargs):
        record.sent.append(command)
        return fake_cursor_execute(cursor, command, *args, **kwargs)

    def no_dataframes(*args, **kwargs):
        raise AssertionError("the unload path must not read a DataFrame")

    _load(snowflake, EVENTS)
    with mock.patch.object(SnowflakeWarehouse, "execute", execute), \
            mock.patch.object(FakeSnowflakeCursor, "execute", cursor_execute), \
            mock.patch("airflow.providers.snowflake.hooks.snowflake.SnowflakeHook.get_pandas_df", no_dataframes), \
            mock.patch.object(export, "write_parquet", no_dataframes):
        yield record


COPY = re.compile(
    r"^copy into (?P<location>\S+)\nfrom \((?P<select>.*)\)\n"
    r"file_format = \(type = parquet\)\nheader = true\nsingle = true\noverwrite = true\n"
    r"max_file_size = (?P<max_size>\d+)$",
    re.DOTALL | re.IGNORECASE,
)


def test_the_unload_path_copies_each_split_into_the_stage(snowflake, recorded):
    layout = RunLayout.of(snowflake, "run-1")
    manifest = export_dataset(snowflake, START, END, layout)

    sessions = sessions_sql(snowflake, START, END)
    # only the counts were read back; the sessions themselves never left Snowflake
    assert recorded.sent == [counts_sql(sessions)]
    assert len(recorded.unloads) == len(SPLITS)
    expected = _expected(EVENTS)
    for split, statement in zip(SPLITS, recorded.unloads):
        match = COPY.match(statement)
        assert match, statement
        # the stage's URL is RECSYS_STORE_URL: the path under it is the split's file
        assert match["location"] == f"@{STAGE}/runs/run-1/dataset/{split}/sessions.parquet"
        assert f"{snowflake.store_url}/{match['location'].removeprefix(f'@{STAGE}/')}" == \
            RunLayout.split(layout.dataset, split)
        assert int(match["max_size"]) >= 1024**3
        assert match["select"] == split_sql(sessions, split)
        # what that COPY would write: its SELECT, run for real
        rows = _run(snowflake, match["select"])
        assert [(sid, day, json.loads(items)) for sid, day, items in rows] == \
            [(sid, day, list(items)) for sid, day, items, s in _rows(expected) if s == split]

    assert manifest["sessions"] == {"train": 3, "validation": 1, "test": 2}
    assert manifest["interactions"] == 13
    assert read_json(path_from_uri(snowflake, layout.manifest)) == manifest
    assert manifest["uri"] == layout.dataset


def _run(settings: Settings, sql: str) -> list[tuple]:
    conn = SnowflakeWarehouse(settings)._hook().get_conn()
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchall()
    finally:
        conn.close()


def test_an_empty_split_stops_the_unload_before_any_copy(snowflake, recorded):
    _load(snowflake, [row for row in EVENTS if row[1] != "2026-03-04"])
    layout = RunLayout.of(snowflake, "run-2")
    with pytest.raises(ExportError, match=r"no sessions for split\(s\) validation \(sessions per split: "
                                          r"\{'train': 3, 'validation': 0, 'test': 2\}\)"):
        export_dataset(snowflake, START, END, layout)
    assert recorded.unloads == []
    assert not path_from_uri(snowflake, layout.manifest).exists()


def test_a_stage_path_is_the_store_uri_under_the_stage(recsys_home):
    settings = Settings.from_env({"RECSYS_STORE_URL": "s3://bucket/prefix/", "RECSYS_SNOWFLAKE_STORE_STAGE": STAGE})
    layout = RunLayout.of(settings, "scheduled__2026-03-05T00-00-00-00-00")
    assert stage_location(settings, RunLayout.split(layout.dataset, "test")) == \
        f"@{STAGE}/runs/scheduled__2026-03-05T00-00-00-00-00/dataset/test/sessions.parquet"
    with pytest.raises(ValueError, match="not under RECSYS_STORE_URL"):
        stage_location(settings, "s3://other-bucket/runs/x/dataset/test/sessions.parquet")
