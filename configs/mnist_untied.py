"""The untied twin of `mnist_tied.py`: the same network with its own decoder kernels.

python train.py --config=configs/mnist_untied.py --config.data.path=../shared/data/mnist
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mnist_tied  # noqa: E402


def get_config():
    config = mnist_tied.get_config()
    config.model.tied = False
    return config
