"""Reconstruction losses, per example, for the step to average over the global batch.

Each returns a `[batch_size]` vector: the mean over features, as Keras's `binary_crossentropy`
and `mean_squared_error` do, so learning rates carry over between input widths. The training
step reduces it with `tf.nn.compute_average_loss` (see `rawtf_ae.train`).
"""

from __future__ import annotations

import tensorflow as tf

NAMES = ("mse", "bce")


def mean_squared_error(targets, reconstructions) -> tf.Tensor:
    """`[batch_size, width]` x2 -> `[batch_size]`: mean of `(targets - reconstructions)^2`."""
    return tf.reduce_mean(tf.math.squared_difference(targets, reconstructions), axis=-1)


def sigmoid_cross_entropy(targets, logits) -> tf.Tensor:
    """`[batch_size, width]` x2 -> `[batch_size]`: mean binary cross-entropy of `sigmoid(logits)`.

    Computed from logits (`tf.nn.sigmoid_cross_entropy_with_logits`), which stays finite where
    `log(sigmoid(logits))` would underflow. `targets` are in `[0, 1]` (pixel intensities are
    treated as probabilities, as in Vincent et al. 2010 and Hinton & Salakhutdinov 2006).
    """
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=-1)


def check(loss: str, output_activation_name: str) -> None:
    """Raises `ValueError` for an unknown `loss` or `bce` on a non-sigmoid output."""
    if loss not in NAMES:
        raise ValueError(f"Unknown loss {loss!r}; expected one of {', '.join(NAMES)}.")
    if loss == "bce" and output_activation_name != "sigmoid":
        raise ValueError(
            f"Loss 'bce' is a sigmoid cross-entropy computed from logits, so it needs "
            f"output_activation='sigmoid', got {output_activation_name!r}; use loss 'mse' instead."
        )


def reconstruction_loss(model, inputs, targets, loss: str) -> tf.Tensor:
    """Per-example loss `[batch_size]` of `model` reconstructing `targets` from `inputs`.

    Args:
      model: a `TiedAutoencoder`.
      inputs: `[batch_size, layer_sizes[0]]`, what the encoder sees (possibly corrupted).
      targets: `[batch_size, layer_sizes[0]]`, what the decoder must produce (the clean input).
      loss: `"mse"` or `"bce"`.
    """
    if loss == "bce":
        return sigmoid_cross_entropy(targets, model.reconstruction_logits(inputs))
    if loss == "mse":
        return mean_squared_error(targets, model(inputs))
    raise ValueError(f"Unknown loss {loss!r}; expected one of {', '.join(NAMES)}.")
