"""Supervised fine-tuning: the encoder trained in place under a softmax layer, on MNIST labels."""

import numpy as np
import pytest

from rawtf_ae.data import sources
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.training import classifier
from tests.conftest import tiny_config


def test_classifier_fine_tunes_the_encoder_in_place_and_learns_mnist_labels(mnist_dir):
    config = tiny_config(
        **{"data.name": "mnist", "data.path": mnist_dir, "data.num_validation": 1000, "data.num_train": 3000}
    )
    splits = sources.load(config.data, 0)
    encoder = TiedAutoencoder([784, 64], activation="sigmoid", seed=0)
    model = classifier.Classifier(encoder, num_classes=10, seed=0)
    assert model.fine_tuned_variables[0] is encoder.kernels[0]  # the same variable, no copy
    assert not any(v is b for v in model.fine_tuned_variables for b in encoder.decoder_biases)
    before = encoder.kernels[0].numpy().copy()
    assert classifier.error_rate(model, splits.validation, splits.validation_labels) > 0.7
    classifier.fine_tune(model, splits.train, splits.train_labels, steps=300, batch_size=64, seed=0)
    assert not np.array_equal(encoder.kernels[0].numpy(), before)
    assert classifier.error_rate(model, splits.validation, splits.validation_labels) < 0.15


def test_error_rate_counts_wrong_predictions():
    encoder = TiedAutoencoder([2, 2], activation="linear", seed=0)
    encoder.kernels[0].assign(np.eye(2, dtype=np.float32))
    model = classifier.Classifier(encoder, num_classes=2)
    model.kernel.assign(np.eye(2, dtype=np.float32))
    x = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    assert classifier.error_rate(model, x, np.array([0, 1, 1, 1])) == 0.25
    with pytest.raises(ValueError, match="4 examples but 3 labels"):
        classifier.fine_tune(model, x, np.array([0, 1, 1]), steps=1, batch_size=2)


def test_fine_tuning_on_two_mirrored_replicas_matches_one_device():
    import tensorflow as tf

    from rawtf_ae.training import distribute

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(256, 20)).astype(np.float32)
    y = (x[:, :10].sum(1) > x[:, 10:].sum(1)).astype(np.int64) + 2 * (x[:, 0] > 0.5)

    def tuned(strategy):
        with strategy.scope():
            model = classifier.Classifier(TiedAutoencoder([20, 8], activation="selu", seed=1), 4, seed=1)
        classifier.fine_tune(model, x, y, steps=12, batch_size=32, seed=3, strategy=strategy)
        return [v.numpy() for v in model.fine_tuned_variables]

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = distribute.mirrored_strategy(devices)
    assert mirrored.num_replicas_in_sync == 2
    for a, b in zip(tuned(mirrored), tuned(tf.distribute.get_strategy())):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divide evenly over 2 replicas"):
        with mirrored.scope():
            model = classifier.Classifier(TiedAutoencoder([20, 8], seed=1), 4)
        classifier.fine_tune(model, x, y, steps=1, batch_size=33, strategy=mirrored)


def test_the_first_fine_tuning_step_is_adam_on_the_cross_entropy_gradient_of_every_layer():
    # The gradient written out in NumPy (float64), through the softmax layer into the encoder.
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(32, 12)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    model = classifier.Classifier(TiedAutoencoder([12, 6], activation="sigmoid", seed=2), 3, seed=2)
    before = [v.numpy().astype(np.float64) for v in model.fine_tuned_variables]
    kernel, bias, head, head_bias = before
    classifier.fine_tune(model, x, y, steps=1, batch_size=32, learning_rate=0.01, seed=0)
    h = 1 / (1 + np.exp(-(x @ kernel + bias)))
    logits = h @ head + head_bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_logits = (p - np.eye(3)[y]) / len(x)  # one batch of 32 holds every example, in any order
    d_pre = d_logits @ head.T * h * (1 - h)
    gradients = [x.T @ d_pre, d_pre.sum(0), h.T @ d_logits, d_logits.sum(0)]
    epsilon = 1e-7 / np.sqrt(1 - 0.999)  # Keras Adam's first step: lr * g / (|g| + eps / sqrt(1 - beta_2))
    for variable, start, g in zip(model.fine_tuned_variables, before, gradients):
        expected = start - 0.01 * g / (np.abs(g) + epsilon)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=0, atol=1e-4)
        assert np.abs(variable.numpy() - start).max() > 0.009  # the encoder moves too


def test_fine_tuning_selects_the_lowest_validation_error_and_stops_early(caplog):
    import re

    caplog.set_level("INFO", logger="absl")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(256, 20)).astype(np.float32)
    y = (x[:, :10].sum(1) > x[:, 10:].sum(1)).astype(np.int64)
    noisy = np.where(rng.random(256) < 0.3, 1 - y, y)  # a validation set the model cannot fit

    def model():
        return classifier.Classifier(TiedAutoencoder([20, 8], activation="selu", seed=1), 2, seed=1)

    selected = model()
    classifier.fine_tune(selected, x, y, steps=60, batch_size=32, seed=3, validation=(x, noisy), eval_every=5)
    best_step = int(re.search(r"was at step (\d+)", caplog.text).group(1))
    assert 5 <= best_step <= 60
    # The same stream of batches, stopped at the selected step, gives the selected weights.
    reference = model()
    classifier.fine_tune(reference, x, y, steps=best_step, batch_size=32, seed=3)
    for a, b in zip(selected.fine_tuned_variables, reference.fine_tuned_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    caplog.clear()
    easy = (x[:1], np.array([int(np.argmax(model()(x[:1]).numpy()))]))  # right before any step
    classifier.fine_tune(
        model(), x, y, steps=60, batch_size=32, seed=3, validation=easy, eval_every=5, patience=2
    )
    assert "fine-tuned 15 steps" in caplog.text  # error 0 at step 5, then 2 evaluations without a new lowest
