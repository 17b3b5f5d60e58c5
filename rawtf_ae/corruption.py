"""Input corruption for denoising autoencoders (Vincent et al. 2008, 2010).

The encoder sees a corrupted input x~; the loss compares the reconstruction with the clean x.
All noise comes from stateless random ops seeded by `(seed, step)` folded with the replica id,
so it differs per step and per replica and is reproduced exactly by a resumed run.
"""

from __future__ import annotations

import tensorflow as tf

NAMES = ("none", "gaussian", "masking", "salt_and_pepper")


def noise_seed(seed: int, step) -> tf.Tensor:
    """The stateless seed `[2]` for `step` on the current replica (call it in replica context)."""
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    context = tf.distribute.get_replica_context()
    replica = context.replica_id_in_sync_group if context is not None else 0
    return tf.random.experimental.stateless_fold_in(base, tf.cast(replica, tf.int64))


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
    if kind == "gaussian":
        return x + level * tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype)
    hit = tf.random.stateless_uniform(tf.shape(x), seed, dtype=x.dtype) < level
    if kind == "masking":
        return tf.where(hit, tf.zeros_like(x), x)
    if kind == "salt_and_pepper":
        second = tf.random.experimental.stateless_fold_in(seed, 1)
        salt = tf.cast(tf.random.stateless_uniform(tf.shape(x), second, dtype=x.dtype) < 0.5, x.dtype)
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
