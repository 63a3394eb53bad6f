"""Offline evaluation: next-item prediction at every position of every session.

For a session [a, b, c, d] the examples are a->b, ab->c, abc->d. Each model reads
the prefix exactly as the server reads a request (`data.model_input`: SKUs outside
its vocabulary dropped, then at most its max_len most recent items) and ranks its
whole vocabulary; a prefix with no known SKU is answered, as the server answers
it, with the model's most popular items. The metrics are HR@k (= Recall@k with
one target) and MRR@k. A target the model cannot recommend is a miss.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import FIRST_ITEM, Sessions, Vocabulary, pad_right
from .model import Scorer

# Per scoring call: at most this many logits (examples x vocabulary) and input rows,
# which bounds memory for large vocabularies and for long sequences alike.
_LOGITS_BUDGET = 32_000_000
_MAX_ROWS = 2048


def target_indices(sessions: Sessions) -> np.ndarray:
    """Positions in sessions.skus of every example's target (all but each session's first item)."""
    is_target = np.ones(sessions.n_interactions, dtype=bool)
    is_target[sessions.offsets[:-1]] = False
    return np.flatnonzero(is_target)


def example_positions(sessions: Sessions) -> np.ndarray:
    """Per example, the index of its target within the session (= length of its prefix)."""
    starts = np.repeat(sessions.offsets[:-1], sessions.lengths)
    return (np.arange(sessions.n_interactions) - starts)[target_indices(sessions)]


def model_ranks(
    scorer: Scorer, vocab: Vocabulary, max_len: int, sessions: Sessions, popular: Sequence[str]
) -> np.ndarray:
    """1-based rank of each example's target in the model's answer to its prefix; 0 for a miss.

    A prefix with known SKUs is ranked over the whole vocabulary (0 where the target is
    unknown); a prefix without any is answered with `popular`, the model's popularity
    ranking (0 where the target is not in it).
    """
    ids = vocab.encode(sessions.skus)
    target_at = target_indices(sessions)
    targets = ids[target_at]
    ranks = np.zeros(sessions.n_examples, dtype=np.int32)
    known = ids >= FIRST_ITEM
    # Known items before each position, within its session.
    before = np.cumsum(known) - known
    before = before - np.repeat(before[sessions.offsets[:-1]], sessions.lengths)
    n_read = before[target_at]
    cold = np.flatnonzero(n_read == 0)
    if len(cold):
        ranks[cold] = _ranks_in(popular, sessions.skus.take(pa.array(target_at[cold])))
    budget = max(max_len, _LOGITS_BUDGET // scorer.vocab_size)
    for inputs, rows_cols, examples in _batches(ids, known, n_read, sessions.offsets, max_len, budget):
        items, _ = pad_right(inputs)
        ranks[examples] = scorer.target_ranks(items, rows_cols, targets[examples]).numpy()
    return ranks


def _pieces(
    ids: np.ndarray, known: np.ndarray, n_read: np.ndarray, offsets: np.ndarray, max_len: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(input ids, output columns to read, example indices) covering every example with a
    non-empty prefix once.

    An example whose prefix holds n known items reads the session's known items
    [n - max_len, n) (`data.model_input` of the prefix). One pass over a session's first
    max_len known items yields all its short prefixes; each longer one is read on its own.
    """
    for s in range(len(offsets) - 1):
        start, end = offsets[s], offsets[s + 1]
        first_example = start - s  # examples of earlier sessions: sum of (length - 1)
        counts = n_read[first_example : first_example + end - start - 1]
        examples = first_example + np.flatnonzero(counts)
        if not len(examples):
            continue
        kept = ids[start:end][known[start:end]]
        counts = counts[counts > 0]
        short = counts <= max_len
        if short.any():
            head = kept[: min(int(counts[short].max()), max_len)]
            yield head, (counts[short] - 1).astype(np.int32), examples[short]
        last_column = np.array([max_len - 1], np.int32)
        for n, example in zip(counts[~short].tolist(), examples[~short].tolist()):
            yield kept[n - max_len : n], last_column, np.array([example])


def _batches(ids, known, n_read, offsets, max_len, budget):
    """Groups pieces into padded scoring calls of bounded size."""
    inputs, rows_cols, examples, size = [], [], [], 0
    for piece, columns, piece_examples in _pieces(ids, known, n_read, offsets, max_len):
        rows = np.full(len(columns), len(inputs), dtype=np.int32)
        inputs.append(piece)
        rows_cols.append(np.stack([rows, columns], axis=1))
        examples.append(piece_examples)
        size += len(columns)
        if size >= budget or len(inputs) >= _MAX_ROWS:
            yield inputs, np.concatenate(rows_cols), np.concatenate(examples)
            inputs, rows_cols, examples, size = [], [], [], 0
    if inputs:
        yield inputs, np.concatenate(rows_cols), np.concatenate(examples)


def popularity_ranks(ranking: list[str], sessions: Sessions, k: int) -> np.ndarray:
    """Rank of each target in the fixed most-popular list; 0 where it is not in the top k."""
    return _ranks_in(ranking[:k], sessions.skus.take(pa.array(target_indices(sessions))))


def _ranks_in(ranking: Sequence[str], targets: pa.Array) -> np.ndarray:
    """1-based position of each target SKU in ranking; 0 where it is not there."""
    positions = pc.index_in(targets, value_set=pa.array(list(ranking), type=pa.string()))
    return np.asarray(pc.fill_null(pc.add(positions, 1), 0), dtype=np.int32)


def metrics(ranks: np.ndarray, k: int, prefix: str = "") -> dict[str, float]:
    hits = (ranks >= 1) & (ranks <= k)
    reciprocal = np.where(hits, 1.0 / np.maximum(ranks, 1), 0.0)
    n = max(len(ranks), 1)
    return {
        f"{prefix}hr_at_{k}": float(hits.sum() / n),
        f"{prefix}mrr_at_{k}": float(reciprocal.sum() / n),
    }


def top_k_or_null(ranks: np.ndarray, k: int) -> pa.Array:
    """Ranks within the top k as int32, null otherwise (for the predictions file)."""
    hits = (ranks >= 1) & (ranks <= k)
    return pa.array(ranks, type=pa.int32(), mask=~hits)
