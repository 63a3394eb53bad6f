"""Scenario names, scale presets and the shape parameters of the browsing simulator.

Scale (sessions, catalogue size, churn) changes between presets; the shape of a
session (event mix, lengths, timing, how the next product is chosen) is shared, so
every preset keeps the ratios of the reference data set described in DATA.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

SCENARIOS = ("steady", "popularity_shift", "catalog_churn", "broken_feed")

# SKU birth days are counted from this date; any day before or after it works.
EPOCH = dt.date(2026, 1, 1)

# Product actions that make up a session's interaction sequence (what models train on).
INTERACTION_ACTIONS = ("detail", "add", "purchase")

DAY_MS = 86_400_000
# A new session starts after 30 minutes of inactivity, so gaps inside one stay below it.
MAX_GAP_MS = 29 * 60 * 1000


@dataclass(frozen=True)
class Preset:
    """How big one simulated day is."""

    name: str
    sessions_per_day: int
    n_skus: int  # live catalogue on any day; as many SKUs retire as are born
    new_skus_per_day: int
    n_categories: int
    n_pages: int  # non-product pages: home, cart, checkout, listings, searches
    # Spread of log-popularity. Tuned per preset because the concentration measured
    # on a sample depends on how many interactions the sample holds.
    popularity_sigma: float

    @property
    def sku_lifetime_days(self) -> int:
        return max(1, round(self.n_skus / self.new_skus_per_day))


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", 450, 300, 6, 12, 60, 2.4),
    "demo": Preset("demo", 7_500, 2_500, 15, 60, 600, 2.85),
    "coveo": Preset("coveo", 54_000, 57_500, 356, 600, 20_000, 2.4),
}


@dataclass(frozen=True)
class Shape:
    """Session shape and next-product process shared by all presets."""

    # Session types and lengths.
    product_session_share: float = 0.34  # DATA.md: 66 % of sessions are pageview-only
    # Lengths are 1 + floor(median * exp(sigma * N(0, 1))): a heavy right tail.
    pageview_only_median: float = 1.8
    pageview_only_sigma: float = 0.9
    interactions_median: float = 3.2
    interactions_sigma: float = 1.02
    extra_pageviews_per_interaction: float = 0.55
    max_session_rows: int = 200

    # Time between steps of a session (a product pageview and its detail share one).
    gap_median_s: float = 4.5
    gap_sigma: float = 2.4

    # Next product: repeat the last one, else a mixture of revisiting an earlier one,
    # following the last one's transition list, its category, or global popularity.
    p_repeat: float = 0.10
    p_repeat_after_repeat: float = 0.3
    w_revisit: float = 0.10
    w_transition: float = 0.55
    w_category: float = 0.20
    w_popular: float = 0.15
    neighbours_each_side: int = 4
    neighbour_decay: float = 0.6
    backward_neighbour_weight: float = 0.5
    neighbour_popularity_power: float = 2.0
    # Log-popularity is sigma * z (z standard normal), bending to a gentler slope
    # above the top 1 %: a plain log-normal puts too much on the very top products
    # and too little on the next few percent compared with DATA.md.
    popularity_knee_z: float = 2.33
    popularity_tail_ratio: float = 0.4
    popularity_floor_z: float = -0.5
    ring_noise: float = 0.7
    category_zipf: float = 0.8
    page_zipf: float = 1.0

    # Cart actions, read off repeats of the same product.
    p_add_on_repeat: float = 0.34
    p_purchase_after_add: float = 0.65
    p_remove_after_add: float = 0.95
    p_stray_remove: float = 0.04

    # Scenarios.
    churn_share_of_catalogue: float = 0.25
    churn_log_boost: float = 2.0
    broken_null_rate: float = 0.02
    broken_unknown_type_rate: float = 0.02
    broken_duplicate_rate: float = 0.05
    broken_empty_every: int = 5


SHAPE = Shape()


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def check_scenario(name: str) -> str:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return name
