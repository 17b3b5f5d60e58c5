"""Ranking metrics over the whole catalog, as Liang et al. (2018, dawenl/vae_cf) define them.

For each evaluated user, the model scores every item; the user's fold-in items (what the model
was shown) are excluded, and the top K of the rest are compared with the user's evaluated
items (held out):

- Recall@K = hits in the top K / min(K, number evaluated) (vae_cf's normalization: 1 when the
  top K are all relevant, also for users with more than K evaluated items);
- NDCG@K = sum over the top K of hit / log2(rank + 1) (rank from 1), divided by the ideal DCG
  of min(K, number evaluated) hits.

Over users: the mean and the standard error `std / sqrt(users)` (vae_cf's). No sampled
metrics: every item of the catalog is ranked. Users without evaluated items are not scored.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

# (name, K) in the order metrics.json lists them: vae_cf's Recall@20, Recall@50, NDCG@100.
DEFAULT = (("recall", 20), ("recall", 50), ("ndcg", 100))
SELECTED = "ndcg_at_100"  # what `train.keep_best` selects on (higher is better)


def key(name: str, k: int) -> str:
    return f"{name}_at_{k}"


def exclude_seen(scores: tf.Tensor, seen: tf.Tensor) -> tf.Tensor:
    """`scores` `[b, n]` with `-inf` where `seen` `[b, n]` (bool) holds: never recommended."""
    return tf.where(seen, tf.constant(-np.inf, scores.dtype), scores)


def per_user(scores: tf.Tensor, relevant: tf.Tensor, metrics: Sequence = DEFAULT) -> dict:
    """`{"recall_at_20": [b], ...}` of scores `[b, n]` (seen items already `-inf`) against the
    evaluated items `relevant` `[b, n]` (bool), plus `"evaluated"` `[b]`, the count per user.

    A user without evaluated items gets NaN (0 / 0); `summarize` leaves such users out.
    """
    top = tf.math.top_k(scores, k=largest(scores.shape[-1], metrics), sorted=True).indices
    return from_top(top, relevant, metrics)


def largest(items: int, metrics: Sequence = DEFAULT) -> int:
    """How many of the best items `metrics` read, over a catalog of `items`."""
    return min(max(k for _, k in metrics), int(items))


def from_top(top: tf.Tensor, relevant: tf.Tensor, metrics: Sequence = DEFAULT) -> dict:
    """`per_user` from the best `largest(items, metrics)` items per user, `top` `[b, K]` (item
    indices, best first: e.g. `shard_top_k.by_shard`'s)."""
    ranked = int(top.shape[-1])
    hits = tf.cast(tf.gather(relevant, top, batch_dims=1), tf.float64)
    evaluated = tf.reduce_sum(tf.cast(relevant, tf.float64), axis=1)
    discount = 1.0 / np.log2(np.arange(2, ranked + 2, dtype=np.float64))  # rank 1 -> 1 / log2(2)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])  # ideal[m]: DCG of m hits on top
    results = {"evaluated": evaluated}
    for name, k in metrics:
        k_here = min(k, ranked)
        best = tf.minimum(evaluated, float(k))
        if name == "recall":
            value = tf.reduce_sum(hits[:, :k_here], axis=1) / best
        elif name == "ndcg":
            dcg = tf.reduce_sum(hits[:, :k_here] * discount[:k_here], axis=1)
            value = dcg / tf.gather(tf.constant(ideal), tf.cast(tf.minimum(best, k_here), tf.int32))
        else:
            raise ValueError(f"Unknown ranking metric {name!r}; expected 'recall' or 'ndcg'.")
        results[key(name, k)] = value
    return results


class Accumulator:
    """Per-user metrics of many batches -> means and standard errors over the scored users."""

    def __init__(self, metrics: Sequence = DEFAULT):
        self.metrics = tuple(metrics)
        self.values: dict = {key(n, k): [] for n, k in self.metrics}
        self.unscored = 0

    def add(self, scores, seen, relevant) -> None:
        """One batch: scores `[b, n]`, the fold-in items `seen` and the evaluated `relevant`
        (both `[b, n]` bool)."""
        scores = exclude_seen(tf.convert_to_tensor(scores), seen)
        self.add_top(tf.math.top_k(scores, largest(scores.shape[-1], self.metrics)).indices, relevant)

    def add_top(self, top, relevant) -> None:
        """One batch from its best items `top` `[b, K]` (the fold-in items already left out,
        `K = largest(items, metrics)`) and the evaluated `relevant` `[b, n]` (bool)."""
        results = from_top(top, relevant, self.metrics)
        scored = results["evaluated"].numpy() > 0
        self.unscored += int((~scored).sum())
        for name in self.values:
            self.values[name].append(results[name].numpy()[scored])

    def summary(self, prefix: str) -> dict:
        """`{f"{prefix}_recall_at_20": mean, f"{prefix}_recall_at_20_se": standard error, ...,
        f"{prefix}_ranked_users": count}`."""
        out = {}
        for name, parts in self.values.items():
            values = np.concatenate(parts) if parts else np.zeros(0)
            if not len(values):
                raise ValueError("No evaluated user has a held-out item to rank.")
            out[f"{prefix}_{name}"] = float(values.mean())
            out[f"{prefix}_{name}_se"] = float(values.std() / np.sqrt(len(values)))
        out[f"{prefix}_ranked_users"] = len(values)
        return out


def accumulate(scores_fn, inputs, targets, batch_size: int, metrics=DEFAULT) -> Accumulator:
    """The per-user metrics (`Accumulator.values`, the users in their order in `targets`) of
    `scores_fn(fold-in rows [b, width] float32) -> [b, width]`, a baseline's or a model's
    scores, over the evaluated users of `(inputs, targets)`."""
    accumulator = Accumulator(metrics)
    for start in range(0, len(targets), batch_size):
        rows = np.arange(start, min(start + batch_size, len(targets)))
        fold_in, seen = inputs.rows(rows).to_dense()
        accumulator.add(scores_fn(fold_in), seen > 0, targets.rows(rows).to_dense()[1] > 0)
    return accumulator


def score_matrix(scores_fn, inputs, targets, batch_size: int, prefix: str, metrics=DEFAULT) -> dict:
    """`accumulate`'s means and standard errors: `Accumulator.summary(prefix)`."""
    return accumulate(scores_fn, inputs, targets, batch_size, metrics).summary(prefix)
