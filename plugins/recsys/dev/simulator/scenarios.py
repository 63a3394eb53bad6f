"""Scenarios: how a day departs from the steady process.

A scenario changes only the day being generated; the days around it stay steady.

* steady           - the base process.
* popularity_shift - popularity is reshuffled among the live SKUs, so the day's top
                     sellers are mostly different products.
* catalog_churn    - a product line launches: extra brand-new SKUs (a quarter of the
                     catalogue, never seen on any other day) with boosted popularity
                     draw a large share of the day's interactions.
* broken_feed      - the delivered file is damaged: nulls in session ids, event types
                     and timestamps, unknown event types and duplicated rows. On days
                     whose ordinal (date.toordinal()) is divisible by 5 the file has
                     no rows at all, only the header.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from .catalog import (Catalog, base_catalog_attributes, category_weights, popularity,
                      ring_position)
from .presets import SHAPE, check_scenario, get_preset
from .randomness import STREAM_SCENARIO, day_rng, hex_ids

UNKNOWN_EVENT_TYPES = ("event_unknown", "click", "PAGEVIEW", "impression")


@lru_cache(maxsize=4)
def catalog_for_day(preset_name: str, seed: int, ordinal: int, scenario: str = "steady") -> Catalog:
    """The live catalogue of a day as the scenario shapes it (cached)."""
    preset = get_preset(preset_name)
    check_scenario(scenario)
    attrs = base_catalog_attributes(preset, seed, ordinal)
    if scenario == "popularity_shift":
        rng = day_rng(seed, preset.name, ordinal, STREAM_SCENARIO)
        attrs["score"] = rng.permutation(attrs["score"])
    elif scenario == "catalog_churn":
        rng = day_rng(seed, preset.name, ordinal, STREAM_SCENARIO)
        launch = _launched_skus(preset, seed, ordinal, len(attrs["numbers"]), rng)
        attrs = {k: np.concatenate([attrs[k], launch[k]]) for k in attrs}
    # broken_feed damages the file, not the process: its catalogue is the steady one.
    return Catalog(**attrs, n_categories=preset.n_categories)


def _launched_skus(preset, seed: int, ordinal: int, n_live: int,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = max(1, round(SHAPE.churn_share_of_catalogue * n_live))
    # Their hashes live in a namespace of their own, so no other day can have them.
    namespace = f"{seed}:{preset.name}:launch:{ordinal}"
    z = rng.standard_normal(n)
    return {
        "numbers": np.full(n, -1, dtype=np.int64),
        "skus": hex_ids(f"sku:{namespace}", range(n)),
        "urls": hex_ids(f"product-page:{namespace}", range(n)),
        "category": rng.choice(preset.n_categories, size=n,
                               p=category_weights(preset.n_categories)).astype(np.int64),
        "position": ring_position(z, rng.standard_normal(n)),
        "score": popularity(z, preset.popularity_sigma) * np.exp(SHAPE.churn_log_boost),
    }


def is_empty_broken_day(ordinal: int) -> bool:
    return ordinal % SHAPE.broken_empty_every == 0


def break_feed(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Damage a generated day the way a faulty upstream export would."""
    n = len(frame)
    if n == 0:
        return frame
    # Duplicates land right after the row they copy, as a replayed batch would.
    dup = rng.choice(n, size=max(1, round(SHAPE.broken_duplicate_rate * n)), replace=False)
    order = np.concatenate([np.arange(n, dtype=float), dup + 0.5])
    out = pd.concat([frame, frame.iloc[dup]], ignore_index=True)
    out = out.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)

    out["server_timestamp_epoch_ms"] = out["server_timestamp_epoch_ms"].astype("Int64")
    m = len(out)
    for column in ("session_id_hash", "event_type", "server_timestamp_epoch_ms"):
        rows = rng.choice(m, size=max(1, round(SHAPE.broken_null_rate * m)), replace=False)
        out.loc[rows, column] = None
    rows = rng.choice(m, size=max(1, round(SHAPE.broken_unknown_type_rate * m)), replace=False)
    out.loc[rows, "event_type"] = rng.choice(UNKNOWN_EVENT_TYPES, size=len(rows))
    return out
