"""Data: the built-in `curves` images, MNIST / Fashion-MNIST, any `.npy`/`.npz` matrix, ratings.

`load(config.data, seed)` returns a `Splits` of float32 NumPy matrices `[num_examples, width]`,
or for `ratings` (see `rawtf_ae.ratings`) a `RatingSplits` of sparse rows; `train_dataset` and
`eval_dataset` turn either into `tf.data` pipelines. Every reader checks what it reads and
raises `ValueError`/`FileNotFoundError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from typing import Optional

import numpy as np
import tensorflow as tf

from rawtf_ae import ratings
from rawtf_ae.idx import read_idx, read_idx_pair  # noqa: F401 (read_idx: public here too)

NAMES = ("curves", "mnist", "fashion_mnist", "array", "ratings")


@dataclasses.dataclass
class Splits:
    """Training and validation examples, `[num_examples, width]` float32, plus optional labels.

    `image_shape` is `(height, width)` when examples are flattened images (for pictures).
    """

    train: np.ndarray
    validation: np.ndarray
    train_labels: Optional[np.ndarray] = None
    validation_labels: Optional[np.ndarray] = None
    image_shape: Optional[tuple[int, int]] = None
    # What the trainer asks of every data kind (`ratings.RatingSplits` answers the same).
    vocabulary = None  # no ids to map

    @property
    def width(self) -> int:
        return int(self.train.shape[1])

    def evaluation_dataset(self, batch_size: int) -> tf.data.Dataset:
        """The validation examples in batches, none dropped (`eval_dataset`)."""
        return eval_dataset(self.validation, batch_size)

    def describe(self, name: str) -> str:
        return (
            f"{name}, {len(self.train)} training and {len(self.validation)} validation examples of "
            f"width {self.width}"
        )

    def picture_examples(self, count: int):
        """The first `count` validation images for the reconstruction picture (None: no images)."""
        return self.validation[:count] if self.image_shape and count else None


# ---------------------------------------------------------------------------------------------
# curves: Hinton & Salakhutdinov (2006)'s CURVES idea, generated on the fly.


def curves(num_examples: int, seed: int, image_size: int = 28) -> np.ndarray:
    """Images of random smooth curves drawn with a soft pen, `[num_examples, image_size**2]`.

    Each curve is the quadratic through three random points (a smooth curve through a few
    random points, the idea of the CURVES set of Hinton & Salakhutdinov 2006); a pixel's
    intensity is `exp(-d^2 / (2 w^2))` for its distance `d` to the curve and a random pen width
    `w`, so values lie in `[0, 1]`. Deterministic given `seed`.
    """
    if num_examples < 1:
        raise ValueError(f"`num_examples` for curves must be positive, got {num_examples}.")
    rng = np.random.default_rng(seed)
    num_samples = 48  # points along the curve; spaced under a pixel at these sizes
    t = np.linspace(0.0, 1.0, num_samples, dtype=np.float32)
    # Lagrange basis through t = 0, 1/2, 1: the curve passes through all three points.
    basis = np.stack([2 * (t - 0.5) * (t - 1), -4 * t * (t - 1), 2 * t * (t - 0.5)])
    centres = np.arange(image_size, dtype=np.float32) + 0.5
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    pixels = np.stack([cols.ravel(), rows.ravel()], axis=-1)  # [P, 2]
    pixel_norms = (pixels**2).sum(-1)
    out = np.empty((num_examples, image_size * image_size), np.float32)
    chunk = 500
    for start in range(0, num_examples, chunk):
        n = min(chunk, num_examples - start)
        points = rng.uniform(0.1, 0.9, size=(n, 3, 2)).astype(np.float32) * image_size
        pen_width = rng.uniform(0.7, 1.3, size=(n, 1)).astype(np.float32)
        curve = np.einsum("ks,nkd->nsd", basis, points)  # [n, S, 2]
        # |p - c|^2 = |p|^2 - 2 p.c + |c|^2, minimised over the curve's points c.
        cross = np.matmul(pixels[None], curve.transpose(0, 2, 1))  # [n, P, S]
        squared = (((curve**2).sum(-1))[:, None, :] - 2 * cross).min(-1) + pixel_norms
        out[start : start + n] = np.exp(-np.maximum(squared, 0) / (2 * pen_width**2))
    return out


def _read_keras_npz(path: str):
    arrays = _read_npz(path)
    if "x_train" not in arrays:
        raise ValueError(
            f"{path} has no `x_train` array (Keras's mnist.npz layout); it has {sorted(arrays)}."
        )
    train = (arrays["x_train"], arrays.get("y_train"))
    test = (arrays["x_test"], arrays.get("y_test")) if "x_test" in arrays else None
    return train, test


def _load_images(name: str, path: str):
    """Returns `((train_images, train_labels), test_pair or None)` as uint8 `[n, rows, cols]`."""
    if not path:
        loader = getattr(tf.keras.datasets, name)
        try:
            return loader.load_data()
        except Exception as e:  # no internet, a proxy page, a broken cache ...
            raise ValueError(
                f"Could not download {name} through tf.keras.datasets ({e}); set `data.path` to a "
                "Keras-format .npz or a folder holding the IDX .gz files."
            ) from None
    if os.path.isdir(path):
        train = read_idx_pair(path, "train")
        test = read_idx_pair(path, "t10k")
        if train is None and test is None:
            raise FileNotFoundError(
                f"Folder {path} (data.path) holds neither train-images-idx3-ubyte(.gz) nor "
                "t10k-images-idx3-ubyte(.gz)."
            )
        # A folder with only the t10k pair: those examples are all there is to split.
        return (train, test) if train is not None else (test, None)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} file {path} (data.path) does not exist.")
    return _read_keras_npz(path)


# Arrays larger than this (uncompressed) are refused before loading: a corrupt or hostile
# .npz could otherwise exhaust memory while decompressing.
MAX_ARRAY_BYTES = 8 * 2**30


def _read_npz(path: str) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(member.file_size for member in archive.infolist())
        if total > MAX_ARRAY_BYTES:
            raise ValueError(
                f"Data file {path} decompresses to {total} bytes, over the {MAX_ARRAY_BYTES}-byte limit."
            )
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"Data file {path} does not exist.") from None
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        KeyError,
        NotImplementedError,
    ) as e:
        if str(e).startswith(f"Data file {path}"):
            raise
        raise ValueError(f"Data file {path} is corrupt or not a NumPy .npz: {e}") from None


def _read_array(path: str):
    """`.npy` -> one matrix; `.npz` -> `x_train` (+ `x_validation`/`x_test`) or its only array."""
    if path.endswith(".npz"):
        arrays = _read_npz(path)
        if "x_train" in arrays:
            validation = arrays.get("x_validation", arrays.get("x_test"))
            return arrays["x_train"], validation
        if len(arrays) != 1:
            raise ValueError(
                f"{path} holds arrays {sorted(arrays)}; expected `x_train` (and optionally "
                "`x_validation`) or exactly one array."
            )
        return next(iter(arrays.values())), None
    try:
        return np.load(path, allow_pickle=False), None
    except FileNotFoundError:
        raise FileNotFoundError(f"Data file {path} (data.path) does not exist.") from None
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"Data file {path} is corrupt or not a NumPy .npy: {e}") from None


def _as_matrix(array, path: str, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} in {path} has dtype {array.dtype}; expected numbers.")
    if array.ndim < 2:
        raise ValueError(f"{what} in {path} has shape {array.shape}; expected [num_examples, width].")
    if array.shape[0] == 0 or array[0].size == 0:
        raise ValueError(f"{what} in {path} is empty (shape {array.shape}).")
    matrix = array.reshape(array.shape[0], -1).astype(np.float32)
    if not np.all(np.isfinite(matrix)):
        bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        bad = int(np.count_nonzero(~np.isfinite(matrix)))
        raise ValueError(
            f"{what} in {path} has {bad} non-finite values (NaN or inf), first in example {bad_rows[0]}."
        )
    return matrix


def _split(x, labels, num_validation: int, split_seed: int, source: str):
    """Splits one pool of examples into train/validation by a fixed, seeded permutation."""
    if not 0 < num_validation < len(x):
        raise ValueError(
            f"`data.num_validation` ({num_validation}) must be between 1 and {len(x) - 1} to split "
            f"the {len(x)} examples of {source} into train and validation."
        )
    order = np.random.default_rng(split_seed).permutation(len(x))
    train, validation = order[:-num_validation], order[-num_validation:]
    pick = lambda a, idx: None if a is None else a[idx]
    return x[train], x[validation], pick(labels, train), pick(labels, validation)


def _load_ratings(data_config) -> ratings.RatingSplits:
    if not data_config.path:
        raise ValueError("data.name='ratings' needs `data.path`: a user,item,rating[,timestamp] CSV.")
    train = ratings.read_ratings(data_config.path, data_config.delimiter)
    validation = None
    if data_config.validation_path:
        validation = ratings.read_ratings(data_config.validation_path, data_config.delimiter)
    return ratings.build_splits(
        train,
        validation,
        by=data_config.ratings_by,
        unseen_ids=data_config.unseen_ids,
        validation_fraction=data_config.validation_fraction,
        split_seed=data_config.split_seed,
    )


def load(data_config, seed: int):
    """Loads the data a config names (`data.name`, `data.path`, sizes) as `Splits`.

    For `data.name="ratings"`: a `ratings.RatingSplits` (sparse rows and their vocabulary).

    Args:
      data_config: the config's `data` section (see `rawtf_ae.config`).
      seed: the run's seed; `curves` uses it (offset for the validation set).

    Raises:
      ValueError, FileNotFoundError: bad name, missing/corrupt file, wrong or empty data.
    """
    name, path = data_config.name, data_config.path
    if name == "ratings":
        return _load_ratings(data_config)
    if name == "curves":
        if path:
            raise ValueError("`data.path` must be empty for data.name='curves' (it is generated).")
        return Splits(
            train=curves(data_config.num_train, seed),
            validation=curves(data_config.num_validation, seed + 1_000_003),
            image_shape=(28, 28),
        )
    if name in ("mnist", "fashion_mnist"):
        (train_x, train_y), test = _load_images(name, path)
        source = path or f"tf.keras.datasets.{name}"
        image_shape = tuple(int(d) for d in np.shape(train_x)[1:3])
        train_x = _as_matrix(train_x, source, "the training images") / 255.0
        if test is None:
            train_x, val_x, train_y, val_y = _split(
                train_x, train_y, data_config.num_validation, data_config.split_seed, source
            )
        else:
            val_x, val_y = _as_matrix(test[0], source, "the test images") / 255.0, test[1]
        splits = Splits(train_x, val_x, train_y, val_y, image_shape=image_shape)
    elif name == "array":
        if not path:
            raise ValueError("data.name='array' needs `data.path`: a .npy or .npz file.")
        train_x, val_x = _read_array(path)
        train_x = _as_matrix(train_x, path, "the training array")
        if val_x is None:
            train_x, val_x, _, _ = _split(
                train_x, None, data_config.num_validation, data_config.split_seed, path
            )
        else:
            val_x = _as_matrix(val_x, path, "the validation array")
        side = int(round(np.sqrt(train_x.shape[1])))
        splits = Splits(train_x, val_x, image_shape=(side, side) if side * side == train_x.shape[1] else None)
        source = path
    else:
        raise ValueError(f"Unknown `data.name` {name!r}; expected one of {', '.join(NAMES)}.")
    if splits.validation.shape[1] != splits.width:
        raise ValueError(
            f"{source}: validation examples have width {splits.validation.shape[1]}, "
            f"training examples {splits.width}."
        )
    if data_config.num_train:
        if data_config.num_train > len(splits.train):
            raise ValueError(
                f"`data.num_train` ({data_config.num_train}) exceeds the {len(splits.train)} "
                f"training examples of {source}."
            )
        splits.train = splits.train[: data_config.num_train]
        if splits.train_labels is not None:
            splits.train_labels = splits.train_labels[: data_config.num_train]
    return splits


# ---------------------------------------------------------------------------------------------
# tf.data pipelines.


def train_dataset(
    examples,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    input_context: Optional[tf.distribute.InputContext] = None,
) -> tf.data.Dataset:
    """An endless dataset of shuffled batches, resumable at any step and shardable by replica.

    Epoch `e` visits the examples in the order `stateless_shuffle(range(n), seed=[seed, e])`,
    and global batch `s` holds positions `[s * batch_size, (s + 1) * batch_size)` of the
    concatenated epochs. Starting at `start_step` therefore yields exactly the batches an
    uninterrupted run would see from that step on, mid-epoch included, without replaying the
    earlier ones.

    Args:
      examples: `[n, width]`, or a `ratings.RatingMatrix` of `n` sparse rows (then batches are
        dicts `{"inputs": ratings, "mask": observed}`, both `[batch, width]`, made dense per batch).
      batch_size: the global batch size.
      seed: orders the epochs.
      start_step: the first global step to produce.
      input_context: from `strategy.distribute_datasets_from_function`. Then this input
        pipeline yields, for each global batch, the `[batch_size / num_replicas, width]` slices
        of its own replicas, one after the other (replica `r` of all gets slice `r`): every
        worker builds the same global batches, and together the replicas see exactly one.

    Returns:
      A dataset of `[batch_size, width]` batches (or per-replica slices), static shapes.
    """
    n = len(examples)
    if n == 0:
        raise ValueError("The training set is empty.")
    first_epoch, offset = divmod(start_step * batch_size, n)
    if isinstance(examples, ratings.RatingMatrix):

        def gather(idx):
            inputs, mask = examples.dense_batch(idx)
            return {"inputs": inputs, "mask": mask}

    else:
        table = tf.constant(examples)
        gather = lambda idx: tf.gather(table, idx)  # noqa: E731

    def epoch_order(epoch):
        return tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )

    indices = (
        tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
        .map(epoch_order)
        .unbatch()
        .skip(offset)
        .batch(batch_size, drop_remainder=True)
    )
    if input_context is not None and input_context.num_replicas_in_sync > 1:
        replicas = input_context.num_replicas_in_sync
        per_replica = input_context.get_per_replica_batch_size(batch_size)
        local = replicas // input_context.num_input_pipelines
        first = input_context.input_pipeline_id * local
        indices = indices.map(
            lambda idx: tf.reshape(idx, [replicas, per_replica])[first : first + local]
        ).unbatch()
    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_dataset(examples, batch_size: int) -> tf.data.Dataset:
    """One pass over `examples` in order, in batches of up to `batch_size` (none dropped).

    `examples`: `[n, width]`, or a `ratings.RatingSplits`, whose evaluated users come in
    batches `{"inputs": training ratings, "targets": held-out ratings, "mask": held out}`.
    """
    if isinstance(examples, ratings.RatingSplits):
        return examples.evaluation_dataset(batch_size)
    return tf.data.Dataset.from_tensor_slices(examples).batch(batch_size).prefetch(tf.data.AUTOTUNE)
