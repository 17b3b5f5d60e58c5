"""Input corruption for denoising autoencoders (Vincent et al. 2008, 2010).

The encoder sees a corrupted input x~; the loss compares the reconstruction with the clean x.
All noise comes from stateless random ops seeded by `(seed, step)`, so a resumed run draws it
again exactly. With several replicas each one draws the noise of the whole global batch and
keeps its own rows: an example's noise depends on its place in the global batch, not on how
many replicas share the batch, so N replicas train exactly as one device does (N times the
random numbers per replica, cheap next to the matrix multiplies).
"""

from __future__ import annotations

import tensorflow as tf

NAMES = ("none", "gaussian", "masking", "salt_and_pepper")


def noise_seed(seed: int, step) -> tf.Tensor:
    """The stateless seed `[2]` of `step`, the same on every replica."""
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    # Folding in 0 keeps the noise that single-device runs have always drawn.
    return tf.random.experimental.stateless_fold_in(base, tf.constant(0, tf.int64))


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
    uniform = replica_rows(lambda shape: tf.random.stateless_uniform(shape, seed, dtype=x.dtype), x)
    return tf.where(uniform >= rate, scaled, tf.zeros_like(scaled))


def corrupt(x, kind: str, level: float, seed) -> tf.Tensor:
    """Returns a corrupted copy of `x` `[batch, width]` (same shape and dtype).

    Args:
      x: clean inputs.
      kind: `"none"`; `"gaussian"`: add N(0, level^2) noise; `"masking"`: set a random fraction
        `level` of the inputs to 0 (Vincent et al. 2010's masking noise); `"salt_and_pepper"`:
        set a random fraction `level` to 0 or 1, with equal probability.
      level: sigma for gaussian, the corrupted fraction otherwise.
      seed: a stateless seed `[2]` (see `noise_seed`).
    """
    if kind == "none" or level == 0:
        return x

    def uniform(noise_seed):
        return replica_rows(lambda shape: tf.random.stateless_uniform(shape, noise_seed, dtype=x.dtype), x)

    if kind == "gaussian":
        return x + level * replica_rows(
            lambda shape: tf.random.stateless_normal(shape, seed, dtype=x.dtype), x
        )
    hit = uniform(seed) < level
    if kind == "masking":
        return tf.where(hit, tf.zeros_like(x), x)
    if kind == "salt_and_pepper":
        salt = tf.cast(uniform(tf.random.experimental.stateless_fold_in(seed, 1)) < 0.5, x.dtype)
        return tf.where(hit, salt, x)
    raise ValueError(f"Unknown corruption {kind!r}; expected one of {', '.join(NAMES)}.")


def check(kind: str, level: float) -> None:
    """Raises `ValueError` for an unknown kind or a level out of range."""
    if kind not in NAMES:
        raise ValueError(f"`train.corruption` is {kind!r}; expected one of {', '.join(NAMES)}.")
    if kind in ("masking", "salt_and_pepper") and not 0 <= level < 1:
        raise ValueError(f"`train.corruption_level` is a fraction for {kind}: in [0, 1), got {level!r}.")
    if level < 0:
        raise ValueError(f"`train.corruption_level` must be >= 0, got {level!r}.")
