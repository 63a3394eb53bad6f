"""The live catalogue of one day: SKUs, popularity, categories, transition lists.

Every SKU has a stable number. Numbers are born in order, `new_skus_per_day` a day
counted from EPOCH (negative numbers before it), and each SKU stays live for
`sku_lifetime_days`, so the live catalogue keeps a constant size while new SKUs keep
appearing. A SKU's attributes (hash, category, popularity, position inside its
category) are a pure function of (seed, preset, number), so they are the same from
whichever day they are looked at.

Transition lists are built per day over the live SKUs: inside each category the SKUs
sit on a ring ordered by a noisy copy of their popularity (bestsellers are viewed
alongside bestsellers, which keeps the heavy popularity tail intact along a session),
and a SKU leads on to its nearest ring neighbours: forward ones more than backward
ones, near ones more than far ones, popular ones more than unpopular ones. A list
changes only when a SKU next to it is born or retires, so the structure a model
learns stays valid from one day to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .presets import EPOCH, SHAPE, Preset
from .randomness import hex_ids, keyed_normal, keyed_uniform, name_key

# Salt streams of the per-SKU attributes.
_CATEGORY, _POSITION, _POPULARITY = 11, 12, 13


@dataclass(eq=False)
class Catalog:
    """Live SKUs of one day; local index i refers to row i of every array."""

    numbers: np.ndarray  # stable SKU numbers (-1 for one-day scenario SKUs)
    skus: np.ndarray  # 64-hex SKU hashes
    urls: np.ndarray  # 64-hex URL of each product page
    category: np.ndarray  # leaf category id
    position: np.ndarray  # sort key on the category ring
    score: np.ndarray  # unnormalised popularity
    n_categories: int
    # Filled in by __post_init__.
    pop_p: np.ndarray = field(init=False)
    pop_cdf: np.ndarray = field(init=False)
    neighbours: np.ndarray = field(init=False)  # (n, 2h) local indices
    neighbour_p: np.ndarray = field(init=False)  # (n, 2h) row-normalised weights
    neighbour_cdf: np.ndarray = field(init=False)
    has_neighbours: np.ndarray = field(init=False)
    cat_order: np.ndarray = field(init=False)  # local indices sorted by (category, position)
    cat_cum: np.ndarray = field(init=False)  # cumulative popularity along cat_order
    cat_lo: np.ndarray = field(init=False)  # per category: slice of cat_order
    cat_hi: np.ndarray = field(init=False)
    cat_pos: np.ndarray = field(init=False)  # position of each product in cat_order
    has_peers: np.ndarray = field(init=False)  # its category has other products
    _index: dict | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.pop_p = self.score / self.score.sum()
        self.pop_cdf = np.cumsum(self.pop_p)
        self._build_categories()
        self._build_neighbours()

    def __len__(self) -> int:
        return len(self.skus)

    @property
    def index(self) -> dict[str, int]:
        """SKU hash -> local index."""
        if self._index is None:
            self._index = {sku: i for i, sku in enumerate(self.skus)}
        return self._index

    def _build_categories(self) -> None:
        order = np.lexsort((self.position, self.category))
        cats = np.arange(self.n_categories)
        sorted_cats = self.category[order]
        self.cat_order = order
        self.cat_cum = np.cumsum(self.score[order])
        self.cat_lo = np.searchsorted(sorted_cats, cats, side="left")
        self.cat_hi = np.searchsorted(sorted_cats, cats, side="right")
        self.cat_pos = np.empty_like(order)  # position of each product in cat_order
        self.cat_pos[order] = np.arange(len(order))
        self.has_peers = (self.cat_hi - self.cat_lo)[self.category] > 1

    def _build_neighbours(self) -> None:
        h = SHAPE.neighbours_each_side
        order = self.cat_order
        n = len(order)
        start = self.cat_lo[self.category[order]]
        size = self.cat_hi[self.category[order]] - start
        rank = np.arange(n) - start
        offsets = np.array([s * d for d in range(1, h + 1) for s in (1, -1)])
        ring = start[:, None] + (rank[:, None] + offsets[None, :]) % size[:, None]
        nb = np.empty((n, 2 * h), dtype=np.int64)
        nb[order] = order[ring]

        distance = np.abs(offsets)
        direction = np.where(offsets > 0, 1.0, SHAPE.backward_neighbour_weight)
        weight = (SHAPE.neighbour_decay ** (distance - 1) * direction)[None, :]
        weight = weight * self.score[nb] ** SHAPE.neighbour_popularity_power
        # Small categories wrap around onto the SKU itself; that is not a transition.
        weight[nb == np.arange(n)[:, None]] = 0.0
        total = weight.sum(axis=1)
        self.has_neighbours = total > 0
        self.neighbours = nb
        self.neighbour_p = np.divide(weight, total[:, None], out=np.zeros_like(weight),
                                     where=self.has_neighbours[:, None])
        self.neighbour_cdf = np.cumsum(self.neighbour_p, axis=1)

    # Sampling, vectorised over many sessions at once. Category and popularity draws
    # never return the product the session is on: staying on it is the repeat
    # component's job, which keeps the repeat rate the same at every catalogue size.
    def sample_popular(self, u: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        n = np.full(len(u), len(self))
        if exclude is None:
            return np.minimum(np.searchsorted(self.pop_cdf, u, side="right"), n - 1)
        return _draw_excluding(self.pop_cdf, np.zeros(len(u), np.int64), n, exclude, u)

    def sample_in_category(self, last: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A product of each last product's category, by popularity, other than it."""
        cats = self.category[last]
        pos = _draw_excluding(self.cat_cum, self.cat_lo[cats], self.cat_hi[cats],
                              self.cat_pos[last], u)
        return self.cat_order[pos]

    def sample_neighbour(self, last: np.ndarray, u: np.ndarray) -> np.ndarray:
        cdf = self.neighbour_cdf[last]
        col = np.minimum((cdf <= u[:, None]).sum(axis=1), cdf.shape[1] - 1)
        return self.neighbours[last, col]

    def category_peers(self, i: int) -> np.ndarray:
        """Local indices of the other products of i's category."""
        cat = self.category[i]
        members = self.cat_order[self.cat_lo[cat]:self.cat_hi[cat]]
        return members[members != i]


def _draw_excluding(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, skip: np.ndarray,
                    u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws from positions lo..hi-1 of a cumulative weight array, each
    leaving out position `skip` (weights renormalised over the rest)."""
    def cum_before(pos):
        return np.where(pos > 0, cum[np.maximum(pos - 1, 0)], 0.0)

    base = cum_before(lo)
    skip_before = cum_before(skip)
    skip_mass = cum[skip] - skip_before
    x = u * (cum[hi - 1] - base - skip_mass)
    x = np.where(x >= skip_before - base, x + skip_mass, x)
    pos = np.clip(np.searchsorted(cum, base + x, side="right"), lo, hi - 1)
    # Rounding can land exactly on the skipped position; step to a neighbour.
    on_skip = pos == skip
    pos[on_skip] = np.where(skip[on_skip] + 1 < hi[on_skip], skip[on_skip] + 1, skip[on_skip] - 1)
    return pos


def category_weights(n_categories: int) -> np.ndarray:
    # A few big categories and a long tail of small ones.
    w = np.arange(1, n_categories + 1, dtype=float) ** -SHAPE.category_zipf
    return w / w.sum()


def popularity(z: np.ndarray, sigma: float) -> np.ndarray:
    """Heavy-tailed popularity weights from standard normal draws."""
    knee = SHAPE.popularity_knee_z
    tail = SHAPE.popularity_tail_ratio * sigma
    z = np.maximum(z, SHAPE.popularity_floor_z)
    return np.exp(sigma * np.minimum(z, knee) + tail * np.maximum(z - knee, 0.0))


def ring_position(z: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Sort key on the category ring: products of similar popularity sit close
    together (bestsellers are viewed alongside bestsellers), with some noise."""
    return z + SHAPE.ring_noise * noise


def live_numbers(preset: Preset, ordinal: int) -> np.ndarray:
    """Numbers of the SKUs live on the day with this ordinal."""
    day = ordinal - EPOCH.toordinal()
    b = preset.new_skus_per_day
    return np.arange((day - preset.sku_lifetime_days + 1) * b, (day + 1) * b, dtype=np.int64)


def birth_offset(preset: Preset, numbers: np.ndarray) -> np.ndarray:
    """Birth day of each SKU number, in days from EPOCH."""
    return np.floor_divide(numbers, preset.new_skus_per_day)


def sku_attributes(preset: Preset, seed: int, numbers: np.ndarray) -> dict[str, np.ndarray]:
    salt = (seed, name_key(preset.name))
    z = keyed_normal(numbers, *salt, _POPULARITY)
    cum = np.cumsum(category_weights(preset.n_categories))
    category = np.minimum(np.searchsorted(cum, keyed_uniform(numbers, *salt, _CATEGORY)),
                          preset.n_categories - 1)
    return {
        "numbers": numbers,
        "skus": hex_ids(f"sku:{seed}:{preset.name}", numbers),
        "urls": hex_ids(f"product-page:{seed}:{preset.name}", numbers),
        "category": category.astype(np.int64),
        "position": ring_position(z, keyed_normal(numbers, *salt, _POSITION)),
        "score": popularity(z, preset.popularity_sigma),
    }


def base_catalog_attributes(preset: Preset, seed: int, ordinal: int) -> dict[str, np.ndarray]:
    return sku_attributes(preset, seed, live_numbers(preset, ordinal))
