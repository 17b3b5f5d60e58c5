"""Row operations of the sparse ratings path, at a cost that follows the ratings.

A sparse batch's entries come in row-major order (a `tf.SparseTensor`'s canonical order), so
summing them per row is TensorFlow's sorted segment sum, about 5x faster on CPU than the
unsorted one (2.2 vs 10.8 ms for 12,800 x 512 into 128 rows): `sum_by_row`, and `gather_rows`
whose gradient sums the same way instead of densifying `IndexedSlices` with the unsorted sum.
`read_without_copy` reads a variable that was accessed by rows without copying it, `lookup`
reads rows of a plain or a sharded variable (`ParameterServerStrategy`). Under
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


def is_sharded(variable) -> bool:
    """Whether `variable` is a `ShardedVariable` (rows split over parameter servers by
    `ParameterServerStrategy`'s partitioner: `rawtf_ae.training.parameter_server`)."""
    return isinstance(variable, tf.__internal__.distribute.ShardedVariable)


def parts(variable) -> list:
    """The variables `variable` is made of: its shards, in row order, or itself."""
    return list(variable.variables) if is_sharded(variable) else [variable]


def row_gradients(variable, values, indices) -> dict:
    """`{part.ref(): tf.IndexedSlices}`: the gradient rows `values` at rows `indices` of
    `variable`, as one slices per part (`parts`), each indexed by its own rows; the entries
    keep their order within a part, so the optimizer sums repeated rows in the same order."""
    if not is_sharded(variable):
        shape = tf.constant(variable.shape.as_list(), tf.int64)
        return {variable.ref(): tf.IndexedSlices(values, indices, shape)}
    gradients, offset = {}, 0
    for shard in variable.variables:
        rows = shard.shape[0]
        inside = (indices >= offset) & (indices < offset + rows)
        shape = tf.constant(shard.shape.as_list(), tf.int64)
        local = tf.boolean_mask(indices, inside) - tf.cast(offset, indices.dtype)
        gradients[shard.ref()] = tf.IndexedSlices(tf.boolean_mask(values, inside), local, shape)
        offset += rows
    return gradients


def norm_terms(gradients, variables, unique) -> list:
    """The tensors a global norm of `gradients` (one per entry of `variables`, None skipped)
    sums: each gradient, `tf.IndexedSlices` deduplicated by `unique` (`lazy.deduplicated`),
    and the parts of one sharded variable (consecutive shards `NAME/part_K`) joined in row
    order: the terms of the unsharded variable's gradient, so that the norm has its bits."""
    terms, names = [], []
    for gradient, variable in zip(gradients, variables):
        if gradient is None:
            continue
        name = variable.name.split("/part_")[0] if "/part_" in variable.name else None
        value = unique(gradient).values if isinstance(gradient, tf.IndexedSlices) else gradient
        if name is not None and names and names[-1] == name:
            terms[-1] = tf.concat([terms[-1], value], 0)
        else:
            terms.append(value)
        names.append(name)
    return terms


def lookup(variable, ids) -> tf.Tensor:
    """Rows `ids` of `variable`, in the order asked: `tf.gather`, whose gradient is
    `tf.IndexedSlices` of those rows (one per shard for a sharded variable).

    A sharded variable's `tf.gather` returns the rows grouped by shard, not in the order
    asked (TF 2.21): `tf.nn.embedding_lookup` keeps the order, and on a plain variable gives
    bitwise the same rows as `tf.gather`.
    """
    if is_sharded(variable):
        return tf.nn.embedding_lookup(variable, ids)
    return tf.gather(variable, ids)


def read_without_copy(variable):
    """The value of `variable` for a dense read, never a copy of the whole variable.

    TensorFlow puts a variable that was read or updated by rows (`tf.gather`, the scatter ops:
    the sparse ratings path, the lazy optimizers) in copy-on-read mode, where every plain read
    copies it: 2 GiB per call for a million-item kernel of 512 units, which made one user's
    top-K 3x slower than the product it needs. This read switches such a variable back to
    copy-on-write (TensorFlow's `read_value_no_copy`, as its checkpoints read); a
    `tf.distribute` variable in cross-replica code is read from its first local copy (they are
    equal), in replica code as usual; a sharded variable is its shards' reads concatenated
    (the whole variable on the caller). Not in XLA-compiled code (no XLA kernel).
    """
    if is_sharded(variable):
        return tf.concat([read_without_copy(shard) for shard in variable.variables], 0)
    if not hasattr(type(variable), "read_value_no_copy") and tf.distribute.in_cross_replica_context():
        local = getattr(variable, "values", None)  # a tf.distribute variable: its copies here
        if local and hasattr(type(local[0]), "read_value_no_copy"):
            variable = local[0]
    if hasattr(type(variable), "read_value_no_copy"):  # a plain ResourceVariable
        return variable.read_value_no_copy()
    return tf.convert_to_tensor(variable)
