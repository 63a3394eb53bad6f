"""The training loop: Keras fit plus a per-epoch report on the validation channel."""

from __future__ import annotations

import logging
import time
from typing import Any

import keras
import numpy as np

from .contract import Hyperparameters
from .data import Sessions, Vocabulary
from .evaluate import metrics, model_ranks
from .model import Scorer

log = logging.getLogger("recsys_model.train")


class EpochReport(keras.callbacks.Callback):
    """Per epoch: validation HR/MRR over the full vocabulary, a log line, early stopping.

    Keeps the weights of the epoch with the best validation MRR; training stops
    after `patience` epochs in a row without improvement (0 = never stops early).
    """

    def __init__(self, scorer: Scorer, vocab: Vocabulary, validation: Sessions, hp: Hyperparameters):
        super().__init__()
        self.scorer, self.vocab, self.validation, self.hp = scorer, vocab, validation, hp
        self.monitor = f"val_mrr_at_{hp.top_k}"
        self.epochs: list[dict[str, Any]] = []
        self.best_epoch = 0
        self._best_score = -1.0
        self._best_weights: list[np.ndarray] | None = None
        self._since_best = 0
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        ranks = model_ranks(self.scorer, self.vocab, self.hp.max_len, self.validation)
        scores = metrics(ranks, self.hp.top_k, "val_")
        entry = {
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", float("nan"))),
            "val_loss": float(logs.get("val_loss", float("nan"))),
            **scores,
            "seconds": round(time.monotonic() - self._started, 3),
        }
        self.epochs.append(entry)
        log.info(
            "epoch %d/%d: %s",
            epoch + 1,
            self.hp.epochs,
            " ".join(f"{key}={value:.4f};" for key, value in entry.items() if key != "epoch"),
        )
        if scores[self.monitor] > self._best_score:
            self._best_score = scores[self.monitor]
            self.best_epoch = epoch + 1
            self._best_weights = self.model.get_weights()
            self._since_best = 0
        else:
            self._since_best += 1
            if self.hp.patience and self._since_best >= self.hp.patience:
                log.info(
                    "early stop: %s has not improved for %d epoch(s); best epoch %d",
                    self.monitor, self._since_best, self.best_epoch,
                )
                self.model.stop_training = True

    def restore_best(self) -> None:
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
            log.info(
                "keeping the weights of epoch %d (%s=%.4f)", self.best_epoch, self.monitor, self._best_score
            )

    def history(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "best_epoch": self.best_epoch, "epochs": self.epochs}


def fit(
    network: keras.Model,
    scorer: Scorer,
    vocab: Vocabulary,
    train: tuple[np.ndarray, np.ndarray],
    validation_sequences: tuple[np.ndarray, np.ndarray],
    validation: Sessions,
    hp: Hyperparameters,
) -> EpochReport:
    report = EpochReport(scorer, vocab, validation, hp)
    network.fit(
        *train,
        batch_size=hp.batch_size,
        epochs=hp.epochs,
        validation_data=validation_sequences,
        validation_batch_size=max(hp.batch_size, 256),
        shuffle=True,
        verbose=0,
        callbacks=[report],
    )
    report.restore_best()
    return report
