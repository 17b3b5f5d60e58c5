"""The sampled softmax of sparse implicit-feedback batches: Mult-DAE/VAE at catalog scale.

The multinomial loss (`training/multinomial.py`) needs every item's logit, `[batch, items]`:
at a million items that is the whole first kernel read and written on every step, the cost
the sparse step removes. Here, per step, `S = train.sampled_softmax` items are drawn (with
replacement, shared by the global batch) from a proposal `q` (`Proposal`: item frequency to
`train.sampling_power`, 0 = uniform), and each user's log-partition is estimated from its own
items (exact) and the drawn ones (importance-weighted):

    Z_u ~ sum_{i in P_u} exp(l_ui) + sum_{s=1..S, j_s not in P_u} exp(l_uj_s) / (S q_j_s)

(`P_u`: the user's items; a drawn item the user has, an "accidental hit", is left out, so the
sum estimates the partition over the other items without bias; its log, and so the loss, is
biased low for small `S`). The loss per user is `sum_{i in P_u} x_ui (log Z_u - l_ui)`, the
full softmax's when `S -> infinity`. The logits are
`hidden . W_j + b_j` for the rows `W_j` of the tied first kernel (the decoder's kernel if
untied), read by gathers: the gradient is `tf.IndexedSlices` of the user's items and the drawn
items only, and the row-wise optimizer (`train.optimizer='lazy_adam'`) updates those rows
alone. The draw is seeded by the step's noise seed: N replicas draw the same items and take
the step one device takes with the whole batch.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from rawtf_ae.models.row_ops import gather_rows, lookup, row_dots, row_ids, sum_by_row
from rawtf_ae.training import multinomial


class Proposal:
    """Where the sampled softmax draws its items from: `q_j ~ (count_j + 1) ** power`.

    Args:
      num_items: the catalog's width.
      num_samples: `S`, the items drawn per step.
      power: 0 draws uniformly; 1 by training frequency (`item_counts`, smoothed by 1); 0.75
        flattens popularity as word2vec's negative sampling does.
      item_counts: `[num_items]` interactions per item in training (needed unless `power` is 0).
    """

    def __init__(self, num_items: int, num_samples: int, power: float = 0.0, item_counts=None):
        if num_samples < 1:
            raise ValueError(f"`train.sampled_softmax` must be a positive sample count, got {num_samples!r}.")
        if power and item_counts is None:
            raise ValueError("A sampling power other than 0 needs the items' training counts.")
        counts = np.zeros(num_items) if item_counts is None else np.asarray(item_counts, np.float64)
        if counts.shape != (num_items,):
            raise ValueError(f"item_counts has shape {counts.shape}, expected ({num_items},).")
        weights = (counts + 1.0) ** power
        q = weights / weights.sum()
        self.num_items, self.num_samples, self.power = num_items, int(num_samples), float(power)
        self._cdf = tf.constant(np.cumsum(q), tf.float64)
        self._log_expected = tf.constant(np.log(self.num_samples * q), tf.float32)

    def draw(self, seed) -> tuple[tf.Tensor, tf.Tensor]:
        """`(ids [S] int64 in increasing order, log(S q_id) [S])` for a stateless `seed` `[2]`."""
        uniform = tf.sort(tf.random.stateless_uniform([self.num_samples], seed, dtype=tf.float64))
        ids = tf.searchsorted(self._cdf, uniform, side="right", out_type=tf.int64)
        ids = tf.minimum(ids, self.num_items - 1)  # a cdf that rounds to just under 1
        return ids, tf.gather(self._log_expected, ids)


class Negatives(NamedTuple):
    """One step's drawn items: `ids [S]` (increasing), `log_expected [S]` (log S q), and
    `hits [b, S]` (bool: the drawn item is one of the user's, left out of its partition)."""

    ids: tf.Tensor
    log_expected: tf.Tensor
    hits: tf.Tensor


def draw_negatives(proposal: Proposal, targets: tf.SparseTensor, seed, real=None) -> Negatives:
    """The step's draw for the users of `targets` (`real`: False for padding entries)."""
    ids, log_expected = proposal.draw(tf.random.experimental.stateless_fold_in(seed, -2, alg="philox"))
    return Negatives(ids, log_expected, accidental_hits(targets, ids, real))


def accidental_hits(targets: tf.SparseTensor, ids, real=None) -> tf.Tensor:
    """`[b, S]` bool: whether drawn item `ids[s]` (increasing) is among row b's entries.

    Each entry marks the run of draws equal to its item (`searchsorted` bounds) by +1 at its
    start and -1 past its end in a `[b, S + 1]` difference array, summed along the draws."""
    rows, columns = row_ids(targets, "The sparse targets"), targets.indices[:, 1]
    first = tf.searchsorted(ids, columns, side="left", out_type=tf.int64)
    past = tf.searchsorted(ids, columns, side="right", out_type=tf.int64)
    weight = tf.ones_like(first) if real is None else tf.cast(real, tf.int64)
    marks = tf.concat([tf.stack([rows, first], 1), tf.stack([rows, past], 1)], 0)
    num_rows = targets.dense_shape[0]
    steps = tf.scatter_nd(
        marks, tf.concat([weight, -weight], 0), tf.stack([num_rows, tf.size(ids, tf.int64) + 1])
    )
    return tf.cumsum(steps, axis=1)[:, :-1] > 0


def per_user_loss(targets: tf.SparseTensor, entry_logits, negatives: Negatives, sample_logits, real=None):
    """`[b]`: `sum_i x_ui (log Z_u - l_ui)` with `Z_u` estimated as the module docstring says.

    `entry_logits [nnz]`: the logits at `targets`' entries (row-major order); `sample_logits
    [b, S]`: at the drawn items, before the log-Q correction; `real`: False for padding."""
    rows, num_rows = targets.indices[:, 0], tf.shape(sample_logits, out_type=tf.int64)[0]
    minus_inf = tf.constant(-np.inf, entry_logits.dtype)
    positive = entry_logits if real is None else tf.where(real, entry_logits, minus_inf)
    negative = tf.where(negatives.hits, minus_inf, sample_logits - negatives.log_expected)
    top = tf.maximum(tf.reduce_max(negative, axis=1), tf.math.unsorted_segment_max(positive, rows, num_rows))
    top = tf.stop_gradient(top)
    partition = sum_by_row(tf.exp(positive - tf.gather(top, rows))[:, None], rows, num_rows)[:, 0]
    partition += tf.reduce_sum(tf.exp(negative - top[:, None]), axis=1)
    log_partition = top + tf.math.log(partition)
    values = tf.cast(targets.values, entry_logits.dtype)
    return sum_by_row((values * (tf.gather(log_partition, rows) - entry_logits))[:, None], rows, num_rows)[
        :, 0
    ]


def gather(model, columns, ids) -> dict:
    """The first layer's rows a sampled step reads (gathers: their gradients are row slices):
    `encoder` and `decoder` rows at the entries' `columns` (one tensor if tied), `samples` at
    the drawn `ids`, and the output bias at both."""
    encoder = model.first_kernel_rows(columns)
    decoder = encoder if model.tied_layers[0] else model.first_kernel_rows(columns, decoder=True)
    bias = model.decoder_biases[0]
    return {
        "encoder": encoder,
        "decoder": decoder,
        "samples": model.first_kernel_rows(ids, decoder=True),
        "entry_bias": tf.cast(lookup(bias, columns), model.compute_dtype),
        "sample_bias": tf.cast(lookup(bias, ids), model.compute_dtype),
    }


def reconstruction(
    objective, inputs, targets, negatives: Negatives, rows: Optional[dict] = None, real=None
) -> tuple[tf.Tensor, tf.Tensor]:
    """`(this replica's share of the global batch's mean sampled loss, codes)` of sparse
    `inputs` (normalized and corrupted by `steps.Objective.corrupt`) against `targets` (the
    clean rows, the same entries); `rows`: `gather`'s, if read outside (the compiled step)."""
    model, options = objective.model, objective.options
    if rows is None:
        rows = gather(model, inputs.indices[:, 1], negatives.ids)
    if model.variational:
        step = objective.optimizer.iterations
        mean, log_variance = model.encode_distribution(inputs, normalized=True, kernel_rows=rows["encoder"])
        codes, kl = multinomial.sample_codes(mean, log_variance, objective.noise_seed(), step, options)
    else:
        codes, kl = model.encode_sparse(inputs, rows["encoder"], normalized=True), 0.0
    hidden = model.decode_hidden(objective.drop_codes(codes, 0))
    hidden = tf.cast(hidden, model.compute_dtype)
    entry_logits = row_dots(gather_rows(hidden, row_ids(targets, "The sparse targets")), rows["decoder"])
    entry_logits += rows["entry_bias"]
    sample_logits = tf.matmul(hidden, rows["samples"], transpose_b=True) + rows["sample_bias"]
    per_user = per_user_loss(targets, entry_logits, negatives, sample_logits, real) + kl
    return tf.nn.compute_average_loss(per_user, global_batch_size=options.global_batch_size), codes


def proposal_for(config, matrix) -> Proposal:
    """The `Proposal` of `config.train` (`sampled_softmax`, `sampling_power`) for the training
    rows `matrix` (a `RatingMatrix`): item counts from its entries."""
    counts = np.bincount(matrix.columns, minlength=matrix.width) if config.train.sampling_power else None
    return Proposal(matrix.width, config.train.sampled_softmax, config.train.sampling_power, counts)
