"""Baselines that give a recommender autoencoder's RMSE or ranking metrics their meaning.

Ratings: the per-item mean rating, which a recommender autoencoder must beat clearly, and a
biased matrix factorisation fit by alternating least squares (`biased_mf`, `biased_mf_rmse`),
the classic model to compare it with. Implicit feedback (`ranking_baselines`): popularity
(every user gets the most interacted items) and EASE (Steck 2019), the strong closed-form
linear model, on the same held-out users and metrics.
"""

from __future__ import annotations

import numpy as np
from absl import logging

from rawtf_ae.recommender import ranking

# EASE's items x items float64 matrices: its eigendecomposition took 12 s at 5,312 items here
# (2 cores) and grows as items^3; above this many items it is skipped with one log line.
EASE_MAX_ITEMS = 20_000
# EASE's L2 weights, chosen on the validation users' NDCG@100.
EASE_LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


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


SCORED_ENTRIES = 2**24  # a baseline's dense score batch: 64 MB of float32 scores


def item_counts(train) -> np.ndarray:
    """`[width]` float64: each item's summed training values (its interactions, binarized)."""
    return np.bincount(train.columns, weights=train.values, minlength=train.width)


def gram_eigen(train, chunk: int = 2048):
    """`(eigenvalues [n], eigenvectors [n, n])` of `X^T X` for the training rows `X` (float64)."""
    gram = np.zeros((train.width, train.width))
    for start in range(0, len(train), chunk):
        rows = train.rows(np.arange(start, min(start + chunk, len(train)))).to_dense()[0].astype(np.float64)
        gram += rows.T @ rows
    return np.linalg.eigh(gram)


def ease_scores(fold_in: np.ndarray, eigen, regularization: float) -> np.ndarray:
    """EASE's scores `X B` for fold-in rows `X` `[u, n]`: `B = I - P diag(1 / diag(P))`,
    `P = (X_train^T X_train + lambda I)^-1` (Steck 2019, its diagonal 0), from `gram_eigen`'s
    `P = V diag(1 / (w + lambda)) V^T`: no items x items product per lambda."""
    values, vectors = eigen
    inverse = 1.0 / (values + regularization)
    times_p = ((fold_in @ vectors) * inverse) @ vectors.T  # X P
    diagonal = (vectors**2) @ inverse  # diag(P)
    return fold_in - times_p / diagonal


def ranking_baselines(splits, splits_to_score=("validation",), batch_size: int = 0) -> dict:
    """Popularity's and EASE's ranking metrics on the held-out users of `splits`.

    `{"popularity_val_ndcg_at_100": ..., "ease_val_ndcg_at_100": ..., "ease_lambda": ...}` (and
    `test_` for "test" in `splits_to_score`); EASE's lambda is the `EASE_LAMBDAS` value with the
    best validation NDCG@100. EASE is skipped (logged, its keys None) above `EASE_MAX_ITEMS`.
    `batch_size`: users scored at once (0: `SCORED_ENTRIES // items`, at most 1,000: each batch
    is dense, `[users, items]`, and 1,000 users of 446,192 items peaked at 17.7 GiB).
    """
    batch_size = batch_size or max(1, min(1000, SCORED_ENTRIES // max(splits.width, 1)))
    prefixes = {"validation": "val", "test": "test"}
    popularity = item_counts(splits.train).astype(np.float32)
    metrics = {}
    for split in splits_to_score:
        inputs, targets = splits.evaluated(split)
        scores = lambda fold_in: np.broadcast_to(popularity, fold_in.shape)  # noqa: E731
        found = ranking.score_matrix(scores, inputs, targets, batch_size, prefixes[split])
        metrics.update({f"popularity_{name}": value for name, value in found.items() if "_se" not in name})
    if splits.width > EASE_MAX_ITEMS:
        logging.info(
            "EASE baseline skipped: %d items, over the %d its items x items matrix allows here",
            splits.width,
            EASE_MAX_ITEMS,
        )
        return {**metrics, "ease_lambda": None}
    eigen = gram_eigen(splits.train)
    chosen, best = None, -1.0
    inputs, targets = splits.evaluated("validation")
    for regularization in EASE_LAMBDAS:
        scores = lambda fold_in, lam=regularization: ease_scores(fold_in.astype(np.float64), eigen, lam)  # noqa: E731
        found = ranking.score_matrix(scores, inputs, targets, batch_size, "val")
        if found[f"val_{ranking.SELECTED}"] > best:
            chosen, best = regularization, found[f"val_{ranking.SELECTED}"]
    metrics["ease_lambda"] = chosen
    for split in splits_to_score:
        inputs, targets = splits.evaluated(split)
        scores = lambda fold_in: ease_scores(fold_in.astype(np.float64), eigen, chosen)  # noqa: E731
        found = ranking.score_matrix(scores, inputs, targets, batch_size, prefixes[split])
        metrics.update({f"ease_{name}": value for name, value in found.items() if "_se" not in name})
    return metrics
