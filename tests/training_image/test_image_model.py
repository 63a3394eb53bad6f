"""The session mixture: its transition table, the leave-one-out counts it trains with,
and a saved model that keeps the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from recsys_model.contract import Hyperparameters  # noqa: E402
from recsys_model.model import FOLLOW, REPEAT, REVISIT, build_model, transition_table  # noqa: E402

A, B, C, D = 2, 3, 4, 5  # item indices (0 padding, 1 unknown)


def _table(sessions: list[list[int]], vocab_size: int = 6, width: int = 3):
    ids = np.concatenate([np.asarray(s, np.int32) for s in sessions])
    offsets = np.cumsum([0] + [len(s) for s in sessions])
    return transition_table(ids, offsets, vocab_size, width)


def test_the_transition_table_counts_next_items_most_frequent_first():
    successors, counts, totals = _table([[A, B, A, C], [A, B], [A, A, D], [1, A, 1]])
    assert successors[A].tolist() == [B, C, D] and counts[A].tolist() == [2, 1, 1]
    # a repeat (A, A) is the repeat source's, an unknown item (1) is nobody's
    assert totals[A] == 4 and totals[B] == 1 and totals[1] == 0
    assert successors[B].tolist() == [A, 0, 0] and counts[B].tolist() == [1, 0, 0]


def test_the_table_keeps_the_most_frequent_next_items_when_it_must_cut():
    successors, counts, totals = _table([[A, D], [A, D], [A, C], [A, B], [A, B], [A, B]], width=2)
    assert successors[A].tolist() == [B, D] and counts[A].tolist() == [3, 2]
    assert totals[A] == 6  # the share of a kept item is still out of every transition


def _network(table, vocab_size: int = 6):
    hp = Hyperparameters(model_version="v", embedding_dim=4, hidden_units=4, successors=3)
    keras.utils.set_random_seed(0)
    return build_model(vocab_size, hp, table)


def test_training_leaves_the_scored_transition_out_of_its_count():
    """A transition seen once in train is only that example: judged in training, the
    follow source must not count it, or the network learns to trust a memorised count."""
    network = _network(_table([[A, B], [A, C], [A, C]]))
    items, positions = np.array([[A]], np.int32), np.array([[0, 0]], np.int32)
    served = network.probabilities(items, positions).numpy()[0]  # the full table: B followed A once in 3
    assert served.sum() == pytest.approx(1.0, abs=1e-4)
    judged = np.exp(network.log_likelihood(items, positions, np.array([B], np.int32)).numpy()[0])
    assert judged < served[B]  # B's one transition left out: only the other sources speak for B
    judged_c = np.exp(network.log_likelihood(items, positions, np.array([C], np.int32)).numpy()[0])
    assert judged_c > judged  # C keeps one of its two transitions


def test_the_follow_source_of_a_singleton_transition_vanishes_when_it_is_the_target():
    network = _network(_table([[A, B]]))
    items = np.array([[A]], np.int32)
    positions = np.array([[0, 0]], np.int32)
    state, weights, *_ = network._read(items, positions, targets=np.array([B], np.int32))
    # with its only transition left out, A has been followed by nothing: the source drops out
    assert float(weights.numpy()[0, FOLLOW]) < 1e-6
    state, weights, *_ = network._read(items, positions)
    assert float(weights.numpy()[0, FOLLOW]) > 1e-3


def test_revisit_and_repeat_apply_only_when_there_is_something_to_go_back_to():
    network = _network(_table([[A, B, C]]))
    _, weights, *_ = network._read(np.array([[A, 0]], np.int32), np.array([[0, 0]], np.int32))
    assert float(weights.numpy()[0, REVISIT]) < 1e-6 and float(weights.numpy()[0, REPEAT]) > 1e-3
    _, weights, *_ = network._read(np.array([[A, B]], np.int32), np.array([[0, 1]], np.int32))
    assert float(weights.numpy()[0, REVISIT]) > 1e-3


def test_a_saved_model_keeps_its_transition_table(tmp_path: Path):
    network = _network(_table([[A, B, C], [A, B]]))
    items, positions = np.array([[A, B]], np.int32), np.array([[0, 1]], np.int32)
    before = network.probabilities(items, positions).numpy()
    network.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert loaded.next_items.numpy()[A].tolist() == [B, 0, 0]
    np.testing.assert_allclose(loaded.probabilities(items, positions).numpy(), before, rtol=1e-5)
