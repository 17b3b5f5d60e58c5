"""Activation functions by name, shared by the encoder and the mirrored decoder."""

from __future__ import annotations

from typing import Callable, Union

import tensorflow as tf

Activation = Callable[[tf.Tensor], tf.Tensor]
ActivationSpec = Union[str, Activation, None]

_BY_NAME: dict[str, Activation] = {
    "sigmoid": tf.math.sigmoid,
    "relu": tf.nn.relu,
    "selu": tf.nn.selu,
    "elu": tf.nn.elu,
    "tanh": tf.math.tanh,
    "softplus": tf.math.softplus,
    "leaky_relu": tf.nn.leaky_relu,
    "gelu": tf.nn.gelu,
    "swish": tf.nn.silu,
    "linear": tf.identity,
}

NAMES = tuple(sorted(_BY_NAME))


def get(spec: ActivationSpec) -> Activation:
    """Returns the activation function for a name, a callable, or `None` (linear).

    Args:
      spec: one of `NAMES` (case-insensitive), a callable `Tensor -> Tensor`, or `None`.

    Raises:
      ValueError: `spec` is an unknown name or neither a string nor a callable.
    """
    if spec is None:
        return tf.identity
    if isinstance(spec, str):
        try:
            return _BY_NAME[spec.lower()]
        except KeyError:
            raise ValueError(
                f"Unknown activation {spec!r}; expected one of {', '.join(NAMES)} or a callable."
            ) from None
    if callable(spec):
        return spec
    raise ValueError(f"Activation {spec!r} is neither a name ({', '.join(NAMES)}) nor a callable.")


def name_of(spec: ActivationSpec) -> str:
    """A readable name for logs and exports: the name itself or the callable's `__name__`."""
    if spec is None:
        return "linear"
    if isinstance(spec, str):
        return spec.lower()
    return getattr(spec, "__name__", repr(spec))
