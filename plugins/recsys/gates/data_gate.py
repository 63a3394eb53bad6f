"""Data gate: drift and quality of this window against the champion's window.

Drift on raw SKU ids is slow and falsely alarming (there are tens of
thousands, and new ones every day), so interactions are bucketed: the top-K
SKUs of the reference by popularity keep their id, the rest become __other__.
The drift compares only the days the champion has not seen (else the whole
window); with no champion yet, only quality is checked.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Dataset
from evidently.metrics import MeanValue, MinValue, MissingValueCount, RowCount, ValueDrift
from evidently.tests import eq, gte, lte

from recsys.gates.report import GateResult, run_report

OTHER = "__other__"
TOP_K_BUCKETS = 50
MIN_INTERACTIONS = 100

DEFINITION = DataDefinition(
    id_column="session_id",
    categorical_columns=["sku_bucket"],
    numerical_columns=["is_new_sku", "session_length"],
)


def interactions(sessions: pd.DataFrame, top_skus: set[str], known_skus: set[str]) -> pd.DataFrame:
    """One row per product interaction, with the features the gate watches."""
    exploded = sessions[["session_id", "items"]].explode("items", ignore_index=True)
    skus = exploded["items"]
    lengths = sessions.set_index("session_id")["items"].map(len)
    return pd.DataFrame(
        {
            "session_id": exploded["session_id"],
            "sku_bucket": skus.where(skus.isin(top_skus), OTHER).map(lambda s: s if s == OTHER else s[:12]),
            "is_new_sku": (~skus.isin(known_skus)).astype(int) if known_skus else 0,
            "session_length": exploded["session_id"].map(lengths).astype(int),
        }
    )


def evaluate(
    current_sessions: pd.DataFrame,
    reference_sessions: pd.DataFrame | None,
    reference_window_end: dt.date | None,
    *,
    max_drift: float,
    max_new_sku_share: float,
    report_dir: Path,
    volume_ratio: tuple[float, float] = (0.5, 2.0),
) -> GateResult:
    quality = [
        RowCount(tests=[gte(MIN_INTERACTIONS)]),
        MissingValueCount(column="session_id", tests=[eq(0)]),
        MissingValueCount(column="sku_bucket", tests=[eq(0)]),
        MinValue(column="session_length", tests=[gte(2)]),
    ]
    if reference_sessions is None:
        current = interactions(current_sessions, set(), set())
        summary = {"reference": None, "compared_days": "whole window"}
        return run_report("data", quality, _dataset(current), None, report_dir, summary)

    counts = reference_sessions["items"].explode().value_counts()
    top = set(counts.index[:TOP_K_BUCKETS])
    known = set(counts.index)
    new_days = current_sessions
    if reference_window_end is not None:
        unseen = current_sessions["session_date"].map(_as_date) > reference_window_end
        if unseen.any():
            new_days = current_sessions[unseen]
    current = interactions(new_days, top, known)
    reference = interactions(reference_sessions, top, known)
    # Volume: the new days' interactions against what the champion's days held on average.
    # A day with a tenth of the usual traffic (a partial export, a broken tracker) is not a
    # normal day even if its shares look normal.
    compared_days = sorted({str(d) for d in new_days["session_date"]})
    reference_days = max(reference_sessions["session_date"].nunique(), 1)
    expected = len(reference) / reference_days * len(compared_days)
    low, high = volume_ratio
    checks = [
        RowCount(tests=[gte(max(MIN_INTERACTIONS, low * expected)), lte(high * expected)]),
        *quality[1:],
        ValueDrift(column="sku_bucket", method="jensenshannon", threshold=max_drift),
        MeanValue(column="is_new_sku", tests=[lte(max_new_sku_share)]),
    ]
    summary = {
        "compared_days": compared_days,
        "expected_interactions": round(expected),
        "volume_ratio": len(current) / expected if expected else None,
        "current_interactions": len(current),
        "reference_interactions": len(reference),
        "new_sku_share": float(current["is_new_sku"].mean()) if len(current) else None,
    }
    return run_report("data", checks, _dataset(current), _dataset(reference), report_dir, summary)


def _dataset(frame: pd.DataFrame) -> Dataset:
    return Dataset.from_pandas(frame, data_definition=DEFINITION)


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
