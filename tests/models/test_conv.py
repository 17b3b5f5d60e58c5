"""TiedConvAutoencoder: one variable per tied filter, summed gradients, the decoder is the
adjoint of the encoder, training on MNIST (also mirrored), exports, bad input."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.data import pipelines, sources
from rawtf_ae.models import architectures, weights_file
from rawtf_ae.models.conv import TiedConvAutoencoder
from rawtf_ae.program import restore, train
from rawtf_ae.serving import saved_model
from rawtf_ae.training import evaluation
from tests.conftest import tiny_config

CONV = {"model.kind": "conv", "model.filters": (8, 16), "model.activation": "relu"}


def test_parameter_counts_and_one_variable_per_tied_filter():
    tied = TiedConvAutoencoder((28, 28, 1), (16, 32), seed=0)
    untied = TiedConvAutoencoder((28, 28, 1), (16, 32), seed=0, tied=False)
    filters = 3 * 3 * 1 * 16 + 3 * 3 * 16 * 32
    biases = (16 + 32) + (1 + 16)
    assert tied.num_parameters() == filters + biases == 4_817
    assert untied.num_parameters() == 2 * filters + biases
    assert [tuple(k.shape) for k in tied.kernels] == [(3, 3, 1, 16), (3, 3, 16, 32)]
    assert tied.decoder_kernels == [None, None]
    assert tied.shapes == ((28, 28, 1), (14, 14, 16), (7, 7, 32)) and tied.code_width == 7 * 7 * 32
    four_d = [v for v in tied.trainable_variables if len(v.shape) == 4]
    assert {id(v) for v in four_d} == {id(k) for k in tied.kernels}


def test_tied_filter_gradient_is_the_sum_of_encoder_and_decoder_paths():
    tied = TiedConvAutoencoder((8, 8, 2), (4, 3), activation=["tanh", "linear"], seed=1)
    untied = TiedConvAutoencoder((8, 8, 2), (4, 3), activation=["tanh", "linear"], seed=1, tied=False)
    for bias in tied.encoder_biases + tied.decoder_biases:
        bias.assign(tf.random.stateless_normal(bias.shape, seed=[bias.shape[0], 0]))
    for source, target in zip(
        tied.encoder_biases + tied.decoder_biases, untied.encoder_biases + untied.decoder_biases
    ):
        target.assign(source)
    for kernel, encoder_copy, decoder_copy in zip(tied.kernels, untied.kernels, untied.decoder_kernels):
        encoder_copy.assign(kernel)
        decoder_copy.assign(kernel)
    x = tf.random.stateless_uniform([5, 128], seed=[2, 2])

    def gradients(model, variables):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(x) - x))
        return tape.gradient(loss, variables)

    for t, e, d in zip(
        gradients(tied, tied.kernels),
        gradients(untied, untied.kernels),
        gradients(untied, untied.decoder_kernels),
    ):
        assert not np.allclose(t, e, atol=1e-4) and not np.allclose(t, d, atol=1e-4)
        np.testing.assert_allclose(t, e + d, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "shape, filters, strides", [((9, 9, 2), (3,), 1), ((9, 9, 2), (3,), 2), ((28, 28, 1), (4, 8), 2)]
)
def test_the_decoder_is_the_adjoint_of_the_encoder(shape, filters, strides):
    # For linear layers without biases, <conv(x), z> = <x, conv_transpose(z)>: the decoder
    # applies exactly the transpose of the encoder's linear map (28x28 -> 14x14 -> 7x7 included).
    model = TiedConvAutoencoder(
        shape,
        filters,
        kernel_size=3,
        strides=strides,
        activation="linear",
        output_activation="linear",
        seed=4,
    )
    x = tf.random.stateless_normal([4, model.input_width], seed=[1, 5], dtype=tf.float32)
    z = tf.random.stateless_normal([4, model.code_width], seed=[2, 5], dtype=tf.float32)
    left = tf.reduce_sum(model.encode(x) * z, axis=1)
    right = tf.reduce_sum(x * model.decode_logits(z), axis=1)
    np.testing.assert_allclose(left.numpy(), right.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_conv_training_on_mnist_lowers_the_loss(tmp_path, mnist_dir, strategy):
    config = tiny_config(
        **{
            **CONV,
            "data.name": "mnist",
            "data.path": mnist_dir,
            "data.num_train": 1000,
            "data.num_validation": 200,
            "train.num_steps": 60,
            "train.learning_rate": 3e-3,
            "train.strategy": strategy,
            "train.logical_cpus": 2,
        }
    )
    splits = sources.load(config.data, config.seed)
    before = evaluation.make_evaluate(architectures.create_model(config), "bce")(pipelines.eval_dataset(splits.validation, 100))
    metrics = train.train_and_evaluate(config, str(tmp_path))
    assert metrics["val_loss"] < 0.6 * before
    loaded = saved_model.load(str(tmp_path / "export" / "saved_model"))
    rebuilt = weights_file.load_weights(str(tmp_path / "export" / "weights.npz"))
    model, _, _ = restore.restore_model(config, str(tmp_path))
    x = splits.validation[:3]
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rebuilt(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)
    if strategy == "default":
        from rawtf_ae.program import modes

        evaluated = modes.evaluate(config, str(tmp_path))  # a code wider than the input: no PCA
        assert evaluated["pca_val_mse"] is None and evaluated["val_mse"] > 0


def test_bad_conv_arguments_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"`image_shape` \(\(28, 28\)\) must be \(height, width, channels\)"):
        TiedConvAutoencoder((28, 28), (8,))
    with pytest.raises(ValueError, match="`filters`"):
        TiedConvAutoencoder((28, 28, 1), (8, 0))
    with pytest.raises(ValueError, match="`strides` has 3 entries"):
        TiedConvAutoencoder((28, 28, 1), (8, 4), strides=(2, 2, 2))
    model = TiedConvAutoencoder((28, 28, 1), (8,), seed=0)
    with pytest.raises(ValueError, match=r"has width 100 .*expected 784"):
        model(tf.zeros([2, 100]))
    with pytest.raises(ValueError, match=r"must be 2-D .*flatten images to vectors first"):
        model(tf.zeros([2, 28, 28, 1]))
    from rawtf_ae.config import checks

    with pytest.raises(ValueError, match="works with model.kind='dense' only"):
        checks.validate(tiny_config(**{**CONV, "pretrain.steps_per_layer": 5}))
