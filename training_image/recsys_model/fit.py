"""The training loop: Keras fit on length-grouped batches, a per-epoch report on the
validation channel, and Keras' own EarlyStopping on validation MRR@k.

Sessions are short (median 3 items) but a few are long: padding every batch to the
longest session would spend most of the work on padding. Batches are made of
sequences of similar length, cut to their own longest one, and shuffled as batches."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
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


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: the weights, the best epoch's weights and the early-stopping state,
    so that a job killed mid-training (a spot interruption, a worker restart) resumes from
    its last finished epoch instead of from zero. Written beside, then renamed into place."""

    STATE, LAST, BEST = "state.json", "last.weights.h5", "best.weights.h5"

    def __init__(self, directory: Path, fingerprint: dict, report: "ValidationReport", stopper):
        super().__init__()
        self.directory, self.fingerprint, self.report, self.stopper = directory, fingerprint, report, stopper
        self._resumed: dict | None = None  # the checkpoint's state, when resume() loaded one

    def resume(self, network: keras.Model) -> int:
        """Load the last finished epoch of this same job, if there is one; returns it (0: none)."""
        state_file = self.directory / self.STATE
        if not state_file.is_file():
            return 0
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != self.fingerprint:
            log.info("checkpoint in %s belongs to another job or data: starting from epoch 1", self.directory)
            return 0
        network.optimizer.build(network.trainable_variables)  # so its moments are restored too
        network.load_weights(self.directory / self.LAST)
        self.report.epochs = list(state["history"])
        self._resumed = state
        log.info("resuming after epoch %d (checkpoint in %s)", state["epoch"], self.directory)
        return int(state["epoch"])

    def on_train_begin(self, logs=None):
        state = self._resumed
        if state:  # runs after EarlyStopping's own reset (callbacks run in order)
            self.stopper.best, self.stopper.wait = state["best"], state["wait"]
            self.stopper.best_epoch = state["best_epoch"]
            best = self.model.get_weights()
            self.model.load_weights(self.directory / self.BEST)
            self.stopper.best_weights = self.model.get_weights()
            self.model.set_weights(best)

    def on_epoch_end(self, epoch, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.stopper.best_epoch == epoch:  # EarlyStopping ran just before: this epoch is the best
            self._save(self.BEST)
        self._save(self.LAST)
        state = {"epoch": epoch + 1, "fingerprint": self.fingerprint, "history": self.report.epochs,
                 "best": float(self.stopper.best), "wait": int(self.stopper.wait),
                 "best_epoch": int(self.stopper.best_epoch)}
        partial = self.directory / f".{self.STATE}.tmp"
        partial.write_text(json.dumps(state))
        partial.replace(self.directory / self.STATE)

    def _save(self, name: str) -> None:
        partial = self.directory / f".tmp.{name}"
        self.model.save_weights(partial)
        partial.replace(self.directory / name)


def fit(
    network: keras.Model,
    scorer: Scorer,
    vocab: Vocabulary,
    train: tuple[np.ndarray, np.ndarray],
    validation_sequences: tuple[np.ndarray, np.ndarray],
    validation: Sessions,
    popular: Sequence[str],
    hp: Hyperparameters,
    checkpoints: Path | None = None,
) -> FitResult:
    report = ValidationReport(scorer, vocab, validation, popular, hp)
    report.n_examples = int((train[1] >= FIRST_ITEM).sum())
    stopper = early_stopping(hp)
    callbacks = [report, stopper]  # the report first: it writes the metric the stopper reads
    initial_epoch = 0
    if checkpoints is not None:
        # a checkpoint is resumed only by the same job on the same data
        fingerprint = {"hyperparameters": hp.to_dict(), "vocab_size": vocab.size, "examples": report.n_examples}
        checkpoint = EpochCheckpoint(checkpoints, fingerprint, report, stopper)
        initial_epoch = checkpoint.resume(network)
        callbacks.append(checkpoint)
    if initial_epoch >= hp.epochs:
        log.info("every epoch was finished before the restart")
    network.fit(
        length_grouped(*train, hp.batch_size, shuffle=True),
        epochs=hp.epochs,
        initial_epoch=initial_epoch,
        shuffle=False,  # the batches are shuffled as batches
        validation_data=length_grouped(*validation_sequences, max(hp.batch_size, 256), shuffle=False),
        verbose=0,
        callbacks=callbacks,
    )
    best_epoch = stopper.best_epoch + 1
    if stopper.stopped_epoch > 0:
        log.info(
            "early stop: %s has not improved for %d epoch(s); best epoch %d",
            stopper.monitor, stopper.wait, best_epoch,
        )
    log.info("keeping the weights of epoch %d (%s=%.4f)", best_epoch, stopper.monitor, float(stopper.best))
    return FitResult(monitor=stopper.monitor, best_epoch=best_epoch, epochs=report.epochs)
