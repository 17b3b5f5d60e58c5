"""A model's weights as an `.npz` of plain arrays (no pickled objects), for other frameworks.

`save_weights(model, path)` writes the kernels, biases and the architecture atomically;
`load_weights(path)` builds the model again (or fills a given one, after checking every shape).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib

import numpy as np

from rawtf_ae import files
from rawtf_ae.models.architectures import from_architecture
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.models.row_ops import read_without_copy

# ---------------------------------------------------------------------------------------------
# .npz weights, for other frameworks.


def save_weights(model: TiedAutoencoder, path: str) -> str:
    """Writes the weights and architecture to an `.npz` (no pickled objects), atomically.

    Keys: `kernel_{i}` `[layer_sizes[i], layer_sizes[i+1]]`, `encoder_bias_{i}`,
    `decoder_bias_{i}` `[layer_sizes[i]]`, `decoder_kernel_{i}` (untied only, same shape as
    `kernel_{i}`, used transposed), `log_variance_kernel`/`log_variance_bias` (variational
    only), plus `layer_sizes`, `activations`, `output_activation`, `tied`.
    """
    arrays = {
        "layer_sizes": np.array(model.layer_sizes, np.int64),
        "activations": np.array(model.activation_names, dtype=str),
        "output_activation": np.array(model.output_activation_name, dtype=str),
        "tied": np.array(model.tied_layers),
        "architecture": np.array(json.dumps(model.architecture())),
    }
    for i in range(model.num_layers):  # without a copy of a kernel the sparse path read by rows
        arrays[f"kernel_{i}"] = np.asarray(read_without_copy(model.kernels[i]))
        arrays[f"encoder_bias_{i}"] = model.encoder_biases[i].numpy()
        arrays[f"decoder_bias_{i}"] = model.decoder_biases[i].numpy()
        if model.decoder_kernels[i] is not None:
            arrays[f"decoder_kernel_{i}"] = np.asarray(read_without_copy(model.decoder_kernels[i]))
    if model.variational:
        arrays["log_variance_kernel"] = model.log_variance_kernel.numpy()
        arrays["log_variance_bias"] = model.log_variance_bias.numpy()
    path = os.path.abspath(path)
    with files.atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, **arrays)
    return path


def load_weights(path: str, model: TiedAutoencoder = None) -> TiedAutoencoder:
    """Reads an `.npz` from `save_weights` into `model`, or into a new model built from it.

    Raises:
      FileNotFoundError, ValueError: a missing or corrupt file, missing keys, or layer sizes and
        shapes that disagree with `model` (named in the message); `model` is left unchanged.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"Weights file {path} does not exist.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"Weights file {path} is corrupt or not an .npz: {e}") from None
    missing = [k for k in ("layer_sizes", "activations", "output_activation", "tied") if k not in arrays]
    if missing:
        raise ValueError(
            f"Weights file {path} lacks {missing}; was it written by rawtf_ae.models.weights_file.save_weights?"
        )
    layer_sizes = [int(s) for s in arrays["layer_sizes"]]
    # One flag per layer (a single flag in files of fully tied or untied models).
    tied_flags = np.atleast_1d(arrays["tied"]).astype(bool)
    if tied_flags.size == 1:
        tied_flags = np.repeat(tied_flags, len(layer_sizes) - 1)
    tied = [bool(t) for t in tied_flags]
    if len(tied) != len(layer_sizes) - 1:
        raise ValueError(
            f"Weights file {path}: `tied` has {len(tied)} flags for {len(layer_sizes) - 1} layers."
        )

    def describe(flags, sizes):
        kind = "tied" if all(flags) else "untied" if not any(flags) else f"partially tied {flags}"
        return f"a {kind} model with layer_sizes {sizes}"

    if model is None and "architecture" in arrays:
        try:
            model = from_architecture(json.loads(str(arrays["architecture"])))
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"Weights file {path}: unusable `architecture` ({e}).") from None
    elif model is None:
        model = TiedAutoencoder(
            layer_sizes,
            activation=[str(a) for a in arrays["activations"]],
            output_activation=str(arrays["output_activation"]),
            tied=tied,
            seed=0,
        )
    elif list(model.layer_sizes) != layer_sizes or list(model.tied_layers) != tied:
        raise ValueError(
            f"Weights file {path} holds {describe(tied, layer_sizes)}; the model is "
            f"{describe(list(model.tied_layers), list(model.layer_sizes))}."
        )
    targets = {}
    for i in range(model.num_layers):
        targets[f"kernel_{i}"] = model.kernels[i]
        targets[f"encoder_bias_{i}"] = model.encoder_biases[i]
        targets[f"decoder_bias_{i}"] = model.decoder_biases[i]
        if model.decoder_kernels[i] is not None:
            targets[f"decoder_kernel_{i}"] = model.decoder_kernels[i]
    if model.variational:  # a variational model's log-variance layer
        targets["log_variance_kernel"] = model.log_variance_kernel
        targets["log_variance_bias"] = model.log_variance_bias
    for key, variable in targets.items():  # check everything before assigning anything
        if key not in arrays:
            raise ValueError(f"Weights file {path} lacks `{key}`.")
        if tuple(arrays[key].shape) != tuple(variable.shape):
            raise ValueError(
                f"Weights file {path}: `{key}` has shape {tuple(arrays[key].shape)}, the model's "
                f"variable has {tuple(variable.shape)}."
            )
        if not np.all(np.isfinite(arrays[key])):
            raise ValueError(f"Weights file {path}: `{key}` has non-finite values.")
    for key, variable in targets.items():
        variable.assign(arrays[key].astype(variable.dtype.as_numpy_dtype))
    return model
