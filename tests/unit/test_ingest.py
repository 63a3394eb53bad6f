"""Ingest: the run's window lands in the raw table exactly once, whatever re-runs."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from recsys.dev import simulator
from recsys.ingest import RAW_COLUMNS, LandingError, ingest_window, landing_name
from recsys.settings import Settings

START, END = dt.date(2026, 3, 1), dt.date(2026, 3, 3)


def _raw_counts(settings: Settings) -> dict[str, int]:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        rows = con.execute("select event_date, count(*) from raw.browsing_events group by 1 order by 1").fetchall()
    return {day.isoformat(): n for day, n in rows}


def test_reingesting_a_window_replaces_it_instead_of_duplicating(recsys_home):
    settings = Settings.from_env()
    first = ingest_window(settings, START, END)
    again = ingest_window(settings, START, END)
    assert first == again
    counts = _raw_counts(settings)
    assert counts == first["rows_per_day"]
    assert sum(counts.values()) == first["rows"] > 0


def test_an_overlapping_window_replaces_only_its_own_days(recsys_home):
    settings = Settings.from_env()
    ingest_window(settings, START, END)
    landing = settings.home / "landing"
    # the feed re-delivers day 3 with fewer rows: the warehouse follows it
    day3 = simulator.read_day(landing / landing_name(END))
    day3.head(10).to_csv(landing / landing_name(END), index=False)
    ingest_window(settings, END, END + dt.timedelta(days=1))
    counts = _raw_counts(settings)
    assert counts[END.isoformat()] == 10
    assert set(counts) == {"2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"}


def test_missing_landing_day_is_named_when_the_feed_is_not_simulated(recsys_home, monkeypatch):
    monkeypatch.setenv("RECSYS_SIM_GENERATE_MISSING", "false")
    with pytest.raises(LandingError, match="no landing file for 2026-03-01"):
        ingest_window(Settings.from_env(), START, END)


def test_a_real_feed_is_the_default_and_never_mixed_with_simulated_days(recsys_home, monkeypatch):
    monkeypatch.delenv("RECSYS_SIM_GENERATE_MISSING")
    settings = Settings.from_env()
    landing = settings.home / "landing"
    landing.mkdir(parents=True)
    (landing / landing_name(START)).write_text(",".join(RAW_COLUMNS) + "\n")  # one real (empty) day
    with pytest.raises(LandingError, match="no landing file for 2026-03-02"):
        ingest_window(settings, START, END)
    assert sorted(p.name for p in landing.iterdir()) == [landing_name(START)]  # nothing invented


def test_a_landing_file_without_the_raw_schema_is_rejected(recsys_home, monkeypatch):
    settings = Settings.from_env()
    landing = settings.home / "landing"
    landing.mkdir(parents=True)
    (landing / landing_name(START)).write_text("session_id_hash,event_type\nabc,pageview\n")
    monkeypatch.setenv("RECSYS_SIM_GENERATE_MISSING", "false")
    with pytest.raises(LandingError, match="lacks column.*product_action"):
        ingest_window(settings, START, START)


LAST_ROW_CUT = r"line 5 stops without a line end after \d+ bytes .*; the last complete row is row 3 \(line 4\)"


@pytest.mark.parametrize(
    ("keep", "where"),
    [
        (lambda text: text[: text.rindex(",")], LAST_ROW_CUT),
        # a cut inside the last field leaves every field there: only the missing line end shows it
        (lambda text: text[:-10], LAST_ROW_CUT),
        (lambda text: text[:20], r"line 1 stops without a line end after 20 bytes.*no row is complete"),
    ],
    ids=["mid-row", "inside-the-last-field", "inside-the-header"],
)
def test_a_truncated_landing_file_is_rejected_naming_where_it_stops(recsys_home, monkeypatch, keep, where):
    monkeypatch.setenv("RECSYS_SIM_GENERATE_MISSING", "false")
    settings = Settings.from_env()
    landing = settings.home / "landing"
    simulator.write_day(landing, START, preset="tiny")
    path = landing / landing_name(START)
    lines = path.read_text().splitlines(keepends=True)[:5]  # the header and four rows
    path.write_text(keep("".join(lines)))
    with pytest.raises(LandingError, match=f"{landing_name(START)} is truncated: {where}"):
        ingest_window(settings, START, START)
    path.write_text("".join(lines))  # the same rows, whole, are a day like any other
    assert ingest_window(settings, START, START)["rows"] == 4
