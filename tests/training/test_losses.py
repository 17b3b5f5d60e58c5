"""Losses: values against NumPy, stability from logits, and their checks."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.training import losses


def test_sigmoid_cross_entropy_matches_numpy_and_stays_finite_for_extreme_logits():
    rng = np.random.default_rng(0)
    targets = rng.uniform(size=(4, 9))
    logits = rng.normal(scale=3, size=(4, 9))
    p = 1 / (1 + np.exp(-logits))
    expected = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(-1)
    np.testing.assert_allclose(losses.sigmoid_cross_entropy(targets, logits).numpy(), expected, rtol=1e-10)
    extreme = losses.sigmoid_cross_entropy(tf.constant([[1.0, 0.0]]), tf.constant([[-200.0, 200.0]]))
    np.testing.assert_allclose(extreme.numpy(), [200.0])


def test_mean_squared_error_is_per_example_mean():
    a = np.array([[0.0, 1.0], [2.0, 2.0]])
    b = np.array([[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(losses.mean_squared_error(a, b).numpy(), [0.5, 4.0])


def test_reconstruction_loss_uses_logits_for_bce_and_outputs_for_mse():
    model = TiedAutoencoder([6, 3], seed=0)
    x = tf.random.stateless_uniform([5, 6], seed=[0, 1])
    recon = model(x).numpy()
    bce = -(x * np.log(recon) + (1 - x) * np.log(1 - recon)).numpy().mean(-1)
    np.testing.assert_allclose(losses.reconstruction_loss(model, x, x, "bce").numpy(), bce, rtol=1e-5)
    mse = ((x.numpy() - recon) ** 2).mean(-1)
    np.testing.assert_allclose(losses.reconstruction_loss(model, x, x, "mse").numpy(), mse, rtol=1e-6)


def test_loss_checks_name_and_output_activation():
    with pytest.raises(ValueError, match="`train.loss` is 'l1'"):
        losses.check("l1", "sigmoid")
    with pytest.raises(ValueError, match="needs model.output_activation='sigmoid', got 'linear'"):
        losses.check("bce", "linear")
    losses.check("mse", "linear")


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
SLOPES = {  # f'(a), written out independently of TensorFlow
    "sigmoid": lambda a: np.exp(-a) / (1 + np.exp(-a)) ** 2,
    "tanh": lambda a: 1 - np.tanh(a) ** 2,
    "selu": lambda a: SELU_SCALE * np.where(a > 0, 1.0, SELU_ALPHA * np.exp(a)),
    "relu": lambda a: (a > 0).astype(float),
}


@pytest.mark.parametrize("activation", sorted(SLOPES))
def test_contractive_closed_form_matches_batch_jacobian_and_so_does_its_gradient(activation):
    model = TiedAutoencoder([10, 4], activation=activation, seed=2)
    model.encoder_biases[0].assign(tf.random.stateless_normal([4], seed=[0, 3]))
    x = tf.random.stateless_uniform([6, 10], seed=[1, 3], minval=-1.0)
    kernel = model.kernels[0].numpy().astype(np.float64)
    a = x.numpy().astype(np.float64) @ kernel + model.encoder_biases[0].numpy()
    assert (a > 0).any() and (a < 0).any()  # both branches of relu and selu
    expected = (SLOPES[activation](a) ** 2 * (kernel**2).sum(0)).sum(-1)  # Rifai et al.'s formula
    np.testing.assert_allclose(losses.contractive(model, x).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.jacobian_norm(model, x).numpy(), expected, rtol=1e-5)
    # Training differentiates the penalty: the closed form's gradient is batch_jacobian's.
    gradients = []
    for penalty in (losses.contractive, losses.jacobian_norm):
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(penalty(model, x))
        gradients.append(tape.gradient(total, [model.kernels[0], model.encoder_biases[0]]))
    for closed, reference in zip(*gradients):
        np.testing.assert_allclose(closed.numpy(), reference.numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(gradients[0][0].numpy()).max() > 1e-3


@pytest.mark.parametrize("layer_sizes", [[5, 3], [5, 4, 3]])
def test_contractive_penalty_of_a_float64_model_matches_finite_differences(layer_sizes):
    # It converted the inputs to float32, so a float64 model of 2+ layers raised.
    model = TiedAutoencoder(layer_sizes, activation="tanh", seed=5, dtype=tf.float64)
    x = np.random.default_rng(0).random((3, 5))
    penalty = losses.contractive(model, x)
    assert penalty.dtype == tf.float64
    epsilon, expected = 1e-6, np.zeros(len(x))
    for i in range(5):  # central differences of the code, one input at a time
        step = np.zeros(5)
        step[i] = epsilon
        column = (model.encode(x + step).numpy() - model.encode(x - step).numpy()) / (2 * epsilon)
        expected += (column**2).sum(-1)
    np.testing.assert_allclose(penalty.numpy(), expected, rtol=1e-7)


def test_global_mean_on_two_replicas_is_the_whole_batch_mean_with_each_replicas_gradient():
    from rawtf_ae.training import distribute

    strategy = distribute.mirrored_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
    codes = tf.reshape(tf.range(12, dtype=tf.float32), [4, 3])
    weights = tf.constant([[1.0, 2.0, 3.0]])

    def per_replica(rows):
        with tf.GradientTape() as tape:
            tape.watch(rows)
            mean = losses.global_mean(rows, global_batch_size=4)
            penalty = tf.reduce_sum(weights * mean**2)
        return mean, tape.gradient(penalty, rows)

    dataset = tf.data.Dataset.from_tensors(codes).unbatch().batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    means, gradients = strategy.run(tf.function(per_replica), args=(batch,))
    expected_mean = codes.numpy().mean(0)
    for mean in strategy.experimental_local_results(means):
        np.testing.assert_allclose(mean.numpy(), expected_mean, rtol=1e-6)
    # d penalty / d row = 2 w mean / B for every row of the global batch, split over the replicas.
    expected = np.broadcast_to(2 * weights.numpy() * expected_mean / 4, (4, 3))
    gradient = np.concatenate([g.numpy() for g in strategy.experimental_local_results(gradients)])
    np.testing.assert_allclose(gradient, expected, rtol=1e-6)


def test_kl_sparsity_matches_the_formula_and_vanishes_at_the_target():
    codes = np.array([[0.1, 0.5], [0.3, 0.7]], np.float32)
    mean, rho = codes.mean(0), 0.2
    expected = (rho * np.log(rho / mean) + (1 - rho) * np.log((1 - rho) / (1 - mean))).sum()
    np.testing.assert_allclose(losses.kl_sparsity(codes, rho).numpy(), expected, rtol=1e-5)
    assert abs(float(losses.kl_sparsity(np.full((3, 4), 0.2, np.float32), 0.2))) < 1e-6


def test_loss_from_codes_equals_the_reconstruction_loss():
    model = TiedAutoencoder([6, 3], seed=1)
    x = tf.random.stateless_uniform([4, 6], seed=[3, 1])
    for name in ("mse", "bce"):  # masked_mse needs a mask: see below
        np.testing.assert_allclose(
            losses.loss_from_codes(model, model.encode(x), x, name).numpy(),
            losses.reconstruction_loss(model, x, x, name).numpy(),
            rtol=1e-6,
        )


def test_masked_squared_error_sums_only_observed_entries():
    rng = np.random.default_rng(0)
    targets, outputs = rng.normal(size=(2, 5, 7)).astype(np.float32)
    mask = (rng.random((5, 7)) < 0.4).astype(np.float32)
    expected = (mask * (targets - outputs) ** 2).sum(axis=1)
    np.testing.assert_allclose(
        losses.masked_squared_error(targets, outputs, mask).numpy(), expected, rtol=1e-6
    )
    with pytest.raises(ValueError, match="needs a mask"):
        losses.reconstruction_loss(None, targets, targets, "masked_mse")
