"""The multinomial term of a step's objective: Mult-DAE and Mult-VAE (Liang et al. 2018).

Per user, `-sum_i x_i log softmax(logits)_i` of the decoder's logits over the whole catalog
(`losses.multinomial_log_likelihood`), averaged over the global batch's users as vae_cf's
`reduce_mean`. The input arrives normalized and corrupted (`steps.Objective.corrupt`: the
model's `input_norm`, then dropout, as Mult-DAE drops out its L2-normalized input).

A variational model (`model.variational`, Mult-VAE) decodes a sample `z = mean + eps *
exp(log_variance / 2)` of its code, `eps` a standard normal drawn for the global batch from the
step's noise seed (so N replicas draw what one device draws), and adds `beta * KL(q(z|x) ||
N(0, I))` per user, `beta = min(kl_cap, step / kl_anneal_steps)`: vae_cf's linear annealing
(0 steps: `kl_cap` from the first step).
"""

from __future__ import annotations

import tensorflow as tf

from rawtf_ae.training import corruption, losses


def kl_weight(options, step) -> tf.Tensor:
    """`beta` at `step` (the updates applied so far): `min(kl_cap, step / kl_anneal_steps)`."""
    if not options.kl_anneal_steps:
        return tf.constant(float(options.kl_cap))
    return tf.minimum(float(options.kl_cap), tf.cast(step, tf.float32) / float(options.kl_anneal_steps))


def sampled_codes(model, inputs, seed, step, options) -> tuple[tf.Tensor, tf.Tensor]:
    """`(z [b, code], beta * KL per user [b])` of a variational `model` on normalized `inputs`."""
    mean, log_variance = model.encode_distribution(inputs, normalized=True)
    return sample_codes(mean, log_variance, seed, step, options)


def sample_codes(mean, log_variance, seed, step, options) -> tuple[tf.Tensor, tf.Tensor]:
    """`(z = mean + eps * exp(log_variance / 2), beta * KL(N(mean, var) || N(0, I)) [b])`."""
    seed = tf.random.experimental.stateless_fold_in(seed, -1, alg="philox")
    noise = corruption.replica_rows(lambda shape: corruption.normal(shape, seed), mean)
    codes = mean + noise * tf.exp(0.5 * log_variance)
    kl = 0.5 * tf.reduce_sum(tf.exp(log_variance) + tf.square(mean) - 1.0 - log_variance, axis=1)
    return codes, kl_weight(options, step) * kl


def reconstruction(objective, inputs, targets) -> tuple[tf.Tensor, tf.Tensor]:
    """`(this replica's share of the global batch's mean loss, codes)` for `steps.Objective`."""
    model, options = objective.model, objective.options
    if model.variational:
        step = objective.optimizer.iterations
        codes, kl = sampled_codes(model, inputs, objective.noise_seed(), step, options)
    else:
        codes, kl = model.encode(inputs, normalized=True), 0.0
    logits = model.decode_logits(objective.drop_codes(codes, 0))
    per_user = losses.multinomial_log_likelihood(targets, logits) + kl
    return tf.nn.compute_average_loss(per_user, global_batch_size=options.global_batch_size), codes
