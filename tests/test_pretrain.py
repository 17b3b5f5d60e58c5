"""Greedy layer-wise pretraining: each layer trained on the codes below, assembled, fine-tuned."""

import numpy as np
import pytest

from rawtf_ae import data, pretrain, train
from tests.conftest import tiny_config

DEEP = {
    "model.layer_sizes": (784, 64, 16),
    "model.activation": "sigmoid",
    "pretrain.steps_per_layer": 60,
    "train.learning_rate": 3e-3,
}


def test_each_layer_learns_on_the_codes_of_the_layers_below_and_is_assembled():
    config = tiny_config(**DEEP)
    examples = data.curves(600, seed=0)
    layers = pretrain.pretrain_layers(config, examples)
    assert [layer.layer_sizes for layer in layers] == [(784, 64), (64, 16)]
    assert [layer.output_activation_name for layer in layers] == ["sigmoid", "sigmoid"]
    assert pretrain.layer_loss(config, 1) == "bce"  # logistic codes are probabilities
    codes = layers[0].encode(examples)
    for layer, inputs in ((layers[0], examples), (layers[1], codes)):
        untrained = type(layer)(
            layer.layer_sizes,
            activation=list(layer.activation_names),
            output_activation=layer.output_activation_name,
            seed=layer.seed,
        )
        assert np.mean((layer(inputs) - inputs) ** 2) < 0.8 * np.mean((untrained(inputs) - inputs) ** 2)
    model = train.create_model(config)
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
    layers = pretrain.pretrain_layers(config, data.curves(200, seed=0))
    model = train.create_model(config)
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
    splits = data.load(config.data, config.seed)
    untrained = train.make_evaluate(train.create_model(config), "bce")(
        data.eval_dataset(splits.validation, 100)
    )
    assert metrics["val_loss"] < 0.7 * untrained
    caplog.clear()
    train.train_and_evaluate(tiny_config(**{**overrides, "train.num_steps": 50}), str(tmp_path))
    assert "pretrained layer" not in caplog.text  # resuming never pretrains again


def test_pretraining_is_reproducible_from_the_seed():
    config = tiny_config(**{**DEEP, "pretrain.steps_per_layer": 10})
    examples = data.curves(200, seed=0)
    first, second = pretrain.pretrain_layers(config, examples), pretrain.pretrain_layers(config, examples)
    for a, b in zip(first, second):
        for x, y in zip(a.trainable_variables, b.trainable_variables):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
