"""Hinton & Salakhutdinov (2006)'s deep MNIST autoencoder shape: 784-1000-500-250-30, linear code.

    python train.py --config=configs/mnist_deep.py --config.data.path=../shared/data/mnist

Logistic hidden layers and a linear 30-unit code as in the paper, trained end to end with
Adam from random initialization (no RBM pretraining) on BCE.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mnist_tied  # noqa: E402


def get_config():
    config = mnist_tied.get_config()
    config.model.layer_sizes = (784, 1000, 500, 250, 30)
    config.model.activation = "sigmoid,sigmoid,sigmoid,linear"
    config.train.num_steps = 5_000
    return config
