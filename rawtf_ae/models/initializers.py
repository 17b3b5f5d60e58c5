"""Kernel initializers as stateless functions of a seed, so a `seed` reproduces the weights."""

from __future__ import annotations

import math
from typing import Callable, Union

import tensorflow as tf

# `(shape, seed) -> Tensor`, `seed` being a stateless-op seed `[2]` of int32.
Initializer = Callable[[tuple, tf.Tensor], tf.Tensor]

# Standard deviation of a unit normal truncated at ±2, to undo the truncation (as Keras does).
_TRUNCATED_STDDEV = 0.87962566103423978


def fans(shape) -> tuple[int, int]:
    """`(fan_in, fan_out)` of a dense `[in, out]` or convolution `[h, w, in, out]` kernel."""
    receptive = int(math.prod(shape[:-2])) if len(shape) > 2 else 1
    return receptive * shape[-2], receptive * shape[-1]


def glorot_uniform(shape, seed):
    """Glorot & Bengio (2010): U(±sqrt(6 / (fan_in + fan_out)))."""
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.stateless_uniform(shape, seed, minval=-limit, maxval=limit)


def _truncated_normal(shape, seed, variance):
    stddev = math.sqrt(variance) / _TRUNCATED_STDDEV
    return tf.random.stateless_truncated_normal(shape, seed, stddev=stddev)


def lecun_normal(shape, seed):
    """LeCun et al. (1998), variance 1 / fan_in; the one SELU needs (Klambauer et al. 2017)."""
    return _truncated_normal(shape, seed, 1.0 / fans(shape)[0])


def he_normal(shape, seed):
    """He et al. (2015), variance 2 / fan_in, for ReLU layers."""
    return _truncated_normal(shape, seed, 2.0 / fans(shape)[0])


_BY_NAME = {
    "glorot_uniform": glorot_uniform,
    "lecun_normal": lecun_normal,
    "he_normal": he_normal,
}
NAMES = ("auto",) + tuple(sorted(_BY_NAME))


def get(spec: Union[str, Initializer], activation_name: str) -> Initializer:
    """Resolves an initializer name; `"auto"` picks LeCun normal for SELU, else Glorot uniform."""
    if callable(spec):
        return spec
    if spec == "auto":
        return lecun_normal if activation_name == "selu" else glorot_uniform
    try:
        return _BY_NAME[spec]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown kernel initializer {spec!r}; expected one of {', '.join(NAMES)} "
            "or a callable `(shape, seed) -> Tensor`."
        ) from None
