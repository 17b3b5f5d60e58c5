"""PCA with the autoencoder's code size, the baseline its reconstructions are measured against.

An SVD of the centred training data, in TensorFlow. A linear autoencoder trained with squared
error spans the same subspace (Baldi & Hornik 1989), so it can at best match PCA's error;
nonlinear deep autoencoders should beat it clearly (Hinton & Salakhutdinov 2006).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def pca(examples: np.ndarray, code_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Principal components of `examples` `[n, width]`.

    Returns:
      `(mean [width], components [code_size, width])`, components orthonormal, by decreasing
      variance.
    """
    x = tf.convert_to_tensor(examples, tf.float64)
    if not 0 < code_size <= min(x.shape):
        raise ValueError(
            f"PCA code size {code_size} must be between 1 and {min(x.shape)} for data {x.shape}."
        )
    mean = tf.reduce_mean(x, axis=0)
    _, _, v = tf.linalg.svd(x - mean, full_matrices=False)
    return mean, tf.transpose(v[:, :code_size])


def pca_reconstruction(examples: np.ndarray, mean: tf.Tensor, components: tf.Tensor) -> np.ndarray:
    """Projects `examples` `[n, width]` onto the components and back: `[n, width]`."""
    centred = tf.convert_to_tensor(examples, tf.float64) - mean
    return (tf.matmul(tf.matmul(centred, components, transpose_b=True), components) + mean).numpy()


def pca_mse(train: np.ndarray, validation: np.ndarray, code_size: int) -> float:
    """Mean squared error per input of PCA-`code_size` (fit on `train`) on `validation`."""
    mean, components = pca(train, code_size)
    return float(np.mean((pca_reconstruction(validation, mean, components) - validation) ** 2))
