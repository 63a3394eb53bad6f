"""How a session moves from one product interaction to the next.

Given the interactions so far x_1..x_t (t >= 1, last = x_t), the next product is

* the last one again with probability r (r is higher right after a repeat, which is
  how add-to-cart and purchase sequences come about), otherwise, sharing 1 - r:
* revisit: one of x_1..x_{t-1}, each position equally likely;
* transition: one of the last product's transition-list neighbours;
* category: another product of the last one's category, by popularity;
* popular: any other live product, by popularity.

Components that do not apply (no earlier position, no neighbours, no other product
in the category, a product the catalogue does not know) drop out and the others are
rescaled. Only the repeat and revisit components return to the last product, so the
repeat rate does not depend on how big or concentrated the catalogue is. Cart actions are labels read off the product
sequence afterwards and never feed back into it, so the sequence alone follows this
rule exactly; `mixture_weights` is shared with the oracle so both use the same rule.
"""

from __future__ import annotations

import numpy as np

from .catalog import Catalog
from .presets import SHAPE

REPEAT, REVISIT, TRANSITION, CATEGORY, POPULAR = range(5)
DETAIL, ADD, PURCHASE = 0, 1, 2


def mixture_weights(after_repeat, can_revisit, has_neighbours, has_peers) -> np.ndarray:
    """(n, 5) probabilities of REPEAT, REVISIT, TRANSITION, CATEGORY, POPULAR."""
    r = np.where(np.asarray(after_repeat, dtype=bool), SHAPE.p_repeat_after_repeat, SHAPE.p_repeat)
    rest = np.column_stack([
        SHAPE.w_revisit * np.asarray(can_revisit, dtype=float),
        SHAPE.w_transition * np.asarray(has_neighbours, dtype=float),
        SHAPE.w_category * np.asarray(has_peers, dtype=float),
        np.full(len(r), SHAPE.w_popular),
    ])
    rest *= ((1.0 - r) / rest.sum(axis=1))[:, None]
    return np.column_stack([r, rest])


def sample_sequences(catalog: Catalog, lengths: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Product sequences (local indices) and cart labels, one row per session.

    Sessions advance together one step at a time, so each step is a handful of
    vectorised draws over every session still running. Unused cells are -1.
    """
    n_sessions = len(lengths)
    width = int(lengths.max()) if n_sessions else 0
    seq = np.full((n_sessions, width), -1, dtype=np.int64)
    labels = np.full((n_sessions, width), DETAIL, dtype=np.int8)
    if not n_sessions:
        return seq, labels
    # Sessions start from a popular product.
    seq[:, 0] = catalog.sample_popular(rng.random(n_sessions))
    for t in range(1, width):
        rows = np.flatnonzero(lengths > t)
        last = seq[rows, t - 1]
        after_repeat = (last == seq[rows, t - 2]) if t >= 2 else np.zeros(len(rows), bool)
        weights = mixture_weights(after_repeat, np.full(len(rows), t >= 2),
                                  catalog.has_neighbours[last], catalog.has_peers[last])
        u_component, u_pick, u_label = rng.random((3, len(rows)))
        component = np.minimum((np.cumsum(weights, axis=1) <= u_component[:, None]).sum(axis=1),
                               POPULAR)

        nxt = last.copy()  # REPEAT
        m = component == REVISIT
        if m.any():
            earlier = np.floor(u_pick[m] * (t - 1)).astype(np.int64)
            nxt[m] = seq[rows[m], earlier]
        m = component == TRANSITION
        nxt[m] = catalog.sample_neighbour(last[m], u_pick[m])
        m = component == CATEGORY
        nxt[m] = catalog.sample_in_category(last[m], u_pick[m])
        m = component == POPULAR
        nxt[m] = catalog.sample_popular(u_pick[m], exclude=last[m])
        seq[rows, t] = nxt

        # Looking at the same product again may be an add to cart; looking again
        # right after adding it may be the purchase.
        repeat = nxt == last
        after_add = labels[rows, t - 1] == ADD
        labels[rows[repeat & after_add & (u_label < SHAPE.p_purchase_after_add)], t] = PURCHASE
        labels[rows[repeat & ~after_add & (u_label < SHAPE.p_add_on_repeat)], t] = ADD
    return seq, labels
