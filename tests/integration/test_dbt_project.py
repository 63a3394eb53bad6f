"""The dbt project against a small hand-written feed in a throwaway DuckDB file.

A clean three-day window must build and give the expected sessions and training
sequences; each kind of broken feed must stop `dbt build` with the test that
names the defect. dbt runs as a subprocess from its own virtualenv
(RECSYS_DBT_EXECUTABLE, default <repo>/.venv-dbt/bin/dbt), like Cosmos runs it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
from pathlib import Path

import duckdb
import pytest

from recsys.warehouse import RAW_DDL, RAW_TABLE

REPO = Path(__file__).resolve().parents[2]
DBT_PROJECT = REPO / "dbt"
DBT_EXECUTABLE = os.environ.get("RECSYS_DBT_EXECUTABLE", str(REPO / ".venv-dbt" / "bin" / "dbt"))

WINDOW_START = dt.date(2021, 3, 1)
WINDOW_END = dt.date(2021, 3, 3)
FEED_TESTS = [
    "feed_window_has_events",
    "feed_no_duplicated_events",
    "feed_session_id_not_null",
    "feed_event_type_not_null",
    "feed_event_type_known",
    "feed_product_action_known",
    "feed_event_time_not_null",
    "feed_url_not_null",
    "feed_event_date_not_null",
    "feed_every_window_day_has_rows",
    "feed_product_sku_not_null",
    "feed_product_action_not_null",
]


def h(label: str) -> str:
    """A 64-hex id like the feed's, readable in the test as its label."""
    return hashlib.sha256(label.encode()).hexdigest()


def ms(day: dt.date, hour: int = 12, minute: int = 0, second: float = 0) -> int:
    moment = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000 + second * 1000)


def pageview(session: str, at_ms: int, url: str, sku: str | None = None) -> tuple:
    return (h(session), "pageview", None, h(sku) if sku else None, at_ms, h(url))


def product(session: str, action: str, sku: str, at_ms: int, url: str | None = None) -> tuple:
    return (h(session), "event_product", action, h(sku), at_ms, h(url or "page-" + sku))


def clean_feed() -> list[tuple]:
    """Rows of a healthy feed, (session, type, action, sku, ms, url); event_date derives from ms."""
    day1, day2, day3 = WINDOW_START, WINDOW_START + dt.timedelta(days=1), WINDOW_END
    before, after = WINDOW_START - dt.timedelta(days=1), WINDOW_END + dt.timedelta(days=1)
    rows: list[tuple] = []

    # A: a shopper. Each detail has its paired pageview (same url and time); an add
    # of c and a detail of d share a millisecond and are landed add-first.
    t = ms(day1, 10)
    rows += [
        pageview("A", t, "page-a", "a"),
        product("A", "detail", "a", t),
        product("A", "add", "a", t + 5_000),
        pageview("A", t + 10_000, "page-b", "b"),
        product("A", "detail", "b", t + 10_000),
        product("A", "add", "c", t + 15_000),
        product("A", "detail", "d", t + 15_000),
        product("A", "purchase", "a", t + 20_000),
        pageview("A", t + 30_000, "checkout"),
    ]
    # B: one interaction only; D: removals do not count as interactions; C: pageviews only.
    rows += [pageview("B", ms(day1, 11), "home"), product("B", "detail", "a", ms(day1, 11, 1))]
    rows += [
        product("D", "detail", "b", ms(day1, 13)),
        product("D", "remove", "b", ms(day1, 13, 1)),
        product("D", "remove", "c", ms(day1, 13, 2)),
    ]
    rows += [pageview("C", ms(day1, 14), "home"), pageview("C", ms(day1, 14, 1), "search")]

    # LONG: 60 interactions, of which training keeps the last 50.
    rows += [product("LONG", "detail", f"long-{i:02d}", ms(day2, 9, 0, i)) for i in range(60)]
    # CROSS: crosses midnight from day 2 into day 3; its date is day 2.
    rows += [
        product("CROSS", "detail", "x", ms(day2, 23, 59, 50)),
        product("CROSS", "add", "x", ms(day3, 0, 0, 10)),
    ]
    # E: exactly two interactions on day 3, and a late event landing after the window.
    rows += [
        product("E", "detail", "e1", ms(day3, 8)),
        product("E", "detail", "e2", ms(day3, 8, 1)),
        product("E", "detail", "e3", ms(after, 8)),
    ]

    # Out of the window on both sides: must not be read at all.
    rows += [product("OUT", "detail", f"out-{i}", ms(before, 12, i)) for i in range(3)]
    rows += [product("OUT", "detail", f"out-{i}", ms(after, 12, i)) for i in range(3, 6)]
    return rows


def write_feed(db_path: Path, rows: list[tuple]) -> None:
    """Create raw.browsing_events the way the ingest step leaves it."""
    loaded_at = dt.datetime(2021, 3, 4, 2, 0)
    with duckdb.connect(str(db_path)) as con:
        con.execute("create schema raw")
        con.execute(RAW_DDL.format(schema="raw", table=RAW_TABLE))
        full_rows = []
        for session, event_type, action, sku, at_ms, url in rows:
            event_date = dt.datetime.fromtimestamp(at_ms / 1000, dt.timezone.utc).date()
            full_rows.append((session, event_type, action, sku, at_ms, url, event_date, loaded_at))
        con.executemany("insert into raw.browsing_events values (?, ?, ?, ?, ?, ?, ?, ?)", full_rows)


def dbt_build(tmp_path: Path, rows: list[tuple]) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """Load `rows` into a fresh warehouse and run `dbt build` on the window.

    Returns the process, {test or model name: status} from run_results.json, and the
    DuckDB path. Target and log dirs live under tmp_path so the repo stays clean.
    """
    if not Path(DBT_EXECUTABLE).exists():
        pytest.fail(f"dbt not found at {DBT_EXECUTABLE}; create .venv-dbt or set RECSYS_DBT_EXECUTABLE")
    db_path = tmp_path / "warehouse.duckdb"
    write_feed(db_path, rows)
    target_path = tmp_path / "target"
    window = {"window_start": WINDOW_START.isoformat(), "window_end": WINDOW_END.isoformat()}
    env = {**os.environ, "RECSYS_DUCKDB_PATH": str(db_path)}
    env.pop("DBT_PROFILES_DIR", None)
    env.pop("DBT_TARGET_PATH", None)
    proc = subprocess.run(
        [
            DBT_EXECUTABLE,
            "build",
            "--project-dir", str(DBT_PROJECT),
            "--profiles-dir", str(DBT_PROJECT),
            "--target", "duckdb",
            "--target-path", str(target_path),
            "--log-path", str(tmp_path / "logs"),
            "--vars", json.dumps(window),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    statuses = {}
    results_file = target_path / "run_results.json"
    if results_file.exists():
        for result in json.loads(results_file.read_text())["results"]:
            statuses[result["unique_id"].split(".")[2]] = result["status"]
    return proc, statuses, db_path


def query(db_path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def clean_build(tmp_path_factory):
    return dbt_build(tmp_path_factory.mktemp("clean"), clean_feed())


def test_clean_feed_builds_and_passes_every_test(clean_build):
    proc, statuses, _ = clean_build
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in FEED_TESTS + ["stg_browsing_events", "sessions", "training_events"]:
        assert statuses.get(name) in ("pass", "success"), (name, statuses.get(name))
    assert all(status in ("pass", "success") for status in statuses.values()), statuses


def test_staging_reads_only_the_window(clean_build):
    _, _, db = clean_build
    (n_rows, first_day, last_day, n_out), = query(
        db,
        f"""
        select count(*), min(event_date), max(event_date),
               count(case when session_id = '{h("OUT")}' then 1 end)
        from analytics.stg_browsing_events
        """,
    )
    in_window = [r for r in clean_feed() if r[0] != h("OUT") and r[4] < ms(WINDOW_END + dt.timedelta(days=1), 0)]
    assert n_rows == len(in_window)
    assert (first_day, last_day, n_out) == (WINDOW_START, WINDOW_END, 0)
    # the timestamp is the UTC wall clock of the milliseconds
    (event_at,), = query(
        db, f"select event_at from analytics.stg_browsing_events where session_id = '{h('B')}' and event_type = 'pageview'"
    )
    assert event_at == dt.datetime(2021, 3, 1, 11, 0)


def test_sessions(clean_build):
    _, _, db = clean_build
    rows = query(
        db,
        """
        select session_id, session_date, started_ms, ended_ms, duration_s, n_events,
               n_pageviews, n_product_interactions, has_add, has_purchase
        from analytics.sessions
        """,
    )
    by_id = {row[0]: row[1:] for row in rows}
    assert set(by_id) == {h(s) for s in ["A", "B", "C", "D", "LONG", "CROSS", "E"]}

    t = ms(WINDOW_START, 10)
    assert by_id[h("A")] == (WINDOW_START, t, t + 30_000, 30.0, 9, 3, 6, True, True)
    assert by_id[h("B")][4:] == (2, 1, 1, False, False)
    assert by_id[h("C")][4:] == (2, 2, 0, False, False)
    assert by_id[h("D")][4:] == (3, 0, 1, False, False)
    assert by_id[h("LONG")][4:7] == (60, 0, 60)
    # crosses midnight: dated by its first event, duration spans the night
    assert by_id[h("CROSS")][0] == WINDOW_START + dt.timedelta(days=1)
    assert by_id[h("CROSS")][3] == 20.0
    assert by_id[h("CROSS")][7] is True
    # the event landing after the window is not part of the session
    assert by_id[h("E")][4] == 2


def test_training_events(clean_build):
    _, _, db = clean_build
    rows = query(
        db,
        "select session_id, session_date, position, sku, event_ms from analytics.training_events "
        "order by session_id, position",
    )
    sequences: dict[str, list[tuple]] = {}
    for session_id, session_date, position, sku, event_ms in rows:
        sequences.setdefault(session_id, []).append((position, sku, session_date, event_ms))

    # sessions with fewer than two interactions (B, D: removals don't count; C) are left out
    assert set(sequences) == {h(s) for s in ["A", "LONG", "CROSS", "E"]}
    for seq in sequences.values():
        assert [p for p, *_ in seq] == list(range(1, len(seq) + 1))
        assert [t for *_, t in seq] == sorted(t for *_, t in seq)

    # same-millisecond events keep funnel order (detail of d before add of c), whatever the landing order
    assert [sku for _, sku, *_ in sequences[h("A")]] == [h(s) for s in ["a", "a", "b", "d", "c", "a"]]

    # long sessions keep their last 50 interactions, renumbered from 1
    long_seq = sequences[h("LONG")]
    assert len(long_seq) == 50
    assert [sku for _, sku, *_ in long_seq] == [h(f"long-{i:02d}") for i in range(10, 60)]

    assert {date for _, _, date, _ in sequences[h("CROSS")]} == {WINDOW_START + dt.timedelta(days=1)}
    assert [sku for _, sku, *_ in sequences[h("E")]] == [h("e1"), h("e2")]


def _null_session_id(rows):
    session, *rest = rows[0]
    return rows + [(None, *rest[:3], rest[3] + 1, rest[4])]


def _unknown_event_type(rows):
    return rows + [(h("A"), "click", None, None, ms(WINDOW_START, 10, 5), h("banner"))]


def _duplicated_event(rows):
    # a pageview without product or action, landed twice: nulls must not hide the copy
    return rows + [pageview("C", ms(WINDOW_START, 14), "home")]


def _missing_day(rows):
    middle = WINDOW_START + dt.timedelta(days=1)
    return [r for r in rows if dt.datetime.fromtimestamp(r[4] / 1000, dt.timezone.utc).date() != middle]


@pytest.mark.parametrize(
    ("break_feed", "failing_test"),
    [
        (_null_session_id, "feed_session_id_not_null"),
        (_unknown_event_type, "feed_event_type_known"),
        (_duplicated_event, "feed_no_duplicated_events"),
        (_missing_day, "feed_every_window_day_has_rows"),
    ],
    ids=["null-session-id", "unknown-event-type", "duplicated-event", "missing-day"],
)
def test_broken_feed_fails_build_naming_the_defect(tmp_path, break_feed, failing_test):
    proc, statuses, db = dbt_build(tmp_path, break_feed(clean_feed()))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert f"Failure in test {failing_test}" in output, output
    # only the defect's own test fails, and nothing downstream of the feed is built
    failed = sorted(name for name, status in statuses.items() if status in ("fail", "error"))
    assert failed == [failing_test], statuses
    assert statuses.get("sessions") == "skipped"
    assert statuses.get("training_events") == "skipped"
    assert query(db, "select count(*) from information_schema.tables where table_name = 'training_events'") == [(0,)]
