"""PCA baseline: against NumPy's SVD, and the linear tied autoencoder reaching it (Baldi & Hornik 1989);
the per-item-mean ratings baseline against a hand computation."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.data import pipelines
from rawtf_ae.models import pca
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.recommender import baselines
from rawtf_ae.training import loops, steps


def _low_rank_data(n, seed):
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 4)) * np.array([3.0, 2.0, 1.0, 0.5])
    return (factors @ rng.normal(size=(4, 12)) + 0.1 * rng.normal(size=(n, 12)) + 1.0).astype(np.float32)


def test_pca_matches_numpy_svd():
    x = _low_rank_data(300, 0)
    mean, components = pca.pca(x, 3)
    np.testing.assert_allclose(components.numpy() @ components.numpy().T, np.eye(3), atol=1e-10)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    # Same subspace: the projectors agree.
    np.testing.assert_allclose(components.numpy().T @ components.numpy(), vt[:3].T @ vt[:3], atol=1e-6)
    reconstruction = pca.pca_reconstruction(x, mean, components)
    np.testing.assert_allclose(reconstruction, (x - x.mean(0)) @ vt[:3].T @ vt[:3] + x.mean(0), atol=1e-5)


def test_linear_tied_autoencoder_reaches_the_pca_error():
    examples = _low_rank_data(768, 1)
    train_x, validation_x = examples[:512], examples[512:]
    pca_error = pca.pca_mse(train_x, validation_x, 3)
    model = TiedAutoencoder([12, 3], activation="linear", output_activation="linear", seed=0)
    optimizer = tf.keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    counter = tf.Variable(0, dtype=tf.int64)
    loop = loops.make_train_loop(steps.make_train_step(model, optimizer, "mse", 128), counter)
    loop(iter(pipelines.train_dataset(train_x, 128, seed=0)), tf.constant(3000, tf.int64))
    error = float(np.mean((model(validation_x).numpy() - validation_x) ** 2))
    # A linear autoencoder can only match PCA (same subspace), and with training it does.
    assert error >= pca_error * 0.99
    assert error <= pca_error * 1.01, (error, pca_error)
    one_less = pca.pca_mse(train_x, validation_x, 2)
    assert error < 0.5 * one_less  # it found the 3-dimensional subspace, not less


@pytest.mark.parametrize("by", ["user", "item"])
def test_item_mean_rmse_against_a_hand_computation(tmp_path, by):
    from rawtf_ae.recommender import ratings, ratings_file

    train_file, held_out_file = tmp_path / "train.csv", tmp_path / "held_out.csv"
    # Item 10: ratings 4 and 2 (mean 3); item 20: 5 (mean 5); item 30: rated by nobody held out.
    train_file.write_text("user,item,rating\n1,10,4\n2,10,2\n1,20,5\n3,30,1\n")
    # Held out: user 3 on item 10 (3 predicted, 5 true), user 2 on item 20 (5 vs 4), user 9 unseen.
    held_out_file.write_text("3,10,5\n2,20,4\n9,10,1\n")
    splits = ratings.build_splits(
        ratings_file.read_ratings(str(train_file)), ratings_file.read_ratings(str(held_out_file)), by=by
    )
    assert splits.skipped == 1
    assert baselines.item_mean_rmse(splits) == pytest.approx(np.sqrt(((3 - 5) ** 2 + (5 - 4) ** 2) / 2))


def _mf_objective(model, rows, columns, values, regularization):
    residual = values - baselines.biased_mf_predict(model, rows, columns)
    penalty = sum(np.sum(model[k] ** 2) for k in ("row_bias", "column_bias", "row_factors", "column_factors"))
    return np.sum(residual**2) + regularization * penalty


def _observed_low_rank(seed=0, shape=(60, 40), density=0.3, noise=0.1):
    rng = np.random.default_rng(seed)
    truth = 3 + rng.normal(0, 0.5, (shape[0], 1)) + rng.normal(0, 0.5, (1, shape[1]))
    truth = truth + rng.normal(0, 1, (shape[0], 3)) @ rng.normal(0, 0.5, (3, shape[1]))
    rows, columns = np.nonzero(rng.random(shape) < density)
    return rows, columns, truth[rows, columns] + noise * rng.normal(size=len(rows)), truth


def test_biased_mf_half_steps_are_exact_ridge_solutions_and_lower_the_objective():
    rows, columns, values, _ = _observed_low_rank()
    objectives = []
    for iterations in range(1, 6):
        model = baselines.biased_mf(
            rows, columns, values, (60, 40), rank=3, regularization=2.0, iterations=iterations
        )
        objectives.append(_mf_objective(model, rows, columns, values, 2.0))
    assert all(later <= earlier + 1e-9 for earlier, later in zip(objectives, objectives[1:])), objectives
    # The columns were solved last: the objective's gradient in their parameters is zero.
    residual = values - baselines.biased_mf_predict(model, rows, columns)
    design = np.concatenate([np.ones((len(rows), 1)), model["row_factors"][rows]], axis=1)
    gradient = np.zeros((40, 4))
    np.add.at(gradient, columns, -2 * residual[:, None] * design)
    gradient += 2 * 2.0 * np.concatenate([model["column_bias"][:, None], model["column_factors"]], axis=1)
    np.testing.assert_allclose(gradient, 0, atol=1e-8)


def test_biased_mf_recovers_a_low_rank_matrix_and_beats_the_item_mean(tmp_path):
    from rawtf_ae.recommender import ratings, ratings_file
    from rawtf_ae.recommender.synthetic import synthetic_ratings

    rows, columns, values, truth = _observed_low_rank(density=0.6, noise=0.0)
    model = baselines.biased_mf(rows, columns, values, (60, 40), rank=3, regularization=1e-3, iterations=50)
    all_rows, all_columns = np.indices(truth.shape).reshape(2, -1)
    error = baselines.biased_mf_predict(model, all_rows, all_columns) - truth[all_rows, all_columns]
    assert np.sqrt(np.mean(error**2)) < 0.05  # unobserved entries too
    path = ratings_file.write_ratings(
        str(tmp_path / "r.csv"), synthetic_ratings(num_users=400, num_items=100, density=0.1)
    )
    splits = ratings.build_splits(ratings_file.read_ratings(path))
    assert baselines.biased_mf_rmse(splits, rank=5, regularization=1.0) < 0.8 * baselines.item_mean_rmse(
        splits
    )
