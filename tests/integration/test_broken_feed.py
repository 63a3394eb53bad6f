"""Every way a landing day can arrive broken stops the night before training.

A clean window of simulated landing days (tiny preset) runs once through the
production path up to training: ingest (`ingest_window`), `dbt build` of the models
and their tests with the DAG's vars (`run_dbt`), the export and the data gate. Each
variant then starts from a copy of that night (its landing files and its warehouse),
damages one day's file in one way and runs the same path again. The run must stop at
a named step with a message that names the check and the counts, and the raw table
must hold no half-loaded day: a file ingest rejects leaves the table exactly as the
clean night left it; a file ingest accepts is in the table whole, for dbt's feed
tests to reject before any session or training table is built.

Rows landed out of time order are not damage (sessions are ordered by timestamp):
they must give the same training sequences as the sorted file.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from recsys.dbt_config import run_dbt
from recsys.dev import simulator
from recsys.dev.simulator.scenarios import UNKNOWN_EVENT_TYPES
from recsys.export import ExportError, export_dataset, load_sessions
from recsys.gates import data_gate
from recsys.gates.report import GateResult
from recsys.ingest import RAW_COLUMNS, LandingError, ingest_window, landing_name, window_days
from recsys.run import RunLayout
from recsys.settings import Settings

START, END = dt.date(2026, 3, 1), dt.date(2026, 3, 4)
DAYS = window_days(START, END)
BROKEN_DAY = dt.date(2026, 3, 3)  # inside the window, neither its validation nor its test day
RUN_KEY = "broken-feed"


# --- the production path up to training ---------------------------------------------------


@dataclass
class Outcome:
    """Where the night stopped: "ingest", "dbt", "export", "data_gate", or "training"
    when every step before training passed."""

    step: str
    error: Exception | None = None
    dbt_output: str = ""
    dbt_statuses: dict[str, str] = field(default_factory=dict)
    gate: GateResult | None = None
    dataset_uri: str | None = None


def run_until_training(settings: Settings, work: Path, parsed: Path | None = None) -> Outcome:
    """The night's steps before training, on `settings`' landing files and warehouse.
    `parsed`: a dbt target folder whose saved parse dbt may reuse (same project and vars)."""
    try:
        ingest_window(settings, START, END)
    except LandingError as exc:
        return Outcome("ingest", error=exc)

    # the vars the DAG's dbt tasks get; dbt's own output stays out of the repository
    target = work / "dbt-target"
    if parsed is not None:
        target.mkdir(parents=True)
        shutil.copy2(parsed / "partial_parse.msgpack", target)
    dbt_vars = {"window_start": START.isoformat(), "window_end": END.isoformat(),
                "raw_schema": settings.raw_schema}
    proc = run_dbt(settings, ["build", "--target-path", str(target), "--log-path", str(work / "dbt-logs"),
                              "--vars", json.dumps(dbt_vars)],
                   capture_output=True, text=True, timeout=300)
    results = target / "run_results.json"
    statuses = ({r["unique_id"].split(".")[2]: r["status"] for r in json.loads(results.read_text())["results"]}
                if results.exists() else {})
    if proc.returncode != 0:
        return Outcome("dbt", dbt_output=proc.stdout + proc.stderr, dbt_statuses=statuses)

    layout = RunLayout.of(settings, RUN_KEY)
    try:
        manifest = export_dataset(settings, START, END, layout)
    except ExportError as exc:
        return Outcome("export", error=exc, dbt_statuses=statuses)
    # no champion: the gate checks the window's quality, as on a first night
    gate = data_gate.evaluate(
        load_sessions(settings, manifest["uri"]), None, None,
        max_drift=settings.gate_max_drift, max_new_sku_share=settings.gate_max_new_sku_share,
        volume_ratio=(settings.gate_min_volume_ratio, settings.gate_max_volume_ratio),
        report_dir=layout.report_dir,
    )
    step = "training" if gate.passed else "data_gate"
    return Outcome(step, dbt_statuses=statuses, gate=gate, dataset_uri=manifest["uri"])


def raw_days(settings: Settings) -> dict[str, tuple[int, dt.datetime]]:
    """{landing day: (rows, when loaded)} of the raw table."""
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        rows = con.execute(
            f"select event_date, count(*), min(loaded_at), max(loaded_at) from {settings.raw_schema}.browsing_events "
            f"group by event_date order by event_date"
        ).fetchall()
    assert all(first == last for _, _, first, last in rows), rows  # each day comes from one load
    return {day.isoformat(): (n, loaded) for day, n, loaded, _ in rows}


def sequences(settings: Settings, dataset_uri: str) -> dict[str, tuple]:
    """{session: (date, items)} of an exported dataset, all splits."""
    sessions = load_sessions(settings, dataset_uri)
    return {row.session_id: (row.session_date, list(row.items)) for row in sessions.itertuples()}


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path, warehouse: Path) -> Settings:
    monkeypatch.setenv("RECSYS_HOME", str(home))
    for name in ("RECSYS_STORE_URL", "RECSYS_LANDING_URL"):
        monkeypatch.delenv(name, raising=False)
    # one warehouse file for every night, as in production; dbt's saved parse is only
    # reused while the profile (which holds its path) stays the same
    monkeypatch.setenv("RECSYS_DUCKDB_PATH", str(warehouse))
    # production's feed: nothing missing is ever simulated into the window
    monkeypatch.setenv("RECSYS_SIM_GENERATE_MISSING", "false")
    return Settings.from_env()


@pytest.fixture(scope="module")
def clean_night(tmp_path_factory):
    """The clean window, landed and run up to training once; every variant starts from it."""
    work = tmp_path_factory.mktemp("clean-night")
    warehouse = work / "warehouse.duckdb"
    with pytest.MonkeyPatch.context() as mp:
        settings = _use_home(mp, work / "recsys", warehouse)
        simulator.ensure_days(settings.home / "landing", DAYS, preset="tiny")
        outcome = run_until_training(settings, work)
        assert outcome.step == "training", (outcome, outcome.dbt_output)
        shutil.copy2(warehouse, work / "clean.duckdb")
        return {"home": settings.home, "warehouse": warehouse, "snapshot": work / "clean.duckdb",
                "raw": raw_days(settings), "dbt_target": work / "dbt-target",
                "sequences": sequences(settings, outcome.dataset_uri)}


@pytest.fixture
def night(clean_night, recsys_home, monkeypatch) -> Settings:
    """The next night: the clean night's landing files, and the warehouse as it left it."""
    shutil.copytree(clean_night["home"] / "landing", recsys_home / "landing")
    shutil.copy2(clean_night["snapshot"], clean_night["warehouse"])
    return _use_home(monkeypatch, recsys_home, clean_night["warehouse"])


# --- the damage -----------------------------------------------------------------------------
# Each takes the broken day's landing file, damages it in place and returns what the
# night must stop with: {dbt test: failing count} for dbt, a message pattern for ingest.


@dataclass
class Stop:
    step: str
    failing_tests: dict[str, int] = field(default_factory=dict)
    message: str = ""


def _write(frame: pd.DataFrame, path: Path, columns=RAW_COLUMNS) -> None:
    frame.to_csv(path, index=False, columns=list(columns))


def nulls_in_required_columns(path: Path) -> Stop:
    frame = simulator.read_day(path)
    rng = np.random.default_rng(1)
    product = rng.permutation(np.flatnonzero(frame["event_type"] == "event_product"))
    others = rng.permutation(np.setdiff1d(np.arange(len(frame)), product[:15]))
    # a different count per column, on different rows, so each test's count is its own
    blanks = {("product_action", "feed_product_action_not_null"): product[:7],
              ("product_sku_hash", "feed_product_sku_not_null"): product[7:15],
              ("session_id_hash", "feed_session_id_not_null"): others[:3],
              ("event_type", "feed_event_type_not_null"): others[3:7],
              ("server_timestamp_epoch_ms", "feed_event_time_not_null"): others[7:12],
              ("hashed_url", "feed_url_not_null"): others[12:18]}
    for (column, _), rows in blanks.items():
        frame.loc[rows, column] = None
    _write(frame, path)
    return Stop("dbt", {test: len(rows) for (_, test), rows in blanks.items()})


def unknown_event_types(path: Path) -> Stop:
    frame = simulator.read_day(path)
    rows = np.random.default_rng(2).choice(len(frame), size=9, replace=False)
    # three distinct unknown types on nine rows: the count is of events, not of values
    frame.loc[rows, "event_type"] = [UNKNOWN_EVENT_TYPES[i % 3] for i in range(9)]
    _write(frame, path)
    return Stop("dbt", {"feed_event_type_known": 9})


def duplicated_events(path: Path) -> Stop:
    frame = simulator.read_day(path)
    # a replayed batch of 7 rows, one of which is replayed a third time: 8 surplus copies of 7 events
    batch = frame.iloc[100:107]
    _write(pd.concat([frame, batch, batch.iloc[:1]], ignore_index=True), path)
    return Stop("dbt", {"feed_no_duplicated_events": 8})


def empty_day(path: Path) -> Stop:
    _write(simulator.read_day(path).iloc[:0], path)
    return Stop("dbt", {"feed_every_window_day_has_rows": 1})


def renamed_column(path: Path) -> Stop:
    _write(simulator.read_day(path).rename(columns={"hashed_url": "page_url_hash"}), path,
           columns=[c if c != "hashed_url" else "page_url_hash" for c in RAW_COLUMNS])
    return Stop("ingest", message=(
        rf"landing file \S*{re.escape(path.name)} lacks column\(s\) hashed_url \(1 of the 6 raw columns\); "
        r"it has column\(s\) the raw schema does not name: page_url_hash"))


def missing_column(path: Path) -> Stop:
    _write(simulator.read_day(path), path, columns=[c for c in RAW_COLUMNS if c != "product_action"])
    return Stop("ingest", message=(
        rf"landing file \S*{re.escape(path.name)} lacks column\(s\) product_action \(1 of the 6 raw columns\)$"))


def truncated_file(path: Path) -> Stop:
    data = path.read_bytes()
    cut = len(data) * 3 // 5
    while data[cut - 1:cut] == b"\n":  # cut inside a row, as a broken transfer does
        cut += 1
    kept = data[:cut]
    path.write_bytes(kept)
    lines_ended = kept.count(b"\n")  # the header and the complete rows
    cut_row_bytes = len(kept) - kept.rfind(b"\n") - 1
    return Stop("ingest", message=(
        rf"landing file \S*{re.escape(path.name)} is truncated: line {lines_ended + 1} stops without a line end "
        rf"after {cut_row_bytes} bytes .*; the last complete row is row {lines_ended - 1} "
        rf"\(line {lines_ended}\)"))


VARIANTS: dict[str, Callable[[Path], Stop]] = {
    "nulls-in-required-columns": nulls_in_required_columns,
    "unknown-event-types": unknown_event_types,
    "duplicated-events": duplicated_events,
    "empty-day": empty_day,
    "renamed-column": renamed_column,
    "missing-column": missing_column,
    "truncated-file": truncated_file,
}


@pytest.mark.parametrize("damage", VARIANTS.values(), ids=VARIANTS.keys())
def test_a_broken_landing_day_stops_the_night_before_training(clean_night, night, tmp_path, damage):
    landing_file = night.home / "landing" / landing_name(BROKEN_DAY)
    expected = damage(landing_file)
    outcome = run_until_training(night, tmp_path, clean_night["dbt_target"])
    assert outcome.step == expected.step, (outcome, outcome.dbt_output)
    after = raw_days(night)

    if expected.step == "ingest":
        assert isinstance(outcome.error, LandingError)
        assert re.search(expected.message, str(outcome.error)), str(outcome.error)
        # rejected before the raw table is touched: every day exactly as the clean night left it
        assert after == clean_night["raw"]
        return

    output = outcome.dbt_output
    failed = {name: status for name, status in outcome.dbt_statuses.items() if status in ("fail", "error")}
    assert failed == dict.fromkeys(expected.failing_tests, "fail"), output
    for test, count in expected.failing_tests.items():
        # dbt's summary names the check and how many events (days) fail it
        result = "result" if count == 1 else "results"
        assert re.search(rf"Failure in test {test} \([^)]*\)\s+(\S+\s+)?Got {count} {result}, "
                         r"configured to fail if != 0", output), output
    # nothing built on the feed, so nothing reaches export or training
    assert outcome.dbt_statuses["stg_browsing_events"] == "success"
    assert outcome.dbt_statuses["sessions"] == outcome.dbt_statuses["training_events"] == "skipped"
    # the accepted file is in the raw table whole (an empty day: no rows), the other days as before,
    # all of the window replaced by this night's one load
    expected_counts = {day: n for day, (n, _) in clean_night["raw"].items()}
    expected_counts[BROKEN_DAY.isoformat()] = len(simulator.read_day(landing_file))
    assert {day: n for day, (n, _) in after.items()} == {d: n for d, n in expected_counts.items() if n}
    (loaded_at,) = {loaded for _, loaded in after.values()}
    assert loaded_at > max(loaded for _, loaded in clean_night["raw"].values())


def test_rows_landed_out_of_time_order_train_on_the_same_sequences(clean_night, night, tmp_path):
    landing_file = night.home / "landing" / landing_name(BROKEN_DAY)
    header, *rows = landing_file.read_bytes().splitlines(keepends=True)
    shuffled = [rows[i] for i in np.random.default_rng(3).permutation(len(rows))]
    landing_file.write_bytes(header + b"".join(shuffled))
    times = simulator.read_day(landing_file)["server_timestamp_epoch_ms"]
    assert not times.is_monotonic_increasing  # the damage took: timestamps now go back and forth

    outcome = run_until_training(night, tmp_path, clean_night["dbt_target"])
    assert outcome.step == "training", (outcome, outcome.dbt_output)
    assert outcome.gate.passed, outcome.gate.message()
    assert {day: n for day, (n, _) in raw_days(night).items()} == {
        day: n for day, (n, _) in clean_night["raw"].items()}
    assert sequences(night, outcome.dataset_uri) == clean_night["sequences"]
