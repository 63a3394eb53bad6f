"""The Bayes-optimal next-item distribution of the simulated process.

The simulator knows the rule that picks each next product interaction
(`chain.py`): it depends only on the SKU sequence so far and on the day's catalogue,
so the exact distribution of the next SKU given a prefix can be written down. No
model can rank better on average, which makes it the ceiling for HR@k and MRR@k on
simulated data.

The distribution is  a * popularity + (sparse extra mass), where the extra mass sits
on the last product's category, its transition list and the products of the prefix
(and takes the last product's popularity share back out, as the popularity draw
never returns to it).
Keeping it in that form makes ranking one target cheap even for the full-size
catalogue. SKUs of the prefix that the catalogue does not know (for instance from a
real feed) still receive their repeat/revisit mass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .catalog import Catalog
from .chain import CATEGORY, POPULAR, REPEAT, REVISIT, TRANSITION, mixture_weights
from .presets import check_scenario, get_preset
from .process import as_date
from .scenarios import catalog_for_day


@dataclass
class NextItem:
    """P(next = catalogue SKU i) = popular * pop_p[i] + extra (summed over idx == i);
    P(next = an unknown SKU s) = outside[s]."""

    popular: float
    idx: np.ndarray  # local indices with extra mass (unique)
    extra: np.ndarray
    outside: dict[str, float]


def _catalog(day, preset: str, scenario: str, seed: int) -> Catalog:
    check_scenario(scenario)
    # A broken feed damages the file, not the process behind it.
    if scenario == "broken_feed":
        scenario = "steady"
    return catalog_for_day(get_preset(preset).name, seed, as_date(day).toordinal(), scenario)


def next_item(catalog: Catalog, prefix: list[str]) -> NextItem:
    if not prefix:  # a session's first product comes from global popularity
        return NextItem(1.0, np.zeros(0, np.int64), np.zeros(0), {})
    index = catalog.index
    t = len(prefix)
    last = index.get(prefix[-1])
    known = last is not None
    w = mixture_weights([t >= 2 and prefix[-1] == prefix[-2]], [t >= 2],
                        [known and bool(catalog.has_neighbours[last])],
                        [known and bool(catalog.has_peers[last])])[0]

    idx, mass, outside = [], [], {}

    def put(sku: str, p: float) -> None:
        i = index.get(sku)
        if i is None:
            outside[sku] = outside.get(sku, 0.0) + p
        else:
            idx.append(np.array([i]))
            mass.append(np.array([p]))

    put(prefix[-1], w[REPEAT])
    if w[REVISIT] > 0:
        for sku, count in Counter(prefix[:-1]).items():
            put(sku, w[REVISIT] * count / (t - 1))
    if w[TRANSITION] > 0:
        idx.append(catalog.neighbours[last])
        mass.append(w[TRANSITION] * catalog.neighbour_p[last])
    if w[CATEGORY] > 0:
        peers = catalog.category_peers(last)
        idx.append(peers)
        mass.append(w[CATEGORY] * catalog.score[peers] / catalog.score[peers].sum())
    popular = float(w[POPULAR])
    if known:
        # The popularity draw leaves out the last product: scale the rest up and
        # take the last product's share back out.
        popular /= 1.0 - catalog.pop_p[last]
        idx.append(np.array([last]))
        mass.append(np.array([-popular * catalog.pop_p[last]]))
    if not idx:
        return NextItem(popular, np.zeros(0, np.int64), np.zeros(0), outside)
    unique, inverse = np.unique(np.concatenate(idx), return_inverse=True)
    extra = np.bincount(inverse, weights=np.concatenate(mass), minlength=len(unique))
    return NextItem(popular, unique, extra, outside)


def oracle_next_item_probs(prefix: list[str], day, *, preset: str = "tiny",
                           scenario: str = "steady", seed: int = 7) -> dict[str, float]:
    """P(next product interaction = sku | the session's interaction SKUs so far).

    `prefix` lists the SKUs of the session's product interactions (detail, add,
    purchase events, in time order); an empty prefix gives the first-item
    distribution. The values sum to 1.
    """
    catalog = _catalog(day, preset, scenario, seed)
    nxt = next_item(catalog, list(prefix))
    p = nxt.popular * catalog.pop_p
    np.add.at(p, nxt.idx, nxt.extra)
    probs = dict(zip(catalog.skus.tolist(), p.tolist()))
    probs.update(nxt.outside)
    # Rounding can leave a tiny negative on a product the process cannot pick.
    return {sku: v for sku, v in probs.items() if v > 1e-15}


def _rank(catalog: Catalog, pop_sorted: np.ndarray, nxt: NextItem, target: str) -> float:
    """1-based rank of target in the next-item distribution (inf if impossible).
    Ties rank in the target's favour; with continuous popularity they are rare."""
    i = catalog.index.get(target)
    if i is None:
        p_target = nxt.outside.get(target, 0.0)
    else:
        hit = np.flatnonzero(nxt.idx == i)
        p_target = nxt.popular * catalog.pop_p[i] + (nxt.extra[hit[0]] if len(hit) else 0.0)
    if p_target <= 0:
        return float("inf")
    # Products without extra mass beat the target when popular * pop_p > p_target.
    threshold = p_target / nxt.popular
    plain = len(pop_sorted) - np.searchsorted(pop_sorted, threshold, side="right")
    plain -= int((catalog.pop_p[nxt.idx] > threshold).sum())
    boosted = int((nxt.popular * catalog.pop_p[nxt.idx] + nxt.extra > p_target).sum())
    outside = sum(1 for v in nxt.outside.values() if v > p_target)
    return 1.0 + plain + boosted + outside


def oracle_metrics(sessions: list[list[str]], day, *, k: int = 20, preset: str = "tiny",
                   scenario: str = "steady", seed: int = 7) -> dict:
    """HR@k and MRR@k of the oracle over every next-item position.

    Each session is its list of interaction SKUs; position i >= 1 asks for items[i]
    given items[:i]. Returns hr_at_k, mrr_at_k (None without positions), k and the
    number of positions.
    """
    catalog = _catalog(day, preset, scenario, seed)
    pop_sorted = np.sort(catalog.pop_p)
    hits = rr = 0.0
    positions = 0
    for items in sessions:
        items = list(items)
        for i in range(1, len(items)):
            rank = _rank(catalog, pop_sorted, next_item(catalog, items[:i]), items[i])
            positions += 1
            if rank <= k:
                hits += 1
                rr += 1.0 / rank
    return {"hr_at_k": hits / positions if positions else None,
            "mrr_at_k": rr / positions if positions else None,
            "k": k, "positions": positions}
