"""A stacked denoising autoencoder classifier (Vincent et al. 2010), smaller: 784-500-500 logistic.

    python -m benchmarks.sda_classification --config=configs/mnist_sda.py --seeds=3

Each layer is pretrained for 1,000 steps as a denoising tied autoencoder with 25% masking noise;
then a softmax layer goes on top and the encoder is fine-tuned on the labels for
`train.num_steps` steps. The benchmark compares it with the same network from random
initialization on the MNIST test-set files (8,000 train / 2,000 test).
"""

from rawtf_ae.config.defaults import default_config


def get_config():
    config = default_config()
    config.model.layer_sizes = (784, 500, 500)
    config.model.activation = "sigmoid"
    config.data.name = "mnist"
    config.data.path = "../shared/data/mnist"
    config.data.num_train = 0
    config.data.num_validation = 2_000
    config.pretrain.steps_per_layer = 1_000
    config.train.corruption = "masking"
    config.train.corruption_level = 0.25
    config.train.batch_size = 128
    config.train.num_steps = 2_000  # supervised fine-tuning steps
    config.train.learning_rate = 1e-3
    return config
