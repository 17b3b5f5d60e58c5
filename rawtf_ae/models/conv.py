"""`TiedConvAutoencoder`: the decoder reuses the encoder's convolution filters, transposed.

Encoder layer i: `h_{i+1} = f_i(conv2d(h_i, kernels[i], strides) + encoder_biases[i])`.
Decoder layer i: `r_i = g_i(conv2d_transpose(r_{i+1}, kernels[i], output_shape=shape(h_i)) +
decoder_biases[i])` — `tf.nn.conv2d_transpose` takes a filter `[h, w, out, in]` of exactly the
encoder's `[h, w, in, out]` layout, so with `tied=True` it is the very same `tf.Variable` and the
tape sums both paths' gradients, as in the dense model. Biases are never tied.

Inputs, codes and reconstructions are flat vectors (`[batch, height * width * channels]`), so
the losses, data pipelines, pictures and exports of the dense model work unchanged.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import tensorflow as tf

from rawtf_ae.models import activations
from rawtf_ae.models.base import ActivationArg, Autoencoder


def _positive_ints(name, values, length=None):
    values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"`{name}` ({values!r}) must be positive integers.")
    if length is not None and len(values) not in (1, length):
        raise ValueError(
            f"`{name}` has {len(values)} entries ({values!r}); give one, or one per layer ({length})."
        )
    return values if length is None or len(values) == length else values * length


class TiedConvAutoencoder(Autoencoder):
    """A convolutional autoencoder whose decoder applies the encoder's filters transposed.

    Attributes:
      image_shape: `(height, width, channels)` of one example.
      kernels: one filter variable per encoder layer, `[k, k, in_channels, out_channels]`.
      encoder_biases: `[out_channels]` per layer; decoder_biases: `[in_channels]` per layer.
      decoder_kernels: `None` where tied, else a separate filter shaped like `kernels[i]`.
      shapes: the `(height, width, channels)` of every activation, input first, code last.
      layer_sizes: the flat width of each of those (input width first, code width last).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        filters: Sequence[int],
        *,
        kernel_size: Union[int, Sequence[int]] = 3,
        strides: Union[int, Sequence[int]] = 2,
        activation: ActivationArg = "relu",
        output_activation: activations.ActivationSpec = "sigmoid",
        tied: Union[bool, Sequence[bool]] = True,
        kernel_initializer="auto",
        seed: Optional[int] = None,
        dtype: tf.DType = tf.float32,
        compute_dtype: Optional[tf.DType] = None,
        name: Optional[str] = None,
    ):
        """Creates all variables (padding is "SAME": each stride-s layer divides height and width by s).

        Raises:
          ValueError: bad shapes, filters, sizes, strides, activations or tying flags.
        """
        super().__init__(name=name)
        self.image_shape = _positive_ints("image_shape", image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"`image_shape` ({self.image_shape}) must be (height, width, channels).")
        self.filters = _positive_ints("filters", filters)
        num_layers = len(self.filters)
        self.kernel_sizes = _positive_ints("kernel_size", kernel_size, num_layers)
        self.strides = _positive_ints("strides", strides, num_layers)
        self._configure(num_layers, activation, output_activation, tied, seed, dtype, compute_dtype)
        height, width, channels = self.image_shape
        shapes = [(height, width, channels)]
        for stride, out_channels in zip(self.strides, self.filters):
            height, width = math.ceil(height / stride), math.ceil(width / stride)
            shapes.append((height, width, out_channels))
        self.shapes = tuple(shapes)
        self.layer_sizes = tuple(int(math.prod(s)) for s in self.shapes)
        # A conv kernel is [k, k, in, out]; its biases are per channel.
        kernel_shapes = [
            (size, size, self.shapes[i][2], self.filters[i]) for i, size in enumerate(self.kernel_sizes)
        ]
        channels = [shape[2] for shape in self.shapes]
        self._create_variables(kernel_shapes, channels, "conv", kernel_initializer, dtype)

    def architecture(self) -> dict:
        """The constructor's arguments as plain values (for exports)."""
        return {
            "kind": "conv",
            "image_shape": list(self.image_shape),
            "filters": list(self.filters),
            "kernel_size": list(self.kernel_sizes),
            "strides": list(self.strides),
            "activation": list(self.activation_names),
            "output_activation": self.output_activation_name,
            "tied": list(self.tied_layers),
        }

    def _encode(self, x, kernels) -> tf.Tensor:
        h = tf.reshape(x, [-1, *self.shapes[0]])
        for i, (kernel, bias) in enumerate(zip(kernels, self._cast(self.encoder_biases))):
            h = self._activations[i](tf.nn.conv2d(h, kernel, self.strides[i], "SAME") + bias)
        return tf.reshape(h, [-1, self.code_width])

    def _decode_logits(self, z, kernels) -> tf.Tensor:
        # The tie: a tied layer's transposed convolution uses the encoder's own filter.
        decoder = [
            k if t else d for k, t, d in zip(kernels, self.tied_layers, self._cast(self.decoder_kernels))
        ]
        biases = self._cast(self.decoder_biases)
        h = tf.reshape(z, [-1, *self.shapes[-1]])
        for i in reversed(range(self.num_layers)):
            output_shape = tf.stack([tf.shape(h)[0], *self.shapes[i]])
            h = tf.nn.conv2d_transpose(h, decoder[i], output_shape, self.strides[i], "SAME") + biases[i]
            if i > 0:
                h = self._activations[i - 1](h)
        return tf.reshape(h, [-1, self.input_width])
