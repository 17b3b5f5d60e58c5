"""Exact top-K over a large catalog for one user: an int8 first pass, then float32 for the few.

One user's top-K multiplies the last decoder layer's input `h` `[units]` by the kernel
`W` `[items, units]`: at a million items x 512 units that reads 2 GiB of float32, 83 ms on this
project's 2-core CPU whatever the code (the memory floor). `ItemIndex` keeps an int8 copy of
`W`, one scale per item (`W[i] ~ scale[i] * codes[i]`, symmetric, per row) and each row's
exact quantization error `error[i] = ||W[i] - scale[i] * codes[i]||`, and ranks in two passes:

1. approximate logits over all items from the int8 codes (a quarter of the bytes; an XLA
   matrix-vector product, 44 ms at a million items), each within a proven bound of the
   float32 logit: `|h . W[i] - h . scale[i] codes[i]| <= ||h|| error[i]` (Cauchy-Schwarz),
   plus a float32 rounding allowance;
2. `tau`, the K-th largest lower bound, and the candidates: the items whose upper bound reaches
   `tau` (every item of the true top-K does: K items have logits >= tau); their float32 logits
   from their kernel rows (typically tens of rows), ranked.

So the result is the float32 top-K, not an approximation: the same items and scores as the
full product, up to float32 rounding (sums in another order) and, where activated scores tie
(a saturating output activation, e.g. relu's zeros), which of the tied items are returned.
It needs a nondecreasing output activation (ranking by logits), float32 products (no
TensorFloat-32 on GPUs) and a snapshot of the kernel: `refresh()` after the weights change (a
stale index may miss items; the returned scores are always current).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rawtf_ae.models import activations
from rawtf_ae.models.row_ops import read_without_copy

# Output activations that never decrease: ranking logits ranks the activated scores.
MONOTONE = frozenset({"linear", "sigmoid", "relu", "selu", "elu", "tanh", "softplus", "leaky_relu"})
AUTO_ITEMS = 131_072  # "auto" indexes catalogs this large (export: 8.7 vs 12.9 ms here; docs)
FIRST_PASSES = ("auto", "int8", "none")
_BLOCK = 64  # items per block: the threshold and the candidates come from block maxima
_CHUNK_ROWS = 65_536  # rows quantized at a time: no float32 temporary of the whole kernel


def unsuited(output_activation: str, compute_dtype) -> str:
    """Why a model of this output activation (name) and compute dtype cannot be indexed ('' if
    it can): what a config already tells."""
    if output_activation not in MONOTONE:
        return f"its output activation {output_activation!r} is not nondecreasing"
    if tf.as_dtype(compute_dtype) != tf.float32:
        return f"it computes in {tf.as_dtype(compute_dtype).name}, not float32"
    return ""


def unsupported(model) -> str:
    """Why `model` cannot be indexed ('' if it can)."""
    if not hasattr(model, "last_layer_inputs"):
        return "it is not a TiedAutoencoder (e.g. a loaded export)"
    reason = unsuited(model.output_activation_name, model.compute_dtype)
    if reason:
        return reason
    if tf.config.list_logical_devices("GPU") and tf.config.experimental.tensor_float_32_execution_enabled():
        return "GPUs may multiply float32 in TensorFloat-32, which the error bound does not cover"
    return ""


def check(first_pass: str) -> None:
    """Raises `ValueError` unless `first_pass` is one of `FIRST_PASSES`."""
    if first_pass not in FIRST_PASSES:
        raise ValueError(f"`first_pass` is {first_pass!r}; expected 'auto', 'int8' or 'none'.")


def wanted(model, first_pass: str) -> bool:
    """Whether `first_pass` ("auto", "int8" or "none") asks for an index of `model`."""
    check(first_pass)
    if first_pass == "none":
        return False
    reason = unsupported(model)
    if first_pass == "int8" and reason:
        raise ValueError(f"first_pass='int8' cannot index this model: {reason}.")
    return not reason and (first_pass == "int8" or model.input_width >= AUTO_ITEMS)


@tf.function(jit_compile=True)
def _bounds(codes, scales, slack, bias, hidden, rounding):
    """Bounds of the float32 logits `hidden . W[i] + bias[i]` from the int8 codes, in one XLA
    kernel (the int8 -> float32 conversion fused into the product):
    `|logit - approximate| <= ||hidden|| slack[i] + rounding |bias[i]|` (`ItemIndex.refresh`).

    Returns `(lower, upper, lower_maxima, upper_maxima)`: the bounds padded with `-inf` to
    whole blocks of `_BLOCK` items, `lower` `[blocks * _BLOCK]`, `upper` `[blocks, _BLOCK]`,
    and each block's largest lower and upper bound `[blocks]`.
    """
    approximate = tf.linalg.matvec(tf.cast(codes, tf.float32), hidden) * scales + bias
    bound = tf.norm(hidden) * slack + rounding * tf.abs(bias)
    padding = [[0, -codes.shape[0] % _BLOCK]]
    lower = tf.pad(approximate - bound, padding, constant_values=-np.inf)
    upper = tf.reshape(tf.pad(approximate + bound, padding, constant_values=-np.inf), [-1, _BLOCK])
    return lower, upper, tf.reduce_max(tf.reshape(lower, [-1, _BLOCK]), 1), tf.reduce_max(upper, 1)


class ItemIndex(tf.Module):
    """The int8 first pass over a `TiedAutoencoder`'s last kernel (tied or not); see the module.

    A `tf.Module`: an export that holds one saves its codes, scales and error bounds.
    """

    def __init__(self, model):
        super().__init__(name="item_index")
        reason = unsupported(model)
        if reason:
            raise ValueError(f"Cannot index this model: {reason}.")
        self.model = model
        items, units = model.input_width, model.layer_sizes[1]
        self.codes = tf.Variable(tf.zeros([items, units], tf.int8), trainable=False, name="codes")
        self.scales = tf.Variable(tf.zeros([items]), trainable=False, name="scales")
        self.slack = tf.Variable(tf.zeros([items]), trainable=False, name="slack")
        # Float32 rounding of the approximate logits: a dot of `units` terms is within
        # units * 2**-24 (to first order) of the sum of its terms' magnitudes; doubled.
        self._rounding = 2.0 * units * 2.0**-24
        self.refresh()

    @property
    def kernel(self) -> tf.Variable:
        """The `[items, units]` kernel of the last decoder layer."""
        return self.model.kernels[0] if self.model.tied_layers[0] else self.model.decoder_kernels[0]

    def refresh(self) -> None:
        """Re-quantizes the kernel (after its weights changed), `_CHUNK_ROWS` rows at a time.

        Row `i`'s `slack` bounds its logit's error per unit of `||hidden||`: the quantization
        error's norm (Cauchy-Schwarz), with a margin for its own rounding, plus the float32
        rounding of the int8 product, `rounding * max|W[i]| * ||hidden||_1`, with
        `||hidden||_1 <= sqrt(units) ||hidden||`. Not atomic: do not recommend from another
        thread while it runs.
        """
        kernel = read_without_copy(self.kernel)
        rounding = self._rounding * float(np.sqrt(kernel.shape[1]))
        for start in range(0, kernel.shape[0], _CHUNK_ROWS):
            rows = tf.constant(np.arange(start, min(start + _CHUNK_ROWS, kernel.shape[0])))
            codes, scales, errors, largest = _quantized(tf.gather(kernel, rows))
            slack = errors * (1 + 1e-4) + rounding * largest
            for variable, value in ((self.codes, codes), (self.scales, scales), (self.slack, slack)):
                variable.scatter_update(tf.IndexedSlices(value, rows))

    def top_k_logits(self, hidden, excluded, k, kernel=None):
        """The `k` largest logits of one user, excluded items left out.

        Args:
          hidden: `[units]` float32, the last decoder layer's input.
          excluded: `[n]` int64 item indices not to rank (the rated items).
          k: scalar int32, at most the number of items.
          kernel: `read_without_copy(self.kernel)`, if the caller has it.

        Returns:
          `(logits, items)`, `[k]` each, best first; `-inf` logits when fewer than `k` items
          are left.
        """
        items = self.model.input_width
        bias = read_without_copy(self.model.decoder_biases[0])
        codes, scales, slack = (read_without_copy(v) for v in (self.codes, self.scales, self.slack))
        lower, upper, lower_maxima, upper_maxima = _bounds(codes, scales, slack, bias, hidden, self._rounding)
        tau = _threshold(lower, lower_maxima, excluded, k)
        blocks = tf.where(upper_maxima >= tau)[:, 0]  # few: the blocks that hold a candidate
        at = tf.where(tf.gather(upper, blocks) >= tau)
        candidates = tf.gather(blocks, at[:, 0]) * _BLOCK + at[:, 1]  # ascending
        candidates = tf.boolean_mask(candidates, candidates < items)  # not the padding
        # Not the rated items: `excluded` sorted, ended by a sentinel no candidate equals.
        ends = tf.concat([tf.sort(excluded), tf.constant([items], tf.int64)], 0)
        rated = tf.equal(tf.gather(ends, tf.searchsorted(ends, candidates)), candidates)
        candidates = tf.boolean_mask(candidates, tf.logical_not(rated))
        # Rows of a tensor read without a copy: a gather on the variable itself would put it in
        # copy-on-read mode, and every later plain read of it would copy 2 GiB.
        kernel = read_without_copy(self.kernel) if kernel is None else kernel
        exact = tf.linalg.matvec(tf.gather(kernel, candidates), hidden)
        exact += tf.gather(bias, candidates)
        # Fewer than k kept items: every kept one is a candidate; pad with -inf.
        exact = tf.pad(exact, [[0, tf.maximum(k - tf.size(exact), 0)]], constant_values=-np.inf)
        candidates = tf.pad(candidates, [[0, tf.maximum(k - tf.size(candidates), 0)]])
        logits, order = tf.math.top_k(exact, k)
        return logits, tf.gather(candidates, order)

    def top_k_unrated(self, ratings: tf.SparseTensor, k):
        """`recommend.top_k_unrated(model.reconstruct_sparse(ratings), ratings, k)` for one
        user's `[1, items]` ratings: `(scores, items)`, `[1, min(k, items)]` each."""
        hidden, last = self.model.last_layer_inputs(ratings)  # the kernel read without a copy
        k = tf.minimum(tf.cast(k, tf.int32), self.model.input_width)
        logits, items = self.top_k_logits(hidden[0], ratings.indices[:, 1], k, last)
        activation = activations.get(self.model.output_activation_name)
        scores = tf.where(tf.math.is_finite(logits), activation(logits), logits)
        return scores[None], tf.cast(items, tf.int32)[None]


def _threshold(lower, lower_maxima, excluded, k):
    """`tau`, at most the K-th largest float32 logit among the items not `excluded`.

    The `(k + #excluded)`-th largest block maximum of the lower bounds: that many blocks hold
    an item whose logit is at least it, `k` of them not excluded (cheap: one value per block).
    With more than there are blocks, the K-th largest lower bound of the items left.
    """
    k = tf.maximum(k, 1)
    wanted = k + tf.size(excluded)

    def among_all():
        minus_inf = tf.fill(tf.shape(excluded), tf.constant(-np.inf, tf.float32))
        return _kth_largest(tf.tensor_scatter_nd_update(lower, excluded[:, None], minus_inf), k)

    return tf.cond(
        wanted <= tf.size(lower_maxima),
        lambda: tf.math.top_k(lower_maxima, wanted).values[-1],
        among_all,
    )


def _kth_largest(values, k, rows: int = 64):
    """The `k`-th largest of `values` `[n]`: each of `rows` slices' top-`k` first (the slices
    in parallel, 1.7 vs 2.6 ms at a million), then the top-`k` of those."""
    n = values.shape[0]
    if n < rows * 1024:
        return tf.math.top_k(values, k).values[-1]
    width = -(-n // rows)
    padded = tf.pad(values, [[0, rows * width - n]], constant_values=-np.inf)
    firsts = tf.math.top_k(tf.reshape(padded, [rows, width]), tf.minimum(k, width)).values
    return tf.math.top_k(tf.reshape(firsts, [-1]), k).values[-1]


@tf.function
def _quantized(rows):
    """`rows` `[n, units]` -> int8 codes, scales `[n]` (rows ~ scales * codes), the exact
    error norms `[n]` and the rows' largest magnitudes `[n]` (a zero row: scale 1, codes 0)."""
    largest = tf.reduce_max(tf.abs(rows), axis=1)
    scales = tf.where(largest > 0, largest / 127.0, 1.0)
    codes = tf.clip_by_value(tf.round(rows / scales[:, None]), -127.0, 127.0)
    errors = tf.norm(rows - codes * scales[:, None], axis=1)
    return tf.cast(codes, tf.int8), scales, errors, largest
