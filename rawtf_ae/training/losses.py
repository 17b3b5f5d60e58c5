"""Reconstruction losses, per example, for the step to average over the global batch.

Each returns a `[batch_size]` vector: the mean over features, as Keras's `binary_crossentropy`
and `mean_squared_error` do, so learning rates carry over between input widths. The training
step reduces it with `tf.nn.compute_average_loss` (see `rawtf_ae.program.train`).
"""

from __future__ import annotations

import tensorflow as tf

NAMES = ("mse", "bce", "masked_mse", "multinomial")
RATINGS = ("masked_mse", "multinomial")  # the losses of ratings data


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


def masked_squared_error(targets, outputs, mask) -> tf.Tensor:
    """`[batch_size, width]` x3 -> `[batch_size]`: each row's sum of `mask * (targets - outputs)^2`.

    Kuchaiev & Ginsburg (2017), eq. 1: only the observed ratings (`mask` 1) count. The training
    step divides the batch's sum by its number of observed ratings (the "masked MSE"); the
    evaluation's RMSE is `sqrt(sum over all users / all observed ratings)`.
    """
    return tf.reduce_sum(mask * tf.math.squared_difference(targets, outputs), axis=-1)


def multinomial_log_likelihood(targets, logits) -> tf.Tensor:
    """`[batch_size, items]` x2 -> `[batch_size]`: `-sum_i targets_i log softmax(logits)_i`.

    Liang et al. (2018)'s multinomial likelihood for implicit feedback (Mult-DAE/VAE): the
    decoder's logits over the whole catalog, weighted by the user's row (1 per interaction).
    The step averages it over the global batch's users, as vae_cf's `reduce_mean` does.
    """
    return -tf.reduce_sum(targets * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def check(loss: str, output_activation_name: str) -> None:
    """Raises `ValueError` for an unknown `loss` or `bce` on a non-sigmoid output."""
    if loss not in NAMES:
        raise ValueError(f"`train.loss` is {loss!r}; expected one of {', '.join(NAMES)}.")
    if loss == "bce" and output_activation_name != "sigmoid":
        raise ValueError(
            f"`train.loss='bce'` is a sigmoid cross-entropy computed from logits, so it needs "
            f"model.output_activation='sigmoid', got {output_activation_name!r}; use loss 'mse' instead."
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
    if loss == "masked_mse":
        raise ValueError("Loss 'masked_mse' needs a mask: use `masked_squared_error`.")
    if loss == "multinomial":
        return multinomial_log_likelihood(targets, model.reconstruction_logits(inputs))
    raise ValueError(f"Unknown loss {loss!r}; expected one of {', '.join(NAMES)}.")


def loss_from_codes(model, codes, targets, loss: str) -> tf.Tensor:
    """Per-example loss `[batch_size]` of decoding `codes` `[batch_size, code_width]` into `targets`.

    For steps that need the codes anyway (the sparsity penalty): the batch is encoded once.
    """
    if loss == "bce":
        return sigmoid_cross_entropy(targets, model.decode_logits(codes))
    if loss == "mse":
        return mean_squared_error(targets, model.decode(codes))
    raise ValueError(f"Unknown loss {loss!r}; expected one of {', '.join(NAMES)}.")


def kl_sparsity(codes, target: float) -> tf.Tensor:
    """Sparsity penalty `sum_j KL(rho || rho_hat_j)` for codes `[batch_size, code_width]` in (0, 1).

    `rho_hat_j` is unit j's mean activation over `codes` (Ng's sparse autoencoder notes). The
    training step computes it over the global batch across replicas (`global_mean`) and calls
    `kl_sparsity_of_mean`.
    """
    return kl_sparsity_of_mean(tf.reduce_mean(codes, axis=0), target)


def global_mean(codes, global_batch_size: int) -> tf.Tensor:
    """The mean of `codes` `[b, width]` over the global batch of all replicas, `[width]`.

    Its value is the global mean (an all-reduce of the replicas' sums); its gradient reaches only
    this replica's rows (`1 / global_batch_size` each), so when every replica adds the whole
    penalty of the global mean, the replicas' summed gradients are the penalty's gradient, as
    on one device with the whole batch.
    """
    local = tf.reduce_sum(codes, axis=0)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return local / global_batch_size
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(local))
    # The value is exactly `total / G` on every replica; the second term is 0 but carries the
    # gradient of the local rows.
    return tf.stop_gradient(total) / global_batch_size + (local - tf.stop_gradient(local)) / global_batch_size


def kl_sparsity_of_mean(mean, target: float) -> tf.Tensor:
    """`sum_j KL(target || mean_j)` for mean activations `[width]` in (0, 1)."""
    mean = tf.clip_by_value(mean, 1e-6, 1 - 1e-6)
    return tf.reduce_sum(
        target * tf.math.log(target / mean) + (1 - target) * tf.math.log((1 - target) / (1 - mean))
    )


def contractive(model, inputs) -> tf.Tensor:
    """Per-example squared Frobenius norm of the encoder's Jacobian `d code / d input`, `[batch]`.

    Rifai et al. (2011). For one layer with an elementwise activation f it has the closed form
    `sum_j f'(a_j)^2 sum_i W_ij^2` (for the sigmoid, f' = h (1 - h)); deeper encoders use
    `tf.GradientTape.batch_jacobian`.
    """
    if model.num_layers == 1 and model.architecture()["kind"] == "dense":
        kernel = tf.cast(model.kernels[0], model.compute_dtype)
        pre_activation = tf.matmul(tf.cast(inputs, model.compute_dtype), kernel) + tf.cast(
            model.encoder_biases[0], model.compute_dtype
        )
        with tf.GradientTape() as tape:
            tape.watch(pre_activation)
            activation = model._activations[0](pre_activation)
        slope = tape.gradient(activation, pre_activation)  # f'(a), elementwise
        column_norms = tf.reduce_sum(tf.square(kernel), axis=0)  # sum_i W_ij^2
        return tf.cast(tf.reduce_sum(tf.square(slope) * column_norms, axis=-1), model.dtype)
    return jacobian_norm(model, inputs)


def jacobian_norm(model, inputs) -> tf.Tensor:
    """`||d code / d input||_F^2` per example `[batch]`, by `tf.GradientTape.batch_jacobian`.

    In the model's (variable) dtype, like its outputs: float64 models stay float64.
    """
    inputs = tf.cast(tf.convert_to_tensor(inputs), model.dtype)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        codes = model.encode(inputs)
    jacobian = tape.batch_jacobian(codes, inputs)  # [batch, code_width, input_width]
    return tf.reduce_sum(tf.square(jacobian), axis=[1, 2])
