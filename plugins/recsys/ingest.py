"""Load the run's window of landing files into the warehouse's raw table.

One landing file per day (``browsing_YYYY-MM-DD.csv``, Coveo's browsing schema).
Re-running a day replaces that day's rows, never duplicates them. Locally, a day
with no landing file is produced by the simulator, as an upstream feed would
deliver it; in production a missing file is an error that names it.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from pathlib import Path

import pandas as pd

from recsys.dev import simulator
from recsys.settings import Settings
from recsys.storage import landing_path
from recsys.warehouse import get_warehouse

log = logging.getLogger(__name__)

RAW_DTYPES = {
    "session_id_hash": "string",
    "event_type": "string",
    "product_action": "string",
    "product_sku_hash": "string",
    "server_timestamp_epoch_ms": "Int64",
    "hashed_url": "string",
}


class LandingError(RuntimeError):
    """A landing file is missing or does not have the raw schema."""


def window_days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def landing_name(day: dt.date) -> str:
    return simulator.landing_path(Path("."), day).name


def generate_missing_days(settings: Settings, days: list[dt.date]) -> list[dt.date]:
    """Write the simulator's landing files for days that have none (local only)."""
    root = landing_path(settings, "")
    if root.protocol != "file":
        raise LandingError(f"the simulator only writes local landing folders, not {settings.landing_url}")
    return simulator.ensure_days(
        Path(root.path), days, preset=settings.sim_preset, scenario=settings.sim_scenario, seed=settings.sim_seed
    )


def read_landing_day(settings: Settings, day: dt.date) -> pd.DataFrame:
    path = landing_path(settings, landing_name(day))
    if not path.exists():
        raise LandingError(f"no landing file for {day}: expected {path}")
    with path.open("rb") as handle:
        raw = handle.read()
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype=RAW_DTYPES, keep_default_na=False, na_values=[""])
    except (ValueError, pd.errors.ParserError) as exc:
        raise LandingError(f"landing file {path} is not a valid browsing CSV: {exc}") from exc
    missing = [c for c in simulator.RAW_COLUMNS if c not in frame.columns]
    if missing:
        raise LandingError(f"landing file {path} lacks column(s) {', '.join(missing)}")
    frame = frame[list(simulator.RAW_COLUMNS)]
    frame["event_date"] = day
    return frame


def ingest_window(settings: Settings, start: dt.date, end: dt.date) -> dict:
    """Load every day of [start, end] into the raw table; returns counts per day."""
    days = window_days(start, end)
    if settings.sim_generate_missing:
        generated = generate_missing_days(settings, days)
        for day in generated:
            log.info("landing day %s was missing: simulated it (scenario %s)", day, settings.sim_scenario)
    frames = [read_landing_day(settings, day) for day in days]
    frame = pd.concat(frames, ignore_index=True)
    frame["loaded_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
    rows = get_warehouse(settings).replace_days(frame, days)
    per_day = {day.isoformat(): len(f) for day, f in zip(days, frames)}
    for day, count in per_day.items():
        log.info("loaded %s: %d rows", day, count)
    log.info("raw events for %s..%s replaced: %d rows", start, end, rows)
    return {"rows": rows, "rows_per_day": per_day}
