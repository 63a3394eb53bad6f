"""Offline evaluation: next-item prediction at every position of every session.

For a session [a, b, c, d] the examples are a->b, ab->c, abc->d. Each model ranks
its whole vocabulary after reading the prefix (at most its max_len most recent
items, exactly as the server does); the metrics are HR@k (= Recall@k with one
target) and MRR@k. A target outside the model's vocabulary is a miss.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import Sessions, Vocabulary, pad_right
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


def model_ranks(scorer: Scorer, vocab: Vocabulary, max_len: int, sessions: Sessions) -> np.ndarray:
    """Full-vocabulary 1-based rank of each example's target; 0 where the target is unknown."""
    ids = vocab.encode(sessions.skus)
    targets = ids[target_indices(sessions)]
    ranks = np.zeros(sessions.n_examples, dtype=np.int32)
    budget = max(max_len, _LOGITS_BUDGET // scorer.vocab_size)
    for inputs, rows_cols, examples in _batches(ids, sessions.offsets, max_len, budget):
        items, _ = pad_right(inputs)
        ranks[examples] = scorer.target_ranks(items, rows_cols, targets[examples]).numpy()
    return ranks


def _pieces(ids: np.ndarray, offsets: np.ndarray, max_len: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(input ids, output columns to read, example indices) covering every example once.

    One pass over a session's first max_len items yields all its short prefixes;
    each longer prefix is truncated to its last max_len items and read on its own.
    """
    for s in range(len(offsets) - 1):
        session = ids[offsets[s] : offsets[s + 1]]
        first_example = offsets[s] - s  # examples of earlier sessions: sum of (length - 1)
        head = session[: min(len(session) - 1, max_len)]
        columns = np.arange(len(head), dtype=np.int32)
        yield head, columns, first_example + columns
        for target in range(max_len + 1, len(session)):
            last_column = np.array([max_len - 1], np.int32)
            yield session[target - max_len : target], last_column, np.array([first_example + target - 1])


def _batches(ids, offsets, max_len, budget):
    """Groups pieces into padded scoring calls of bounded size."""
    inputs, rows_cols, examples, size = [], [], [], 0
    for piece, columns, piece_examples in _pieces(ids, offsets, max_len):
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
    top = pa.array(ranking[:k], type=pa.string())
    targets = sessions.skus.take(pa.array(target_indices(sessions)))
    positions = pc.index_in(targets, value_set=top)
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
