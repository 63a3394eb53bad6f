"""The training loop: Keras fit on length-grouped batches, a per-epoch report on the
validation channel, and Keras' own EarlyStopping on validation MRR@k.

Sessions are short (median 3 items) but a few are long: padding every batch to the
longest session would spend most of the work on padding. Batches are made of
sequences of similar length, cut to their own longest one, and shuffled as batches."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from .contract import Hyperparameters
from .data import FIRST_ITEM, Sessions, Vocabulary
from .evaluate import metrics, model_ranks
from .model import Scorer

log = logging.getLogger("recsys_model.train")


class ValidationReport(keras.callbacks.Callback):
    """Per epoch: validation HR@k / MRR@k over the full vocabulary, written into `logs`
    (so callbacks after it, EarlyStopping among them, can read them), a log line and
    an entry of the history."""

    def __init__(
        self,
        scorer: Scorer,
        vocab: Vocabulary,
        validation: Sessions,
        popular: Sequence[str],
        hp: Hyperparameters,
    ):
        super().__init__()
        self.scorer, self.vocab, self.validation, self.popular, self.hp = scorer, vocab, validation, popular, hp
        self.epochs: list[dict[str, Any]] = []
        self.n_examples = 0  # next-item examples per training epoch
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        fitted_s = time.monotonic() - self._started
        ranks = model_ranks(self.scorer, self.vocab, self.hp.max_len, self.validation, self.popular)
        scores = metrics(ranks, self.hp.top_k, "val_")
        logs = {} if logs is None else logs
        logs.update(scores)
        entry = {
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", float("nan"))),
            "val_loss": float(logs.get("val_loss", float("nan"))),
            **scores,
            "seconds": round(time.monotonic() - self._started, 3),
            "train_examples_per_s": round(self.n_examples / max(fitted_s, 1e-9), 1),
        }
        self.epochs.append(entry)
        log.info(
            "epoch %d/%d: %s",
            epoch + 1,
            self.hp.epochs,
            " ".join(f"{key}={value:.4f};" for key, value in entry.items() if key != "epoch"),
        )


def length_grouped(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool) -> tf.data.Dataset:
    """Batches of similar-length sequences: (items [b, longest], next items at the real
    positions of items, row-major). Shuffled batch order every epoch when asked."""
    lengths = (x > 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def generate():
        for b in np.random.permutation(len(batches)) if shuffle else range(len(batches)):
            rows = batches[b]
            width = max(int(lengths[rows].max()), 1)
            items = x[rows, :width]
            yield items, y[rows, :width][items > 0]

    signature = (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(2)


@dataclasses.dataclass(frozen=True)
class FitResult:
    monitor: str
    best_epoch: int  # 1-based; its weights are the network's after fit
    epochs: list[dict[str, Any]]

    def history(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "best_epoch": self.best_epoch, "epochs": self.epochs}


def early_stopping(hp: Hyperparameters) -> keras.callbacks.EarlyStopping:
    """Stops after `patience` epochs in a row without a validation MRR@k gain and, at
    the end of training, restores the weights of the best epoch. patience=0 never stops
    early (Keras would stop at the first epoch without gain), but still keeps the best
    epoch's weights; `epochs` stays the ceiling either way."""
    return keras.callbacks.EarlyStopping(
        monitor=f"val_mrr_at_{hp.top_k}",
        mode="max",
        patience=hp.patience or hp.epochs,
        restore_best_weights=True,
    )


def fit(
    network: keras.Model,
    scorer: Scorer,
    vocab: Vocabulary,
    train: tuple[np.ndarray, np.ndarray],
    validation_sequences: tuple[np.ndarray, np.ndarray],
    validation: Sessions,
    popular: Sequence[str],
    hp: Hyperparameters,
) -> FitResult:
    report = ValidationReport(scorer, vocab, validation, popular, hp)
    report.n_examples = int((train[1] >= FIRST_ITEM).sum())
    stopper = early_stopping(hp)
    network.fit(
        length_grouped(*train, hp.batch_size, shuffle=True),
        epochs=hp.epochs,
        shuffle=False,  # the batches are shuffled as batches
        validation_data=length_grouped(*validation_sequences, max(hp.batch_size, 256), shuffle=False),
        verbose=0,
        callbacks=[report, stopper],  # the report first: it writes the metric the stopper reads
    )
    best_epoch = stopper.best_epoch + 1
    if stopper.stopped_epoch > 0:
        log.info(
            "early stop: %s has not improved for %d epoch(s); best epoch %d",
            stopper.monitor, stopper.wait, best_epoch,
        )
    log.info("keeping the weights of epoch %d (%s=%.4f)", best_epoch, stopper.monitor, float(stopper.best))
    return FitResult(monitor=stopper.monitor, best_epoch=best_epoch, epochs=report.epochs)
