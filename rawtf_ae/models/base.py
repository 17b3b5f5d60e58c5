"""`Autoencoder`: what every rawtf_ae model shares, the dense (`dense.py`) and conv (`conv.py`)
kinds alike: dtypes, widths, the variables' names, and the public `encode`/`decode`/`__call__`.
"""

from __future__ import annotations

import random
from typing import Sequence, Union

import tensorflow as tf

from rawtf_ae.models import activations, initializers

ActivationArg = Union[activations.ActivationSpec, Sequence[activations.ActivationSpec]]


def check_layer_sizes(layer_sizes) -> tuple[int, ...]:
    try:
        sizes = tuple(layer_sizes)
    except TypeError:
        sizes = ()
    valid = len(sizes) >= 2 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
    if not valid:
        raise ValueError(
            f"`layer_sizes` ({layer_sizes!r}) needs at least two positive integer widths: "
            "the input width, then each encoder layer's width, e.g. [784, 392, 196]."
        )
    return sizes


def _per_layer(activation: ActivationArg, num_layers: int) -> list:
    if isinstance(activation, (list, tuple)):
        if len(activation) != num_layers:
            raise ValueError(
                f"`activation` has {len(activation)} entries ({list(activation)!r}) but there are "
                f"{num_layers} encoder layers; give one name, or one per encoder layer."
            )
        return list(activation)
    return [activation] * num_layers


class Autoencoder(tf.Module):
    """What every rawtf_ae autoencoder shares: dtypes, widths, and the public encode/decode calls.

    Subclasses create `kernels`, `encoder_biases`, `decoder_biases`, `decoder_kernels`,
    `layer_sizes` (flat widths, input first, code last), `compute_dtype` and
    `_output_activation`, and implement `_encode(h, kernels)` and `_decode_logits(h, kernels)`
    on already-cast kernels, so that one cast of each tied kernel serves both directions.
    """

    variational = False  # a Mult-VAE's code is a distribution (`TiedAutoencoder(variational=True)`)

    def _configure(self, num_layers: int, activation, output_activation, tied, seed, dtype, compute_dtype):
        """The constructor arguments every kind shares: activations, tying, seed, dtypes."""
        specs = _per_layer(activation, num_layers)
        self._activations = [activations.get(a) for a in specs]
        self._output_activation = activations.get(output_activation)
        self.activation_names = tuple(activations.name_of(a) for a in specs)
        self.output_activation_name = activations.name_of(output_activation)
        flags = list(tied) if isinstance(tied, (list, tuple)) else [tied] * num_layers
        if len(flags) != num_layers:
            raise ValueError(f"`tied` has {len(flags)} entries ({flags}) for {num_layers} layers.")
        self.tied_layers = tuple(bool(t) for t in flags)
        self.tied = all(self.tied_layers)
        self.compute_dtype = tf.as_dtype(compute_dtype or dtype)
        self.seed = int(random.SystemRandom().randrange(2**31) if seed is None else seed)

    def _create_variables(self, kernel_shapes, bias_widths, layer: str, kernel_initializer, dtype) -> None:
        """Kernels, biases and untied decoder kernels, under the module's name scope.

        `kernel_shapes[i]` is layer i's kernel shape, `bias_widths[i]` the width of its input
        (`bias_widths[i + 1]` that of its output); variables are named `encoder/{layer}_{i}/...`.
        Each (layer, role) draws from its own stateless stream, so adding untied decoder
        kernels leaves the encoder kernels of the same seed unchanged.
        """

        def make_kernel(i, role):
            init = initializers.get(kernel_initializer, self.activation_names[i])
            value = init(tuple(kernel_shapes[i]), tf.constant([self.seed, 2 * i + role], tf.int32))
            side = "encoder" if role == 0 else "decoder"
            return tf.Variable(tf.cast(value, dtype), name=f"{side}/{layer}_{i}/kernel")

        count = len(kernel_shapes)
        with self.name_scope:
            self.kernels = [make_kernel(i, 0) for i in range(count)]
            self.encoder_biases = [
                tf.Variable(tf.zeros([bias_widths[i + 1]], dtype), name=f"encoder/{layer}_{i}/bias")
                for i in range(count)
            ]
            self.decoder_biases = [
                tf.Variable(tf.zeros([bias_widths[i]], dtype), name=f"decoder/{layer}_{i}/bias")
                for i in range(count)
            ]
            self.decoder_kernels = [None if self.tied_layers[i] else make_kernel(i, 1) for i in range(count)]

    @property
    def dtype(self) -> tf.DType:
        """The variables' dtype (outputs come back in it)."""
        return self.kernels[0].dtype

    @property
    def num_layers(self) -> int:
        """The number of encoder layers (= decoder layers)."""
        return len(self.kernels)

    @property
    def input_width(self) -> int:
        return self.layer_sizes[0]

    @property
    def code_width(self) -> int:
        return self.layer_sizes[-1]

    def _check_input(self, x, width: int, what: str) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        if x.shape.rank is not None and x.shape.rank != 2:
            raise ValueError(
                f"{what} must be 2-D `[batch_size, {width}]`, got shape {x.shape}; "
                "flatten images to vectors first."
            )
        if x.shape.rank == 2 and x.shape[-1] is not None and x.shape[-1] != width:
            raise ValueError(
                f"{what} has width {x.shape[-1]} (shape {x.shape}), expected {width} "
                f"(layer_sizes={list(self.layer_sizes)})."
            )
        return tf.cast(x, self.compute_dtype)

    def _cast(self, variables) -> list:
        # One cast per variable per call (a no-op in float32): under mixed precision the
        # encoder and the decoder still share one cast of each tied kernel.
        return [None if v is None else tf.cast(v, self.compute_dtype) for v in variables]

    def _prepared(self, x, normalized: bool) -> tf.Tensor:
        """`x` as the first layer takes it (the dense kind may normalize it: `input_norm`)."""
        return x

    def encode_inputs(self, x) -> tf.Tensor:
        """`x` `[batch_size, layer_sizes[0]]` normalized as the first layer takes it (`input_norm`
        of the dense kind; itself otherwise), in the model's dtype."""
        x = self._prepared(self._check_input(x, self.input_width, "The input"), False)
        return tf.cast(x, self.dtype)

    def encode(self, x, normalized: bool = False) -> tf.Tensor:
        """`[batch_size, layer_sizes[0]]` inputs -> `[batch_size, layer_sizes[-1]]` codes.

        `normalized`: `x` is already normalized as `input_norm` says (a training step that
        drops inputs out after normalizing them, as Mult-DAE does)."""
        x = self._prepared(self._check_input(x, self.input_width, "The input"), normalized)
        return tf.cast(self._encode(x, self._cast(self.kernels)), self.dtype)

    def decode_logits(self, z) -> tf.Tensor:
        """`[batch_size, layer_sizes[-1]]` codes -> `[batch_size, layer_sizes[0]]` pre-activations.

        The last decoder layer's output before `output_activation`, for losses computed stably
        from logits (sigmoid cross-entropy).
        """
        h = self._check_input(z, self.code_width, "The code")
        return tf.cast(self._decode_logits(h, self._cast(self.kernels)), self.dtype)

    def decode(self, z) -> tf.Tensor:
        """`[batch_size, layer_sizes[-1]]` codes -> `[batch_size, layer_sizes[0]]` reconstructions."""
        return self._output_activation(self.decode_logits(z))

    def reconstruction_logits(self, x) -> tf.Tensor:
        """`[batch_size, layer_sizes[0]]` inputs -> the reconstruction's pre-activations."""
        kernels = self._cast(self.kernels)
        h = self._encode(self._prepared(self._check_input(x, self.input_width, "The input"), False), kernels)
        return tf.cast(self._decode_logits(h, kernels), self.dtype)

    def __call__(self, x) -> tf.Tensor:
        """`[batch_size, layer_sizes[0]]` inputs -> `[batch_size, layer_sizes[0]]` reconstructions."""
        return self._output_activation(self.reconstruction_logits(x))

    def num_parameters(self) -> int:
        """The number of trainable scalars (a tied kernel counts once)."""
        return int(sum(v.shape.num_elements() for v in self.trainable_variables))

    def describe(self) -> str:
        """E.g. `tied 784-64-16, 51088 trainable parameters` (or untied, or partially tied)."""
        if self.tied:
            tying = "tied"
        elif not any(self.tied_layers):
            tying = "untied"
        else:
            tying = f"partially tied {self.tied_layers}"
        return f"{tying} {'-'.join(map(str, self.layer_sizes))}, {self.num_parameters()} trainable parameters"
