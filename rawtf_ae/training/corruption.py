"""Input corruption for denoising autoencoders (Vincent et al. 2008, 2010).

The encoder sees a corrupted input x~; the loss compares the reconstruction with the clean x.
All noise comes from stateless random ops seeded by `(seed, step)`, so a resumed run draws it
again exactly. With several replicas each one draws the noise of the whole global batch and
keeps its own rows: an example's noise depends on its place in the global batch, not on how
many replicas share the batch, so N replicas train exactly as one device does (N times the
random numbers per replica, cheap next to the matrix multiplies).

A seed means one run whether or not the step is XLA-compiled. TensorFlow's stateless ops draw
the same Philox bits either way but turn them into floats differently (the CPU and GPU kernels
keep a bit's low 23 bits as the mantissa, XLA its high ones), so `tf.random.stateless_uniform`
gives other numbers under `jit_compile=True`. `uniform` and `normal` below draw the bits with
the algorithm named (Philox, on every device) and convert them with integer ops: the kernels'
own conversion, so a run without XLA keeps the noise it always drew, value for value, and the
XLA step now draws it too (the gaussian up to the last bits of `log`, `sin` and `cos`).
"""

from __future__ import annotations

import math

import tensorflow as tf

NAMES = ("none", "gaussian", "masking", "salt_and_pepper", "dropout")


def noise_seed(seed: int, step) -> tf.Tensor:
    """The stateless seed `[2]` of `step`, the same on every replica."""
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    # Folding in 0 keeps the noise that single-device runs have always drawn.
    return tf.random.experimental.stateless_fold_in(base, tf.constant(0, tf.int64), alg="philox")


def uniform(shape, seed) -> tf.Tensor:
    """Float32 uniform on [0, 1) of `shape`: `tf.random.stateless_uniform(shape, seed)`'s values
    (CPU and GPU kernels) with or without XLA."""
    bits = tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox")
    mantissa = tf.bitwise.bitwise_and(bits, tf.constant(0x7FFFFF, tf.uint32))
    one_to_two = tf.bitwise.bitwise_or(mantissa, tf.constant(0x3F800000, tf.uint32))  # 1.m in [1, 2)
    return tf.bitcast(one_to_two, tf.float32) - 1.0


def normal(shape, seed) -> tf.Tensor:
    """Float32 standard normal of `shape` by Box-Muller on `uniform`'s numbers, in pairs as the
    kernels of `tf.random.stateless_normal` pair them (so the same values, up to rounding)."""
    count = tf.reduce_prod(tf.cast(shape, tf.int32))
    pairs = (count + 1) // 2
    u = tf.reshape(uniform(tf.stack([pairs * 2]), seed), [pairs, 2])
    radius = tf.sqrt(-2.0 * tf.math.log(tf.maximum(u[:, 0], 1e-7)))
    angle = 2.0 * math.pi * u[:, 1]
    values = tf.reshape(tf.stack([tf.sin(angle) * radius, tf.cos(angle) * radius], axis=1), [-1])
    return tf.reshape(values[:count], shape)


def replica_rows(draw, like) -> tf.Tensor:
    """`draw(shape)` for the global batch, cut to this replica's rows; `like` is its batch.

    `draw` maps a shape to a random tensor (a stateless op, so every replica draws the same
    global tensor). Replica `r` keeps rows `[r * b, (r + 1) * b)`, the slice of the global batch
    that `data.train_dataset` gives it. On one device (or outside a replica context) this is
    `draw(tf.shape(like))`.
    """
    shape = tf.shape(like)
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    if replicas == 1:
        return draw(shape)
    rows = shape[0]
    full = draw(tf.concat([[rows * replicas], shape[1:]], axis=0))
    start = tf.cast(context.replica_id_in_sync_group, tf.int32) * rows
    return full[start : start + rows]


def dropout(x, rate: float, seed) -> tf.Tensor:
    """Inverted dropout of `x` `[batch, width]` with stateless, replica-count-invariant noise.

    Computes what `tf.nn.experimental.stateless_dropout(x, rate, seed)` computes on one device,
    value for value, and on N replicas what it would compute on the global batch.
    """
    if not rate:
        return x
    scaled = x * tf.constant(1 / (1 - rate), x.dtype)
    kept = replica_rows(lambda shape: uniform(shape, seed), x) >= rate
    return tf.where(kept, scaled, tf.zeros_like(scaled))


def corrupt(x, kind: str, level: float, seed) -> tf.Tensor:
    """Returns a corrupted copy of `x` `[batch, width]` (same shape and dtype).

    Args:
      x: clean inputs.
      kind: `"none"`; `"gaussian"`: add N(0, level^2) noise; `"masking"`: set a random fraction
        `level` of the inputs to 0 (Vincent et al. 2010's masking noise); `"salt_and_pepper"`:
        set a random fraction `level` to 0 or 1, with equal probability; `"dropout"`: masking
        with the kept inputs scaled by `1 / (1 - level)` (inverted dropout, as Mult-DAE's
        `tf.nn.dropout` on its input).
      level: sigma for gaussian, the corrupted fraction otherwise.
      seed: a stateless seed `[2]` (see `noise_seed`).
    """
    if kind == "none" or level == 0:
        return x

    def draw(noise, noise_seed):
        return replica_rows(lambda shape: noise(shape, noise_seed), x)

    if kind == "gaussian":
        return x + tf.cast(level * draw(normal, seed), x.dtype)
    if kind == "dropout":
        return dropout(x, level, seed)
    hit = draw(uniform, seed) < level
    if kind == "masking":
        return tf.where(hit, tf.zeros_like(x), x)
    if kind == "salt_and_pepper":
        salt = tf.cast(
            draw(uniform, tf.random.experimental.stateless_fold_in(seed, 1, alg="philox")) < 0.5, x.dtype
        )
        return tf.where(hit, salt, x)
    raise ValueError(f"Unknown corruption {kind!r}; expected one of {', '.join(NAMES)}.")


def check(kind: str, level: float, key: str = "train.corruption_level") -> None:
    """Raises `ValueError` for an unknown kind or a level out of range (`key` names the level)."""
    if kind not in NAMES:
        raise ValueError(f"`train.corruption` is {kind!r}; expected one of {', '.join(NAMES)}.")
    if kind in ("masking", "salt_and_pepper", "dropout") and not 0 <= level < 1:
        raise ValueError(f"`{key}` is a fraction for {kind}: in [0, 1), got {level!r}.")
    if level < 0:
        raise ValueError(f"`{key}` must be >= 0, got {level!r}.")
