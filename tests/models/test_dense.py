"""TiedAutoencoder: tying, gradients, numerics against NumPy, initialization, bad input."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.models.dense import TiedAutoencoder, untie


def _numpy_activation(name):
    return {
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "selu": lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * (np.exp(v) - 1)),
        "tanh": np.tanh,
        "relu": lambda v: np.maximum(v, 0),
        "linear": lambda v: v,
    }[name]


def _randomize_biases(model, seed=1):
    rng = np.random.default_rng(seed)
    for bias in model.encoder_biases + model.decoder_biases:
        bias.assign(rng.normal(size=bias.shape).astype(bias.dtype.as_numpy_dtype))


def test_parameter_counts_match_784_392_196():
    assert TiedAutoencoder([784, 392, 196], seed=0).num_parameters() == 385_924
    assert TiedAutoencoder([784, 392, 196], seed=0, tied=False).num_parameters() == 770_084


def test_tied_model_has_exactly_one_variable_per_kernel(tmp_path):
    model = TiedAutoencoder([20, 8, 4], seed=0)
    kernels = [v for v in model.trainable_variables if len(v.shape) == 2]
    assert len(kernels) == 2
    assert {id(v) for v in kernels} == {id(k) for k in model.kernels}
    assert model.decoder_kernels == [None, None]
    assert [tuple(k.shape) for k in model.kernels] == [(20, 8), (8, 4)]
    assert [tuple(b.shape) for b in model.encoder_biases] == [(8,), (4,)]
    assert [tuple(b.shape) for b in model.decoder_biases] == [(20,), (8,)]
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    saved = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    assert len([name for name, shape in tf.train.list_variables(saved) if len(shape) == 2]) == 2


def test_assigning_a_kernel_changes_both_encode_and_decode():
    model = TiedAutoencoder([6, 4, 3], seed=0)
    x = tf.random.stateless_uniform([5, 6], seed=[1, 2])
    z = tf.random.stateless_uniform([5, 3], seed=[3, 4])
    before_code, before_decode = model.encode(x).numpy(), model.decode(z).numpy()
    model.kernels[0].assign(model.kernels[0] * 2.0)
    assert not np.allclose(model.encode(x).numpy(), before_code)
    assert not np.allclose(model.decode(z).numpy(), before_decode)


def test_tied_gradient_is_sum_of_encoder_and_decoder_paths():
    sizes = [12, 7, 5]
    tied = TiedAutoencoder(sizes, activation=["tanh", "linear"], seed=3)
    untied = TiedAutoencoder(sizes, activation=["tanh", "linear"], seed=3, tied=False)
    _randomize_biases(tied)
    for source, target in zip(
        tied.encoder_biases + tied.decoder_biases, untied.encoder_biases + untied.decoder_biases
    ):
        target.assign(source)
    for kernel, encoder_copy, decoder_copy in zip(tied.kernels, untied.kernels, untied.decoder_kernels):
        encoder_copy.assign(kernel)
        decoder_copy.assign(kernel)  # used transposed, exactly like the tied kernel
    x = tf.random.stateless_uniform([9, 12], seed=[5, 6])

    def gradients(model, variables):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(x) - x))
        return tape.gradient(loss, variables)

    tied_grads = gradients(tied, tied.kernels)
    encoder_grads = gradients(untied, untied.kernels)
    decoder_grads = gradients(untied, untied.decoder_kernels)
    for tied_grad, encoder_grad, decoder_grad in zip(tied_grads, encoder_grads, decoder_grads):
        # Both paths contribute, so neither alone is the tied gradient.
        assert not np.allclose(tied_grad, encoder_grad, atol=1e-4)
        assert not np.allclose(tied_grad, decoder_grad, atol=1e-4)
        np.testing.assert_allclose(tied_grad, encoder_grad + decoder_grad, rtol=1e-5, atol=1e-6)


def test_tied_gradient_matches_finite_differences_in_float64():
    model = TiedAutoencoder([5, 4, 3], activation=["sigmoid", "tanh"], seed=7, dtype=tf.float64)
    _randomize_biases(model)
    x = tf.random.stateless_uniform([6, 5], seed=[1, 1], dtype=tf.float64)

    def loss():
        return tf.reduce_mean(tf.square(model(x) - x))

    for kernel in model.kernels:
        with tf.GradientTape() as tape:
            value = loss()
        analytic = tape.gradient(value, kernel).numpy()
        numeric = np.zeros_like(analytic)
        original = kernel.numpy()
        eps = 1e-6
        for index in np.ndindex(*original.shape):
            for sign in (1, -1):
                shifted = original.copy()
                shifted[index] += sign * eps
                kernel.assign(shifted)
                numeric[index] += sign * loss().numpy() / (2 * eps)
        kernel.assign(original)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_forward_pass_matches_numpy_with_mirrored_activations():
    sizes, hidden = [10, 8, 6, 3], ["selu", "tanh", "linear"]
    model = TiedAutoencoder(sizes, activation=hidden, output_activation="sigmoid", seed=11)
    _randomize_biases(model)
    x = np.random.default_rng(0).uniform(size=(4, 10)).astype(np.float32)
    kernels = [k.numpy().astype(np.float64) for k in model.kernels]
    enc_b = [b.numpy() for b in model.encoder_biases]
    dec_b = [b.numpy() for b in model.decoder_biases]
    h = x.astype(np.float64)
    for W, b, name in zip(kernels, enc_b, hidden):
        h = _numpy_activation(name)(h @ W + b)
    code = h
    # Decoder layer i uses kernel i transposed and mirrors encoder layer i-1's activation.
    for i in reversed(range(3)):
        h = h @ kernels[i].T + dec_b[i]
        h = _numpy_activation(hidden[i - 1] if i > 0 else "sigmoid")(h)
    np.testing.assert_allclose(model.encode(x).numpy(), code, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model(x).numpy(), h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tf.sigmoid(model.reconstruction_logits(x)).numpy(), h, rtol=1e-5, atol=1e-5)


def test_tf_function_with_unknown_batch_matches_eager():
    model = TiedAutoencoder([16, 8, 4], activation="relu", seed=2)
    reconstruct = tf.function(model.__call__, input_signature=[tf.TensorSpec([None, 16], tf.float32)])
    for batch in (1, 7):
        x = tf.random.stateless_uniform([batch, 16], seed=[batch, 0])
        np.testing.assert_allclose(reconstruct(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_seed_reproduces_initial_weights_and_untied_shares_encoder_init():
    a = TiedAutoencoder([30, 10, 5], seed=4)
    b = TiedAutoencoder([30, 10, 5], seed=4)
    c = TiedAutoencoder([30, 10, 5], seed=5)
    untied = TiedAutoencoder([30, 10, 5], seed=4, tied=False)
    for ka, kb, kc, ku in zip(a.kernels, b.kernels, c.kernels, untied.kernels):
        np.testing.assert_array_equal(ka.numpy(), kb.numpy())
        np.testing.assert_array_equal(ka.numpy(), ku.numpy())
        assert not np.array_equal(ka.numpy(), kc.numpy())
    assert not np.array_equal(untied.kernels[0].numpy(), untied.decoder_kernels[0].numpy())


def test_default_initializers_are_lecun_normal_for_selu_and_glorot_uniform_otherwise():
    selu = TiedAutoencoder([400, 300, 2], activation=["selu", "sigmoid"], seed=0)
    std = selu.kernels[0].numpy().std()
    assert abs(std - np.sqrt(1 / 400)) < 0.03 * np.sqrt(1 / 400)
    limit = np.sqrt(6 / (300 + 2))
    second = selu.kernels[1].numpy()
    assert second.max() <= limit and second.min() >= -limit and second.max() > 0.9 * limit


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layer_sizes=[784]), "at least two positive"),
        (dict(layer_sizes=[784, 0]), "at least two positive"),
        (dict(layer_sizes=[784, -5, 3]), "at least two positive"),
        (dict(layer_sizes=[784, 2.5]), "at least two positive"),
        (dict(layer_sizes=[784, 32], activation="sigmod"), "Unknown activation 'sigmod'"),
        (dict(layer_sizes=[784, 32], output_activation="nope"), "Unknown activation 'nope'"),
        (dict(layer_sizes=[784, 32, 8], activation=["relu"]), "has 1 entries"),
        (dict(layer_sizes=[784, 32], kernel_initializer="zeros"), "Unknown kernel initializer"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TiedAutoencoder(**kwargs)


def test_bad_inputs_raise_value_error_saying_what_was_expected():
    model = TiedAutoencoder([784, 32], seed=0)
    with pytest.raises(ValueError, match=r"width 100 .* expected 784"):
        model(tf.zeros([2, 100]))
    with pytest.raises(ValueError, match=r"must be 2-D"):
        model(tf.zeros([2, 28, 28]))
    with pytest.raises(ValueError, match=r"must be 2-D"):
        model.encode(tf.zeros([784]))
    with pytest.raises(ValueError, match=r"The code has width 5 .* expected 32"):
        model.decode(tf.zeros([1, 5]))


def test_untie_gives_an_untied_copy_that_computes_the_same_and_then_trains_independently():
    model = TiedAutoencoder([12, 6, 3], activation=["tanh", "linear"], seed=1)
    _randomize_biases(model)
    untied = untie(model)
    x = tf.random.stateless_uniform([5, 12], seed=[2, 2])
    assert not untied.tied and untied.tied_layers == (False, False)
    np.testing.assert_allclose(untied(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert all(a is not b for a, b in zip(untied.kernels, model.kernels))  # a copy, not a view
    untied.decoder_kernels[0].assign_add(tf.ones_like(untied.decoder_kernels[0]))
    np.testing.assert_allclose(untied.encode(x).numpy(), model.encode(x).numpy(), rtol=1e-6)
    assert not np.allclose(untied(x).numpy(), model(x).numpy())


def test_partial_tying_ties_only_the_chosen_layers():
    model = TiedAutoencoder([12, 6, 3], tied=[True, False], seed=0)
    assert model.tied_layers == (True, False) and not model.tied
    assert model.decoder_kernels[0] is None and tuple(model.decoder_kernels[1].shape) == (6, 3)
    assert model.num_parameters() == 12 * 6 + 6 * 3 * 2 + 6 + 3 + 12 + 6
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.ones([2, 12])))
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in gradients)
    with pytest.raises(ValueError, match="`tied` has 3 entries"):
        TiedAutoencoder([12, 6, 3], tied=[True, False, True])


def test_trainable_variables_come_in_attribute_name_order_as_documented():
    # tf.Module sorts by attribute name; the README says so, and which lists hold each layer.
    model = TiedAutoencoder([6, 4, 2], tied=[True, False], seed=0)
    names = [v.name.split("/", 1)[1].split(":")[0] for v in model.trainable_variables]
    assert names == [
        "decoder/layer_0/bias",
        "decoder/layer_1/bias",
        "decoder/layer_1/kernel",
        "encoder/layer_0/bias",
        "encoder/layer_1/bias",
        "encoder/layer_0/kernel",
        "encoder/layer_1/kernel",
    ]
    assert model.decoder_kernels[0] is None and model.decoder_kernels[1] is not None
