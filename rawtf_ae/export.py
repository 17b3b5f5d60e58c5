"""Getting a trained model out: SavedModel with serving signatures, and `.npz` weights.

SavedModel signatures (batch size unknown, widths fixed), usable from TensorFlow Serving and
any language with a TensorFlow binding:
  encode:      inputs `[batch, layer_sizes[0]]`  -> {"codes": `[batch, layer_sizes[-1]]`}
  decode:      codes  `[batch, layer_sizes[-1]]` -> {"reconstructions": `[batch, layer_sizes[0]]`}
  reconstruct: inputs `[batch, layer_sizes[0]]`  -> {"reconstructions": `[batch, layer_sizes[0]]`}
and, for a ratings model exported with its vocabulary (rows per user), one user at a time:
  recommend:   item_ids `[n]` string, ratings `[n]` float32, k int32 scalar
               -> {"item_ids": `[<=k]` string, "scores": `[<=k]`, "unknown_items": int32}
               (the top-k items the user has not rated; ids unknown to the model are ignored
               and counted)
The tied kernels are saved once each: the decoder reads the same variables.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from rawtf_ae import checkpoints, files, item_index, recommend
from rawtf_ae.architectures import from_architecture
from rawtf_ae.model import TiedAutoencoder
from rawtf_ae.ratings import Vocabulary
from rawtf_ae.row_ops import read_without_copy

METADATA_FILE = os.path.join("assets.extra", "rawtf_ae.json")
VOCABULARY_FILE = os.path.join("assets.extra", "vocabulary.json")


def metadata(model) -> dict:
    """The architecture as plain values (what a reader needs to rebuild the model).

    `tied` is one flag per layer, as `model.architecture()` gives it (a partially tied model
    must not read as untied); `tied_layers` repeats it for readers of older exports.
    """
    return {
        **model.architecture(),
        "layer_sizes": list(model.layer_sizes),
        "activations": list(model.activation_names),
        "output_activation": model.output_activation_name,
        "tied_layers": list(model.tied_layers),
    }


class _Serving(tf.Module):
    def __init__(self, model: TiedAutoencoder, vocabulary: Vocabulary = None, first_pass="auto"):
        super().__init__(name="rawtf_ae_serving")
        self.model = model
        self.index = None
        inputs = tf.TensorSpec([None, model.input_width], tf.float32, name="inputs")
        codes = tf.TensorSpec([None, model.code_width], tf.float32, name="codes")
        self.encode = tf.function(lambda x: {"codes": model.encode(x)}, input_signature=[inputs])
        self.decode = tf.function(lambda z: {"reconstructions": model.decode(z)}, input_signature=[codes])
        self.reconstruct = tf.function(lambda x: {"reconstructions": model(x)}, input_signature=[inputs])
        if vocabulary is not None:
            self._add_recommend(vocabulary, first_pass)

    def _add_recommend(self, vocabulary: Vocabulary, first_pass: str) -> None:
        num_items = len(vocabulary.items)
        if num_items != self.model.input_width:
            raise ValueError(
                f"The vocabulary has {num_items} items but the model's input width is "
                f"{self.model.input_width}; only models with one row per user recommend."
            )
        if item_index.wanted(self.model, first_pass):
            self.index = item_index.ItemIndex(self.model)
        item_ids = tf.constant(vocabulary.items, tf.string)
        self.item_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(item_ids, tf.range(num_items, dtype=tf.int64)), -1
        )

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="item_ids"),
                tf.TensorSpec([None], tf.float32, name="ratings"),
                tf.TensorSpec([], tf.int32, name="k"),
            ]
        )
        def recommend_signature(ids, ratings, k):
            index = self.item_index.lookup(ids)
            known = index >= 0
            # The known items as a sparse row in column order (no [items] vector); an item
            # given twice counts once, with its last rating.
            columns, values = tf.boolean_mask(index, known), tf.boolean_mask(ratings, known)
            order = tf.argsort(columns, stable=True)
            columns, values = tf.gather(columns, order), tf.gather(values, order)
            last = tf.concat([tf.not_equal(columns[1:], columns[:-1]), tf.ones([1], tf.bool)], 0)
            columns = tf.boolean_mask(columns, last[: tf.size(columns)])
            values = tf.boolean_mask(values, last[: tf.size(values)])
            ratings = tf.SparseTensor(tf.stack([tf.zeros_like(columns), columns], 1), values, [1, num_items])
            if self.index is not None:  # the int8 first pass, then float32 for the few
                scores, items = self.index.top_k_unrated(ratings, tf.maximum(k, 0))
            else:
                predictions = recommend.predict_sparse(self.model, ratings)
                scores, items = recommend.top_k_unrated(predictions, ratings, tf.maximum(k, 0))
            finite = tf.math.is_finite(scores[0])
            return {
                "item_ids": tf.gather(item_ids, tf.boolean_mask(items[0], finite)),
                "scores": tf.boolean_mask(scores[0], finite),
                "unknown_items": tf.reduce_sum(tf.cast(tf.logical_not(known), tf.int32)),
            }

        self.recommend = recommend_signature


def save(model: TiedAutoencoder, path: str, vocabulary: Vocabulary = None, first_pass="auto") -> str:
    """Exports `model` as a SavedModel at `path` with `encode`/`decode`/`reconstruct` signatures.

    With a ratings `vocabulary` (rows per user), also a `recommend` signature, and the
    vocabulary in `assets.extra/vocabulary.json`. `first_pass` as `recommend.Recommender`'s:
    for large catalogs the export holds an int8 copy of the last kernel (a quarter of its
    size more) and `recommend` ranks in two exact passes (`item_index`).

    Written to a temporary directory first, then renamed: an export already at `path` stays
    intact until the new one is complete.
    """
    item_index.check(first_pass)  # before anything is written
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    serving = _Serving(model, vocabulary, first_pass)
    signatures = {"encode": serving.encode, "decode": serving.decode, "reconstruct": serving.reconstruct}
    if vocabulary is not None:
        signatures["recommend"] = serving.recommend
    with files.atomic_path(path) as temporary:
        try:
            tf.saved_model.save(serving, temporary, signatures=signatures)
        except tf.errors.OpError as e:
            raise OSError(
                f"Could not write the export {path} ({checkpoints.write_error_cause(e)}); an earlier "
                "export there is intact."
            ) from None
        os.makedirs(os.path.join(temporary, "assets.extra"), exist_ok=True)
        files.write_json(os.path.join(temporary, METADATA_FILE), metadata(model), sort_keys=False)
        if vocabulary is not None:
            vocabulary.save(os.path.join(temporary, VOCABULARY_FILE))
    return path


class LoadedAutoencoder:
    """A SavedModel from `save`, with the model's `encode`/`decode`/`__call__` and architecture."""

    def __init__(self, path: str):
        if not tf.saved_model.contains_saved_model(path):
            raise FileNotFoundError(f"{path} holds no SavedModel (no saved_model.pb).")
        metadata_path = os.path.join(path, METADATA_FILE)
        try:
            with open(metadata_path) as f:
                self.metadata = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not a rawtf_ae export ({metadata_path}: {e}).") from None
        self._loaded = tf.saved_model.load(path)
        self.layer_sizes = tuple(self.metadata["layer_sizes"])
        vocabulary_path = os.path.join(path, VOCABULARY_FILE)
        self.vocabulary = Vocabulary.load(vocabulary_path) if os.path.exists(vocabulary_path) else None

    def recommend(self, user_ratings: dict, k: int = 10) -> list[tuple[str, float]]:
        """One user's `{item_id: rating}` -> top-`k` `(item_id, score)` through the `recommend` signature.

        Items the model does not know are ignored (the signature counts them).
        """
        if self.vocabulary is None:
            raise ValueError(
                "This export has no `recommend` signature (not a ratings model with rows per user)."
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be a positive number of items, got {k!r}.")
        result = self._loaded.signatures["recommend"](
            item_ids=tf.constant([str(i) for i in user_ratings], tf.string),
            ratings=tf.constant(list(user_ratings.values()), tf.float32),
            k=tf.constant(k, tf.int32),
        )
        ids = [i.decode() for i in result["item_ids"].numpy()]
        return list(zip(ids, result["scores"].numpy().tolist()))

    def encode(self, x) -> tf.Tensor:
        """`[batch, layer_sizes[0]]` -> `[batch, layer_sizes[-1]]` codes."""
        return self._loaded.encode(tf.convert_to_tensor(x, tf.float32))["codes"]

    def decode(self, z) -> tf.Tensor:
        """`[batch, layer_sizes[-1]]` codes -> `[batch, layer_sizes[0]]` reconstructions."""
        return self._loaded.decode(tf.convert_to_tensor(z, tf.float32))["reconstructions"]

    def __call__(self, x) -> tf.Tensor:
        """`[batch, layer_sizes[0]]` -> `[batch, layer_sizes[0]]` reconstructions."""
        return self._loaded.reconstruct(tf.convert_to_tensor(x, tf.float32))["reconstructions"]


def load(path: str) -> LoadedAutoencoder:
    """Loads an export written by `save` (plain `tf.saved_model.load(path)` works as well)."""
    return LoadedAutoencoder(path)


# ---------------------------------------------------------------------------------------------
# .npz weights, for other frameworks.


def save_weights(model: TiedAutoencoder, path: str) -> str:
    """Writes the weights and architecture to an `.npz` (no pickled objects), atomically.

    Keys: `kernel_{i}` `[layer_sizes[i], layer_sizes[i+1]]`, `encoder_bias_{i}`,
    `decoder_bias_{i}` `[layer_sizes[i]]`, `decoder_kernel_{i}` (untied only, same shape as
    `kernel_{i}`, used transposed), plus `layer_sizes`, `activations`, `output_activation`, `tied`.
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
            f"Weights file {path} lacks {missing}; was it written by rawtf_ae.export.save_weights?"
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
