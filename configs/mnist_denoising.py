"""A denoising tied autoencoder (Vincent et al. 2010): `mnist_tied.py` with 25% masking noise.

    python train.py --config=configs/mnist_denoising.py --config.data.path=../shared/data/mnist

The encoder sees each training image with a random quarter of its pixels set to 0 (new noise
every step and replica); the loss compares the reconstruction with the clean image.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mnist_tied  # noqa: E402


def get_config():
    config = mnist_tied.get_config()
    config.train.corruption = "masking"
    config.train.corruption_level = 0.25
    return config
