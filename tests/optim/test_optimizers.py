"""Per-variable learning-rate multipliers: exact for Adam (one optimizer per multiplier),
frozen variables, checkpoints that resume bit-exactly, and config errors before any write."""

import os

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.config import checks
from rawtf_ae.optim import optimizers
from rawtf_ae.program import train
from rawtf_ae.training import state, steps
from tests.conftest import tiny_config


def _one_step(multipliers):
    config = tiny_config(**{"train.learning_rate_multipliers": multipliers, "train.jit_compile": False})
    trained = state.create_train_state(config)
    model, optimizer = trained.model, trained.optimizer
    before = {optimizers.variable_name(v): v.numpy() for v in model.trainable_variables}
    batch = tf.random.stateless_uniform([32, 784], seed=[1, 2])
    tf.function(steps.make_train_step(model, optimizer, "bce", 32))(batch)
    return {
        optimizers.variable_name(v): v.numpy() - before[optimizers.variable_name(v)]
        for v in model.trainable_variables
    }


def test_adam_multipliers_scale_each_variables_update_exactly():
    plain = _one_step("")
    scaled = _one_step("bias=2,encoder/layer_0=0")
    for name, delta in plain.items():
        # The first matching pattern decides: every bias 2, encoder/layer_0's kernel frozen.
        expected = 2.0 if "bias" in name else 0.0 if name.startswith("encoder/layer_0") else 1.0
        # Scaling the gradient instead would leave Adam's update unchanged (it normalizes).
        np.testing.assert_allclose(scaled[name], expected * delta, rtol=1e-5, atol=1e-9, err_msg=name)
    assert np.abs(plain["decoder/layer_0/bias"]).max() > 0


def test_multipliers_resume_bit_exactly_and_train_mirrored(tmp_path):
    overrides = {"train.learning_rate_multipliers": "bias=2,layer_1=0.5", "train.checkpoint_every_steps": 20}
    straight = train.train_and_evaluate(
        tiny_config(**overrides, **{"train.num_steps": 40}), str(tmp_path / "a")
    )
    train.train_and_evaluate(tiny_config(**overrides, **{"train.num_steps": 20}), str(tmp_path / "b"))
    resumed = train.train_and_evaluate(
        tiny_config(**overrides, **{"train.num_steps": 40}), str(tmp_path / "b")
    )
    assert resumed["train_loss"] == straight["train_loss"]
    readers = [tf.train.load_checkpoint(str(tmp_path / d / "checkpoints" / "ckpt-40")) for d in "ab"]
    names = [n for n in readers[0].get_variable_to_shape_map() if n.startswith(("model/", "optimizer/"))]
    assert any(n.startswith("optimizer/optimizers/2/") for n in names)  # three groups: 0.5, 1, 2
    for name in names:
        np.testing.assert_array_equal(readers[0].get_tensor(name), readers[1].get_tensor(name), err_msg=name)
    mirrored = tiny_config(**overrides, **{"train.strategy": "mirrored", "train.logical_cpus": 2})
    assert train.train_and_evaluate(mirrored, str(tmp_path / "m"))["replicas"] == 2


@pytest.mark.parametrize(
    "value, message",
    [
        ("bias", "must be PATTERN=MULTIPLIER"),
        ("bias=-1", "must be PATTERN=MULTIPLIER"),
        ("bias=x", "must be PATTERN=MULTIPLIER"),
        ("(=2", "must be PATTERN=MULTIPLIER"),
        (
            "encodr=2",
            "pattern 'encodr' matches no variable; the model's variables are encoder/layer_0/kernel",
        ),
    ],
)
def test_bad_multipliers_fail_before_the_workdir_exists(tmp_path, value, message):
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(
            tiny_config(**{"train.learning_rate_multipliers": value}), str(tmp_path / "run")
        )
    assert not os.path.exists(tmp_path / "run")
    with pytest.raises(ValueError, match="mixed_float16"):
        checks.validate(
            tiny_config(**{"train.learning_rate_multipliers": "bias=2", "train.precision": "mixed_float16"})
        )


@pytest.mark.parametrize("clip_norm", [0.05, 1e6])
def test_clip_norm_scales_each_update_to_the_global_norm(clip_norm):
    # Independently: the tape's gradient of the batch loss, scaled to norm clip_norm by hand.
    from rawtf_ae.models.dense import TiedAutoencoder
    from rawtf_ae.training import losses

    model = TiedAutoencoder([20, 6], activation="selu", output_activation="linear", seed=0, tied=False)
    batch = tf.random.stateless_uniform([8, 20], seed=[1, 2])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(losses.reconstruction_loss(model, batch, batch, "mse"))
    gradients = tape.gradient(loss, model.trainable_variables)
    norm = float(tf.linalg.global_norm(gradients))
    assert norm > 0.05  # the small clip engages, the large one does not
    expected = [
        v.numpy() - 0.1 * g.numpy() * min(1.0, clip_norm / norm)
        for v, g in zip(model.trainable_variables, gradients)
    ]
    optimizer = tf.keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    tf.function(steps.make_train_step(model, optimizer, "mse", 8, clip_norm=clip_norm))(batch)
    for variable, value in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-5, atol=1e-7)


def test_clip_norm_is_validated():
    with pytest.raises(ValueError, match="`train.clip_norm` must be >= 0"):
        checks.validate(tiny_config(**{"train.clip_norm": -1.0}))
    with pytest.raises(ValueError, match="`train.clip_norm` does not work with precision 'mixed_float16'"):
        checks.validate(tiny_config(**{"train.clip_norm": 1.0, "train.precision": "mixed_float16"}))
