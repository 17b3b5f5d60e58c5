"""Getting a trained model out: a SavedModel with serving signatures (`save`, `load`).

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
  recommend_items: item_ids `[n]` string, k int32 scalar -> the same: implicit feedback, a new
               user's items alone (each an interaction of value 1), folded in without retraining
The tied kernels are saved once each: the decoder reads the same variables.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from rawtf_ae import files
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.recommender import recommend, top_k
from rawtf_ae.recommender.ratings import Vocabulary

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
        if top_k.wanted(self.model, first_pass):
            self.index = top_k.ItemIndex(self.model)
        item_ids = tf.constant(vocabulary.items, tf.string)
        self.item_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(item_ids, tf.range(num_items, dtype=tf.int64)), -1
        )

        def top_unrated(ids, ratings, k):
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

        ids_spec, k_spec = (
            tf.TensorSpec([None], tf.string, name="item_ids"),
            tf.TensorSpec([], tf.int32, name="k"),
        )
        self.recommend = tf.function(
            top_unrated, input_signature=[ids_spec, tf.TensorSpec([None], tf.float32, name="ratings"), k_spec]
        )
        # Implicit feedback: a user's item ids alone, each an interaction of value 1.
        self.recommend_items = tf.function(
            lambda ids, k: top_unrated(ids, tf.ones(tf.shape(ids), tf.float32), k),
            input_signature=[ids_spec, k_spec],
        )


def save(model: TiedAutoencoder, path: str, vocabulary: Vocabulary = None, first_pass="auto") -> str:
    """Exports `model` as a SavedModel at `path` with `encode`/`decode`/`reconstruct` signatures.

    With a ratings `vocabulary` (rows per user), also a `recommend` signature, and the
    vocabulary in `assets.extra/vocabulary.json`. `first_pass` as `recommend.Recommender`'s:
    for large catalogs the export holds an int8 copy of the last kernel (a quarter of its
    size more) and `recommend` ranks in two exact passes (`item_index`).

    Written to a temporary directory first, then renamed: an export already at `path` stays
    intact until the new one is complete.
    """
    top_k.check(first_pass)  # before anything is written
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    serving = _Serving(model, vocabulary, first_pass)
    signatures = {"encode": serving.encode, "decode": serving.decode, "reconstruct": serving.reconstruct}
    if vocabulary is not None:
        signatures["recommend"] = serving.recommend
        signatures["recommend_items"] = serving.recommend_items
    with files.atomic_path(path) as temporary:
        try:
            tf.saved_model.save(serving, temporary, signatures=signatures)
        except tf.errors.OpError as e:
            raise OSError(
                f"Could not write the export {path} ({files.write_error_cause(e)}); an earlier "
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

    def recommend(self, user_ratings, k: int = 10) -> list[tuple[str, float]]:
        """One user's `{item_id: rating}` -> top-`k` `(item_id, score)` through the `recommend`
        signature; a list of item ids (implicit feedback) through `recommend_items`.

        Items the model does not know are ignored (the signature counts them).
        """
        if self.vocabulary is None:
            raise ValueError(
                "This export has no `recommend` signature (not a ratings model with rows per user)."
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be a positive number of items, got {k!r}.")
        ids = tf.constant([str(i) for i in user_ratings], tf.string)
        if isinstance(user_ratings, dict):
            values = tf.constant(list(user_ratings.values()), tf.float32)
            result = self._loaded.signatures["recommend"](item_ids=ids, ratings=values, k=tf.constant(k))
        else:
            result = self._loaded.signatures["recommend_items"](item_ids=ids, k=tf.constant(k))
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
