"""`TiedAutoencoder`: a `tf.Module` whose decoder multiplies by the transposed encoder kernels.

Encoder layer `i` computes `h_{i+1} = f_i(h_i @ kernels[i] + encoder_biases[i])` with `h_0 = x`.
The decoder walks back down: `r_i = g_i(r_{i+1} @ kernels[i]^T + decoder_biases[i])`, starting
from the code `r_n = h_n`, where `g_i = f_{i-1}` mirrors the encoder and `g_0` is the output
activation. With `tied=True` there is one `tf.Variable` per kernel: the decoder reads the very
same object with `transpose_b=True`, so `tf.GradientTape` hands it the sum of the encoder-path
and decoder-path gradients. Biases are never tied.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import tensorflow as tf

from rawtf_ae.models import activations, initializers
from rawtf_ae.models.base import ActivationArg, Autoencoder, check_layer_sizes
from rawtf_ae.models.row_ops import gather_rows, lookup, read_without_copy, row_dots, row_ids, sum_by_row

# What the first layer sees: the inputs as given, or each row divided by its L2 norm (Liang
# et al. 2018's Mult-DAE/VAE, for implicit feedback: a user's interactions as a direction).
INPUT_NORMS = ("none", "l2")
_EPSILON = 1e-12  # tf.math.l2_normalize's


class TiedAutoencoder(Autoencoder):
    """A dense autoencoder whose decoder reuses the encoder's kernels, transposed.

    Attributes:
      layer_sizes: the input width followed by each encoder layer's width.
      kernels: one `tf.Variable` per encoder layer `i`, shape `[layer_sizes[i], layer_sizes[i+1]]`.
      encoder_biases: one per encoder layer `i`, shape `[layer_sizes[i+1]]`.
      decoder_biases: one per decoder layer; `decoder_biases[i]` pairs with `kernels[i]` and has
        shape `[layer_sizes[i]]` (the decoder applies them from the last index down to 0).
      tied_layers: for each layer, whether its decoder uses the encoder's kernel.
      tied: every layer is tied.
      decoder_kernels: one entry per layer: `None` where the layer is tied, otherwise a
        separate variable shaped like `kernels[i]` and used transposed exactly like a tied one,
        so a tied and an untied model with `decoder_kernels[i] == kernels[i]` compute the same
        function.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        *,
        activation: ActivationArg = "sigmoid",
        output_activation: activations.ActivationSpec = "sigmoid",
        tied: Union[bool, Sequence[bool]] = True,
        kernel_initializer: Union[str, initializers.Initializer] = "auto",
        seed: Optional[int] = None,
        dtype: tf.DType = tf.float32,
        compute_dtype: Optional[tf.DType] = None,
        input_norm: str = "none",
        variational: bool = False,
        name: Optional[str] = None,
    ):
        """Creates all variables.

        Args:
          layer_sizes: input width, then each encoder width, e.g. `[784, 392, 196]`.
          activation: a name from `rawtf_ae.models.activations.NAMES`, a callable, or a list with one
            entry per encoder layer (e.g. `["sigmoid", "sigmoid", "linear"]` for a linear code).
            Decoder layer `i` (reconstructing encoder layer `i-1`'s output) uses `activation[i-1]`.
          output_activation: the last decoder layer's activation, the reconstruction's range.
            Losses from logits (`bce`) need `"sigmoid"`.
          tied: share each kernel between encoder and decoder (`False`: a separate decoder
            kernel per layer, for comparison), or one bool per layer (partial tying).
          kernel_initializer: `"auto"` (LeCun normal for SELU layers, Glorot uniform otherwise),
            `"glorot_uniform"`, `"lecun_normal"`, `"he_normal"`, or `(shape, seed) -> Tensor`.
          seed: makes the initial weights reproducible; `None` draws a fresh one.
          dtype: the variables' dtype.
          compute_dtype: the dtype of the matrix multiplies (e.g. `tf.bfloat16` for mixed
            precision); `None` = `dtype`. Variables stay in `dtype` and are cast once per call;
            outputs and logits come back in `dtype`.
          variational: the code layer is a Gaussian's mean (its activation must be linear),
            beside which `log_variance_kernel` and `log_variance_bias` give its log-variance
            from the same input (Mult-VAE, Liang et al. 2018: `encode_distribution`). `encode`
            and serving use the mean; the decoder (tied or not) decodes a code as always.
          name: the module's name.

        Raises:
          ValueError: bad `layer_sizes`, activation or initializer.
        """
        super().__init__(name=name)
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"`input_norm` is {input_norm!r}; expected one of {', '.join(INPUT_NORMS)}.")
        self.input_norm = input_norm
        self.layer_sizes = check_layer_sizes(layer_sizes)
        num_layers = len(self.layer_sizes) - 1
        self._configure(num_layers, activation, output_activation, tied, seed, dtype, compute_dtype)
        shapes = [(self.layer_sizes[i], self.layer_sizes[i + 1]) for i in range(num_layers)]
        self._create_variables(shapes, self.layer_sizes, "layer", kernel_initializer, dtype)
        self.variational = bool(variational)
        self.log_variance_kernel = self.log_variance_bias = None
        if self.variational:
            if self.activation_names[-1] != "linear":
                raise ValueError(
                    f"A variational model's code layer is a mean: its activation must be 'linear', "
                    f"got {self.activation_names[-1]!r}."
                )
            last = num_layers - 1
            init = initializers.get(kernel_initializer, "linear")
            value = init(shapes[-1], tf.constant([self.seed, 2 * num_layers + 1], tf.int32))
            with self.name_scope:
                self.log_variance_kernel = tf.Variable(
                    tf.cast(value, dtype), name=f"encoder/layer_{last}/log_variance_kernel"
                )
                self.log_variance_bias = tf.Variable(
                    tf.zeros([self.layer_sizes[-1]], dtype), name=f"encoder/layer_{last}/log_variance_bias"
                )

    def _prepared(self, x, normalized: bool) -> tf.Tensor:
        if self.input_norm == "none" or normalized:
            return x
        return tf.math.l2_normalize(x, axis=1, epsilon=_EPSILON)

    def normalize_sparse(self, x: tf.SparseTensor) -> tf.SparseTensor:
        """`x` with each row divided by its L2 norm where `input_norm="l2"` (else `x`)."""
        if self.input_norm == "none":
            return x
        rows = row_ids(x, "The sparse input")
        squares = sum_by_row(tf.square(x.values)[:, None], rows, x.dense_shape[0])[:, 0]
        scale = tf.math.rsqrt(tf.maximum(squares, _EPSILON))
        return tf.SparseTensor(x.indices, x.values * tf.gather(scale, rows), x.dense_shape)

    def _encode(self, h, kernels, first: int = 0) -> tf.Tensor:
        """Encoder layers `first, first + 1, ...` on `h`; `kernels[i]` is layer i's (cast) kernel."""
        biases = self._cast(self.encoder_biases[first:])
        for kernel, bias, activation in zip(kernels[first:], biases, self._activations[first:]):
            h = activation(tf.matmul(h, kernel) + bias)
        return h

    def _decode_logits(self, h, kernels, stop: int = 0) -> tf.Tensor:
        """Decoder layers from the code down to layer `stop`: the logits (`stop=0`), or with
        `stop=1` the activated reconstruction of encoder layer 0's output."""
        for i in reversed(range(stop, self.num_layers)):
            # The tie: for a tied layer the decoder uses the encoder's own kernel, transposed here.
            kernel = (
                kernels[i] if self.tied_layers[i] else tf.cast(self.decoder_kernels[i], self.compute_dtype)
            )
            h = tf.matmul(h, kernel, transpose_b=True) + tf.cast(self.decoder_biases[i], self.compute_dtype)
            if i > 0:
                h = self._activations[i - 1](h)
        return h

    def encode_distribution(
        self, x, normalized: bool = False, kernel_rows=None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """A variational model's `(mean, log_variance)` of the code, each `[batch_size,
        code_width]`, for inputs `[batch_size, layer_sizes[0]]` (`normalized`: as `encode`), or
        a `tf.SparseTensor` of them (`kernel_rows`: as `encode_sparse`; two layers at least, as
        the log-variance kernel of a one-layer model is catalog-wide)."""
        if not self.variational:
            raise ValueError("encode_distribution needs a variational model (variational=True).")
        kernels = self._cast(self.kernels)
        if isinstance(x, tf.SparseTensor):
            if self.num_layers < 2:
                raise ValueError("A one-layer variational model takes dense inputs (its log-variance "
                                 "kernel is as wide as the catalog).")
            h = self._encode(self._sparse_first_layer(x, kernel_rows, normalized), kernels[:-1], first=1)
        else:
            h = self._prepared(self._check_input(x, self.input_width, "The input"), normalized)
            h = self._encode(h, kernels[:-1])
        mean = tf.matmul(h, kernels[-1]) + tf.cast(self.encoder_biases[-1], self.compute_dtype)
        log_variance = tf.matmul(h, tf.cast(self.log_variance_kernel, self.compute_dtype)) + tf.cast(
            self.log_variance_bias, self.compute_dtype
        )
        return tf.cast(mean, self.dtype), tf.cast(log_variance, self.dtype)

    # Sparse inputs (ratings at catalog scale): the first kernel is read as rows, both ways.

    def _check_sparse(self, x, what: str) -> tf.SparseTensor:
        if not isinstance(x, tf.SparseTensor):
            raise TypeError(
                f"{what} must be a `tf.SparseTensor` `[batch_size, {self.input_width}]`, got {type(x)}."
            )
        shape = x.shape  # what is known statically of `dense_shape`
        if shape.rank not in (None, 2) or (shape.rank == 2 and shape[1] not in (None, self.input_width)):
            raise ValueError(
                f"{what} has dense shape {shape}, expected [batch_size, {self.input_width}] "
                f"(layer_sizes={list(self.layer_sizes)})."
            )
        return x

    def first_kernel_rows(self, columns, decoder: bool = False) -> tf.Tensor:
        """Rows `columns` of the first kernel (`decoder`: the one the decoder reads), cast: a
        gather, so its gradient is `tf.IndexedSlices` of those rows only. A tied model's
        training step reads them once for both directions (`kernel_rows=` below): one gather,
        and one sparse gradient row per rating instead of two."""
        kernel = self.decoder_kernels[0] if decoder and not self.tied_layers[0] else self.kernels[0]
        return tf.cast(lookup(kernel, columns), self.compute_dtype)

    def encode_sparse(self, x: tf.SparseTensor, kernel_rows=None, normalized: bool = False) -> tf.Tensor:
        """`encode(tf.sparse.to_dense(x))` for a `tf.SparseTensor` `[batch_size, layer_sizes[0]]`,
        without the dense input: layer 0 sums the kernel rows of each row's observed columns,
        weighted by the values (`row_ops.sum_by_row`), so its cost follows the
        number of entries, not the width. The other layers are dense. `x`'s entries must be in
        row-major order, a `tf.SparseTensor`'s canonical order (`tf.sparse.reorder`); `kernel_rows`:
        `first_kernel_rows(x.indices[:, 1])` if the caller has them; `normalized`: as `encode`.
        """
        h = self._sparse_first_layer(x, kernel_rows, normalized)
        return tf.cast(self._encode(h, [None] + self._cast(self.kernels[1:]), first=1), self.dtype)

    def _sparse_first_layer(self, x: tf.SparseTensor, kernel_rows, normalized: bool) -> tf.Tensor:
        """Encoder layer 0's output (compute dtype) for sparse `x`, as `encode_sparse` says."""
        x = self._check_sparse(x, "The sparse input")
        x = x if normalized else self.normalize_sparse(x)
        rows = self.first_kernel_rows(x.indices[:, 1]) if kernel_rows is None else kernel_rows
        weighted = rows * tf.cast(x.values, self.compute_dtype)[:, None]
        h = sum_by_row(weighted, row_ids(x, "The sparse input"), x.dense_shape[0])
        return self._activations[0](h + tf.cast(self.encoder_biases[0], self.compute_dtype))

    def reconstruct_sparse(self, x: tf.SparseTensor) -> tf.Tensor:
        """`decode(encode_sparse(x))`, `[batch_size, layer_sizes[0]]`, for serving (predictions
        over the whole catalog), from `last_layer_inputs`: recommending right after sparse
        training costs one product with the kernel, not a copy of it as well.
        """
        hidden, last = self.last_layer_inputs(x)
        logits = tf.matmul(hidden, last, transpose_b=True) + tf.cast(
            self.decoder_biases[0], self.compute_dtype
        )
        return self._output_activation(tf.cast(logits, self.dtype))

    def last_layer_inputs(self, x: tf.SparseTensor) -> tuple:
        """`(hidden, kernel)` for sparse rows `x`: the last decoder layer's input `[batch_size,
        layer_sizes[1]]` and its kernel `[layer_sizes[0], layer_sizes[1]]` (cast). The first
        kernel (and an untied layer 0's decoder kernel) is read once, whole and without a copy
        (`read_without_copy`), and both directions use that read.
        """
        x = self._check_sparse(x, "The sparse input")
        first = tf.cast(read_without_copy(self.kernels[0]), self.compute_dtype)
        codes = self.encode_sparse(x, tf.gather(first, x.indices[:, 1]))
        last = first if self.tied_layers[0] else read_without_copy(self.decoder_kernels[0])
        return self.decode_hidden(codes), tf.cast(last, self.compute_dtype)

    def decode_hidden(self, z) -> tf.Tensor:
        """The last decoder layer's input for codes `z` `[batch_size, code_width]`: the
        reconstruction of encoder layer 0's output, `[batch_size, layer_sizes[1]]`."""
        h = self._check_input(z, self.code_width, "The code")
        return self._decode_logits(h, [None] + self._cast(self.kernels[1:]), stop=1)

    def decode_at(self, z, at: tf.SparseTensor, kernel_rows=None) -> tf.Tensor:
        """The reconstructions of codes `z` `[batch_size, code_width]` at the entries of `at`
        only: `[nnz]`, entry k being `decode(z)[at.indices[k, 0], at.indices[k, 1]]` (`at`'s
        values are not read). The last layer multiplies the reconstruction of layer 0's output
        by the (tied) kernel rows of `at`'s columns alone (`kernel_rows`, if given:
        `first_kernel_rows(at.indices[:, 1], decoder=True)`).
        """
        at = self._check_sparse(at, "The sparse positions")
        hidden = self.decode_hidden(z)
        rows, columns = row_ids(at, "The sparse positions"), at.indices[:, 1]
        if kernel_rows is None:
            kernel_rows = self.first_kernel_rows(columns, decoder=True)
        logits = row_dots(gather_rows(hidden, rows), kernel_rows)
        logits += tf.cast(lookup(self.decoder_biases[0], columns), self.compute_dtype)
        return self._output_activation(tf.cast(logits, self.dtype))

    def architecture(self) -> dict:
        """The constructor's arguments as plain values (for exports)."""
        return {
            "kind": "dense",
            "layer_sizes": list(self.layer_sizes),
            "activation": list(self.activation_names),
            "output_activation": self.output_activation_name,
            "tied": list(self.tied_layers),
            **({"input_norm": self.input_norm} if self.input_norm != "none" else {}),
            **({"variational": True} if self.variational else {}),
        }


def untie(model: TiedAutoencoder, layers: Optional[Sequence[int]] = None) -> TiedAutoencoder:
    """An untied copy of `model` whose decoder kernels start as its (transposed) encoder kernels.

    The classic fine-tuning step of Hinton & Salakhutdinov (2006): after (pre)training tied, let
    encoder and decoder train independently. The copy computes exactly the same function.

    Args:
      model: a (partially) tied model.
      layers: the layers to untie (default: all); the others stay as they are in `model`.
    """
    layers = range(model.num_layers) if layers is None else layers
    tied = [t and i not in set(layers) for i, t in enumerate(model.tied_layers)]
    copy = TiedAutoencoder(
        model.layer_sizes,
        activation=list(model._activations),
        output_activation=model._output_activation,
        tied=tied,
        seed=model.seed,
        dtype=model.dtype,
        compute_dtype=model.compute_dtype,
        input_norm=model.input_norm,
        variational=model.variational,
    )
    copy.activation_names, copy.output_activation_name = model.activation_names, model.output_activation_name
    for group in ("kernels", "encoder_biases", "decoder_biases"):
        for target, source in zip(getattr(copy, group), getattr(model, group)):
            target.assign(source)
    if model.variational:
        copy.log_variance_kernel.assign(model.log_variance_kernel)
        copy.log_variance_bias.assign(model.log_variance_bias)
    for i, decoder_kernel in enumerate(copy.decoder_kernels):
        if decoder_kernel is not None:
            source = model.decoder_kernels[i] if model.decoder_kernels[i] is not None else model.kernels[i]
            decoder_kernel.assign(source)
    return copy
