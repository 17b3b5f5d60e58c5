"""The sparse ratings step's gradients, as the optimizer and the replicas need them.

On sparse batches the first kernel's gradient is a `tf.IndexedSlices` of the touched rows.
A row-wise optimizer (`rawtf_ae.optim.lazy`) applies it as it is; any other optimizer gets it
dense, as it would on dense batches. Across replicas the slices are summed and padded to one
fixed capacity, because the collectives fix their shapes at the first call.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from rawtf_ae.optim import lazy
from rawtf_ae.recommender import ratings


def gradient_capacity(matrix: ratings.RatingMatrix, per_replica_batch: int, samples: int = 0) -> int:
    """The most rows a replica's sparse gradient can touch: the rated columns of a batch and
    the sampled softmax's `samples` drawn items, at most `min(width, per_replica_batch x the
    longest row + samples)` (`StepOptions.sparse_capacity`)."""
    longest = int(np.diff(matrix.indptr).max()) if len(matrix) else 0
    return max(1, min(matrix.width, per_replica_batch * longest + samples))


def gradients_to_apply(gradients: list, optimizer, capacity: int) -> list:
    """A sparse step's gradients as `optimizer` should get them: sparse where it applies rows
    exactly (`lazy_optimizers.applies_rows`; padded for replicas), else dense (so that, e.g.,
    Keras `Adam` takes the update it takes on dense batches)."""
    if lazy.applies_rows(optimizer):
        return padded_for_replicas(gradients, capacity)
    # Logged while the step is traced: once per run, not per step.
    logging.warning(
        "sparse ratings batches with %s: it gets dense gradients and updates every row of the "
        "first kernel and its slots on every step; train.optimizer='lazy_adam' updates the rated "
        "rows only (docs/large-catalogs.md)",
        type(getattr(optimizer, "optimizers", [optimizer])[0]).__name__,
    )
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]


def padded_for_replicas(gradients: list, capacity: int) -> list:
    """The sparse gradients of a replica in the one shape every step's collectives need.

    Across replicas, `tf.distribute` gathers `tf.IndexedSlices` with collective ops, and
    TensorFlow's runtime fixes each collective's shape at its first call: the next batch,
    with another number of ratings, fails ("Shape mismatch in the collective instance").
    So each replica sums its repeated rows (`deduplicated`) and pads them to `capacity` rows
    with zeros at a row the global gradient touches anyway (the largest touched index of all
    replicas), which changes no update. On one replica the gradients pass through.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return gradients
    if not capacity:
        raise ValueError(
            "Sparse ratings batches on several replicas need `StepOptions.sparse_capacity` "
            "(`ratings_batches.gradient_capacity`)."
        )
    padded = []
    for gradient in gradients:
        if not isinstance(gradient, tf.IndexedSlices):
            padded.append(gradient)
            continue
        gradient = lazy.deduplicated(gradient)
        indices = tf.cast(gradient.indices, tf.int64)
        local_max = tf.reduce_max(tf.concat([indices, [-1]], axis=0))
        pad_row = tf.maximum(tf.reduce_max(context.all_gather(local_max[None], axis=0)), 0)
        count = tf.shape(indices, tf.int64)[0]
        check = tf.debugging.assert_less_equal(
            count, tf.constant(capacity, tf.int64), message="a sparse gradient outgrew its capacity"
        )
        with tf.control_dependencies([check]):
            missing = capacity - count
        values = tf.concat(
            [gradient.values, tf.zeros([missing, *gradient.values.shape[1:]], gradient.values.dtype)], 0
        )
        indices = tf.concat([indices, tf.fill([missing], pad_row)], axis=0)
        values.set_shape([capacity, *gradient.values.shape[1:]])
        indices.set_shape([capacity])
        padded.append(tf.IndexedSlices(values, indices, gradient.dense_shape))
    return padded
