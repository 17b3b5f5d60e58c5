"""Best-checkpoint selection and early stopping: the record, the weights, resume, the modes."""

import os

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.data import sources
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.program import restore, train
from rawtf_ae.recommender.ratings_file import write_ratings
from rawtf_ae.recommender.synthetic import synthetic_ratings
from rawtf_ae.training import early_stopping, evaluation
from tests.conftest import tiny_config, tiny_ratings_config


def test_the_tracker_keeps_the_best_weights_and_counts_evaluations_without_one(tmp_path):
    model = TiedAutoencoder([6, 3], seed=0)
    tracker = early_stopping.Tracker(early_stopping.BestSoFar(), model, str(tmp_path), 2, chief=True)
    assert tracker.update(10, 0.5)
    best = [v.numpy().copy() for v in model.trainable_variables]
    for variable in model.trainable_variables:
        variable.assign(variable + 1.0)
    assert not tracker.update(20, 0.6) and not tracker.stopped
    assert not tracker.update(20, 0.6)  # the same evaluation again counts once
    assert not tracker.update(30, 0.5) and tracker.stopped  # equal is no improvement
    assert tracker.restore_best() == 10
    for variable, value in zip(model.trainable_variables, best):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert early_stopping.Tracker(tracker.record, model, str(tmp_path), 0, True).stopped is False


def _overfitting(path, **overrides):
    """A small recommender without dropout at a high rate: its held-out loss turns up early."""
    values = {
        "train.code_dropout": 0.0,
        "train.dense_refeeding": 0,
        "train.learning_rate": 1e-2,
        "train.num_steps": 300,
        "train.eval_every_steps": 10,
        "train.checkpoint_every_steps": 10,
        "train.log_every_steps": 10,
        "train.keep_best": True,
        "train.early_stopping_evals": 3,
        "train.export": False,
        **overrides,
    }
    return tiny_ratings_config(path, **values)


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory):
    triples = synthetic_ratings(num_users=300, num_items=80, density=0.15, seed=1)
    return write_ratings(str(tmp_path_factory.mktemp("ratings") / "r.csv"), triples)


def test_training_stops_early_and_ends_with_the_best_weights(tmp_path, ratings_file, caplog):
    caplog.set_level("INFO", logger="absl")
    config = _overfitting(ratings_file)
    run = str(tmp_path / "run")
    metrics = train.train_and_evaluate(config, run)
    assert metrics["early_stopped"] and metrics["step"] < 300, metrics
    assert metrics["step"] == metrics["best_step"] + 3 * 10
    assert "early stopping at step" in caplog.text
    # The run's metrics are the best evaluation's, and the modes read the same weights.
    model, step, path = restore.restore_model(config, run)
    assert step == metrics["best_step"] and "best.npz" in path
    last, last_step, _ = restore.restore_model(
        tiny_ratings_config(ratings_file, **{"train.keep_best": False}), run
    )
    assert last_step == metrics["step"]
    evaluate = evaluation.make_evaluate(model, "masked_mse")
    splits = sources.load(config.data, config.seed)
    assert evaluate(splits.evaluation_dataset(100)) == pytest.approx(metrics["val_loss"], rel=1e-6)
    assert evaluation.make_evaluate(last, "masked_mse")(splits.evaluation_dataset(100)) > metrics["val_loss"]
    # Run again: it stopped already, so it evaluates only.
    caplog.clear()
    again = train.train_and_evaluate(config, run)
    assert "stopped early already" in caplog.text and again["step"] == metrics["step"]
    assert again["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)


def test_an_interrupted_run_stops_at_the_same_step_with_the_same_best(tmp_path, ratings_file):
    whole = train.train_and_evaluate(_overfitting(ratings_file), str(tmp_path / "whole"))
    part = str(tmp_path / "part")
    first = train.train_and_evaluate(_overfitting(ratings_file, **{"train.num_steps": 40}), part)
    assert not first["early_stopped"]
    resumed = train.train_and_evaluate(_overfitting(ratings_file), part)
    assert (resumed["step"], resumed["best_step"]) == (whole["step"], whole["best_step"])
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-5)


def test_early_stopping_settings_are_validated():
    from rawtf_ae.config import checks

    with pytest.raises(ValueError, match="`train.early_stopping_evals` needs `train.keep_best=True`"):
        checks.validate(tiny_config(**{"train.early_stopping_evals": 2}))
    with pytest.raises(ValueError, match="`train.early_stopping_evals` must be a non-negative integer"):
        checks.validate(tiny_config(**{"train.keep_best": True, "train.early_stopping_evals": -1}))


def test_keep_best_on_a_dense_run_mirrored(tmp_path):
    config = tiny_config(
        **{
            "train.keep_best": True,
            "train.strategy": "mirrored",
            "train.logical_cpus": 2,
            "train.num_steps": 40,
        }
    )
    metrics = train.train_and_evaluate(config, str(tmp_path))
    assert metrics["best_step"] in (20, 40) and os.path.exists(tmp_path / "checkpoints" / "best.npz")
    assert tf.io.gfile.exists(str(tmp_path / "export" / "saved_model"))


def test_keep_best_can_be_switched_on_for_a_run_begun_without_it(tmp_path):
    train.train_and_evaluate(tiny_config(**{"train.num_steps": 20}), str(tmp_path))
    metrics = train.train_and_evaluate(
        tiny_config(**{"train.num_steps": 40, "train.keep_best": True}), str(tmp_path)
    )
    assert metrics["best_step"] == 40 and metrics["step"] == 40
