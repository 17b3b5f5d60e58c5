"""Baselines that give a recommender autoencoder's RMSE its meaning.

The per-item mean rating, which a recommender autoencoder must beat clearly, and a biased
matrix factorisation fit by alternating least squares (`biased_mf`, `biased_mf_rmse`), the
classic model to compare it with.
"""

from __future__ import annotations

import numpy as np


def item_mean_rmse(splits) -> float:
    """RMSE on the held-out ratings of predicting each item's mean training rating.

    The classic floor for rating prediction (items without training ratings get the global
    mean). `splits` is a `ratings.RatingSplits`, by user (items are columns) or by item (rows).
    """
    train, targets = splits.train, splits.validation_targets
    global_mean = float(train.values.mean()) if train.nnz else 0.0
    if splits.by == "user":
        item_of_train, num_items = train.columns, train.width
        item_of_target = targets.columns
    else:
        num_items = len(train)
        item_of_train = train.entry_rows()
        item_of_target = splits.evaluated_rows[targets.entry_rows()]
    sums = np.bincount(item_of_train, weights=train.values, minlength=num_items)
    counts = np.bincount(item_of_train, minlength=num_items)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), global_mean)
    return float(np.sqrt(np.mean((means[item_of_target] - targets.values) ** 2)))


def _ridge_rows(owner, other_factors, targets, num_owners: int, regularization: float) -> np.ndarray:
    """For each owner o: argmin_w sum_(its ratings) (t - [1, f] . w)^2 + reg * |w|^2, `[n, k + 1]`.

    `owner [nnz]` says whose rating each entry is, `other_factors [nnz, k]` the fixed factors of
    the other side, `targets [nnz]` what `[1, f] . w` must fit. Solved in closed form, all
    owners at once (a batched `(k+1) x (k+1)` solve); owners without ratings get 0.
    """
    design = np.concatenate([np.ones((len(owner), 1)), other_factors], axis=1)  # [nnz, k + 1]
    width = design.shape[1]
    gram = np.zeros((num_owners, width, width))
    np.add.at(gram, owner, design[:, :, None] * design[:, None, :])
    right = np.zeros((num_owners, width))
    np.add.at(right, owner, design * targets[:, None])
    gram += regularization * np.eye(width)
    return np.linalg.solve(gram, right[:, :, None])[:, :, 0]


def biased_mf(
    rows,
    columns,
    values,
    shape: tuple[int, int],
    rank: int = 10,
    regularization: float = 5.0,
    iterations: int = 15,
    seed: int = 0,
) -> dict:
    """Biased matrix factorisation `r = mean + b_row + b_col + p_row . q_col` by alternating
    least squares (each half-step the exact ridge solution, Koren et al. 2009's model).

    Minimises `sum (r - prediction)^2 + regularization * (|b|^2 + |p|^2 + |q|^2)` over the
    observed `(rows, columns, values)` of a `shape` matrix; every half-step lowers it.

    Returns:
      `{"mean", "row_bias" [m], "column_bias" [n], "row_factors" [m, k], "column_factors" [n, k]}`.
    """
    rows, columns = np.asarray(rows, np.int64), np.asarray(columns, np.int64)
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    rng = np.random.default_rng(seed)
    row_factors = rng.normal(0, 0.1, (shape[0], rank))
    column_factors = rng.normal(0, 0.1, (shape[1], rank))
    row_bias, column_bias = np.zeros(shape[0]), np.zeros(shape[1])
    for _ in range(iterations):
        solved = _ridge_rows(
            rows, column_factors[columns], values - mean - column_bias[columns], shape[0], regularization
        )
        row_bias, row_factors = solved[:, 0], solved[:, 1:]
        solved = _ridge_rows(
            columns, row_factors[rows], values - mean - row_bias[rows], shape[1], regularization
        )
        column_bias, column_factors = solved[:, 0], solved[:, 1:]
    return {
        "mean": mean,
        "row_bias": row_bias,
        "column_bias": column_bias,
        "row_factors": row_factors,
        "column_factors": column_factors,
    }


def biased_mf_predict(model: dict, rows, columns) -> np.ndarray:
    """The factorisation's predictions at `(rows, columns)`."""
    rows, columns = np.asarray(rows, np.int64), np.asarray(columns, np.int64)
    interaction = np.sum(model["row_factors"][rows] * model["column_factors"][columns], axis=1)
    return model["mean"] + model["row_bias"][rows] + model["column_bias"][columns] + interaction


def biased_mf_rmse(splits, **options) -> float:
    """RMSE on the held-out ratings of `biased_mf` fit on the training ratings of `splits`.

    `splits` is a `ratings.RatingSplits` (by user or by item); `options` go to `biased_mf`.
    """
    train, targets = splits.train, splits.validation_targets
    train_rows = train.entry_rows()
    model = biased_mf(train_rows, train.columns, train.values, (len(train), train.width), **options)
    target_rows = splits.evaluated_rows[targets.entry_rows()]
    predicted = biased_mf_predict(model, target_rows, targets.columns)
    return float(np.sqrt(np.mean((predicted - targets.values) ** 2)))
