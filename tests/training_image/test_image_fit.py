"""Early stopping: Keras' EarlyStopping on the validation MRR@k the report writes into logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from image_synthetic import make_sessions, write_channel
from recsys_model.contract import Hyperparameters
from recsys_model.data import build_vocabulary, item_counts, read_channel, training_sequences


def _fit_with_scripted_validation(tmp_path: Path, monkeypatch, val_ranks: list[int], **hyperparameters):
    """Train a tiny model while validation scores rank 1/val_ranks[epoch] (MRR = 1 / rank);
    returns the fit result, the weights after each epoch and the weights fit left."""
    import keras

    from recsys_model import fit as fit_module
    from recsys_model.model import Scorer, build_model

    write_channel(tmp_path / "t", make_sessions(30, seed=2, prefix="t"))
    sessions = read_channel(tmp_path / "t", "t")
    counts = item_counts(sessions)
    vocab = build_vocabulary(counts, 1)
    hp = Hyperparameters(
        model_version="v", embedding_dim=4, hidden_units=4, max_len=4, batch_size=8, top_k=5, **hyperparameters
    )
    keras.utils.set_random_seed(3)
    network = build_model(vocab.size, hp)
    sequences = training_sequences(vocab.encode(sessions.skus), sessions.offsets, hp.max_len)

    weights_after: list[list[np.ndarray]] = []

    def scripted_ranks(scorer, vocab, max_len, validation, popular):
        weights_after.append([w.copy() for w in network.get_weights()])
        return np.array([val_ranks[len(weights_after) - 1]], dtype=np.int32)

    monkeypatch.setattr(fit_module, "model_ranks", scripted_ranks)
    result = fit_module.fit(
        network, Scorer(network), vocab, sequences, sequences, sessions, [sku for sku, _ in counts], hp
    )
    return result, weights_after, network.get_weights()


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_stops_after_patience_epochs_without_gain_and_keeps_the_best(tmp_path: Path, monkeypatch):
    # MRR 0.5, 1.0, 0.33, 0.25, ... : best at epoch 2, two epochs without gain, stop after epoch 4
    result, weights_after, final = _fit_with_scripted_validation(
        tmp_path, monkeypatch, [2, 1, 3, 4, 5, 6, 7, 8], epochs=8, patience=2
    )
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3, 4]
    assert [e["val_mrr_at_5"] for e in result.epochs] == pytest.approx([0.5, 1.0, 1 / 3, 0.25])
    assert result.history() == {"monitor": "val_mrr_at_5", "best_epoch": 2, "epochs": result.epochs}
    assert _same(final, weights_after[1]) and not _same(final, weights_after[3])


def test_a_tie_is_not_a_gain(tmp_path: Path, monkeypatch):
    result, weights_after, final = _fit_with_scripted_validation(
        tmp_path, monkeypatch, [1, 1, 1], epochs=3, patience=1
    )
    assert len(result.epochs) == 2 and result.best_epoch == 1
    assert _same(final, weights_after[0])


def test_patience_0_never_stops_early_and_epochs_is_the_ceiling(tmp_path: Path, monkeypatch):
    result, weights_after, final = _fit_with_scripted_validation(
        tmp_path, monkeypatch, [1, 2, 3, 4], epochs=4, patience=0
    )
    assert len(result.epochs) == 4 and result.best_epoch == 1
    assert _same(final, weights_after[0])
    result, _, _ = _fit_with_scripted_validation(tmp_path, monkeypatch, [4, 3, 2, 1, 1], epochs=3, patience=2)
    assert len(result.epochs) == 3 and result.best_epoch == 3


class _Killed(Exception):
    """The job dies (a spot interruption, a worker restart) in the middle of training."""


def test_a_restarted_job_resumes_after_its_last_finished_epoch(tmp_path: Path, monkeypatch):
    """Killed after epoch 3 of 6, the job's second attempt trains epochs 4-6 only, keeps the
    first attempt's history and early-stopping state, and ends on the best epoch's weights."""
    import keras

    from recsys_model import fit as fit_module
    from recsys_model.model import Scorer, build_model

    write_channel(tmp_path / "t", make_sessions(30, seed=2, prefix="t"))
    sessions = read_channel(tmp_path / "t", "t")
    counts = item_counts(sessions)
    vocab = build_vocabulary(counts, 1)
    hp = Hyperparameters(model_version="v", embedding_dim=4, hidden_units=4, max_len=4, batch_size=8, top_k=5,
                         epochs=6, patience=5)
    sequences = training_sequences(vocab.encode(sessions.skus), sessions.offsets, hp.max_len)
    val_ranks = [3, 1, 2, 4, 5, 6]  # best: epoch 2
    scored: list[int] = []
    weights_after: dict[int, list[np.ndarray]] = {}

    def attempt(kill_after: int | None):
        keras.utils.set_random_seed(3)
        network = build_model(vocab.size, hp)

        def scripted_ranks(scorer, vocab, max_len, validation, popular):
            epoch = len(scored) + 1
            scored.append(epoch)
            weights_after[epoch] = [w.copy() for w in network.get_weights()]
            if kill_after is not None and epoch > kill_after:
                raise _Killed()
            return np.array([val_ranks[epoch - 1]], dtype=np.int32)

        monkeypatch.setattr(fit_module, "model_ranks", scripted_ranks)
        result = fit_module.fit(network, Scorer(network), vocab, sequences, sequences, sessions,
                                [sku for sku, _ in counts], hp, checkpoints=tmp_path / "checkpoints")
        return result, network

    with pytest.raises(_Killed):
        attempt(kill_after=3)  # dies while scoring epoch 4: epochs 1-3 are checkpointed
    del scored[3:]  # epoch 4 never finished
    result, network = attempt(kill_after=None)

    assert scored == [1, 2, 3, 4, 5, 6]  # the second attempt started at epoch 4
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3, 4, 5, 6]
    assert result.best_epoch == 2
    assert _same(network.get_weights(), weights_after[2])  # the first attempt's best epoch


def test_a_checkpoint_of_another_job_or_data_is_not_resumed(tmp_path: Path):
    import json

    from recsys_model.fit import EpochCheckpoint

    assert EpochCheckpoint(tmp_path / "nothing-here", {"vocab_size": 9}, None, None).resume(None) == 0
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "state.json").write_text(json.dumps({"epoch": 3, "fingerprint": {"vocab_size": 8}}))
    assert EpochCheckpoint(tmp_path / "old", {"vocab_size": 9}, None, None).resume(None) == 0
