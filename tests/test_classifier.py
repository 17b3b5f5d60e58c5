"""Supervised fine-tuning: the encoder trained in place under a softmax layer, on MNIST labels."""

import numpy as np
import pytest

from rawtf_ae import TiedAutoencoder, classifier, data
from tests.conftest import tiny_config


def test_classifier_fine_tunes_the_encoder_in_place_and_learns_mnist_labels(mnist_dir):
    config = tiny_config(
        **{"data.name": "mnist", "data.path": mnist_dir, "data.num_validation": 1000, "data.num_train": 3000}
    )
    splits = data.load(config.data, 0)
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
