"""The sparse ratings step compiled with XLA: everything between the first kernel's row
gathers and the optimizer.

Uncompiled, the sparse step's forward and backward passes are a chain of TensorFlow ops, each
a pass over `[ratings, units]` (the gathered rows weighted, summed by user, the decoder's
hidden rows gathered, multiplied, reduced, and the same again backwards); XLA fuses them.
Measured (`benchmarks/catalog_scale.py --phases`, items-512-512-1024, 128 users x 100
ratings): forward + backward 23.8 ms uncompiled, 18.9 ms compiled at 262,144 items (25.5 and
24.1 at a million: see docs/large-catalogs.md).

XLA needs static shapes, and the number of ratings in a batch varies: the entries are padded
to a bucket (`padded_count`: at most 8 sizes per doubling, at most 1/8 more entries past
8,192; XLA compiles once per size met), at the batch's last row with value 0; the loss
ignores them and they are cut from the gradients, so the optimizer gets the rows the
uncompiled step gives it.
The first kernel's rows are gathered outside (TensorFlow's gather from the variable), and the
tape runs inside the compiled function: differentiating a compiled function from outside left
its backward pass to TensorFlow (measured slower than not compiling at all).
"""

from __future__ import annotations

import tensorflow as tf

from rawtf_ae.models import row_ops
from rawtf_ae.training import sampled_softmax


def padded_count(count) -> tf.Tensor:
    """`count` rounded up to a multiple of `2**(floor(log2(count)) - 3)`, at least 1,024: at
    most 8 sizes per doubling and 1/8 more entries from 8,192 on, one size below 1,024."""
    count = tf.maximum(tf.cast(count, tf.int64), 1)
    shift = tf.maximum(_floor_log2(count) - 3, 0)  # a negative shift is undefined
    step = tf.maximum(tf.bitwise.left_shift(tf.constant(1, tf.int64), shift), 1024)
    return (count + step - 1) // step * step


def _floor_log2(n) -> tf.Tensor:
    """`floor(log2(n))` of a positive int64, exact (the float estimate corrected by one)."""
    log2 = tf.math.log(tf.cast(n, tf.float64)) / tf.math.log(tf.constant(2.0, tf.float64))
    bits = tf.cast(tf.math.floor(log2), tf.int64)
    one = tf.constant(1, tf.int64)
    bits -= tf.cast(tf.bitwise.left_shift(one, bits) > n, tf.int64)
    return bits + tf.cast(tf.bitwise.left_shift(one, bits + 1) <= n, tf.int64)


def pad_entries(x: tf.SparseTensor, size) -> tf.SparseTensor:
    """`x` with entries appended up to `size`: value 0 at column 0 of the last row (the
    entries stay in row-major order; row 0 of a batch without rows)."""
    missing = size - tf.shape(x.indices, tf.int64)[0]
    last_row = tf.fill([missing, 1], tf.maximum(x.dense_shape[0] - 1, 0))
    indices = tf.concat([x.indices, tf.concat([last_row, tf.zeros_like(last_row)], 1)], 0)
    values = tf.concat([x.values, tf.zeros([missing], x.values.dtype)], 0)
    return tf.SparseTensor(indices, values, x.dense_shape)


def _cut(gradient, count):
    """A per-entry `tf.IndexedSlices` (the output bias's) without the padding entries."""
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    return tf.IndexedSlices(gradient.values[:count], gradient.indices[:count], gradient.dense_shape)


def make_gradients(objective, variables):
    """`gradients(batch, normalizer) -> (loss, gradients, None)` of sparse ratings batches, the
    uncompiled step's `loss_and_gradients` with its body compiled (see the module docstring).

    `objective`: the step's `steps.Objective`; `variables`: the ones the gradients are for.
    Penalties are compiled with it: with several replicas the sparsity penalty's all-reduce
    cannot be, so the caller keeps such steps uncompiled. Weight decay and the contractive
    penalty need the whole first kernel (sparse batches refuse them): `ValueError` when called.
    """
    if objective.options.loss == "multinomial":
        return _sampled_gradients(objective, variables)
    model = objective.model
    first = [model.kernels[0]] + ([] if model.tied_layers[0] else [model.decoder_kernels[0]])
    rest = _rest(variables, first)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def body(rows, inputs, targets, real, normalizer):
        with tf.GradientTape() as tape:
            tape.watch(rows)
            loss, codes = objective.sparse_reconstruction(inputs, targets, normalizer, rows, real)
            total = objective.scaled(objective.penalties(loss, codes, inputs))
        return loss, tape.gradient(total, [rows, rest])

    def gradients(batch, normalizer):
        inputs, targets, real, count = _padded(objective, batch)
        columns = inputs.indices[:, 1]
        rows = [model.first_kernel_rows(columns, decoder=i > 0) for i in range(len(first))]
        with row_ops.traced_for_xla():
            loss, (row_gradients, rest_gradients) = body(rows, inputs, targets, real, normalizer)
        by_variable = {}
        for f, g in zip(first, row_gradients):  # one slices per shard of a sharded kernel
            by_variable.update(row_ops.row_gradients(f, g[:count], columns[:count]))
        by_variable.update((v.ref(), _cut(g, count)) for v, g in zip(rest, rest_gradients))
        return loss, [by_variable[v.ref()] for v in variables], None

    return gradients


def _rest(variables, firsts) -> list:
    """`variables` without the parts (shards, or themselves) of `firsts`, whose rows are read
    outside the compiled body."""
    outside = {part.ref() for f in firsts for part in row_ops.parts(f)}
    return [v for v in variables if v.ref() not in outside]


def _padded(objective, batch):
    """`(inputs, targets, real, count)`: the batch corrupted as the uncompiled step corrupts
    it, then padded (`real`: the batch's own `count` entries)."""
    for name in ("weight_decay", "contractive_weight"):
        if getattr(objective.options, name):
            raise ValueError(
                f"{name}={getattr(objective.options, name)} needs the whole first kernel: "
                "sparse ratings batches cannot use it (`rawtf_ae.recommender.batching`)."
            )
    clean = batch["inputs"]
    inputs = objective.corrupt(clean)  # the uncompiled step's noise, before the padding
    count = tf.shape(inputs.values)[0]
    with tf.control_dependencies([row_ops.row_ids(clean, "The sparse input")]):  # XLA skips asserts
        size = padded_count(count)
    inputs, targets = pad_entries(inputs, size), pad_entries(batch.get("targets", clean), size)
    return inputs, targets, tf.sequence_mask(count, size), count


def _sampled_gradients(objective, variables):
    """`make_gradients` for loss multinomial: the sampled softmax (`sampled_softmax`), its
    draw, accidental hits and every first-layer row (entries, drawn items, output bias) read
    outside, the loss and gradients compiled; the row gradients leave as `tf.IndexedSlices`."""
    model = objective.model
    tied = model.tied_layers[0]
    decoder_kernel = model.kernels[0] if tied else model.decoder_kernels[0]
    firsts = (model.kernels[0], decoder_kernel, model.decoder_biases[0])
    rest = _rest(variables, firsts)
    names = ("encoder", "samples", "entry_bias", "sample_bias") + (() if tied else ("decoder",))

    @tf.function(jit_compile=True, reduce_retracing=True)
    def body(sources, inputs, targets, real, negatives):
        with tf.GradientTape() as tape:
            tape.watch(sources)
            rows = {**sources, "decoder": sources["encoder"] if tied else sources["decoder"]}
            loss, codes = sampled_softmax.reconstruction(objective, inputs, targets, negatives, rows, real)
            total = objective.scaled(objective.penalties(loss, codes, inputs))
        return loss, tape.gradient(total, [sources, rest])

    def gradients(batch, normalizer):
        inputs, targets, real, count = _padded(objective, batch)
        negatives = sampled_softmax.draw_negatives(objective.proposal, targets, objective.noise_seed(), real)
        columns = inputs.indices[:, 1]
        rows = sampled_softmax.gather(model, columns, negatives.ids)
        with row_ops.traced_for_xla():
            loss, (by_name, rest_gradients) = body(
                {n: rows[n] for n in names}, inputs, targets, real, negatives
            )
        entries, drawn = columns[:count], negatives.ids

        def slices(variable, parts, indices):  # one per shard of a sharded variable
            values = tf.concat([p[:count] if i is entries else p for p, i in zip(parts, indices)], 0)
            return row_ops.row_gradients(variable, values, tf.concat(indices, 0))

        decoder_rows = by_name["encoder"] if tied else by_name["decoder"]
        by_variable = {
            **slices(decoder_kernel, [decoder_rows, by_name["samples"]], [entries, drawn]),
            **slices(firsts[2], [by_name["entry_bias"], by_name["sample_bias"]], [entries, drawn]),
        }
        if not tied:
            by_variable.update(slices(model.kernels[0], [by_name["encoder"]], [entries]))
        by_variable.update((v.ref(), g) for v, g in zip(rest, rest_gradients))
        return loss, [by_variable[v.ref()] for v in variables], None

    return gradients
