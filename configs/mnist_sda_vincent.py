"""Vincent et al. (2010)'s stacked denoising autoencoder, SdA-3: 784-1000-1000-1000 on full MNIST.

    python -m benchmarks.sda_classification --config=configs/mnist_sda_vincent.py --seeds=1

The papers' protocol (Vincent et al. 2010, Table 3; the DeepLearningTutorials SdA): the first
50,000 training images train, the last 10,000 validate (`data.num_validation=10000`: they pick
the fine-tuning step), and the 10,000 t10k images are the test set, scored once. Each logistic
layer is pretrained as a tied denoising autoencoder with masking noise at the tutorial's levels
0.1 / 0.2 / 0.3; then a softmax layer goes on top and the whole network is fine-tuned on the
labels. Adam in both stages stands in for the papers' plain SGD with batch 1 (a far longer run
on this CPU). `--config.pretrain.steps_per_layer=0` gives the same network unpretrained; the
benchmark trains both.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mnist_sda  # noqa: E402


def get_config():
    config = mnist_sda.get_config()
    config.model.layer_sizes = (784, 1000, 1000, 1000)
    config.data.path = "../shared/data/mnist-full"
    config.data.num_validation = 10_000
    config.pretrain.steps_per_layer = 4_000  # about 10 epochs of the 50,000 images per layer
    config.pretrain.corruption_levels = (0.1, 0.2, 0.3)
    config.train.num_steps = 20_000  # supervised fine-tuning steps, about 51 epochs
    return config
