"""Evaluation: the loss over every example of a dataset, and the ratings or ranking metrics beside it."""

from __future__ import annotations

import math

import tensorflow as tf
from absl import logging

from rawtf_ae.recommender import baselines, ranking, shard_top_k
from rawtf_ae.training import losses


def make_evaluate(model, loss: str):
    """Returns `evaluate(dataset) -> float` over every example of `dataset`.

    `"bce"`/`"mse"`: the mean per-example loss over batches `[b, width]`. `"multinomial"`: the
    negative log-likelihood of the evaluated items per evaluated item, over batches `{"inputs":
    fold-in, "targets": evaluated, "mask"}`, or sparse ones `{"inputs", "targets"}` (the full
    softmax, not the sampled one; `make_rank` ranks them). `"masked_mse"`: the
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
        if loss == "multinomial":  # the evaluated items' log-likelihood, per evaluated item
            logits = model.reconstruction_logits(batch["inputs"])
            total = tf.reduce_sum(losses.multinomial_log_likelihood(batch["targets"], logits))
            return total, tf.reduce_sum(batch["targets"])
        squared = losses.masked_squared_error(batch["targets"], model(batch["inputs"]), batch["mask"])
        return tf.reduce_sum(squared), tf.reduce_sum(batch["mask"])

    sparse = tf.SparseTensorSpec([None, width], tf.float32)

    @tf.function(input_signature=[{"inputs": sparse, "targets": sparse}])
    def sparse_sum(batch):
        targets = batch["targets"]
        if loss == "multinomial":  # the full softmax over the catalog, [b, items] per batch
            log_softmax = tf.nn.log_softmax(sparse_logits(model, batch["inputs"]))
            at = tf.gather_nd(log_softmax, targets.indices)
            return -tf.reduce_sum(targets.values * at), tf.reduce_sum(targets.values)
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


def sparse_logits(model, inputs: tf.SparseTensor) -> tf.Tensor:
    """`[b, items]`: every item's logit for sparse rows `inputs` (`last_layer_inputs`: the
    first kernel read whole, without a copy)."""
    hidden, last = model.last_layer_inputs(inputs)
    logits = tf.matmul(hidden, last, transpose_b=True) + tf.cast(model.decoder_biases[0], model.compute_dtype)
    return tf.cast(logits, tf.float32)


def make_rank(model):
    """Returns `rank(dataset, prefix) -> {f"{prefix}_recall_at_20": ..., f"{prefix}_loss"}`:
    the ranking metrics (`rawtf_ae.recommender.ranking`) over the held-out users of evaluation
    batches `{"inputs": fold-in, "targets", "mask": evaluated}` (dense) or `{"inputs",
    "targets"}` (sparse), every item scored by the model's logits, the fold-in items excluded,
    and from the same logits `make_evaluate`'s multinomial loss (one pass over the catalog).
    A kernel sharded over parameter servers is ranked shard by shard (`shard_top_k`: the top K
    and the softmax's normalizer come back from each shard, never the kernel)."""
    vector = tf.TensorSpec([None, model.input_width], tf.float32)
    sparse = tf.SparseTensorSpec([None, model.input_width], tf.float32)

    @tf.function(input_signature=[vector, vector])
    def dense_ranked(inputs, targets):
        scores = model.reconstruction_logits(inputs)
        return scores, tf.reduce_sum(losses.multinomial_log_likelihood(targets, scores))

    @tf.function(input_signature=[sparse, sparse])
    def sparse_ranked(inputs, targets):
        scores = sparse_logits(model, inputs)
        total = -tf.reduce_sum(targets.values * tf.gather_nd(tf.nn.log_softmax(scores), targets.indices))
        return scores, total, _indicator(inputs, tf.shape(scores)), _indicator(targets, tf.shape(scores))

    largest = ranking.largest(model.input_width)

    @tf.function(input_signature=[sparse, sparse])
    def by_shard(inputs, targets):  # a sharded kernel: each shard's top K, merged
        hidden = shard_top_k.hidden(model, inputs)
        seen = tf.sparse.retain(inputs, tf.not_equal(inputs.values, 0))  # as `_indicator`
        _, top, normalizer = shard_top_k.by_shard(model, hidden, seen, largest, normalizer=True)
        at = shard_top_k.target_logits(model, hidden, targets) - tf.gather(normalizer, targets.indices[:, 0])
        relevant = _indicator(targets, [tf.shape(top)[0], model.input_width])
        return top, -tf.reduce_sum(targets.values * at), relevant

    sharded = shard_top_k.is_sharded(model)
    if sharded:
        logging.info("ranked shard by shard (each parameter server's top %d, merged)", largest)

    def rank(dataset, prefix: str) -> dict:
        accumulator, total, count = ranking.Accumulator(), 0.0, 0.0
        for batch in dataset:
            if isinstance(batch["inputs"], tf.SparseTensor):
                count += float(tf.reduce_sum(batch["targets"].values))
                if sharded:
                    top, batch_total, relevant = by_shard(batch["inputs"], batch["targets"])
                    accumulator.add_top(top, relevant)
                else:
                    scores, batch_total, seen, relevant = sparse_ranked(batch["inputs"], batch["targets"])
                    accumulator.add(scores, seen, relevant)
            else:
                scores, batch_total = dense_ranked(batch["inputs"], batch["targets"])
                count += float(tf.reduce_sum(batch["targets"]))
                accumulator.add(scores, batch["inputs"] != 0, batch["mask"] > 0)
            total += float(batch_total)
        return {**accumulator.summary(prefix), f"{prefix}_loss": total / max(count, 1.0)}

    return rank


def _indicator(x: tf.SparseTensor, shape) -> tf.Tensor:
    """`[b, items]` bool: True at `x`'s entries with a nonzero value."""
    return tf.scatter_nd(x.indices, tf.not_equal(x.values, 0), tf.cast(shape, tf.int64))


def log_ranking(metrics: dict, prefix: str, what: str) -> None:
    """One line: Recall@20/50 and NDCG@100 (with standard errors), and the baselines'."""
    names = [ranking.key(n, k) for n, k in ranking.DEFAULT]
    found = ", ".join(
        f"{name} {metrics[f'{prefix}_{name}']:.4f} (+- {metrics[f'{prefix}_{name}_se']:.4f})"
        for name in names
    )
    others = "; ".join(
        f"{baseline} NDCG@100 {metrics[f'{baseline}_{prefix}_{ranking.SELECTED}']:.4f}"
        for baseline in ("popularity", "ease")
        if metrics.get(f"{baseline}_{prefix}_{ranking.SELECTED}") is not None
    )
    logging.info(
        "%s: %s over %d users%s", what, found, metrics[f"{prefix}_ranked_users"], f"; {others}" * bool(others)
    )
