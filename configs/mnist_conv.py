"""A tied convolutional autoencoder: two stride-2 3x3 ReLU convolutions (16, 32 filters), decoded
by transposed convolutions with the same filters.

    python train.py --config=configs/mnist_conv.py --config.data.path=../shared/data/mnist
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mnist_tied  # noqa: E402


def get_config():
    config = mnist_tied.get_config()
    config.model.kind = "conv"
    config.model.image_shape = (28, 28, 1)
    config.model.filters = (16, 32)
    config.model.kernel_size = 3
    config.model.strides = 2
    config.model.activation = "relu"
    return config
