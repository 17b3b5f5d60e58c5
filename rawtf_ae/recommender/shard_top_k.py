"""Top-K over a catalog whose kernel is sharded by rows, without assembling the kernel.

Under `ParameterServerStrategy` the catalog's kernel and output bias live in row shards on
the parameter servers (`rawtf_ae.training.parameter_server`). Ranking the catalog for a batch
of users needs every item's logit, `hidden @ W.T + b`: read whole (`row_ops.read_without_copy`
joins the shards), that moves the kernel to the caller on every call (a million items x 512
units: 2 GiB). `by_shard` makes each shard's logits on the shard's own device
(`tf.device(part.device)`), so only `hidden` `[b, units]` goes to each shard and its top K
(`[b, k]` logits and items) and its logits' log-sum-exp `[b]` come back; the chief merges them.

The merged top K is the whole product's: each shard's `tf.math.top_k` keeps the lower index
first among equal logits, the merge keeps the shards in row order, so the items and their
order are those of one `top_k` over the joined logits, ties included. The rated items are
excluded on their shard. On a plain variable it is one part on the variable's device.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rawtf_ae.models import row_ops


def last_layer(model) -> tuple:
    """`(kernel, bias)`: the variables of `model`'s last decoder layer, `[items, units]` (the
    tied first kernel, or an untied layer 0's decoder kernel) and `[items]`; either may be a
    `ShardedVariable`."""
    kernel = model.kernels[0] if model.tied_layers[0] else model.decoder_kernels[0]
    return kernel, model.decoder_biases[0]


def is_sharded(model) -> bool:
    """Whether `model`'s last decoder layer is split over parameter servers."""
    return hasattr(model, "tied_layers") and any(row_ops.is_sharded(v) for v in last_layer(model))


def hidden(model, x: tf.SparseTensor) -> tf.Tensor:
    """The last decoder layer's input `[b, units]` for sparse rows `x`, the first kernel read
    by the rated rows only, each distinct row once (`row_ops.lookup`: a popular item rated by
    many users of the batch crosses the network once)."""
    columns, at = tf.unique(x.indices[:, 1])
    rows = tf.gather(model.first_kernel_rows(columns), at)
    return model.decode_hidden(model.encode_sparse(x, kernel_rows=rows))


def _bias_rows(bias, start: int, stop: int) -> tf.Tensor:
    """Rows `start:stop` of `bias` (plain or sharded, on any boundaries), each piece read on
    its own part's device."""
    pieces, offset = [], 0
    for part in row_ops.parts(bias):
        rows = part.shape[0]
        low, high = max(start, offset), min(stop, offset + rows)
        if low < high:
            with tf.device(part.device):
                pieces.append(row_ops.read_without_copy(part)[low - offset : high - offset])
        offset += rows
    return pieces[0] if len(pieces) == 1 else tf.concat(pieces, 0)


def by_shard(
    model, hidden, seen: tf.SparseTensor, k, normalizer: bool = False, activated: bool = False
) -> tuple:
    """The `k` largest logits (`activated`: scores) per row over the catalog, `seen`'s
    entries excluded, shard by shard (the module docstring).

    Args:
      model: a `TiedAutoencoder`, its last decoder layer plain or sharded.
      hidden: `[b, units]`, the last decoder layer's input (`hidden(model, x)`).
      seen: `[b, items]` `tf.SparseTensor` whose entries are never ranked (the rated items).
      k: how many (Python int or scalar tensor); clipped to the catalog.
      normalizer: also return each row's `logsumexp` over every item's logit (the rated
        ones too: the multinomial likelihood's normalizer).
      activated: rank the scores (the output activation of the logits), as
        `recommend.top_k_unrated` does: the same items where the activation ties logits
        (relu's zeros); else the logits (as the ranking metrics do).

    Returns:
      `(logits or scores, items)` `[b, min(k, items)]` each (float32, int64), best first, `-inf` where
      fewer items are left; with `normalizer`, a third `[b]` float32.
    """
    kernel, bias = last_layer(model)
    k = tf.cast(k, tf.int32)
    hidden = tf.cast(hidden, model.compute_dtype)
    columns = seen.indices[:, 1]
    activation = model._output_activation if activated else tf.identity
    values, items, sums, offset = [], [], [], 0
    for part in row_ops.parts(kernel):
        rows = part.shape[0]
        part_bias = _bias_rows(bias, offset, offset + rows)
        with tf.device(part.device):
            logits = tf.matmul(
                hidden, tf.cast(row_ops.read_without_copy(part), model.compute_dtype), transpose_b=True
            )
            logits = tf.cast(logits + tf.cast(part_bias, model.compute_dtype), tf.float32)
            if normalizer:
                sums.append(tf.reduce_logsumexp(logits, axis=1))
            logits = activation(logits)
            inside = (columns >= offset) & (columns < offset + rows)
            at = tf.boolean_mask(seen.indices, inside) - tf.constant([0, offset], tf.int64)
            excluded = tf.fill(tf.shape(at)[:1], tf.constant(-np.inf, tf.float32))
            logits = tf.tensor_scatter_nd_update(logits, at, excluded)
            top = tf.math.top_k(logits, tf.minimum(k, rows))
            values.append(top.values)
            items.append(tf.cast(top.indices, tf.int64) + offset)
        offset += rows
    merged = tf.math.top_k(tf.concat(values, 1), tf.minimum(k, offset))
    found = (merged.values, tf.gather(tf.concat(items, 1), merged.indices, batch_dims=1))
    if normalizer:
        found += (tf.reduce_logsumexp(tf.stack(sums, 1), axis=1),)
    return found


def top_k_unrated(model, ratings: tf.SparseTensor, k) -> tuple:
    """`recommend.top_k_unrated(model.reconstruct_sparse(ratings), ratings, k)` shard by
    shard: `(scores, items)` `[b, min(k, items)]` (float32, int32), activated scores."""
    scores, items = by_shard(model, hidden(model, ratings), ratings, k, activated=True)
    return scores, tf.cast(items, tf.int32)


def target_logits(model, hidden, targets: tf.SparseTensor) -> tf.Tensor:
    """`[nnz]` float32: the logits at `targets`' entries only, from their kernel rows (each
    distinct one read once, `row_ops.lookup`) and bias entries, the dot products summed in
    float32 (as a matrix product accumulates) before the compute dtype's rounding."""
    kernel, bias = last_layer(model)
    columns, at = tf.unique(targets.indices[:, 1])
    rows = tf.cast(tf.gather(tf.cast(row_ops.lookup(kernel, columns), model.compute_dtype), at), tf.float32)
    users = tf.cast(tf.gather(tf.cast(hidden, model.compute_dtype), targets.indices[:, 0]), tf.float32)
    logits = tf.cast(tf.reduce_sum(users * rows, axis=1), model.compute_dtype)
    return tf.cast(
        logits + tf.cast(tf.gather(row_ops.lookup(bias, columns), at), model.compute_dtype), tf.float32
    )
