"""Export the time-split training set of the run's window to the object store.

The last day of the window is the holdout (test), the day before it
validation, the rest train. Files land under the run's own prefix, so a re-run
overwrites its own dataset and never another run's.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from recsys.run import SPLITS, RunLayout
from recsys.settings import Settings
from recsys.storage import path_from_uri, read_parquet, write_json, write_parquet
from recsys.warehouse import get_warehouse

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The window does not hold enough data for a time split."""


def split_of(session_date: pd.Series, end: dt.date) -> np.ndarray:
    validation_day = end - dt.timedelta(days=1)
    return np.select([session_date == end, session_date == validation_day], ["test", "validation"], default="train")


def sessions_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """Long (session, position, sku) rows -> one row per session with its item list."""
    events = events.sort_values(["session_id", "position"])
    grouped = events.groupby("session_id", sort=True)
    return pd.DataFrame(
        {
            "session_id": grouped["session_id"].first().astype(str),
            "session_date": grouped["session_date"].first().map(lambda d: pd.Timestamp(d).date()),
            "items": grouped["sku"].agg(list),
        }
    ).reset_index(drop=True)


def export_dataset(settings: Settings, start: dt.date, end: dt.date, layout: RunLayout) -> dict:
    warehouse = get_warehouse(settings)
    events = warehouse.query(
        f"select session_id, session_date, position, sku "
        f"from {settings.analytics_schema}.training_events "
        f"where session_date between date '{start.isoformat()}' and date '{end.isoformat()}'"
    )
    sessions = sessions_from_events(events)
    sessions["split"] = split_of(sessions["session_date"], end)
    counts = sessions["split"].value_counts().reindex(SPLITS, fill_value=0).to_dict()
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise ExportError(
            f"window {start}..{end} gives no sessions for split(s) {', '.join(empty)} "
            f"(sessions per split: {counts}); the window needs at least 3 days with product interactions"
        )
    for name in SPLITS:
        part = sessions.loc[sessions["split"] == name, ["session_id", "session_date", "items"]].copy()
        part["session_date"] = part["session_date"].map(lambda d: d.isoformat())
        write_parquet(path_from_uri(settings, RunLayout.split(layout.dataset, name)), part)
        log.info("%s: %d sessions, %d interactions", name, len(part), int(part["items"].map(len).sum()))
    manifest = {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "sessions": {k: int(v) for k, v in counts.items()},
        "interactions": int(events.shape[0]),
        "uri": layout.dataset,
    }
    write_json(path_from_uri(settings, layout.manifest), manifest)
    log.info("dataset written to %s", layout.dataset)
    return manifest


def load_sessions(settings: Settings, dataset_uri: str, splits=SPLITS) -> pd.DataFrame:
    """Read back an exported dataset (some or all of its splits)."""
    return pd.concat(
        [read_parquet(path_from_uri(settings, RunLayout.split(dataset_uri, split))) for split in splits],
        ignore_index=True,
    )
