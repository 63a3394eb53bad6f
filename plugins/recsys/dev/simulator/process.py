"""One simulated day of browsing: sessions, their rows and timestamps.

A day is a set of sessions. About a third of them look at products: each such
session has a number of product interactions (chosen by `chain.sample_sequences`),
a few extra non-product pageviews slotted in between, and cart removals after some
adds. The rest only view non-product pages (home, listings, searches).

Rows follow the raw feed: a `detail` event always comes with a `pageview` of the
same product page at the same millisecond; `add`/`remove`/`purchase` are product
events of their own; pageviews of non-product pages carry no SKU.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
import pandas as pd

from recsys.ingest import RAW_COLUMNS

from .chain import ADD, PURCHASE, sample_sequences
from .presets import DAY_MS, MAX_GAP_MS, SHAPE, check_scenario, get_preset
from .randomness import STREAM_BROKEN, STREAM_ITEMS, STREAM_SESSIONS, day_rng, hex_ids
from .scenarios import break_feed, catalog_for_day, is_empty_broken_day

# Row kinds.
PAGE_VIEW, PRODUCT_VIEW, DETAIL_ROW, ADD_ROW, REMOVE_ROW, PURCHASE_ROW = range(6)
_EVENT_TYPE = np.array(["pageview", "pageview"] + ["event_product"] * 4, dtype=object)
_ACTION = np.array([None, None, "detail", "add", "remove", "purchase"], dtype=object)
# Fixed pages of the non-product page pool.
HOME, CART, CHECKOUT = 0, 1, 2

# More traffic in the (UTC) evening than at night.
_HOURS = np.arange(24)
_HOUR_P = 1.0 + 0.6 * np.cos(2 * np.pi * (_HOURS - 20) / 24)
_HOUR_P /= _HOUR_P.sum()


def empty_frame() -> pd.DataFrame:
    """A day with no rows, with the raw columns and dtypes."""
    columns = {c: pd.Series([], dtype=object) for c in RAW_COLUMNS}
    columns["server_timestamp_epoch_ms"] = pd.Series([], dtype="int64")
    return pd.DataFrame(columns)


def as_date(day) -> dt.date:
    if isinstance(day, dt.datetime):
        return day.date()
    if isinstance(day, dt.date):
        return day
    if isinstance(day, str):
        return dt.date.fromisoformat(day)
    raise TypeError(f"expected a date, got {day!r}")


def generate_day(day: dt.date, *, preset: str = "tiny", scenario: str = "steady",
                 seed: int = 7) -> pd.DataFrame:
    """The raw browsing rows of one UTC day, sorted by time.

    Deterministic for (day, preset, scenario, seed) and independent of any other
    day. Scenarios change only this day (see `recsys.dev.simulator.scenarios`); a
    `broken_feed` day whose ordinal (day.toordinal()) is divisible by 5 has no rows,
    other `broken_feed` days carry nulls, unknown event types and duplicated rows.
    """
    day = as_date(day)
    p = get_preset(preset)
    check_scenario(scenario)
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    ordinal = day.toordinal()
    if scenario == "broken_feed" and is_empty_broken_day(ordinal):
        return empty_frame()

    catalog = catalog_for_day(p.name, seed, ordinal, scenario)
    rng = day_rng(seed, p.name, ordinal, STREAM_SESSIONS)
    item_rng = day_rng(seed, p.name, ordinal, STREAM_ITEMS)

    n_sessions = int(rng.poisson(p.sessions_per_day))
    is_product = rng.random(n_sessions) < SHAPE.product_session_share
    product_ids = np.flatnonzero(is_product)
    n_interactions = _heavy_tail(rng, len(product_ids), SHAPE.interactions_median,
                                 SHAPE.interactions_sigma, SHAPE.max_session_rows // 2 - 1)
    seq, labels = sample_sequences(catalog, n_interactions, item_rng)

    parts = [_product_rows(product_ids, n_interactions, seq, labels, catalog, rng, item_rng),
             _page_only_rows(np.flatnonzero(~is_product), rng)]
    rows = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    order = np.lexsort((rows["key"], rows["session"]))
    rows = {k: v[order] for k, v in rows.items()}
    pages = page_pool(p.name, seed)
    plain = rows["kind"] == PAGE_VIEW
    rows["page"][plain] = _sample_pages(rng, int(plain.sum()), len(pages))
    rows["page"][rows["kind"] == REMOVE_ROW] = CART
    rows["page"][rows["kind"] == PURCHASE_ROW] = CHECKOUT

    ts = _timestamps(rows["session"], rows["kind"], n_sessions, day, rng)
    order = np.lexsort((np.arange(len(ts)), rows["session"], ts))

    sessions = hex_ids(f"session:{seed}:{p.name}:{ordinal}", range(n_sessions))
    kind, item, page = rows["kind"][order], rows["item"][order], rows["page"][order]
    has_sku = item >= 0
    sku = np.full(len(kind), None, dtype=object)
    sku[has_sku] = catalog.skus[item[has_sku]]
    url = np.empty(len(kind), dtype=object)
    on_product_page = np.isin(kind, (PRODUCT_VIEW, DETAIL_ROW, ADD_ROW))
    url[on_product_page] = catalog.urls[item[on_product_page]]
    url[~on_product_page] = pages[page[~on_product_page]]

    frame = pd.DataFrame({
        "session_id_hash": sessions[rows["session"][order]],
        "event_type": _EVENT_TYPE[kind],
        "product_action": _ACTION[kind],
        "product_sku_hash": sku,
        "server_timestamp_epoch_ms": ts[order].astype(np.int64),
        "hashed_url": url,
    }, columns=list(RAW_COLUMNS))
    if scenario == "broken_feed":
        frame = break_feed(frame, day_rng(seed, p.name, ordinal, STREAM_BROKEN))
    return frame


def _heavy_tail(rng: np.random.Generator, n: int, median: float, sigma: float,
                cap: int) -> np.ndarray:
    """1 + floor(median * lognormal(sigma)), capped: many short, a few long."""
    x = 1 + np.floor(median * np.exp(sigma * rng.standard_normal(n)))
    return np.minimum(x, cap).astype(np.int64)


def _rows(session, key, kind, item) -> dict[str, np.ndarray]:
    return {"session": np.asarray(session, np.int64), "key": np.asarray(key, float),
            "kind": np.asarray(kind, np.int8), "item": np.asarray(item, np.int64),
            "page": np.full(len(session), -1, np.int64)}


def _product_rows(session_ids, n_interactions, seq, labels, catalog, rng, item_rng):
    """Rows of the product sessions; interaction k sits at sort key 4k+1..4k+3."""
    width = seq.shape[1]
    used = np.arange(width)[None, :] < n_interactions[:, None]
    s_idx, k = np.nonzero(used)
    session, item, label = session_ids[s_idx], seq[s_idx, k], labels[s_idx, k]
    next_label = np.zeros_like(labels)
    next_label[:, :-1] = labels[:, 1:]
    next_label = next_label[s_idx, k]

    detail = label == 0
    parts = [
        _rows(session[detail], 4 * k[detail] + 1, np.full(detail.sum(), PRODUCT_VIEW), item[detail]),
        _rows(session[detail], 4 * k[detail] + 2, np.full(detail.sum(), DETAIL_ROW), item[detail]),
        _rows(session[~detail], 4 * k[~detail] + 2,
              np.where(label[~detail] == ADD, ADD_ROW, PURCHASE_ROW), item[~detail]),
    ]
    # Most adds that are not bought straight away are taken out of the cart again.
    removed = (label == ADD) & (next_label != PURCHASE) & (item_rng.random(len(label)) < SHAPE.p_remove_after_add)
    parts.append(_rows(session[removed], 4 * k[removed] + 3,
                       np.full(removed.sum(), REMOVE_ROW), item[removed]))

    # Extra non-product pageviews, each before some interaction (or after the last).
    cap = np.maximum(SHAPE.max_session_rows - 1 - 2 * n_interactions, 0)
    extras = np.minimum(rng.poisson(SHAPE.extra_pageviews_per_interaction * n_interactions), cap)
    owner = np.repeat(np.arange(len(session_ids)), extras)
    slot = np.floor(rng.random(len(owner)) * (n_interactions[owner] + 1))
    parts.append(_rows(session_ids[owner], 4 * slot, np.full(len(owner), PAGE_VIEW),
                       np.full(len(owner), -1)))

    # Some sessions empty a cart filled on an earlier visit.
    stray = np.flatnonzero(item_rng.random(len(session_ids)) < SHAPE.p_stray_remove)
    slot = np.floor(item_rng.random(len(stray)) * (n_interactions[stray] + 1))
    parts.append(_rows(session_ids[stray], 4 * slot, np.full(len(stray), REMOVE_ROW),
                       catalog.sample_popular(item_rng.random(len(stray)))))
    return {k2: np.concatenate([p[k2] for p in parts]) for k2 in parts[0]}


def _page_only_rows(session_ids, rng):
    lengths = _heavy_tail(rng, len(session_ids), SHAPE.pageview_only_median,
                          SHAPE.pageview_only_sigma, SHAPE.max_session_rows)
    session = np.repeat(session_ids, lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    key = np.arange(len(session)) - starts
    return _rows(session, key, np.full(len(session), PAGE_VIEW), np.full(len(session), -1))


@lru_cache(maxsize=8)
def page_pool(preset_name: str, seed: int) -> np.ndarray:
    """URLs of the non-product pages; 0 home, 1 cart, 2 checkout, then listings."""
    return hex_ids(f"page:{seed}:{preset_name}", range(get_preset(preset_name).n_pages))


def _sample_pages(rng, n: int, n_pages: int) -> np.ndarray:
    # Home, listings and searches by a Zipf law; cart and checkout are reached
    # through cart actions, not plain browsing.
    ranks = np.arange(1, n_pages + 1, dtype=float)
    w = ranks ** -SHAPE.page_zipf
    w[[CART, CHECKOUT]] = 0.0
    return rng.choice(n_pages, size=n, p=w / w.sum())


def _timestamps(session, kind, n_sessions, day, rng) -> np.ndarray:
    """Epoch ms of each row; rows are grouped by session, in session order."""
    n = len(session)
    first = np.r_[True, session[1:] != session[:-1]] if n else np.zeros(0, bool)
    # A detail shares its pageview's timestamp; every other row is a new step.
    gap = SHAPE.gap_median_s * 1000 * np.exp(SHAPE.gap_sigma * rng.standard_normal(n))
    gap = np.clip(np.round(gap), 200, MAX_GAP_MS)
    gap[first | (kind == DETAIL_ROW)] = 0
    total = np.cumsum(gap)
    group = np.cumsum(first) - 1
    offset = total - total[np.flatnonzero(first)][group]

    duration = np.zeros(n_sessions)
    np.maximum.at(duration, session, offset)
    # A session must fit inside its day; squeeze the rare one that would not.
    squeeze = np.minimum(1.0, (DAY_MS - 1) / np.maximum(duration, 1))
    offset = np.floor(offset * squeeze[session])
    duration = np.floor(duration * squeeze)

    hour = rng.choice(24, size=n_sessions, p=_HOUR_P)
    start = hour * 3_600_000 + rng.integers(0, 3_600_000, size=n_sessions)
    start = np.minimum(start, DAY_MS - 1 - duration)
    day_start = (day.toordinal() - dt.date(1970, 1, 1).toordinal()) * DAY_MS
    return (day_start + start[session] + offset).astype(np.int64)
