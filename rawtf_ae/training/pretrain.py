"""Greedy layer-wise pretraining of a deep tied autoencoder (Hinton & Salakhutdinov 2006;
Vincent et al. 2010's stacked denoising autoencoders, Bengio et al. 2007).

Layer k is trained as a one-hidden-layer tied (denoising) autoencoder on the codes of layers
1..k-1; the deep autoencoder is then assembled from the pretrained kernels and encoder biases,
each decoder bias coming from its layer's own decoder, and fine-tuned end to end. Untied deep
models start their decoder kernels from the pretrained encoder kernels ("unrolling").
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from rawtf_ae.data import pipelines
from rawtf_ae.models import architectures
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.training import corruption, loops, state, steps


def layer_loss(config, k: int) -> str:
    """Layer k reconstructs the input (k = 0: the run's loss) or a hidden code (BCE for logistic
    units, whose values are probabilities; MSE otherwise)."""
    if k == 0:
        return config.train.loss
    activation = architectures.activation_spec(config.model.activation)
    previous = activation[k - 1] if isinstance(activation, list) else activation
    return "bce" if previous == "sigmoid" else "mse"


def check(config) -> None:
    """Raises `ValueError` naming the key for bad `pretrain.*` settings."""
    steps_per_layer = config.pretrain.steps_per_layer
    if isinstance(steps_per_layer, bool) or not isinstance(steps_per_layer, int) or steps_per_layer < 0:
        raise ValueError(f"`pretrain.steps_per_layer` must be a non-negative integer, got {steps_per_layer!r}.")
    if steps_per_layer and config.model.kind != "dense":
        raise ValueError("`pretrain.steps_per_layer` works with model.kind='dense' only.")
    levels = tuple(config.pretrain.corruption_levels)
    if not levels:
        return
    layers = len(config.model.layer_sizes) - 1
    if len(levels) != layers:
        raise ValueError(
            f"`pretrain.corruption_levels` has {len(levels)} levels for the {layers} encoder layers of "
            f"model.layer_sizes={tuple(config.model.layer_sizes)}."
        )
    if config.train.corruption == "none":
        raise ValueError("`pretrain.corruption_levels` needs a `train.corruption` kind, got 'none'.")
    for level in levels:
        corruption.check(config.train.corruption, level, "pretrain.corruption_levels")


def pretrain_layers(config, examples: np.ndarray, strategy=None) -> list[TiedAutoencoder]:
    """Trains one single-layer tied autoencoder per encoder layer, greedily, bottom up.

    Args:
      config: the run's config; `pretrain.steps_per_layer` steps per layer with the run's
        optimizer settings, batch size, corruption (at `pretrain.corruption_levels[k]` for
        layer k when given) and weight decay.
      examples: the training inputs `[n, layer_sizes[0]]`.
      strategy: the `tf.distribute` strategy (default: the default strategy).

    Returns:
      The trained single-layer autoencoders, layer 0 first.
    """
    # Every argument checked before any layer trains (one line naming the key or the examples).
    architectures.check(config)
    check(config)
    sizes = list(config.model.layer_sizes)
    shape = np.shape(examples)
    if len(shape) != 2 or (sizes[0] and shape[1] != sizes[0]):
        raise ValueError(f"`examples` have shape {shape}; pretraining needs [n, model.layer_sizes[0]={sizes[0]}].")
    if not 0 < config.train.batch_size <= shape[0]:
        raise ValueError(f"`train.batch_size` ({config.train.batch_size}) must be in [1, {shape[0]} examples].")
    strategy = strategy or tf.distribute.get_strategy()
    activation = architectures.activation_spec(config.model.activation)
    activations = activation if isinstance(activation, list) else [activation] * (len(sizes) - 1)
    batch, num_steps = config.train.batch_size, config.pretrain.steps_per_layer
    levels = tuple(config.pretrain.corruption_levels) or (config.train.corruption_level,) * (len(sizes) - 1)
    codes, layers = examples, []
    for k in range(len(sizes) - 1):
        loss = layer_loss(config, k)
        output_activation = config.model.output_activation if k == 0 else activations[k - 1]
        with strategy.scope():
            layer = TiedAutoencoder(
                [sizes[k], sizes[k + 1]],
                activation=[activations[k]],
                output_activation=output_activation,
                kernel_initializer=config.model.kernel_initializer,
                seed=config.seed + 1 + k,
                compute_dtype=architectures.compute_dtype(config),
            )
        # `train.learning_rate_multipliers` name the deep model's layers: not used here.
        trained = state.create_train_state(config, strategy, model=layer, multipliers=False)
        # The run's step options, but no sparsity: a hidden layer's code need not be logistic.
        options = steps.StepOptions.from_config(
            config, loss=loss, seed=config.seed + 1 + k, sparsity_weight=0.0, corruption_level=levels[k]
        )
        loop = loops.make_train_loop(
            steps.make_step(layer, trained.optimizer, options), trained.step, strategy
        )
        layer_codes = codes
        iterator = iter(
            strategy.distribute_datasets_from_function(
                lambda context, x=layer_codes, k=k: pipelines.train_dataset(
                    x, batch, config.seed + 1 + k, 0, context
                )
            )
        )
        means = loops.train_steps(
            loop, iterator, num_steps, config.train.steps_per_loop, f"Pretraining layer {k}"
        )
        first_loss, last_loss = means[0], means[-1]
        logging.info(
            "pretrained layer %d (%d-%d, %s, %s%s): loss %.5f -> %.5f in %d steps",
            k,
            sizes[k],
            sizes[k + 1],
            activations[k],
            loss,
            f", {options.corruption_kind} {options.corruption_level:g}"
            if options.corruption_kind != "none"
            else "",
            first_loss,
            last_loss,
            num_steps,
        )
        layers.append(layer)
        encode = tf.function(layer.encode, input_signature=[tf.TensorSpec([None, sizes[k]], tf.float32)])
        codes = np.concatenate([encode(b).numpy() for b in pipelines.eval_dataset(codes, 1000)])
    return layers


def assemble(model: TiedAutoencoder, layers: list[TiedAutoencoder]) -> None:
    """Copies pretrained single-layer autoencoders into the deep `model`'s variables.

    Kernel k and encoder bias k come from layer k's encoder, decoder bias k from layer k's own
    decoder; an untied decoder kernel starts as layer k's (transposed) kernel.
    """
    if len(layers) != model.num_layers:
        raise ValueError(f"{len(layers)} pretrained layers for a model of {model.num_layers}.")
    for k, layer in enumerate(layers):
        model.kernels[k].assign(layer.kernels[0])
        model.encoder_biases[k].assign(layer.encoder_biases[0])
        model.decoder_biases[k].assign(layer.decoder_biases[0])
        if model.decoder_kernels[k] is not None:
            model.decoder_kernels[k].assign(layer.kernels[0])
