"""`mnist_deep.py` with greedy layer-wise pretraining first (Hinton & Salakhutdinov 2006's recipe,
with tied autoencoders in place of RBMs, as in Bengio et al. 2007).

    python train.py --config=configs/mnist_deep_pretrained.py --config.data.path=../shared/data/mnist

Each of the four layers is first trained for 1,000 steps as a one-layer tied autoencoder on the
codes of the layers below; the assembled 784-1000-500-250-30 network is then fine-tuned end to
end for the same 5,000 steps as `mnist_deep.py`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mnist_deep  # noqa: E402


def get_config():
    config = mnist_deep.get_config()
    config.pretrain.steps_per_layer = 1_000
    return config
