"""Greedy layer-wise pretraining: each layer trained on the codes below, assembled, fine-tuned."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.data import pipelines, sources
from rawtf_ae.models import architectures
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.program import train
from rawtf_ae.training import evaluation, pretrain, state, steps
from tests.conftest import tiny_config

DEEP = {
    "model.layer_sizes": (784, 64, 16),
    "model.activation": "sigmoid",
    "pretrain.steps_per_layer": 60,
    "train.learning_rate": 3e-3,
}


@pytest.mark.parametrize(
    "activation, second_layer", [("relu,sigmoid", ("relu", "mse")), ("sigmoid,relu", ("sigmoid", "bce"))]
)
def test_each_layer_reconstructs_the_codes_below_with_their_activation_and_loss(activation, second_layer):
    # Layer k > 0 reconstructs the codes of layer k - 1: with that layer's activation on its
    # output, and BCE only when those codes are logistic. Mixed activations tell the rules apart.
    config = tiny_config(**{**DEEP, "model.activation": activation, "pretrain.steps_per_layer": 2})
    layers = pretrain.pretrain_layers(config, sources.curves(100, seed=0))
    first, second = activation.split(",")
    assert [layer.activation_names for layer in layers] == [(first,), (second,)]
    assert [layer.output_activation_name for layer in layers] == ["sigmoid", second_layer[0]]
    assert [pretrain.layer_loss(config, k) for k in (0, 1)] == ["bce", second_layer[1]]


@pytest.mark.parametrize("levels", [(), (0.3, 0.6)])
def test_pretraining_trains_each_layer_on_its_configured_corruption(levels, caplog):
    # One SGD step per layer equals one denoising step taken by hand with the layer's seed, at
    # train.corruption_level or at the layer's pretrain.corruption_levels entry.
    caplog.set_level("INFO", logger="absl")
    sgd = {**DEEP, "pretrain.steps_per_layer": 1, "train.optimizer": "sgd", "train.momentum": 0.0}
    noisy = {
        "train.corruption": "masking",
        "train.corruption_level": 0.5,
        "pretrain.corruption_levels": levels,
    }
    config = tiny_config(**sgd, **noisy)
    examples = sources.curves(100, seed=0)
    layers = pretrain.pretrain_layers(config, examples)
    codes = layers[0].encode(examples).numpy()
    for k, (inputs, loss) in enumerate([(examples, "bce"), (codes, "bce")]):
        level = levels[k] if levels else 0.5
        assert f"{loss}, masking {level:g}): loss" in caplog.text
        sizes = layers[k].layer_sizes
        by_hand = TiedAutoencoder(
            sizes, activation=["sigmoid"], output_activation="sigmoid", seed=config.seed + 1 + k
        )
        optimizer = tf.keras.optimizers.SGD(config.train.learning_rate)
        optimizer.build(by_hand.trainable_variables)
        step = steps.make_train_step(
            by_hand,
            optimizer,
            loss,
            32,
            corruption_kind="masking",
            corruption_level=level,
            seed=config.seed + 1 + k,
        )
        tf.function(step)(next(iter(pipelines.train_dataset(inputs, 32, config.seed + 1 + k))))
        for ours, expected in zip(layers[k].trainable_variables, by_hand.trainable_variables):
            np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)
    clean = pretrain.pretrain_layers(tiny_config(**sgd), examples)[0]
    assert not np.allclose(clean.kernels[0].numpy(), layers[0].kernels[0].numpy(), rtol=1e-6, atol=1e-7)


def test_per_layer_corruption_levels_are_validated():
    from rawtf_ae.config import checks

    masking = {"train.corruption": "masking", "train.corruption_level": 0.2}
    for overrides, message in [
        ({**masking, "pretrain.corruption_levels": (0.1,)}, r"has 1 levels for the 2 encoder layers"),
        (
            {**masking, "pretrain.corruption_levels": (0.1, 1.5)},
            r"`pretrain.corruption_levels` is a fraction",
        ),
        ({"pretrain.corruption_levels": (0.1, 0.2)}, r"needs a `train.corruption` kind"),
    ]:
        with pytest.raises(ValueError, match=message):
            checks.validate(tiny_config(**DEEP, **overrides))


def test_each_layer_learns_on_the_codes_of_the_layers_below_and_is_assembled():
    config = tiny_config(**DEEP)
    examples = sources.curves(600, seed=0)
    layers = pretrain.pretrain_layers(config, examples)
    assert [layer.layer_sizes for layer in layers] == [(784, 64), (64, 16)]
    codes = layers[0].encode(examples)
    for layer, inputs in ((layers[0], examples), (layers[1], codes)):
        untrained = type(layer)(
            layer.layer_sizes,
            activation=list(layer.activation_names),
            output_activation=layer.output_activation_name,
            seed=layer.seed,
        )
        assert np.mean((layer(inputs) - inputs) ** 2) < 0.8 * np.mean((untrained(inputs) - inputs) ** 2)
    model = architectures.create_model(config)
    pretrain.assemble(model, layers)
    for k, layer in enumerate(layers):
        np.testing.assert_array_equal(model.kernels[k].numpy(), layer.kernels[0].numpy())
        np.testing.assert_array_equal(model.encoder_biases[k].numpy(), layer.encoder_biases[0].numpy())
        np.testing.assert_array_equal(model.decoder_biases[k].numpy(), layer.decoder_biases[0].numpy())
    np.testing.assert_allclose(
        model.encode(examples[:5]).numpy(), layers[1].encode(codes[:5]).numpy(), rtol=1e-5
    )


def test_an_untied_deep_model_starts_its_decoder_from_the_pretrained_kernels():
    config = tiny_config(**{**DEEP, "model.tied": False, "pretrain.steps_per_layer": 5})
    layers = pretrain.pretrain_layers(config, sources.curves(200, seed=0))
    model = architectures.create_model(config)
    pretrain.assemble(model, layers)
    for k in range(2):
        np.testing.assert_array_equal(model.decoder_kernels[k].numpy(), model.kernels[k].numpy())


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_pretraining_then_fine_tuning_runs_once_and_checkpoints_step_0(tmp_path, strategy, caplog):
    overrides = {**DEEP, "train.num_steps": 40, "train.strategy": strategy, "train.logical_cpus": 2}
    caplog.set_level("INFO", logger="absl")
    config = tiny_config(**overrides)
    metrics = train.train_and_evaluate(config, str(tmp_path))
    assert "pretrained layer 1 (64-16, sigmoid, bce)" in caplog.text
    assert "saved the pretrained model as" in caplog.text and "ckpt-0" in caplog.text
    # ckpt-0 holds exactly what pretraining the training split and assembling gives.
    splits = sources.load(config.data, config.seed)
    expected = architectures.create_model(config)
    pretrain.assemble(expected, pretrain.pretrain_layers(config, splits.train))
    step_0 = state.create_train_state(config)
    tf.train.Checkpoint(model=step_0.model).read(str(tmp_path / "checkpoints" / "ckpt-0")).expect_partial()
    for saved, direct in zip(step_0.model.trainable_variables, expected.trainable_variables):
        np.testing.assert_array_equal(saved.numpy(), direct.numpy())
    untrained = evaluation.make_evaluate(architectures.create_model(config), "bce")(
        pipelines.eval_dataset(splits.validation, 100)
    )
    assert metrics["val_loss"] < 0.7 * untrained
    caplog.clear()
    train.train_and_evaluate(tiny_config(**{**overrides, "train.num_steps": 50}), str(tmp_path))
    assert "pretrained layer" not in caplog.text  # resuming never pretrains again


def test_pretraining_is_reproducible_from_the_seed():
    config = tiny_config(**{**DEEP, "pretrain.steps_per_layer": 10})
    examples = sources.curves(200, seed=0)
    first, second = pretrain.pretrain_layers(config, examples), pretrain.pretrain_layers(config, examples)
    for a, b in zip(first, second):
        for x, y in zip(a.trainable_variables, b.trainable_variables):
            np.testing.assert_array_equal(x.numpy(), y.numpy())


@pytest.mark.parametrize(
    "overrides, examples_width, named",
    [
        ({"model.activation": "selu,selu,linear"}, 784, "`model.activation`"),  # 3 for 2 layers
        ({"model.layer_sizes": (784,)}, 784, "`model.layer_sizes`"),
        ({"pretrain.corruption_levels": (0.1,), "train.corruption": "masking"}, 784, "corruption_levels"),
        ({"train.batch_size": 5_000}, 784, "`train.batch_size`"),
        ({}, 100, "`examples` have shape"),
    ],
)
def test_greedy_pretraining_checks_its_arguments_before_any_work(monkeypatch, overrides, examples_width, named):
    # From Python, as research code calls it: a bad argument fails before the first layer trains.
    def no_training(*args, **kwargs):
        raise AssertionError("a layer was built or trained before the arguments were checked")

    monkeypatch.setattr(pretrain, "TiedAutoencoder", no_training)
    config = tiny_config(**{"pretrain.steps_per_layer": 5, **overrides})
    examples = np.zeros((400, examples_width), np.float32)
    with pytest.raises(ValueError, match=named):
        pretrain.pretrain_layers(config, examples)
