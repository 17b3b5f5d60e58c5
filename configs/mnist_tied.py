"""The classic stacked-autoencoder tutorial model: tied 784-392-196, SELU hidden, sigmoid output, BCE.

    python train.py --config=configs/mnist_tied.py --config.data.path=../shared/data/mnist

`data.path` empty downloads MNIST through tf.keras.datasets; a folder holding only the t10k
IDX pair is split into `num_train` + `num_validation` examples (8,000 + 2,000 here).
"""

from rawtf_ae.config.defaults import default_config


def get_config():
    config = default_config()
    config.model.layer_sizes = (784, 392, 196)
    config.model.activation = "selu"
    config.model.output_activation = "sigmoid"
    config.model.tied = True
    config.data.name = "mnist"
    config.data.num_train = 0  # all training examples
    # Validation: 2,000 of a t10k-only folder at random; with train and test files, the last
    # 2,000 training images (the test files are then kept for --mode=eval --split=test).
    config.data.num_validation = 2_000
    config.train.loss = "bce"
    config.train.batch_size = 128
    config.train.num_steps = 2_000
    config.train.learning_rate = 1e-3
    return config
