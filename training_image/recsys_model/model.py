"""The next-item network and the compiled functions that score with it.

Shopping sessions come back to what they have seen (in the reference data 47.5 % of
next items are already in the session, 12.9 % repeat the last one) and follow
item-to-item paths; a network that must relearn both from its softmax loses to a
count table. So the next item's distribution is a mixture of four sources, whose
weights a GRU reads off the session:

    p(j | session) = w_explore  * softmax(dense(state))_j       anything in the catalogue
                   + w_follow   * count(last -> j) / count(last)  the transition table of the train split
                   + w_revisit  * share of j among earlier items  going back in the session
                   + w_repeat   * [j == last]                     the same item again

The transition table (the ``successors`` most frequent next items of every item,
repeats of the item itself left to the repeat source) is fitted from the train
split and kept inside the model as non-trainable weights. In training, a
transition's count leaves out the example being scored, so the network learns how
far to trust a count rather than memorising it. The loss is the mixture's negative
log-likelihood at every real position of a length-grouped batch; nothing is spent
on padding.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .contract import Hyperparameters
from .data import FIRST_ITEM, OOV

EXPLORE, FOLLOW, REVISIT, REPEAT = range(4)
SOURCES = ("explore", "follow", "revisit", "repeat")
_EPS = 1e-9


def transition_table(ids: np.ndarray, offsets: np.ndarray, vocab_size: int, width: int):
    """For every item, its ``width`` most frequent next items (ties: lower index first) with
    their counts, and how often it was followed at all. Repeats and unknown items are left out."""
    followed = np.ones(len(ids), dtype=bool)
    followed[np.asarray(offsets[1:]) - 1] = False  # a session's last item is followed by nothing
    current, following = ids[followed], ids[np.flatnonzero(followed) + 1]
    keep = (current >= FIRST_ITEM) & (following >= FIRST_ITEM) & (current != following)
    pairs = current[keep].astype(np.int64) * vocab_size + following[keep]
    unique, counts = np.unique(pairs, return_counts=True)
    src, dst = unique // vocab_size, unique % vocab_size
    order = np.lexsort((dst, -counts, src))  # by item, then most frequent first
    src, dst, counts = src[order], dst[order], counts[order]
    successors = np.zeros((vocab_size, width), np.int32)
    weights = np.zeros((vocab_size, width), np.float32)
    totals = np.bincount(src, weights=counts, minlength=vocab_size).astype(np.float32)
    starts = np.searchsorted(src, np.arange(vocab_size))
    rank = np.arange(len(src)) - starts[src]
    top = rank < width
    successors[src[top], rank[top]] = dst[top]
    weights[src[top], rank[top]] = counts[top]
    return successors, weights, totals


@keras.saving.register_keras_serializable(package="recsys_model")
class SessionMixture(keras.Model):
    def __init__(self, vocab_size: int, embedding_dim: int = 64, hidden_units: int = 128, successors: int = 64,
                 gate_units: int = 32, precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.hidden_units = vocab_size, embedding_dim, hidden_units
        self.successors, self.gate_units, self.precision = successors, gate_units, precision
        # the heavy layers may compute in float16 (their variables stay float32); their outputs are
        # cast back, so the mixture's probabilities and the loss are float32 whatever the precision
        heavy = keras.DTypePolicy(precision)
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="item_embedding",
                                                dtype=heavy)
        self.gru = keras.layers.GRU(hidden_units, return_sequences=True, name="session_gru", dtype=heavy)
        self.explore = keras.layers.Dense(vocab_size, name="explore_logits", dtype=heavy)
        self.gate_hidden = keras.layers.Dense(gate_units, activation="relu", name="source_gate_hidden")
        self.gate = keras.layers.Dense(len(SOURCES), name="source_gate")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def build(self, input_shape=None):
        self.embedding.build((None, None))
        self.gru.build((None, None, self.embedding_dim))
        self.explore.build((None, self.hidden_units))
        self.gate_hidden.build((None, self.hidden_units + 3))
        self.gate.build((None, self.gate_units))
        shape = (self.vocab_size, self.successors)
        self.next_items = self.add_weight(shape=shape, dtype="int32", initializer="zeros", trainable=False,
                                          name="next_items")
        self.next_counts = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="next_counts")
        self.followed = self.add_weight(shape=(self.vocab_size,), initializer="zeros", trainable=False,
                                        name="followed")
        self.built = True

    def set_transitions(self, successors: np.ndarray, counts: np.ndarray, totals: np.ndarray) -> None:
        self.next_items.assign(successors)
        self.next_counts.assign(counts)
        self.followed.assign(totals)

    def get_config(self):
        return {"vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim,
                "hidden_units": self.hidden_units, "successors": self.successors, "gate_units": self.gate_units,
                "precision": self.precision, "name": self.name}

    # the mixture ---------------------------------------------------------------------

    def _read(self, items, positions, targets=None, training=False):
        """The session state and every source's inputs at each (row, col) of ``positions``."""
        state = self.gru(self.embedding(items), mask=tf.not_equal(items, 0), training=training)
        state = tf.cast(tf.gather_nd(state, positions), tf.float32)
        last = tf.gather_nd(items, positions)
        col = positions[:, 1]
        previous = tf.where(col > 0, tf.gather_nd(items, tf.stack([positions[:, 0], tf.maximum(col - 1, 0)], 1)), -1)
        next_items = tf.gather(self.next_items, last)
        counts = tf.gather(self.next_counts, last)
        total = tf.gather(self.followed, last)
        if targets is not None:  # leave the example itself out of the counts it is judged with
            own = tf.cast(tf.equal(next_items, targets[:, None]) & (next_items > 0), counts.dtype)
            counts = counts - own
            total = total - tf.reduce_max(own, axis=1)
        session = tf.gather(items, positions[:, 0])
        earlier = (tf.range(tf.shape(items)[1])[None, :] < col[:, None]) & (session >= FIRST_ITEM)
        n_earlier = tf.reduce_sum(tf.cast(earlier, tf.float32), axis=1)
        context = tf.stack([tf.math.log1p(total), tf.cast(tf.equal(last, previous), tf.float32),
                            tf.math.log1p(n_earlier)], axis=1)
        gate_logits = self.gate(self.gate_hidden(tf.concat([state, context], axis=1)))
        # a source that cannot apply (nothing followed this item, nothing earlier) drops out
        applies = tf.stack([tf.ones_like(total), tf.cast(total > 0, tf.float32), tf.cast(n_earlier > 0, tf.float32),
                            tf.cast(last >= FIRST_ITEM, tf.float32)], axis=1)
        weights = tf.nn.softmax(gate_logits + tf.math.log(applies + _EPS))
        return state, weights, last, next_items, counts, total, session, earlier, n_earlier

    def log_likelihood(self, items, positions, targets, training=False):
        """log p(target) at each position (targets must be known items)."""
        state, w, last, next_items, counts, total, session, earlier, n_earlier = self._read(
            items, positions, targets, training)
        logits = tf.cast(self.explore(state), tf.float32)
        p_explore = tf.exp(tf.gather(logits, targets, batch_dims=1) - tf.reduce_logsumexp(logits, axis=1))
        p_follow = tf.reduce_sum(tf.where(tf.equal(next_items, targets[:, None]), counts, 0.0), 1) / tf.maximum(total, 1.0)
        p_revisit = (tf.reduce_sum(tf.cast(earlier & tf.equal(session, targets[:, None]), tf.float32), 1)
                     / tf.maximum(n_earlier, 1.0))
        p_repeat = tf.cast(tf.equal(last, targets), tf.float32)
        p = (w[:, EXPLORE] * p_explore + w[:, FOLLOW] * p_follow + w[:, REVISIT] * p_revisit
             + w[:, REPEAT] * p_repeat)
        return tf.math.log(p + _EPS)

    def probabilities(self, items, positions):
        """p(j) over the whole vocabulary after reading items[row, :col + 1], per (row, col)."""
        state, w, last, next_items, counts, total, session, earlier, n_earlier = self._read(items, positions)
        n = tf.shape(positions)[0]
        p = w[:, EXPLORE:EXPLORE + 1] * tf.nn.softmax(tf.cast(self.explore(state), tf.float32))
        rows = tf.repeat(tf.range(n)[:, None], tf.shape(next_items)[1], axis=1)
        follow = w[:, FOLLOW:FOLLOW + 1] * counts / tf.maximum(total, 1.0)[:, None]
        p += tf.scatter_nd(tf.stack([rows, next_items], -1), follow, [n, self.vocab_size])
        rows = tf.repeat(tf.range(n)[:, None], tf.shape(session)[1], axis=1)
        revisit = w[:, REVISIT:REVISIT + 1] * tf.cast(earlier, tf.float32) / tf.maximum(n_earlier, 1.0)[:, None]
        p += tf.scatter_nd(tf.stack([rows, session], -1), revisit, [n, self.vocab_size])
        p += tf.scatter_nd(tf.stack([tf.range(n), last], -1), w[:, REPEAT], [n, self.vocab_size])
        return p

    def call(self, items, training=False):
        """Probabilities at every real position of right-padded ``items``."""
        return self.probabilities(items, tf.cast(tf.where(items > 0), tf.int32))

    # training ----------------------------------------------------------------------

    def _loss(self, data, training):
        items, targets = data  # targets: the next item at every real position of items, row-major
        positions = tf.cast(tf.where(items > 0), tf.int32)
        known = targets >= FIRST_ITEM  # an unknown next item carries no signal
        log_p = self.log_likelihood(items, tf.boolean_mask(positions, known), tf.boolean_mask(targets, known), training)
        return -tf.reduce_sum(log_p) / tf.maximum(tf.cast(tf.size(log_p), log_p.dtype), 1.0)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self._loss(data, training=True)
            # float16 gradients underflow without it; a plain optimizer returns the loss as it is
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        self.loss_tracker.update_state(self._loss(data, training=False))
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


def build_model(vocab_size: int, hp: Hyperparameters, transitions=None) -> SessionMixture:
    model = SessionMixture(vocab_size, hp.embedding_dim, hp.hidden_units, hp.successors, precision=hp.precision,
                           name="session_mixture")
    model.build()
    if transitions is not None:
        model.set_transitions(*transitions)
    optimizer = keras.optimizers.Adam(learning_rate=hp.learning_rate)
    if hp.precision == "mixed_float16":  # scales the loss up and the gradients back down, skipping overflows
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer)
    return model


class Scorer:
    """Graph-compiled scoring on one trained model; safe to share between threads."""

    def __init__(self, model: SessionMixture):
        self.model = model
        self.vocab_size = int(model.vocab_size)
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

    def _probabilities_at(self, items: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        p = self.model.probabilities(items, positions)
        return tf.where(self._reserved, tf.constant(-1.0, p.dtype), p)

    def _target_ranks(self, items, positions, targets):
        """1-based rank of each target among all items; 0 for an unknown target (a miss).

        Items scoring the same as the target count as ranked above it, so a model
        that cannot tell items apart never looks good.
        """
        p = self._probabilities_at(items, positions)
        target_p = tf.gather(p, targets, batch_dims=1)
        rank = tf.reduce_sum(tf.cast(p >= target_p[:, None], tf.int32), axis=1)
        return tf.where(targets >= FIRST_ITEM, rank, 0)

    def _top_k(self, items, lengths, k):
        """Top-k (probability, item index) after each right-padded session of given length."""
        rows = tf.range(tf.shape(items)[0], dtype=tf.int32)
        positions = tf.stack([rows, lengths - 1], axis=1)
        k = tf.minimum(k, self.vocab_size - FIRST_ITEM)
        return tf.math.top_k(self._probabilities_at(items, positions), k=k)


__all__ = ["OOV", "SOURCES", "Scorer", "SessionMixture", "build_model", "transition_table"]
