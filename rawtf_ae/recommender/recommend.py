"""Recommending with a trained ratings autoencoder: top-K unrated items for any user.

The model maps a user's rating vector over the items to a dense vector of predicted ratings
(Kuchaiev & Ginsburg 2017); the recommendations are the K highest predictions among the items
the user has not rated. A new user needs no retraining: their few ratings are the input.
Inputs stay sparse: a `TiedAutoencoder` encodes the rated items' kernel rows alone
(`encode_sparse`) and only the predictions over the catalog are dense, one batch of users at a
time, so a million-item catalog costs one `[batch, items]` output per batch.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import tensorflow as tf

from rawtf_ae.recommender import shard_top_k, top_k
from rawtf_ae.recommender.ratings import RatingMatrix, Vocabulary


def predict_sparse(model, ratings: tf.SparseTensor) -> tf.Tensor:
    """`[batch, items]` predictions of `model` for sparse rating rows `[batch, items]`.

    `model.reconstruct_sparse` when the model has it (no dense input), else
    `model(dense input)` (e.g. a loaded export).
    """
    if hasattr(model, "reconstruct_sparse"):
        return model.reconstruct_sparse(ratings)
    return model(tf.sparse.to_dense(ratings))


def top_k_unrated(predictions, rated, k):
    """The `k` best unrated items per row.

    Args:
      predictions: `[batch, num_items]` predicted ratings.
      rated: `[batch, num_items]`, nonzero where the user has rated (those are excluded), or a
        `tf.SparseTensor` whose entries are the rated items (no dense mask is built).
      k: how many (a Python int or scalar tensor); clipped to `num_items`.

    Returns:
      `(scores, items)`, both `[batch, min(k, num_items)]`, best first; a user with fewer than
      `k` unrated items gets `-inf` scores in the trailing places.
    """
    predictions = tf.convert_to_tensor(predictions, tf.float32)
    if isinstance(rated, tf.SparseTensor):
        minus_inf = tf.fill(tf.shape(rated.values), tf.constant(-np.inf, tf.float32))
        excluded = tf.tensor_scatter_nd_update(predictions, rated.indices, minus_inf)
    else:
        excluded = tf.where(tf.not_equal(rated, 0), tf.constant(-np.inf, tf.float32), predictions)
    k = tf.minimum(tf.cast(k, tf.int32), tf.shape(predictions)[-1])
    return tf.math.top_k(excluded, k)


def rating_row(vocabulary: Vocabulary, user_ratings):
    """`{item_id: rating}`, or item ids (implicit feedback: each an interaction of value 1) ->
    `(ratings, unknown)`: a `[1, num_items]` `tf.SparseTensor` of the known items (in column
    order) and the ids not in `vocabulary`."""
    if isinstance(user_ratings, (str, bytes)):
        raise TypeError(
            f"Expected {{item_id: rating}} or a list of item ids, got the string {user_ratings!r}."
        )
    if not isinstance(user_ratings, Mapping):
        user_ratings = dict.fromkeys(user_ratings, 1.0)
    columns, values, unknown = [], [], []
    for item, value in user_ratings.items():
        index = vocabulary.item_index.get(str(item))
        if index is None:
            unknown.append(item)
            continue
        if not np.isfinite(value):
            raise ValueError(f"The rating of item {item!r} is {value}; expected a finite number.")
        columns.append(index)
        values.append(value)
    order = np.argsort(columns, kind="stable")
    columns = np.asarray(columns, np.int64)[order]
    indices = np.stack([np.zeros_like(columns), columns], axis=1).reshape(-1, 2)
    row = tf.SparseTensor(indices, np.asarray(values, np.float32)[order], [1, len(vocabulary.items)])
    return row, unknown


class Recommender:
    """A model and its vocabulary: `recommend({item: rating}, k)` for any user.

    Args:
      model: maps `[batch, num_items]` rating vectors to predictions (a `TiedAutoencoder` or a
        loaded export).
      vocabulary: the ids the model was trained with (rows per user).
      train: optionally the training rows (`RatingMatrix`, one per user in vocabulary order),
        for `recommend_for_users`.
      first_pass: one user's top-K over a large catalog through an int8 copy of the last
        kernel (`item_index.ItemIndex`: exact, 2x faster at a million items): "auto"
        (catalogs of `item_index.AUTO_ITEMS` items or more, when the model allows), "int8"
        or "none". The copy is taken here: call `refresh()` after training the model further.
        A model whose last kernel is sharded over parameter servers is ranked shard by shard
        instead (`shard_top_k`: each shard's top K comes back, never the kernel).
    """

    def __init__(
        self,
        model,
        vocabulary: Vocabulary,
        train: Optional[RatingMatrix] = None,
        first_pass: str = "auto",
    ):
        if train is not None and (
            len(train) != len(vocabulary.users) or train.width != len(vocabulary.items)
        ):
            raise ValueError(
                f"The training rows ({len(train)} x {train.width}) are not one per user over the items "
                f"({len(vocabulary.users)} x {len(vocabulary.items)}); recommending needs "
                "data.ratings_by='user'."
            )
        self.model, self.vocabulary, self.train = model, vocabulary, train
        self.index, self._shard_top_k = None, None
        if shard_top_k.is_sharded(model):  # parameter servers: each shard's top K, merged
            spec = tf.SparseTensorSpec([None, model.input_width], tf.float32)
            self._shard_top_k = tf.function(
                lambda ratings, k: shard_top_k.top_k_unrated(model, ratings, k),
                input_signature=[spec, tf.TensorSpec([], tf.int32)],
            )
        elif top_k.wanted(model, first_pass):
            self.index = top_k.ItemIndex(model)
            spec = tf.SparseTensorSpec([1, model.input_width], tf.float32)
            self._index_top_k = tf.function(
                self.index.top_k_unrated, input_signature=[spec, tf.TensorSpec([], tf.int32)]
            )

    def refresh(self) -> None:
        """Takes a new int8 copy of the kernel for the first pass (after the weights changed)."""
        if self.index is not None:
            self.index.refresh()

    def _top(self, ratings: tf.SparseTensor, k: int) -> list[list[tuple[str, float]]]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"`k` must be a positive number of items, got {k!r}.")
        if self._shard_top_k is not None:
            scores, items = self._shard_top_k(ratings, tf.constant(k, tf.int32))
        elif self.index is not None and ratings.dense_shape[0] == 1:
            scores, items = self._index_top_k(ratings, tf.constant(k, tf.int32))
        else:
            scores, items = top_k_unrated(predict_sparse(self.model, ratings), ratings, k)
        return [
            [(self.vocabulary.items[i], float(s)) for s, i in zip(row_scores, row_items) if np.isfinite(s)]
            for row_scores, row_items in zip(scores.numpy(), items.numpy())
        ]

    def recommend(self, user_ratings: Mapping[str, float], k: int = 10, unknown_items: str = "skip"):
        """The top-`k` `(item_id, predicted rating)` among items not in `user_ratings`.

        Args:
          user_ratings: one user's `{item_id: rating}`, e.g. a new user's first few ratings, or
            the item ids a user interacted with (implicit feedback: fold-in without retraining).
          k: how many items.
          unknown_items: `"skip"` items the model was not trained on, or `"error"`.
        """
        if unknown_items not in ("skip", "error"):
            raise ValueError(f"`unknown_items` is {unknown_items!r}; expected 'skip' or 'error'.")
        ratings, unknown = rating_row(self.vocabulary, user_ratings)
        if unknown and unknown_items == "error":
            raise ValueError(
                f"Items {unknown[:5]} are not in the model's vocabulary ({len(unknown)} unknown)."
            )
        return self._top(ratings, k)[0]

    def recommend_for_users(
        self, user_ids, k: int = 10, batch_size: int = 256
    ) -> list[list[tuple[str, float]]]:
        """Top-`k` unrated items for known users, from their training ratings, `batch_size`
        users at a time (one `[batch_size, items]` prediction in memory)."""
        if self.train is None:
            raise ValueError("This Recommender has no training rows; pass `train=` or use `recommend`.")
        rows = []
        for user in user_ids:
            if str(user) not in self.vocabulary.user_index:
                raise ValueError(
                    f"User {user!r} is not in the training data; use `recommend` with their ratings."
                )
            rows.append(self.vocabulary.user_index[str(user)])
        top = []
        for start in range(0, len(rows), batch_size):
            top += self._top(
                self.train.sparse_batch(tf.constant(rows[start : start + batch_size], tf.int64)), k
            )
        return top
