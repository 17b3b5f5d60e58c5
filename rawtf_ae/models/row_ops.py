"""Row operations of the sparse ratings path, at a cost that follows the ratings.

A sparse batch's entries come in row-major order (a `tf.SparseTensor`'s canonical order), so
summing them per row is TensorFlow's sorted segment sum, about 5x faster on CPU than the
unsorted one (2.2 vs 10.8 ms for 12,800 x 512 into 128 rows): `sum_by_row`, and `gather_rows`
whose gradient sums the same way instead of densifying `IndexedSlices` with the unsorted sum.
`read_without_copy` reads a variable that was accessed by rows without copying it. Under
`traced_for_xla` the sums are XLA's (the compiled sparse step).
"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

_TRACING = threading.local()


@contextlib.contextmanager
def traced_for_xla():
    """Functions traced inside this context sum by row with the op XLA compiles
    (`tf.math.unsorted_segment_sum`: TensorFlow's sorted `segment_sum` has no XLA kernel, its
    output size depends on the data); `rawtf_ae.training.sparse_compiled` traces its compiled
    step body so."""
    before, _TRACING.xla = getattr(_TRACING, "xla", False), True
    try:
        yield
    finally:
        _TRACING.xla = before


def sum_by_row(values, rows, num_rows) -> tf.Tensor:
    """`[num_rows, ...]`: `values[k]` added into row `rows[k]`; `rows` must not decrease."""
    if getattr(_TRACING, "xla", False):
        return tf.math.unsorted_segment_sum(values, rows, num_rows)
    summed = tf.math.segment_sum(values, rows)
    missing = tf.cast(num_rows, tf.int32) - tf.shape(summed)[0]  # trailing rows without entries
    padded = tf.pad(summed, tf.concat([[[0, missing]], tf.zeros([tf.rank(values) - 1, 2], tf.int32)], 0))
    return tf.ensure_shape(padded, tf.TensorShape([None]).concatenate(values.shape[1:]))


@tf.custom_gradient
def gather_rows(params, rows):
    """`tf.gather(params, rows)` for non-decreasing `rows`; its gradient is `sum_by_row`."""

    def gradient(upstream):
        return sum_by_row(upstream, rows, tf.shape(params)[0]), None

    return tf.gather(params, rows), gradient


@tf.custom_gradient
def row_dots(a, b):
    """`tf.reduce_sum(a * b, axis=1)` whose gradient multiplies by the upstream column directly
    (the default one first broadcasts it to `a`'s shape: one more pass over `[nnz, units]`)."""

    def gradient(upstream):
        return upstream[:, None] * b, upstream[:, None] * a

    return tf.reduce_sum(a * b, axis=1), gradient


def row_ids(x: tf.SparseTensor, what: str) -> tf.Tensor:
    """`x`'s row ids, checked to be in row-major order (`InvalidArgumentError` naming `what`
    otherwise). The sums by row depend on the check, so in a `tf.function` it runs first."""
    rows = x.indices[:, 0]
    check = tf.debugging.assert_greater_equal(
        rows[1:], rows[:-1], message=f"{what}'s entries must be in row-major order (`tf.sparse.reorder`)"
    )
    with tf.control_dependencies([check]):
        return tf.identity(rows)


def read_without_copy(variable):
    """The value of `variable` for a dense read, never a copy of the whole variable.

    TensorFlow puts a variable that was read or updated by rows (`tf.gather`, the scatter ops:
    the sparse ratings path, the lazy optimizers) in copy-on-read mode, where every plain read
    copies it: 2 GiB per call for a million-item kernel of 512 units, which made one user's
    top-K 3x slower than the product it needs. This read switches such a variable back to
    copy-on-write (TensorFlow's `read_value_no_copy`, as its checkpoints read); a
    `tf.distribute` variable in cross-replica code is read from its first local copy (they are
    equal), in replica code as usual. Not in XLA-compiled code (no XLA kernel).
    """
    if not hasattr(type(variable), "read_value_no_copy") and tf.distribute.in_cross_replica_context():
        local = getattr(variable, "values", None)  # a tf.distribute variable: its copies here
        if local and hasattr(type(local[0]), "read_value_no_copy"):
            variable = local[0]
    if hasattr(type(variable), "read_value_no_copy"):  # a plain ResourceVariable
        return variable.read_value_no_copy()
    return tf.convert_to_tensor(variable)
