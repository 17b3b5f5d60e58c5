"""Denoising: corruption statistics, reproducible per-step noise that N replicas draw as one
device does, clean targets; weight decay on kernels only."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.data import pipelines, sources
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.program import restore, train
from rawtf_ae.training import corruption, distribute, losses, steps
from tests.conftest import tiny_config

SEED = tf.constant([3, 4], tf.int64)


def test_masking_zeroes_the_given_fraction():
    x = tf.ones([200, 500])
    corrupted = corruption.corrupt(x, "masking", 0.3, SEED).numpy()
    assert set(np.unique(corrupted)) == {0.0, 1.0}
    assert abs((corrupted == 0).mean() - 0.3) < 0.01


def test_salt_and_pepper_sets_the_fraction_to_zero_or_one_evenly():
    x = tf.fill([200, 500], 0.5)
    corrupted = corruption.corrupt(x, "salt_and_pepper", 0.2, SEED).numpy()
    hit = corrupted != 0.5
    assert abs(hit.mean() - 0.2) < 0.01
    assert abs((corrupted[hit] == 1).mean() - 0.5) < 0.03 and set(np.unique(corrupted[hit])) == {0.0, 1.0}


def test_gaussian_noise_has_the_given_sigma_and_every_kind_is_reproducible():
    x = tf.zeros([200, 500])
    noise = corruption.corrupt(x, "gaussian", 0.25, SEED).numpy()
    assert abs(noise.std() - 0.25) < 0.005 and abs(noise.mean()) < 0.005
    for kind in ("gaussian", "masking", "salt_and_pepper"):
        a = corruption.corrupt(tf.ones([4, 50]), kind, 0.3, SEED).numpy()
        b = corruption.corrupt(tf.ones([4, 50]), kind, 0.3, SEED).numpy()
        c = corruption.corrupt(tf.ones([4, 50]), kind, 0.3, SEED + 1).numpy()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    assert corruption.corrupt(x, "none", 0.5, SEED) is x


@pytest.mark.parametrize("kind", ["gaussian", "masking", "salt_and_pepper", "dropout"])
def test_each_replica_draws_its_rows_of_the_global_batchs_noise(kind):
    # The replicas used to fold their id into the seed: 2 replicas drew other noise than one
    # device for the same global batch, so a distributed denoising step was not the same step.
    assert corruption.noise_seed(7, 5).numpy().tolist() != corruption.noise_seed(7, 6).numpy().tolist()
    seed = corruption.noise_seed(7, 5)

    def noisy(x):
        if kind == "dropout":
            return corruption.dropout(x, 0.4, seed)
        return corruption.corrupt(x, kind, 0.4, seed)

    x = tf.reshape(tf.range(8 * 30, dtype=tf.float32) / 240.0, [8, 30])
    one_device = noisy(x).numpy()
    strategy = distribute.mirrored_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
    batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x))))
    per_replica = strategy.experimental_local_results(strategy.run(tf.function(noisy), args=(batch,)))
    assert len(per_replica) == 2
    np.testing.assert_array_equal(np.concatenate([r.numpy() for r in per_replica]), one_device)


def test_code_dropout_on_one_device_is_tensorflows_stateless_dropout():
    x = tf.random.stateless_normal([16, 12], seed=[1, 2])
    seed = corruption.noise_seed(3, 11)
    expected = tf.nn.experimental.stateless_dropout(x, 0.3, seed).numpy()
    np.testing.assert_array_equal(corruption.dropout(x, 0.3, seed).numpy(), expected)


def test_denoising_step_encodes_the_corrupted_input_and_compares_with_the_clean_one():
    model = TiedAutoencoder([784, 32], seed=0)
    model.kernels[0].assign(model.kernels[0] * 10.0)  # so that the input visibly matters
    optimizer = tf.keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    step = tf.function(
        steps.make_train_step(
            model, optimizer, "bce", 16, corruption_kind="masking", corruption_level=0.5, seed=9
        )
    )
    batch = tf.constant(sources.curves(16, seed=0))
    seed = corruption.noise_seed(9, 0)
    corrupted = corruption.corrupt(batch, "masking", 0.5, seed)
    expected = tf.reduce_mean(losses.reconstruction_loss(model, corrupted, batch, "bce")).numpy()
    clean_input = tf.reduce_mean(losses.reconstruction_loss(model, batch, batch, "bce")).numpy()
    corrupted_target = tf.reduce_mean(losses.reconstruction_loss(model, corrupted, corrupted, "bce")).numpy()
    assert float(step(batch)) == pytest.approx(expected, rel=1e-5)
    for wrong in (clean_input, corrupted_target):
        assert abs(wrong - expected) > 1e-3 * expected


def test_weight_decay_shrinks_kernels_only():
    model = TiedAutoencoder([20, 5], seed=0)
    optimizer = tf.keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    for bias in model.encoder_biases + model.decoder_biases:
        bias.assign(tf.ones_like(bias))
    kernel_before = model.kernels[0].numpy().copy()
    bias_before = [b.numpy().copy() for b in model.encoder_biases + model.decoder_biases]
    plain = TiedAutoencoder([20, 5], seed=0)
    plain_optimizer = tf.keras.optimizers.SGD(0.1)
    plain_optimizer.build(plain.trainable_variables)
    for bias in plain.encoder_biases + plain.decoder_biases:
        bias.assign(tf.ones_like(bias))
    batch = tf.random.stateless_uniform([8, 20], seed=[1, 2])
    tf.function(steps.make_train_step(model, optimizer, "bce", 8, weight_decay=0.5))(batch)
    tf.function(steps.make_train_step(plain, plain_optimizer, "bce", 8))(batch)
    # The decayed kernel moved further by exactly lr * decay * W; the biases moved identically.
    np.testing.assert_allclose(
        model.kernels[0].numpy(), plain.kernels[0].numpy() - 0.1 * 0.5 * kernel_before, rtol=1e-5, atol=1e-6
    )
    for decayed, undecayed, before in zip(
        model.encoder_biases + model.decoder_biases, plain.encoder_biases + plain.decoder_biases, bias_before
    ):
        np.testing.assert_allclose(decayed.numpy(), undecayed.numpy(), rtol=1e-6)
        assert not np.allclose(decayed.numpy(), before)


def _denoising_loss(config, workdir, kind, level):
    """The trained model's BCE reconstructing clean validation images from corrupted ones."""
    train.train_and_evaluate(config, str(workdir))
    model, _, _ = restore.restore_model(config, str(workdir))
    clean = sources.load(config.data, config.seed).validation
    corrupted = corruption.corrupt(tf.constant(clean), kind, level, tf.constant([5, 6], tf.int64))
    return float(tf.reduce_mean(losses.reconstruction_loss(model, corrupted, clean, "bce")))


@pytest.mark.parametrize("kind, level", [("masking", 0.5), ("gaussian", 1.0), ("salt_and_pepper", 0.2)])
def test_denoising_training_learns_to_undo_its_noise_also_mirrored(tmp_path, kind, level):
    # The effect that defines a denoising autoencoder: from corrupted inputs it reconstructs the
    # clean images better than the same model trained on clean inputs does.
    overrides = {"train.num_steps": 300, "train.learning_rate": 3e-3}
    if kind == "masking":
        overrides.update({"train.strategy": "mirrored", "train.logical_cpus": 2})
    denoising = tiny_config(**overrides, **{"train.corruption": kind, "train.corruption_level": level})
    plain_loss = _denoising_loss(tiny_config(**overrides), tmp_path / "plain", kind, level)
    denoising_loss = _denoising_loss(denoising, tmp_path / "denoising", kind, level)
    assert denoising_loss < 0.93 * plain_loss, (denoising_loss, plain_loss)  # measured 0.65-0.90


def test_corruption_settings_are_validated():
    from rawtf_ae.config import checks

    with pytest.raises(ValueError, match="`train.corruption` is 'blur'"):
        checks.validate(tiny_config(**{"train.corruption": "blur"}))
    with pytest.raises(ValueError, match=r"a fraction for dropout: in \[0, 1\)"):
        checks.validate(tiny_config(**{"train.corruption": "dropout", "train.corruption_level": 1.0}))
    with pytest.raises(ValueError, match=r"a fraction for masking: in \[0, 1\)"):
        checks.validate(tiny_config(**{"train.corruption": "masking", "train.corruption_level": 1.5}))
    with pytest.raises(ValueError, match="`train.weight_decay` must be >= 0"):
        checks.validate(tiny_config(**{"train.weight_decay": -1.0}))


def _code_statistics(overrides, tmp_path):
    config = tiny_config(**{"model.activation": "sigmoid", "train.num_steps": 150, **overrides})
    train.train_and_evaluate(config, str(tmp_path))
    model, _, _ = restore.restore_model(config, str(tmp_path))
    x = sources.curves(200, seed=5)
    return float(np.mean(model.encode(x))), float(np.mean(losses.contractive(model, x)))


def test_sparsity_pulls_mean_code_activations_to_the_target_and_contraction_flattens_the_encoder(tmp_path):
    plain_mean, plain_jacobian = _code_statistics({}, tmp_path / "plain")
    sparse_mean, _ = _code_statistics(
        {"train.sparsity_weight": 0.5, "train.sparsity_target": 0.05}, tmp_path / "sparse"
    )
    _, contracted = _code_statistics(
        {"train.contractive_weight": 0.1, "model.layer_sizes": (784, 16)}, tmp_path / "contractive"
    )
    _, one_layer_plain = _code_statistics({"model.layer_sizes": (784, 16)}, tmp_path / "one_layer")
    assert abs(sparse_mean - 0.05) < abs(plain_mean - 0.05) / 2, (sparse_mean, plain_mean)
    assert contracted < 0.5 * one_layer_plain, (contracted, one_layer_plain)
    assert plain_jacobian > 0


def test_sparsity_needs_a_sigmoid_code_layer():
    from rawtf_ae.config import checks

    with pytest.raises(ValueError, match="needs codes in \\(0, 1\\): a sigmoid code layer, got 'linear'"):
        checks.validate(tiny_config(**{"train.sparsity_weight": 1.0}))


def _weights_after_steps(config, steps=10):
    from rawtf_ae.training import loops, state
    from rawtf_ae.training.steps import StepOptions, make_step

    trained = state.create_train_state(config)
    dataset = pipelines.train_dataset(sources.curves(256, seed=0), config.train.batch_size, seed=0)
    step = make_step(trained.model, trained.optimizer, StepOptions.from_config(config))
    loops.make_train_loop(step, trained.step)(iter(dataset), tf.constant(steps, tf.int64))
    return [v.numpy() for v in trained.model.trainable_variables]


@pytest.mark.parametrize(
    "noise",
    [
        {"train.corruption": "masking", "train.corruption_level": 0.3},
        {"train.corruption": "gaussian", "train.corruption_level": 0.3},
        {"train.corruption": "salt_and_pepper", "train.corruption_level": 0.3},
        {"train.code_dropout": 0.5},
    ],
    ids=["masking", "gaussian", "salt_and_pepper", "code_dropout"],
)
def test_a_seed_draws_the_same_noise_with_and_without_xla(noise):
    # TensorFlow's stateless ops turn the same Philox bits into other floats under XLA: the
    # same seed trained other weights (1.2e-1 relative after 10 masked steps) with jit_compile.
    runs = [_weights_after_steps(tiny_config(**noise, **{"train.jit_compile": jit})) for jit in (False, True)]
    for without_xla, with_xla in zip(*runs):
        scale = np.abs(without_xla).max()
        assert np.abs(without_xla - with_xla).max() <= 1e-5 * scale


def test_uniform_and_normal_are_tensorflows_values_with_and_without_xla():
    shape = tf.constant([37, 53])
    expected_uniform = tf.random.stateless_uniform([37, 53], SEED).numpy()
    expected_normal = tf.random.stateless_normal([37, 53], SEED).numpy()
    for compiled in (False, True):
        uniform = tf.function(corruption.uniform, jit_compile=compiled)(shape, SEED).numpy()
        normal = tf.function(corruption.normal, jit_compile=compiled)(shape, SEED).numpy()
        np.testing.assert_array_equal(uniform, expected_uniform)
        np.testing.assert_allclose(normal, expected_normal, atol=1e-5)
