"""The tf.data pipelines: training batches that resume exactly, evaluation batches.

`train_dataset` makes global batch `s` from `(seed, s)` alone, so a resumed run continues with
the batch it stopped at, and each replica (`input_context`) takes its slice of the same global
batch. Dense arrays, or ratings rows as dense or sparse batches (`rawtf_ae.recommender.batching`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from rawtf_ae.recommender import ratings

# ---------------------------------------------------------------------------------------------
# tf.data pipelines.


def train_dataset(
    examples,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    input_context: Optional[tf.distribute.InputContext] = None,
    sparse: bool = False,
) -> tf.data.Dataset:
    """An endless dataset of shuffled batches, resumable at any step and shardable by replica.

    Epoch `e` visits the examples in the order `stateless_shuffle(range(n), seed=[seed, e])`,
    and global batch `s` holds positions `[s * batch_size, (s + 1) * batch_size)` of the
    concatenated epochs. Starting at `start_step` therefore yields exactly the batches an
    uninterrupted run would see from that step on, mid-epoch included, without replaying the
    earlier ones.

    Args:
      examples: `[n, width]`, or a `ratings.RatingMatrix` of `n` sparse rows (then batches are
        dicts `{"inputs": ratings, "mask": observed}`, both `[batch, width]`, made dense per batch,
        or with `sparse` `{"inputs": tf.SparseTensor [batch, width]}`: `rawtf_ae.recommender.batching`).
      batch_size: the global batch size.
      seed: orders the epochs.
      start_step: the first global step to produce.
      input_context: from `strategy.distribute_datasets_from_function`. Then this input
        pipeline yields, for each global batch, the `[batch_size / num_replicas, width]` slices
        of its own replicas, one after the other (replica `r` of all gets slice `r`): every
        worker builds the same global batches, and together the replicas see exactly one.

    Returns:
      A dataset of `[batch_size, width]` batches (or per-replica slices), static shapes.
    """
    n = len(examples)
    if n == 0:
        raise ValueError("The training set is empty.")
    first_epoch, offset = divmod(start_step * batch_size, n)
    gather = _gatherer(examples, sparse)
    indices = (
        tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
        .map(lambda epoch: _epoch_order(n, seed, epoch))
        .unbatch()
        .skip(offset)
        .batch(batch_size, drop_remainder=True)
    )
    if input_context is not None and input_context.num_replicas_in_sync > 1:
        replicas = input_context.num_replicas_in_sync
        per_replica = input_context.get_per_replica_batch_size(batch_size)
        local = replicas // input_context.num_input_pipelines
        first = input_context.input_pipeline_id * local
        indices = indices.map(
            lambda idx: tf.reshape(idx, [replicas, per_replica])[first : first + local]
        ).unbatch()
    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def train_batch(examples, batch_size: int, seed: int, sparse: bool = False):
    """`batch_at(step) -> global batch `step` of `train_dataset`` (the same examples in the same
    order), computed from `(seed, step)` alone: for `tf.function`s scheduled on any worker
    (`rawtf_ae.training.parameter_server`), where each batch must train once whichever worker
    runs it. `batch_size` must not exceed the examples (a batch then spans two epochs at most).
    """
    n = len(examples)
    if not 0 < batch_size <= n:
        raise ValueError(f"train_batch needs 0 < batch_size <= {n:,} examples, got {batch_size:,}.")
    gather = _gatherer(examples, sparse)

    def batch_at(step):
        positions = tf.cast(step, tf.int64) * batch_size + tf.range(batch_size, dtype=tf.int64)
        epochs = positions // n
        first = epochs[0]
        orders = tf.stack([_epoch_order(n, seed, first), _epoch_order(n, seed, first + 1)])
        return gather(tf.gather_nd(orders, tf.stack([epochs - first, positions % n], axis=1)))

    return batch_at


def _gatherer(examples, sparse: bool):
    """`gather(positions) -> batch` of `examples` (an array, or ratings rows: `train_dataset`)."""
    if isinstance(examples, ratings.RatingMatrix):

        def gather(idx):
            if sparse:
                return {"inputs": examples.sparse_batch(idx)}
            inputs, mask = examples.dense_batch(idx)
            return {"inputs": inputs, "mask": mask}

        return gather
    table = tf.constant(examples)
    return lambda idx: tf.gather(table, idx)


def _epoch_order(n: int, seed: int, epoch) -> tf.Tensor:
    """Epoch `epoch`'s order of the `n` examples: `stateless_shuffle(range(n), [seed, epoch])`."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
    )


def eval_dataset(examples, batch_size: int, sparse: bool = False) -> tf.data.Dataset:
    """One pass over `examples` in order, in batches of up to `batch_size` (none dropped).

    `examples`: `[n, width]`, or a `ratings.RatingSplits`, whose evaluated users come in
    batches `{"inputs": training ratings, "targets": held-out ratings, "mask": held out}`
    (with `sparse`: `{"inputs", "targets"}`, `tf.SparseTensor`s).
    """
    if isinstance(examples, ratings.RatingSplits):
        return examples.evaluation_dataset(batch_size, sparse)
    return tf.data.Dataset.from_tensor_slices(examples).batch(batch_size).prefetch(tf.data.AUTOTUNE)
