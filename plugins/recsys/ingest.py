"""Load the run's window of landing files into the warehouse's raw table.

This module owns the raw feed's contract: its columns and dtypes (Coveo's browsing
schema) and the landing file of each day (``browsing_YYYY-MM-DD.csv``). Re-running
a day replaces that day's rows, never duplicates them. A missing landing file is an
error that names it, unless the settings say the feed is simulated (the local
stack): then `simulate_missing_days` has the development simulator deliver it, as an
upstream feed would. That hook is production's only way into `recsys.dev`.

A landing file must have every raw column and end with a line end: a file cut off
mid-row (a partial transfer) would otherwise parse as a shorter day with a mangled
last row. Every day of the window is read and checked before the raw table is
touched, so a bad file leaves the table as it was. What the rows hold (nulls,
unknown types, duplicates, empty days) is for the dbt feed tests to judge.

The development simulator imports the contract from here, so this module imports
only pandas at load time; the store, the warehouse and the simulator are imported
where they are used.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from recsys.settings import Settings

log = logging.getLogger(__name__)

# Column order of the raw feed (Coveo `browsing_train.csv`).
RAW_COLUMNS = (
    "session_id_hash",
    "event_type",
    "product_action",
    "product_sku_hash",
    "server_timestamp_epoch_ms",
    "hashed_url",
)
RAW_DTYPES = {
    "session_id_hash": "string",
    "event_type": "string",
    "product_action": "string",
    "product_sku_hash": "string",
    "server_timestamp_epoch_ms": "Int64",
    "hashed_url": "string",
}
LANDING_PREFIX, LANDING_SUFFIX = "browsing_", ".csv"


class LandingError(RuntimeError):
    """A landing file is missing or does not have the raw schema."""


def window_days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def landing_name(day: dt.date) -> str:
    """The landing file of one day: ``browsing_YYYY-MM-DD.csv``."""
    return f"{LANDING_PREFIX}{day:%Y-%m-%d}{LANDING_SUFFIX}"


def landing_day(name: str) -> dt.date | None:
    """The day a landing file name stands for, or None if it is not a landing file name."""
    if not (name.startswith(LANDING_PREFIX) and name.endswith(LANDING_SUFFIX)):
        return None
    try:
        return dt.date.fromisoformat(name[len(LANDING_PREFIX):-len(LANDING_SUFFIX)])
    except ValueError:
        return None


def simulate_missing_days(settings: Settings, days: list[dt.date]) -> list[dt.date]:
    """The local-feed hook: when the settings say the feed is simulated
    (RECSYS_SIM_GENERATE_MISSING), the development simulator writes the landing files of
    the days that have none (local landing folders only). Returns the days it wrote."""
    if not settings.sim_generate_missing:
        return []
    from recsys.storage import landing_path

    root = landing_path(settings, "")
    if root.protocol != "file":
        raise LandingError(f"the simulator only writes local landing folders, not {settings.landing_url}")
    from recsys.dev.simulator import ensure_days

    return ensure_days(
        root.path, days, preset=settings.sim_preset, scenario=settings.sim_scenario, seed=settings.sim_seed
    )


def _existing_landing_file(settings: Settings, day: dt.date):
    from recsys.storage import landing_path

    path = landing_path(settings, landing_name(day))
    if not path.exists():
        raise LandingError(f"no landing file for {day}: expected {path}")
    return path


def read_landing_day(settings: Settings, day: dt.date) -> pd.DataFrame:
    path = _existing_landing_file(settings, day)
    with path.open("rb") as handle:
        raw = handle.read()
    _check_not_truncated(path, raw)
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype=RAW_DTYPES, keep_default_na=False, na_values=[""])
    except (ValueError, pd.errors.ParserError) as exc:
        raise LandingError(f"landing file {path} is not a valid browsing CSV: {exc}") from exc
    _check_columns(path, [str(c) for c in frame.columns])
    frame = frame[list(RAW_COLUMNS)]
    frame["event_date"] = day
    return frame


def check_landing_day(settings: Settings, day: dt.date) -> None:
    """What the worker checks of a landing file that Snowflake loads itself (COPY INTO, by
    column position): it exists, its header names the raw columns in their order, and it is
    not cut off. Reads the file's first and last few kilobytes only."""
    path = _existing_landing_file(settings, day)
    with path.open("rb") as handle:
        head = handle.read(_PEEK_BYTES)
        handle.seek(0, io.SEEK_END)
        size = handle.tell()
        handle.seek(max(size - _PEEK_BYTES, 0))
        tail = handle.read()
    if b"\n" not in head:
        raise LandingError(f"landing file {path} has no complete header line (it is empty or cut off)")
    header = head.split(b"\n", 1)[0].decode(errors="replace").strip("\r")
    columns = [name.strip().strip('"') for name in header.split(",")]
    _check_columns(path, columns)
    if columns != list(RAW_COLUMNS):
        raise LandingError(f"landing file {path} has the raw columns in another order ({', '.join(columns)}): "
                           f"loaded by position, they must come as {', '.join(RAW_COLUMNS)}")
    if not tail.endswith(b"\n"):
        cut = tail[tail.rfind(b"\n") + 1:]
        raise LandingError(f"landing file {path} is truncated: its last line stops without a line end after "
                           f"{len(cut)} bytes ({cut[:40].decode(errors='replace')!r}...)")


_PEEK_BYTES = 64 * 1024


def _check_columns(path, columns: list[str]) -> None:
    missing = [c for c in RAW_COLUMNS if c not in columns]
    if missing:
        # a renamed column shows up as one missing and one unknown: name both
        unknown = [c for c in columns if c not in RAW_COLUMNS]
        raise LandingError(
            f"landing file {path} lacks column(s) {', '.join(missing)} "
            f"({len(missing)} of the {len(RAW_COLUMNS)} raw columns)"
            + (f"; it has column(s) the raw schema does not name: {', '.join(unknown)}" if unknown else "")
        )


def _check_not_truncated(path, raw: bytes) -> None:
    """Every line of a landing file, the last one too, ends with a line end. pandas reads
    a file cut off mid-row without complaint (the cut row's missing fields become null,
    a cut number a smaller one), so the cut is caught here."""
    if not raw or raw.endswith(b"\n"):
        return
    ended = raw.count(b"\n")  # lines that end, the header's included
    cut = raw[raw.rfind(b"\n") + 1:]
    complete = (f"the last complete row is row {ended - 1} (line {ended})" if ended > 1
                else "no row is complete")
    raise LandingError(
        f"landing file {path} is truncated: line {ended + 1} stops without a line end after "
        f"{len(cut)} bytes ({cut[:40].decode(errors='replace')!r}...); {complete}"
    )


def ingest_window(settings: Settings, start: dt.date, end: dt.date) -> dict:
    """Load every day of [start, end] into the raw table; returns counts per day."""
    from recsys.warehouse import get_warehouse

    days = window_days(start, end)
    for day in simulate_missing_days(settings, days):
        log.info("landing day %s was missing: simulated it (scenario %s)", day, settings.sim_scenario)
    if settings.warehouse == "snowflake" and settings.snowflake_landing_stage:
        return _copy_window(settings, days)
    frames = [read_landing_day(settings, day) for day in days]
    frame = pd.concat(frames, ignore_index=True)
    frame["loaded_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
    rows = get_warehouse(settings).replace_days(frame, days)
    per_day = {day.isoformat(): len(f) for day, f in zip(days, frames)}
    for day, count in per_day.items():
        log.info("loaded %s: %d rows", day, count)
    log.info("raw events for %s..%s replaced: %d rows", start, end, rows)
    return {"rows": rows, "rows_per_day": per_day}


def _copy_window(settings: Settings, days: list[dt.date]) -> dict:
    """The window's days loaded by Snowflake from RECSYS_SNOWFLAKE_LANDING_STAGE (COPY INTO),
    each file checked first, so that a bad file stops the load before any day is replaced."""
    from recsys.warehouse import get_warehouse

    for day in days:
        check_landing_day(settings, day)
    loaded = get_warehouse(settings).copy_days(settings.snowflake_landing_stage, days)
    per_day = {day.isoformat(): loaded[day] for day in days}
    for day, count in per_day.items():
        log.info("loaded %s: %d rows (COPY INTO from @%s)", day, count, settings.snowflake_landing_stage)
    rows = sum(per_day.values())
    log.info("raw events for %s..%s replaced: %d rows", days[0], days[-1], rows)
    return {"rows": rows, "rows_per_day": per_day}
