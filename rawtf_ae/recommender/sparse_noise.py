"""Masking noise on the observed entries of a sparse ratings batch, the same on any replicas.

Each entry's draw is a pure function of `(seed, global row, column)`, a counter-based hash, so
N replicas each corrupting their rows draw what one device draws for the whole batch. The
draws differ from the dense path's masking (same distribution, other numbers).
"""

from __future__ import annotations

import tensorflow as tf

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


def mask_entries(x: tf.SparseTensor, level: float, seed: tf.Tensor, rescale: bool = False) -> tf.SparseTensor:
    """Masking noise on the observed entries of `x`: a fraction `level` of them set to 0
    (`rescale`: the others times `1 / (1 - level)`, inverted dropout).

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
    values = x.values * (1 / (1 - level)) if rescale else x.values
    return tf.SparseTensor(x.indices, tf.where(kept, values, tf.zeros_like(values)), x.dense_shape)
