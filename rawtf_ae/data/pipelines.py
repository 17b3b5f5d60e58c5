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


class TrainBatches:
    """Global batch `step` of `train_dataset` (the same examples in the same order) on demand,
    for steps scheduled on any worker (`rawtf_ae.training.parameter_server`), where each batch
    must train once whichever worker runs it: the caller (the chief) takes the batch's example
    ids, `ids(step)`, and sends them with the step; the worker's traced function gathers them,
    `gather(ids)`. The chief shuffles each epoch once (`_epoch_order`, kept for the two latest
    epochs), so a step costs the workers O(batch), not a shuffle of every example.
    `batch_size` must not exceed the examples (a batch then spans two epochs at most).
    """

    def __init__(self, examples, batch_size: int, seed: int, sparse: bool = False):
        self.n, self.batch_size, self.seed = len(examples), batch_size, seed
        if not 0 < batch_size <= self.n:
            raise ValueError(f"TrainBatches needs 0 < batch_size <= {self.n:,} examples, got {batch_size:,}.")
        self.gather = _gatherer(examples, sparse)
        self._orders: dict = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = _epoch_order(self.n, self.seed, tf.constant(epoch, tf.int64)).numpy()
        return self._orders[epoch]

    def ids(self, step: int) -> tf.Tensor:
        """`[batch_size]` int64: the examples of global batch `step`, in order."""
        positions = int(step) * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        epochs, at = np.divmod(positions, self.n)
        ids = np.empty(self.batch_size, np.int64)
        for epoch in np.unique(epochs):
            inside = epochs == epoch
            ids[inside] = self._order(int(epoch))[at[inside]]
        return tf.constant(ids)

    def __call__(self, step: int):
        """Global batch `step` (eager)."""
        return self.gather(self.ids(step))


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
