"""Hinton & Salakhutdinov (2006)'s MNIST experiment: 784-1000-500-250-30 on all 60,000 images.

    python train.py --config=configs/mnist_hinton.py
    python train.py --mode=eval --config=configs/mnist_hinton.py --workdir=workdirs/mnist_hinton

`mnist_deep_pretrained.py` on the full MNIST files (`../shared/data/mnist-full`), with the
paper's protocol: train on the 60,000 training images (`data.num_validation=0`, so the
evaluations during training and `--mode=eval` report on the 10,000 test images, which the paper
reports on too). The paper's figure is the average squared error per test image, summed over
the 784 pixels: `--mode=eval` prints it as the MSE per input (multiply by 784), next to PCA
with 30 components. Greedy layer-wise pretraining with tied autoencoders (4,000 steps per
layer) stands in for the paper's RBMs; then 40,000 fine-tuning steps (85 epochs) with a cosine
decay. `--config.pretrain.steps_per_layer=0` gives the same network from random initialization.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mnist_deep_pretrained  # noqa: E402


def get_config():
    config = mnist_deep_pretrained.get_config()
    config.data.path = "../shared/data/mnist-full"
    config.data.num_train = 0
    config.data.num_validation = 0  # the paper's protocol: evaluate on the test files
    config.pretrain.steps_per_layer = 4_000
    config.train.num_steps = 40_000
    config.train.schedule = "cosine"
    config.train.eval_every_steps = 10_000
    config.train.checkpoint_every_steps = 10_000
    config.train.log_every_steps = 5_000
    return config
