"""The next-item network (GRU4Rec-style) and the compiled functions that score with it.

item ids -> embedding (0 masked) -> GRU over the session -> logits over the vocabulary.
Training predicts the next item at every position; scoring only evaluates the
output layer at the positions that are asked for, which keeps the vocabulary-wide
matrix product off the padding.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .contract import Hyperparameters
from .data import FIRST_ITEM

EMBEDDING = "item_embedding"
GRU = "session_gru"
LOGITS = "next_item_logits"


def build_model(vocab_size: int, hp: Hyperparameters) -> keras.Model:
    items = keras.Input(shape=(None,), dtype="int32", name="items")
    x = keras.layers.Embedding(vocab_size, hp.embedding_dim, mask_zero=True, name=EMBEDDING)(items)
    x = keras.layers.GRU(hp.hidden_units, return_sequences=True, name=GRU)(x)
    logits = keras.layers.Dense(vocab_size, name=LOGITS)(x)
    model = keras.Model(items, logits, name="next_item_gru")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=hp.learning_rate),
        # Padding targets (0) carry no signal; out-of-vocabulary targets were mapped to 0 too.
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    return model


class Scorer:
    """Graph-compiled scoring on one trained model; safe to share between threads."""

    def __init__(self, model: keras.Model):
        self.model = model
        self._embedding = model.get_layer(EMBEDDING)
        self._gru = model.get_layer(GRU)
        self._logits = model.get_layer(LOGITS)
        self.vocab_size = int(self._logits.units)
        # Padding and "unknown" are never recommended.
        self._reserved = tf.constant(np.arange(self.vocab_size) < FIRST_ITEM, dtype=tf.bool)
        spec = tf.TensorSpec(shape=[None, None], dtype=tf.int32)
        self.target_ranks = tf.function(
            self._target_ranks,
            input_signature=[spec, tf.TensorSpec([None, 2], tf.int32), tf.TensorSpec([None], tf.int32)],
        )
        self.top_k = tf.function(
            self._top_k,
            input_signature=[spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)],
        )

    def _logits_at(self, items: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        """Masked logits after reading items[row, :col + 1], for each (row, col) in positions."""
        mask = tf.not_equal(items, 0)
        hidden = self._gru(self._embedding(items), mask=mask)
        logits = self._logits(tf.gather_nd(hidden, positions))
        return tf.where(self._reserved, tf.constant(-np.inf, logits.dtype), logits)

    def _target_ranks(self, items, positions, targets):
        """1-based rank of each target among all items; 0 for an unknown target (a miss).

        Items scoring the same as the target count as ranked above it, so a model
        that cannot tell items apart never looks good.
        """
        logits = self._logits_at(items, positions)
        target_logit = tf.gather(logits, targets, batch_dims=1)
        rank = tf.reduce_sum(tf.cast(logits >= target_logit[:, None], tf.int32), axis=1)
        return tf.where(targets >= FIRST_ITEM, rank, 0)

    def _top_k(self, items, lengths, k):
        """Top-k (probability, item index) after each right-padded session of given length."""
        rows = tf.range(tf.shape(items)[0], dtype=tf.int32)
        positions = tf.stack([rows, lengths - 1], axis=1)
        probabilities = tf.nn.softmax(self._logits_at(items, positions))
        k = tf.minimum(k, self.vocab_size - FIRST_ITEM)
        return tf.math.top_k(probabilities, k=k)
