"""Evaluation: the loss over every example of a dataset, and the ratings metrics beside it."""

from __future__ import annotations

import math

import tensorflow as tf
from absl import logging

from rawtf_ae.recommender import baselines
from rawtf_ae.training import losses


def make_evaluate(model, loss: str):
    """Returns `evaluate(dataset) -> float` over every example of `dataset`.

    `"bce"`/`"mse"`: the mean per-example loss over batches `[b, width]`. `"masked_mse"`: the
    squared error per observed rating over batches `{"inputs", "targets", "mask"}` (its square
    root is the RMSE recommender papers report), or over sparse batches `{"inputs", "targets"}`
    (`tf.SparseTensor`s: outputs at the held-out entries only, no `[b, width]` tensor).
    """
    width = model.input_width
    vector = tf.TensorSpec([None, width], tf.float32)

    @tf.function(input_signature=[vector])
    def batch_sum(batch):
        return tf.reduce_sum(losses.reconstruction_loss(model, batch, batch, loss)), tf.shape(batch)[0]

    @tf.function(input_signature=[{"inputs": vector, "targets": vector, "mask": vector}])
    def masked_sum(batch):
        squared = losses.masked_squared_error(batch["targets"], model(batch["inputs"]), batch["mask"])
        return tf.reduce_sum(squared), tf.reduce_sum(batch["mask"])

    sparse = tf.SparseTensorSpec([None, width], tf.float32)

    @tf.function(input_signature=[{"inputs": sparse, "targets": sparse}])
    def sparse_sum(batch):
        targets = batch["targets"]
        outputs = model.decode_at(model.encode_sparse(batch["inputs"]), targets)
        return tf.reduce_sum(tf.math.squared_difference(targets.values, outputs)), tf.size(targets.values)

    def batch_sums(batch):
        if not isinstance(batch, dict):
            return batch_sum(batch)
        return sparse_sum(batch) if isinstance(batch["inputs"], tf.SparseTensor) else masked_sum(batch)

    def evaluate(dataset) -> float:
        total, count = 0.0, 0.0
        for batch in dataset:
            batch_total, batch_count = batch_sums(batch)
            total += float(batch_total)
            count += float(batch_count)
        if count == 0:
            raise ValueError("Cannot evaluate on an empty dataset.")
        return total / count

    return evaluate


def ratings_metrics(splits, val_loss: float) -> dict:
    """RMSE of a masked-MSE validation loss next to the per-item-mean baseline; logs one line."""
    metrics = {
        "val_rmse": math.sqrt(val_loss),
        "item_mean_val_rmse": baselines.item_mean_rmse(splits),
        "val_ratings": splits.validation_targets.nnz,
        "val_rows": len(splits.validation_targets),
        "val_skipped_ratings": splits.skipped,
    }
    logging.info(
        "validation RMSE %.4f over %d held-out ratings (per-item mean: %.4f; %d skipped)",
        metrics["val_rmse"],
        metrics["val_ratings"],
        metrics["item_mean_val_rmse"],
        metrics["val_skipped_ratings"],
    )
    return metrics
