"""Export: the last day is the holdout, the day before validation, the rest train."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from recsys.export import ExportError, export_dataset, load_sessions, sessions_from_events, split_of
from recsys.run import RunLayout
from recsys.settings import Settings
from recsys.storage import path_from_uri, read_json

END = dt.date(2026, 3, 5)


def test_split_by_session_date():
    dates = pd.Series([dt.date(2026, 3, d) for d in (1, 3, 4, 5, 5)])
    assert list(split_of(dates, END)) == ["train", "train", "validation", "test", "test"]


def test_sessions_keep_item_order_by_position():
    events = pd.DataFrame(
        {"session_id": ["b", "a", "a", "b", "a"], "session_date": [END] * 5,
         "position": [2, 3, 1, 1, 2], "sku": ["b2", "a3", "a1", "b1", "a2"]}
    )
    sessions = sessions_from_events(events)
    assert sessions["items"].tolist() == [["a1", "a2", "a3"], ["b1", "b2"]]


class FakeWarehouse:
    def __init__(self, frame):
        self.frame = frame

    def query(self, sql):
        assert "training_events" in sql and "2026-03-01" in sql and "2026-03-05" in sql
        return self.frame


def _events(days):
    rows = []
    for i, day in enumerate(days):
        for pos, sku in enumerate(["x", "y", "z"], start=1):
            rows.append({"session_id": f"s{i}", "session_date": day, "position": pos, "sku": f"{sku}{i}"})
    return pd.DataFrame(rows)


def test_export_writes_three_splits_under_the_run_prefix(recsys_home, monkeypatch):
    days = [dt.date(2026, 3, d) for d in (1, 2, 3, 4, 5, 5)]
    monkeypatch.setattr("recsys.export.get_warehouse", lambda s: FakeWarehouse(_events(days)))
    settings = Settings.from_env()
    layout = RunLayout.of(settings, "run-1")
    manifest = export_dataset(settings, dt.date(2026, 3, 1), END, layout)
    assert manifest["sessions"] == {"train": 3, "validation": 1, "test": 2}
    root = Path(settings.store_url.removeprefix("file://")) / "runs" / "run-1" / "dataset"
    assert manifest["uri"] == root.as_uri()
    assert read_json(path_from_uri(settings, layout.manifest))["window_end"] == "2026-03-05"
    test = pd.read_parquet(root / "test" / "sessions.parquet")
    assert sorted(test["session_date"]) == ["2026-03-05", "2026-03-05"]
    assert list(test.iloc[0]["items"]) == ["x4", "y4", "z4"]


def test_a_window_without_a_validation_day_is_refused(recsys_home, monkeypatch):
    days = [dt.date(2026, 3, d) for d in (1, 2, 5)]
    monkeypatch.setattr("recsys.export.get_warehouse", lambda s: FakeWarehouse(_events(days)))
    with pytest.raises(ExportError, match="no sessions for split.*validation"):
        settings = Settings.from_env()
        export_dataset(settings, dt.date(2026, 3, 1), END, RunLayout.of(settings, "run-2"))


def test_load_sessions_reads_items_unloaded_by_snowflake_as_json_text(recsys_home):
    """COPY INTO ... parquet writes an ARRAY column as JSON text; a worker-written split
    holds a list. Both read back as lists of SKUs."""
    settings = Settings.from_env()
    layout = RunLayout.of(settings, "run-3")
    unloaded = pd.DataFrame({"session_id": ["s1", "s2"], "session_date": ["2026-03-05"] * 2,
                             "items": ['[\n  "a1",\n  "a2"\n]', '["b1"]']})
    written = pd.DataFrame({"session_id": ["s0"], "session_date": ["2026-03-04"], "items": [["c1", "c2"]]})
    for split, frame in (("test", unloaded), ("validation", written)):
        path = Path(RunLayout.split(layout.dataset, split).removeprefix("file://"))
        path.parent.mkdir(parents=True)
        frame.to_parquet(path, index=False)
    sessions = load_sessions(settings, layout.dataset, splits=("validation", "test"))
    assert [list(items) for items in sessions["items"]] == [["c1", "c2"], ["a1", "a2"], ["b1"]]
