"""Dense or sparse ratings batches (`data.ratings_batches`), and the sparse batch's noise.

A *dense* batch is `{"inputs": ratings, "mask": observed}`, each `[batch, items]`: the step
multiplies the whole first kernel both ways, so a step costs in proportion to the catalog.
That is the faster path for small catalogs (dense GEMMs beat gathers there).

A *sparse* batch is `{"inputs": tf.SparseTensor [batch, items]}` (evaluation adds `"targets"`,
the held-out ratings, another `tf.SparseTensor`): the encoder gathers the first kernel's rows of
the observed items and sums them per row (`TiedAutoencoder.encode_sparse`); the decoder's
last layer computes outputs at the observed items only, from the rows of the *same* variable
(`decode_at`). The masked MSE needs nothing else, so the step is exact, and it costs in
proportion to the ratings; the first kernel's gradient is one `tf.IndexedSlices` of the
touched rows (both paths), which a row-wise optimizer (`train.optimizer='lazy_adam'`) applies
without touching the other rows. No `[batch, items]` tensor exists on this path.

The sparse path refuses what needs every entry of a row: weight decay (it would update every
kernel row on every step), dense re-feeding (its re-fed examples are dense by definition),
the contractive penalty, noise on unobserved entries (`gaussian`, `salt_and_pepper`), mixed
precision and XLA (the number of ratings per batch varies). `masking` noise drops observed
ratings, drawn per (step, example, item) by a counter-based hash, so N replicas draw what one
device draws; its draws differ from the dense path's (same distribution, other numbers).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from rawtf_ae import lazy_optimizers, ratings

CHOICES = ("auto", "dense", "sparse")

# `auto` takes the sparse path for rows this many times wider than their mean number of
# ratings: the break-even of benchmarks/catalog_scale.py (items-512-512-1024, lazy_adam, 100
# ratings per user: dense 1.35x faster at 8,192 items, sparse 1.20x at 16,384, 2.07x at
# 32,768; interpolated on a log scale, they cross near 12,600 items).
SPARSE_ABOVE = 125


def sparse_blockers(config) -> list[str]:
    """The options set in `config` that need dense batches, each with the reason."""
    train = config.train
    blockers = []
    if train.weight_decay:
        blockers.append("train.weight_decay (it changes every row of the first kernel on every step)")
    if train.dense_refeeding:
        blockers.append("train.dense_refeeding (a re-fed example is a dense [batch, items] output)")
    if train.contractive_weight:
        blockers.append("train.contractive_weight (its Jacobian is over every input)")
    if train.corruption in ("gaussian", "salt_and_pepper"):
        blockers.append(f"train.corruption={train.corruption!r} (it changes unobserved entries too)")
    if train.precision != "float32":
        blockers.append(f"train.precision={train.precision!r} (the sparse step runs in float32)")
    if train.jit_compile is True:
        blockers.append("train.jit_compile=True (XLA needs static shapes; ratings per batch vary)")
    return blockers


def check_config(config) -> None:
    """Raises `ValueError` for ratings settings that cannot work (`ratings.check_config`), or a
    `data.ratings_batches` the other options cannot run."""
    ratings.check_config(config)
    choice = config.data.ratings_batches
    if choice not in CHOICES:
        raise ValueError(f"`data.ratings_batches` is {choice!r}; expected one of {', '.join(CHOICES)}.")
    blockers = sparse_blockers(config)
    if choice == "sparse" and blockers:
        raise ValueError(f"`data.ratings_batches='sparse'` does not work with {'; '.join(blockers)}.")


def choose(config, matrix: ratings.RatingMatrix) -> str:
    """`"dense"` or `"sparse"`: `data.ratings_batches`, with `"auto"` resolved for `matrix`.

    `auto` takes the sparse path for wide, sparse rows (`width >= SPARSE_ABOVE * mean ratings
    per row`) unless an option needs dense batches (`sparse_blockers`); it logs its choice.
    """
    choice = config.data.ratings_batches
    if choice != "auto":
        return choice
    per_row = matrix.nnz / max(len(matrix), 1)
    wide = matrix.width >= SPARSE_ABOVE * max(per_row, 1.0)
    blockers = sparse_blockers(config) if wide else []
    resolved = "sparse" if wide and not blockers else "dense"
    logging.info(
        "data.ratings_batches='auto': %s batches (%d columns, %.1f ratings per row%s)",
        resolved,
        matrix.width,
        per_row,
        f"; sparse would suit but {'; '.join(blockers)} needs dense" if blockers else "",
    )
    return resolved


_LOW32 = 0xFFFFFFFF


def _mix(x: tf.Tensor) -> tf.Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds) of `x` in [0, 2^32), as int64."""
    for shift, factor in ((16, 0x7FEB352D), (15, 0x2C1B3C6D), (16, 0x297A2D39)):
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, shift))
        x = tf.bitwise.bitwise_and(x * factor, _LOW32)  # < 2^63: no int64 overflow
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def entry_uniform(seed: tf.Tensor, rows: tf.Tensor, columns: tf.Tensor) -> tf.Tensor:
    """Float32 uniform on [0, 1), one number per (row, column), a pure function of the triple.

    `seed` `[2]` (a stateless seed), `rows` and `columns` `[nnz]` int64: the same entry gets
    the same number whatever else is in the batch, so a replica drawing for its own rows (at
    their global positions) draws what one device draws for the whole batch.
    """
    seed = tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), _LOW32)
    base = _mix(tf.bitwise.bitwise_xor(_mix(seed[0]), seed[1]))
    hashed = _mix(tf.bitwise.bitwise_xor(_mix(tf.bitwise.bitwise_xor(base, rows)), columns))
    return tf.cast(tf.bitwise.right_shift(hashed, 8), tf.float32) / float(1 << 24)


def mask_entries(x: tf.SparseTensor, level: float, seed: tf.Tensor) -> tf.SparseTensor:
    """Masking noise on the observed entries of `x`: a fraction `level` of them set to 0.

    Rows are numbered by their place in the global batch (this replica's slice of it, as
    `data.train_dataset` cuts it), so N replicas corrupt as one device does.
    """
    if not level:
        return x
    rows = x.indices[:, 0]
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        rows += tf.cast(context.replica_id_in_sync_group, tf.int64) * x.dense_shape[0]
    kept = entry_uniform(seed, rows, x.indices[:, 1]) >= level
    return tf.SparseTensor(x.indices, tf.where(kept, x.values, tf.zeros_like(x.values)), x.dense_shape)


def uses_sparse(config, splits) -> bool:
    """Whether training and evaluation on `splits` take sparse batches (never for images)."""
    return isinstance(splits, ratings.RatingSplits) and choose(config, splits.train) == "sparse"


def gradient_capacity(matrix: ratings.RatingMatrix, per_replica_batch: int) -> int:
    """The most rows a replica's sparse gradient can touch: the rated columns of a batch,
    at most `min(width, per_replica_batch x the longest row)` (`StepOptions.sparse_capacity`)."""
    longest = int(np.diff(matrix.indptr).max()) if len(matrix) else 0
    return max(1, min(matrix.width, per_replica_batch * longest))


def gradients_to_apply(gradients: list, optimizer, capacity: int) -> list:
    """A sparse step's gradients as `optimizer` should get them: sparse where it applies rows
    exactly (`lazy_optimizers.applies_rows`; padded for replicas), else dense (so that, e.g.,
    Keras `Adam` takes the update it takes on dense batches)."""
    if lazy_optimizers.applies_rows(optimizer):
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
        gradient = lazy_optimizers.deduplicated(gradient)
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
