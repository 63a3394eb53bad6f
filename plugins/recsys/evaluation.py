"""Offline evaluation shared by the model gate and ``make bench``: simple baselines fitted
on a run's train split, and next-item metrics with bootstrap intervals over sessions.

Examples follow the training image's protocol: for a test session [a, b, c, d] they
are a->b, ab->c, abc->d, keyed by (session_id, position of the target). A model's
answer is ranked: 1..k where the target is in its top k, 0 for a miss.

Baselines (all fitted on the same split as the model):

- ``most_popular``: the split's most interacted-with items;
- ``recent_popular``: the same, on the split's last day only;
- ``transitions``: next-item counts after the prefix's last item (a repeat of the last
  item counts as a transition to itself), topped up with the most popular items;
- ``session_knn``: SKNN (Ludewig & Jannach 2018): the 100 past sessions most similar
  to the prefix (cosine over item sets) vote for their items with their similarity.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import numpy as np
import pandas as pd

BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95
LENGTH_SLICES = (("prefix 1", 1, 1), ("prefix 2-4", 2, 4), ("prefix 5+", 5, 10**9))
# A target outside the items that make up this share of the split's interactions is long-tail.
HEAD_SHARE = 0.8


def examples(test: pd.DataFrame) -> pd.DataFrame:
    """One row per next-item example of the test sessions: session_id, position, prefix, target."""
    rows = []
    for session_id, items in zip(test["session_id"], test["items"]):
        items = list(items)
        for position in range(1, len(items)):
            rows.append((str(session_id), position, items[:position], items[position]))
    return pd.DataFrame(rows, columns=["session_id", "position", "prefix", "target"])


class Baseline(Protocol):
    name: str

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]: ...


def _popular(item_lists: Iterable[Sequence[str]]) -> list[str]:
    counts = Counter(item for items in item_lists for item in items)
    return [item for item, _ in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))]


def _top_up(ranked: list[str], fallback: list[str], k: int) -> list[str]:
    if len(ranked) >= k:
        return ranked[:k]
    seen = set(ranked)
    return ranked + [item for item in fallback[: k + len(ranked)] if item not in seen][: k - len(ranked)]


@dataclass
class MostPopular:
    ranking: list[str]
    name: str = "most_popular"

    @classmethod
    def fit(cls, train: pd.DataFrame) -> MostPopular:
        return cls(_popular(train["items"]))

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        return self.ranking[:k]


@dataclass
class RecentPopular(MostPopular):
    name: str = "recent_popular"

    @classmethod
    def fit(cls, train: pd.DataFrame) -> RecentPopular:
        last_day = train["session_date"].max()
        return cls(_popular(train.loc[train["session_date"] == last_day, "items"]))


@dataclass
class Transitions:
    successors: dict[str, list[str]]
    popular: list[str]
    name: str = "transitions"

    @classmethod
    def fit(cls, train: pd.DataFrame) -> Transitions:
        counts: dict[str, Counter] = defaultdict(Counter)
        for items in train["items"]:
            for current, following in zip(items, items[1:]):
                counts[current][following] += 1
        successors = {
            item: [nxt for nxt, _ in sorted(c.items(), key=lambda pair: (-pair[1], pair[0]))]
            for item, c in counts.items()
        }
        return cls(successors, _popular(train["items"]))

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        return _top_up(list(self.successors.get(prefix[-1], [])[:k]), self.popular, k)


@dataclass
class SessionKNN:
    """Sessions as rows of a sparse session x item matrix; a prefix's neighbours are the
    ``neighbours`` past sessions with the highest cosine similarity of item sets."""

    matrix: object  # scipy.sparse.csr_matrix, sessions x items, binary
    items: np.ndarray
    index: dict[str, int]
    popular: list[str]
    neighbours: int = 100
    name: str = "session_knn"

    @classmethod
    def fit(cls, train: pd.DataFrame, neighbours: int = 100) -> SessionKNN:
        from scipy import sparse

        items = np.array(sorted({item for listed in train["items"] for item in listed}), dtype=object)
        index = {item: column for column, item in enumerate(items)}
        rows, columns = _incidence(train["items"], index)
        matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(train), len(items)))
        matrix.data[:] = 1.0  # an item twice in a session counts once
        return cls(matrix, items, index, _popular(train["items"]), neighbours)

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        return self.recommend_many([prefix], k)[0]

    def recommend_many(self, prefixes: Sequence[Sequence[str]], k: int, chunk: int = 512) -> list[list[str]]:
        from scipy import sparse

        out: list[list[str]] = []
        session_sizes = np.asarray(self.matrix.sum(axis=1)).ravel()
        for start in range(0, len(prefixes), chunk):
            part = prefixes[start:start + chunk]
            rows, columns = _incidence(part, self.index)
            queries = sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(part), len(self.items)))
            queries.data[:] = 1.0
            query_sizes = np.asarray(queries.sum(axis=1)).ravel()
            overlap = (queries @ self.matrix.T).tocsr()
            for row in range(len(part)):
                lo, hi = overlap.indptr[row], overlap.indptr[row + 1]
                if lo == hi:
                    out.append(self.popular[:k])
                    continue
                sessions = overlap.indices[lo:hi]
                similarity = overlap.data[lo:hi] / np.sqrt(query_sizes[row] * session_sizes[sessions])
                if len(sessions) > self.neighbours:
                    keep = np.argpartition(-similarity, self.neighbours)[: self.neighbours]
                    sessions, similarity = sessions[keep], similarity[keep]
                scores = similarity @ self.matrix[sessions]
                ranked = np.lexsort((self.items, -scores))[: k]
                out.append(_top_up([self.items[i] for i in ranked if scores[i] > 0], self.popular, k))
        return out


def _incidence(item_lists: Iterable[Sequence[str]], index: dict[str, int]) -> tuple[list[int], list[int]]:
    rows, columns = [], []
    for row, listed in enumerate(item_lists):
        for item in listed:
            column = index.get(item)
            if column is not None:
                rows.append(row)
                columns.append(column)
    return rows, columns


def fit_baselines(train: pd.DataFrame) -> list[Baseline]:
    return [MostPopular.fit(train), RecentPopular.fit(train), Transitions.fit(train), SessionKNN.fit(train)]


def recommend_all(baseline: Baseline, prefixes: Sequence[Sequence[str]], k: int) -> list[list[str]]:
    many = getattr(baseline, "recommend_many", None)
    if many is not None:
        return many(list(prefixes), k)
    return [baseline.recommend(prefix, k) for prefix in prefixes]


def ranks_of(recommendations: Sequence[Sequence[str]], targets: Sequence[str]) -> np.ndarray:
    """1-based rank of each target in its list; 0 where it is not there."""
    out = np.zeros(len(targets), dtype=np.int32)
    for row, (listed, target) in enumerate(zip(recommendations, targets)):
        try:
            out[row] = list(listed).index(target) + 1
        except ValueError:
            pass
    return out


def ranks_from_predictions(values: pd.Series) -> np.ndarray:
    """The training job's ranks (null outside the top k) as 0-for-a-miss ranks."""
    return values.astype("Float64").fillna(0).to_numpy(dtype=np.int32)


# metrics -------------------------------------------------------------------------


def per_example(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    hit = (ranks >= 1) & (ranks <= k)
    safe = np.maximum(ranks, 1)
    return {
        "hr": hit.astype(float),
        "mrr": np.where(hit, 1.0 / safe, 0.0),
        "ndcg": np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0),
    }


def bootstrap_weights(session_ids: Sequence[str], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
    """Resample sessions (not examples: a session's examples are not independent).
    Returns the (samples x sessions) multiplicity matrix and each example's session number."""
    codes, uniques = pd.factorize(pd.Series(session_ids))
    n = len(uniques)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=samples) if n else np.zeros((samples, 0))
    return weights, codes


def replicate_means(values: np.ndarray, weights: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The mean of per-example ``values`` in each bootstrap replicate."""
    sessions = weights.shape[1]
    sums = np.bincount(codes, weights=values, minlength=sessions)
    counts = np.bincount(codes, minlength=sessions)
    return (weights @ sums) / np.maximum(weights @ counts, 1)


def interval(replicates: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """Every model's ranks on one set of examples, with their metrics and intervals."""

    examples: pd.DataFrame
    ranks: dict[str, np.ndarray]
    k: int
    weights: np.ndarray
    codes: np.ndarray
    long_tail: np.ndarray | None = None

    @classmethod
    def of(cls, examples: pd.DataFrame, ranks: dict[str, np.ndarray], k: int, *, train: pd.DataFrame | None = None,
           samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Comparison:
        weights, codes = bootstrap_weights(examples["session_id"], samples, seed)
        long_tail = long_tail_mask(train, examples["target"]) if train is not None else None
        return cls(examples, ranks, k, weights, codes, long_tail)

    def metric(self, model: str, name: str) -> np.ndarray:
        return per_example(self.ranks[model], self.k)[name]

    def replicates(self, model: str, name: str, against: str | None = None) -> np.ndarray:
        """Bootstrap replicates of a model's mean metric, or of its paired difference with another."""
        values = self.metric(model, name)
        if against is not None:
            values = values - self.metric(against, name)
        return replicate_means(values, self.weights, self.codes)

    def summary(self, model: str, name: str, against: str | None = None) -> dict[str, float]:
        values = self.metric(model, name) - (self.metric(against, name) if against else 0.0)
        low, high = interval(self.replicates(model, name, against))
        return {"mean": float(values.mean()) if len(values) else 0.0, "low": low, "high": high}

    def strongest(self, candidates: Iterable[str], name: str = "mrr") -> str:
        return max(candidates, key=lambda model: float(self.metric(model, name).mean()))

    def slices(self) -> dict[str, np.ndarray]:
        """Boolean masks over the examples: prefix length, long-tail targets, repeats."""
        lengths = self.examples["prefix"].map(len).to_numpy()
        masks = {name: (lengths >= low) & (lengths <= high) for name, low, high in LENGTH_SLICES}
        masks["target in session"] = np.array(
            [target in prefix for prefix, target in zip(self.examples["prefix"], self.examples["target"])], dtype=bool
        )
        if self.long_tail is not None:
            masks["long-tail target"] = self.long_tail
        return masks

    def table(self, models: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per model: HR / MRR / NDCG @k with intervals, overall and by slice (MRR)."""
        rows = []
        masks = self.slices()
        for model in models or list(self.ranks):
            row = {"model": model, "examples": len(self.examples)}
            for name in ("hr", "mrr", "ndcg"):
                s = self.summary(model, name)
                row[f"{name}@{self.k}"] = s["mean"]
                row[f"{name}@{self.k} 95% CI"] = f"[{s['low']:.3f}, {s['high']:.3f}]"
            mrr = self.metric(model, "mrr")
            for label, mask in masks.items():
                row[f"mrr@{self.k} {label}"] = float(mrr[mask].mean()) if mask.any() else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)


def long_tail_mask(train: pd.DataFrame, targets: Sequence[str]) -> np.ndarray:
    """Targets outside the head: the most popular items that make up HEAD_SHARE of interactions."""
    counts = Counter(item for items in train["items"] for item in items)
    ordered = sorted(counts.values(), reverse=True)
    total, running, head_size = sum(ordered), 0, 0
    for count in ordered:
        if running >= HEAD_SHARE * total:
            break
        running += count
        head_size += 1
    head = {item for item, _ in counts.most_common(head_size)}
    return np.array([target not in head for target in targets], dtype=bool)


def list_metrics(recommendations: Sequence[Sequence[str]], train: pd.DataFrame) -> dict[str, float]:
    """Catalogue coverage@k (share of the split's items ever recommended) and popularity bias
    (mean share of the split's interactions held by a recommended item)."""
    counts = Counter(item for items in train["items"] for item in items)
    total = sum(counts.values()) or 1
    recommended = [item for listed in recommendations for item in listed]
    return {
        "coverage": len(set(recommended) & set(counts)) / max(len(counts), 1),
        "popularity_bias": float(np.mean([counts.get(item, 0) / total for item in recommended])) if recommended else 0.0,
    }
