"""Export the time-split training set of the run's window to the object store.

The last day of the window is the holdout (test), the day before it
validation, the rest train. Files land under the run's own prefix, so a re-run
overwrites its own dataset and never another run's.

Two ways to get there: by default the events come to the worker (a DataFrame)
and the worker writes the parquet files; with RECSYS_WAREHOUSE=snowflake and
RECSYS_SNOWFLAKE_STORE_STAGE set, Snowflake builds the sessions and unloads each
split with COPY INTO the stage, and only the counts cross to the worker.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import pandas as pd

from recsys.run import SPLITS, RunLayout
from recsys.settings import Settings
from recsys.storage import path_from_uri, read_parquet, write_json, write_parquet
from recsys.warehouse import SnowflakeWarehouse, get_warehouse

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


def _empty_splits_error(start: dt.date, end: dt.date, counts: dict) -> ExportError | None:
    empty = [name for name, n in counts.items() if n == 0]
    if not empty:
        return None
    return ExportError(
        f"window {start}..{end} gives no sessions for split(s) {', '.join(empty)} "
        f"(sessions per split: {counts}); the window needs at least 3 days with product interactions"
    )


def _manifest(start: dt.date, end: dt.date, counts: dict, interactions: int, layout: RunLayout) -> dict:
    return {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "sessions": {k: int(v) for k, v in counts.items()},
        "interactions": int(interactions),
        "uri": layout.dataset,
    }


def export_dataset(settings: Settings, start: dt.date, end: dt.date, layout: RunLayout) -> dict:
    warehouse = get_warehouse(settings)
    if settings.snowflake_store_stage:
        if isinstance(warehouse, SnowflakeWarehouse):
            return _unload_dataset(settings, warehouse, start, end, layout)
        log.warning("RECSYS_SNOWFLAKE_STORE_STAGE is set but RECSYS_WAREHOUSE is %s: exporting through "
                    "the worker", settings.warehouse)
    events = warehouse.query(
        f"select session_id, session_date, position, sku "
        f"from {settings.analytics_schema}.training_events "
        f"where session_date between date '{start.isoformat()}' and date '{end.isoformat()}'"
    )
    sessions = sessions_from_events(events)
    sessions["split"] = split_of(sessions["session_date"], end)
    counts = sessions["split"].value_counts().reindex(SPLITS, fill_value=0).to_dict()
    if error := _empty_splits_error(start, end, counts):
        raise error
    for name in SPLITS:
        part = sessions.loc[sessions["split"] == name, ["session_id", "session_date", "items"]].copy()
        part["session_date"] = part["session_date"].map(lambda d: d.isoformat())
        write_parquet(path_from_uri(settings, RunLayout.split(layout.dataset, name)), part)
        log.info("%s: %d sessions, %d interactions", name, len(part), int(part["items"].map(len).sum()))
    manifest = _manifest(start, end, counts, events.shape[0], layout)
    write_json(path_from_uri(settings, layout.manifest), manifest)
    log.info("dataset written to %s", layout.dataset)
    return manifest


# --- the Snowflake unload path ----------------------------------------------------------
#
# The same rules as sessions_from_events + split_of, in SQL: one row per session, its SKUs
# ordered by position, its date as ISO text, its split from the window's end. The counts
# and every split's COPY INTO read this one query, so the manifest counts what is unloaded.

# Snowflake's largest single unloaded file to S3 (5 GB); the default (16 MB) would make
# SINGLE = TRUE fail on a large split.
UNLOAD_MAX_FILE_SIZE = 5 * 1024**3


def sessions_sql(settings: Settings, start: dt.date, end: dt.date) -> str:
    """One row per session of the window: session_id, session_date (YYYY-MM-DD), items
    (ARRAY of SKUs by position), split and interactions."""
    validation_day = end - dt.timedelta(days=1)
    # a derived table, not a WITH: the query is nested again in each COPY INTO's FROM
    return (
        "select session_id, to_varchar(session_day, 'YYYY-MM-DD') as session_date, items,\n"
        f"    case session_day when date '{end.isoformat()}' then 'test' "
        f"when date '{validation_day.isoformat()}' then 'validation' else 'train' end as split,\n"
        "    interactions\n"
        "from (\n"
        "    select session_id, min(session_date) as session_day,\n"
        "        array_agg(sku) within group (order by position) as items, count(*) as interactions\n"
        f"    from {settings.analytics_schema}.training_events\n"
        f"    where session_date between date '{start.isoformat()}' and date '{end.isoformat()}'\n"
        "    group by session_id\n"
        ") as sessions"
    )


def split_sql(sessions: str, split: str) -> str:
    """The rows of one split file. Quoted lower-case names: Snowflake would upper-case the
    parquet columns otherwise, and the readers look for session_id, session_date, items."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: not one of {', '.join(SPLITS)}")
    return (
        'select session_id as "session_id", session_date as "session_date", items as "items"\n'
        f"from ({sessions})\nwhere split = '{split}'\norder by session_id"
    )


def counts_sql(sessions: str) -> str:
    return (
        "select split, count(*) as n_sessions, sum(interactions) as n_interactions\n"
        f"from ({sessions})\ngroup by split"
    )


def stage_location(settings: Settings, uri: str) -> str:
    """A store URI as a path on the external stage whose URL is RECSYS_STORE_URL."""
    prefix = settings.store_url.rstrip("/") + "/"
    if not uri.startswith(prefix):
        raise ValueError(f"{uri} is not under RECSYS_STORE_URL ({settings.store_url}): "
                         f"the stage {settings.snowflake_store_stage} cannot reach it")
    return f"@{settings.snowflake_store_stage}/{uri[len(prefix):]}"


def unload_sql(location: str, select: str) -> str:
    # SINGLE = TRUE writes exactly the named file (no part suffix), so it lands where
    # RunLayout.split says; OVERWRITE = TRUE lets a re-run of the night replace it.
    return (
        f"copy into {location}\nfrom ({select})\n"
        "file_format = (type = parquet)\nheader = true\nsingle = true\noverwrite = true\n"
        f"max_file_size = {UNLOAD_MAX_FILE_SIZE}"
    )


def _unload_dataset(settings: Settings, warehouse: SnowflakeWarehouse, start: dt.date, end: dt.date,
                    layout: RunLayout) -> dict:
    sessions = sessions_sql(settings, start, end)
    (rows,) = warehouse.execute([counts_sql(sessions)])
    by_split = {str(split).lower(): (int(n), int(m or 0)) for split, n, m in rows}
    counts = {name: by_split.get(name, (0, 0))[0] for name in SPLITS}
    if error := _empty_splits_error(start, end, counts):
        raise error
    unloads = [unload_sql(stage_location(settings, RunLayout.split(layout.dataset, name)), split_sql(sessions, name))
               for name in SPLITS]
    for name, result in zip(SPLITS, warehouse.execute(unloads)):
        # COPY INTO <location> answers rows_unloaded, input_bytes, output_bytes
        log.info("%s: %d sessions, %d interactions; unloaded %s", name, counts[name], by_split[name][1], result)
    manifest = _manifest(start, end, counts, sum(m for _, m in by_split.values()), layout)
    write_json(path_from_uri(settings, layout.manifest), manifest)
    log.info("dataset unloaded to %s", layout.dataset)
    return manifest


def load_sessions(settings: Settings, dataset_uri: str, splits=SPLITS) -> pd.DataFrame:
    """Read back an exported dataset (some or all of its splits)."""
    frame = pd.concat(
        [read_parquet(path_from_uri(settings, RunLayout.split(dataset_uri, split))) for split in splits],
        ignore_index=True,
    )
    # Snowflake unloads an ARRAY column into parquet as JSON text, not as a list
    frame["items"] = frame["items"].map(lambda items: json.loads(items) if isinstance(items, str) else items)
    return frame
