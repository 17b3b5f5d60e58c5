"""Shared fixtures: quiet TensorFlow, the MNIST test-set files, a tiny config."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPUs for the whole session, before TensorFlow initializes its devices, so that
# MirroredStrategy runs two replicas here (the default strategy still uses /cpu:0 alone).
NUM_LOGICAL_CPUS = 2
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a finished training run leaves in its workdir.
WORKDIR_OUTPUTS = [
    ".lock",
    "checkpoints",
    "config.json",
    "export",
    "metrics.json",
    "reconstructions.png",
    "summaries",
]
MNIST_DIR = os.environ.get("RAWTF_AE_MNIST_DIR", os.path.join(REPO, "..", "shared", "data", "mnist"))


@pytest.fixture
def mnist_dir():
    """The folder with the real MNIST t10k IDX pair (`../shared/data/mnist` beside the repo)."""
    if not os.path.exists(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")):
        pytest.skip(f"MNIST t10k files not found in {MNIST_DIR} (set RAWTF_AE_MNIST_DIR)")
    return MNIST_DIR


def tiny_config(**overrides):
    """The default config shrunk to seconds: small curves set, small model, few steps.

    `overrides` maps dotted keys to values, e.g. `tiny_config(**{"train.num_steps": 10})`.
    """
    from rawtf_ae.config.defaults import default_config

    config = default_config()
    config.model.layer_sizes = (784, 64, 16)
    config.model.activation = "selu,linear"
    config.data.num_train = 1_000
    config.data.num_validation = 200
    config.train.batch_size = 32
    config.train.num_steps = 40
    config.train.log_every_steps = 10
    config.train.eval_every_steps = 20
    config.train.checkpoint_every_steps = 20
    config.train.eval_batch_size = 100
    config.train.num_picture_examples = 8
    for dotted, value in overrides.items():
        section, key = dotted.split(".") if "." in dotted else (None, dotted)
        (config[section] if section else config)[key] = value
    return config


def tiny_ratings_config(path, **overrides):
    """`tiny_config` for a ratings file: a small SELU recommender with masked MSE, code dropout
    and one dense re-feeding step; the input width comes from the file."""
    values = {
        "data.name": "ratings",
        "data.path": path,
        "model.layer_sizes": (0, 32, 16),
        "model.activation": "selu",
        "model.output_activation": "linear",
        "train.loss": "masked_mse",
        "train.batch_size": 16,
        "train.num_steps": 20,
        "train.code_dropout": 0.5,
        "train.dense_refeeding": 1,
    }
    values.update(overrides)
    return tiny_config(**values)


def sharded(model, rows, groups=("kernels", "decoder_biases")):
    """`model` with the first variable of each of `groups` (its first kernel and output bias)
    split into parts of `rows` rows, made here as ParameterServerStrategy's partitioner makes
    them (`NAME/part_K`, a `ShardedVariable`)."""
    for group in groups:
        whole = getattr(model, group)[0]
        value, parts, start = whole.numpy(), [], 0
        for k, count in enumerate(rows):
            name = f"{whole.name.split(':')[0]}/part_{k}"
            parts.append(tf.Variable(value[start : start + count], name=name))
            start += count
        setattr(model, group, [tf.__internal__.distribute.ShardedVariable(parts), *getattr(model, group)[1:]])
    return model
