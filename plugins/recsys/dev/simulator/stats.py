"""The DATA.md quantities, measured on raw browsing rows.

`StatsAccumulator` takes one day (or any chunk of whole sessions) at a time, so the
CLI can summarise months of Coveo-sized files without holding them all in memory;
`summary_stats(df)` is the one-frame shortcut.

Definitions:
* session length counts rows (events) of a session; duration is last - first time;
* product interactions are `event_product` rows with action detail/add/purchase,
  in timestamp order within their session;
* repeat rate is the share of interactions that follow another interaction of the
  same session and have the same SKU as it;
* popularity concentration is the share of interactions on the top 1 % / 5 % of
  the SKUs that have any interaction;
* new SKUs of a day are SKUs with an interaction that no earlier day had (averaged
  over every day but the first).
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from .presets import DAY_MS, INTERACTION_ACTIONS

EVENT_KINDS = ("pageview", "detail", "add", "remove", "purchase")

# Published values for the full reference data set (DATA.md).
REFERENCE = {
    "event_mix": {"pageview": 0.711, "detail": 0.269, "add": 0.0091, "remove": 0.0088,
                  "purchase": 0.0022},
    "pageview_only_session_share": 0.66,
    "session_length": {"mean": 7.3, "median": 3, "p75": 8, "p90": 17, "p95": 27, "p99": 60,
                       "max": 200},
    "session_duration_s": {"median": 22, "p90": 600},
    "popularity": {"top1_share": 0.347, "top5_share": 0.672, "gini": 0.885},
    "interactions_per_sku": {"median": 5, "p90": 351, "max": 180_000},
    "repeat_rate": 0.13,
    "purchase_rate_among_add_sessions": 0.20,
    "sessions_per_day": 54_000,
    "rows_per_day": 400_000,
    "new_skus_per_day": 356,
}

_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()


class StatsAccumulator:
    def __init__(self) -> None:
        self.rows = 0
        self.kind_counts = dict.fromkeys(EVENT_KINDS, 0)
        self.quality = dict.fromkeys(("null_session_ids", "null_event_types", "null_timestamps",
                                      "unknown_event_types", "duplicate_rows"), 0)
        self.rows_with_sku = 0
        self.lengths: list[np.ndarray] = []
        self.durations: list[np.ndarray] = []
        self.pageview_only = 0
        self.sku_counts = pd.Series(dtype="int64")
        self.repeats = 0
        self.followers = 0
        self.add_sessions = 0
        self.add_sessions_with_purchase = 0
        self.skus_by_day: dict[int, set] = {}

    def add(self, df: pd.DataFrame) -> StatsAccumulator:
        self.rows += len(df)
        if not len(df):
            return self
        event_type = df["event_type"]
        action = df["product_action"]
        ts = pd.to_numeric(df["server_timestamp_epoch_ms"], errors="coerce")
        q = self.quality
        q["null_session_ids"] += int(df["session_id_hash"].isna().sum())
        q["null_event_types"] += int(event_type.isna().sum())
        q["null_timestamps"] += int(ts.isna().sum())
        q["unknown_event_types"] += int((event_type.notna()
                                         & ~event_type.isin(["pageview", "event_product"])).sum())
        q["duplicate_rows"] += int(df.duplicated().sum())
        self.rows_with_sku += int(df["product_sku_hash"].notna().sum())

        self.kind_counts["pageview"] += int((event_type == "pageview").sum())
        product = event_type == "event_product"
        for kind in EVENT_KINDS[1:]:
            self.kind_counts[kind] += int((product & (action == kind)).sum())

        ok = df["session_id_hash"].notna() & ts.notna()
        frame = pd.DataFrame({"session": df["session_id_hash"][ok], "ts": ts[ok].astype("int64"),
                              "product": product[ok].fillna(False).astype(bool),
                              "action": action[ok], "sku": df["product_sku_hash"][ok]})
        by_session = frame.groupby("session", sort=False)
        per = by_session.agg(n=("ts", "size"), first=("ts", "min"), last=("ts", "max"),
                             product=("product", "any"))
        self.lengths.append(per["n"].to_numpy())
        self.durations.append((per["last"] - per["first"]).to_numpy() / 1000.0)
        self.pageview_only += int((~per["product"]).sum())

        inter = frame[frame["product"] & frame["action"].isin(INTERACTION_ACTIONS)
                      & frame["sku"].notna()]
        inter = inter.sort_values(["session", "ts"], kind="stable")
        same_session = inter["session"].eq(inter["session"].shift())
        self.followers += int(same_session.sum())
        self.repeats += int((same_session & inter["sku"].eq(inter["sku"].shift())).sum())
        self.sku_counts = self.sku_counts.add(inter["sku"].value_counts(), fill_value=0)

        added = frame.loc[frame["product"] & (frame["action"] == "add"), "session"].unique()
        bought = frame.loc[frame["product"] & (frame["action"] == "purchase"), "session"].unique()
        self.add_sessions += len(added)
        self.add_sessions_with_purchase += int(pd.Index(added).isin(bought).sum())

        day = inter["ts"] // DAY_MS
        for d, skus in inter.groupby(day)["sku"]:
            self.skus_by_day.setdefault(int(d), set()).update(skus)
        return self

    def result(self) -> dict:
        valid_kinds = sum(self.kind_counts.values())
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0)
        durations = np.concatenate(self.durations) if self.durations else np.zeros(0)
        sessions = len(lengths)
        counts = np.sort(self.sku_counts.to_numpy())[::-1]
        days = sorted(self.skus_by_day)
        seen: set = set()
        new_per_day = []
        for i, d in enumerate(days):
            if i:
                new_per_day.append(len(self.skus_by_day[d] - seen))
            seen |= self.skus_by_day[d]
        return {
            "rows": self.rows,
            "sessions": sessions,
            "days": [dt.date.fromordinal(_EPOCH_DAY + d).isoformat() for d in days],
            "event_mix": {k: _ratio(v, valid_kinds) for k, v in self.kind_counts.items()},
            "rows_with_sku_share": _ratio(self.rows_with_sku, self.rows),
            "pageview_only_session_share": _ratio(self.pageview_only, sessions),
            "session_length": _quantiles(lengths, with_mean=True),
            "session_duration_s": _quantiles(durations, keys=("median", "p90")),
            "interactions": int(counts.sum()),
            "skus": len(counts),
            "popularity": {"top1_share": _top_share(counts, 0.01),
                           "top5_share": _top_share(counts, 0.05), "gini": _gini(counts)},
            "interactions_per_sku": _quantiles(counts, keys=("median", "p90", "max")),
            "repeat_rate": _ratio(self.repeats, self.followers),
            "purchase_rate_among_add_sessions": _ratio(self.add_sessions_with_purchase,
                                                       self.add_sessions),
            "skus_per_day": _mean([len(self.skus_by_day[d]) for d in days]),
            "new_skus_per_day": _mean(new_per_day),
            "quality": dict(self.quality),
        }


def summary_stats(df: pd.DataFrame) -> dict:
    """DATA.md quantities of one frame of raw rows (see module docstring)."""
    return StatsAccumulator().add(df).result()


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


_PCT = {"median": 50, "p75": 75, "p90": 90, "p95": 95, "p99": 99}


def _quantiles(x: np.ndarray, keys=("median", "p75", "p90", "p95", "p99", "max"),
               with_mean: bool = False) -> dict:
    if not len(x):
        return dict.fromkeys((("mean",) if with_mean else ()) + tuple(keys))
    out = {"mean": float(np.mean(x))} if with_mean else {}
    for k in keys:
        out[k] = float(np.max(x)) if k == "max" else float(np.percentile(x, _PCT[k]))
    return out


def _top_share(counts_desc: np.ndarray, fraction: float) -> float | None:
    if not len(counts_desc):
        return None
    k = max(1, math.ceil(fraction * len(counts_desc)))
    return float(counts_desc[:k].sum() / counts_desc.sum())


def _gini(counts: np.ndarray) -> float | None:
    if not len(counts) or counts.sum() == 0:
        return None
    x = np.sort(counts.astype(float))
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))
