"""The data a config names: the built-in `curves` images, MNIST / Fashion-MNIST, any `.npy`/`.npz`
matrix, ratings.

`load(config.data, seed)` returns a `Splits` of float32 NumPy matrices `[num_examples, width]`,
or for `ratings` (see `rawtf_ae.recommender.ratings`) a `RatingSplits` of sparse rows;
`rawtf_ae.data.pipelines` turns either into `tf.data` pipelines. Every reader checks what it
reads and raises `ValueError`/`FileNotFoundError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from rawtf_ae.data import array_files, pipelines
from rawtf_ae.recommender import implicit, ratings, ratings_file

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
    # The test files' examples, when the data has them besides a validation split carved from
    # the training files: untouched by training, for `--mode=eval --split=test`.
    test: Optional[np.ndarray] = None
    test_labels: Optional[np.ndarray] = None
    # What the trainer asks of every data kind (`ratings.RatingSplits` answers the same).
    vocabulary = None  # no ids to map

    @property
    def width(self) -> int:
        return int(self.train.shape[1])

    def evaluation_dataset(self, batch_size: int, sparse: bool = False) -> tf.data.Dataset:
        """The validation examples in batches, none dropped (`eval_dataset`); never `sparse`."""
        if sparse:
            raise ValueError("Sparse batches are for ratings data only.")
        return pipelines.eval_dataset(self.validation, batch_size)

    def describe(self, name: str) -> str:
        test = f" ({len(self.test)} test examples kept aside)" if self.test is not None else ""
        return (
            f"{name}, {len(self.train)} training and {len(self.validation)} validation examples of "
            f"width {self.width}{test}"
        )

    def examples(self, split: str, source: str = "the data") -> tuple:
        """`(examples, labels or None)` of `split`: "train", "validation" or "test"."""
        if split == "test" and self.test is None:
            raise ValueError(
                f"{source} has no test split: it needs test files (t10k-*, x_test) besides a "
                "validation split held out of the training files (data.num_validation > 0)."
            )
        if split not in ("train", "validation", "test"):
            raise ValueError(f"Unknown split {split!r}; expected train, validation or test.")
        return getattr(self, split), getattr(self, f"{split}_labels")

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


def _hold_out(x, labels, test, test_labels, data_config, source: str):
    """`(train, validation, test)` pairs of `(examples, labels)` from the files' examples.

    Test files present: the last `num_validation` training examples become the validation
    split (the 50,000 / 10,000 MNIST split of Vincent et al. 2010 and the DeepLearningTutorials)
    and the test files stay untouched; `num_validation=0` validates on the test files instead.
    Only one pool of examples: a seeded permutation splits it into train and validation.
    """
    count = data_config.num_validation
    if test is None:
        train_x, val_x, train_y, val_y = _split(x, labels, count, data_config.split_seed, source)
        return (train_x, train_y), (val_x, val_y), (None, None)
    if count == 0:
        return (x, labels), (test, test_labels), (None, None)
    if not 0 < count < len(x):
        raise ValueError(
            f"`data.num_validation` ({count}) must be between 1 and {len(x) - 1} to hold out the last "
            f"training examples of {source} for validation, or 0 to validate on its test examples."
        )
    pick = lambda a, part: None if a is None else a[part]
    head, tail = slice(0, len(x) - count), slice(len(x) - count, len(x))
    return (x[head], pick(labels, head)), (x[tail], pick(labels, tail)), (test, test_labels)


def _load_ratings(data_config) -> ratings.RatingSplits:
    if not data_config.path:
        raise ValueError("data.name='ratings' needs `data.path`: a user,item,rating[,timestamp] CSV.")
    def read(path):  # binarized where data.binarize says
        found = ratings_file.read_ratings(path, data_config.delimiter)
        return implicit.binarize(found, data_config.binarize_threshold) if data_config.binarize else found

    train = read(data_config.path)
    if data_config.ratings_split == "users":
        return implicit.user_split(
            train,
            validation_users=data_config.validation_users,
            test_users=data_config.test_users,
            min_interactions=data_config.min_interactions,
            evaluated_fraction=data_config.evaluated_fraction,
            seed=data_config.split_seed,
        )
    validation = None
    if data_config.validation_path:
        validation = read(data_config.validation_path)
    return ratings.build_splits(
        train,
        validation,
        by=data_config.ratings_by,
        unseen_ids=data_config.unseen_ids,
        validation_fraction=data_config.validation_fraction,
        split_seed=data_config.split_seed,
        split=data_config.ratings_split,
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
        (train_x, train_y), test = array_files.load_images(name, path)
        source = path or f"tf.keras.datasets.{name}"
        image_shape = tuple(int(d) for d in np.shape(train_x)[1:3])
        train_x = array_files.as_matrix(train_x, source, "the training images") / 255.0
        test_x, test_y = None, None
        if test is not None:
            test_x, test_y = array_files.as_matrix(test[0], source, "the test images") / 255.0, test[1]
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = _hold_out(
            train_x, train_y, test_x, test_y, data_config, source
        )
        splits = Splits(train_x, val_x, train_y, val_y, image_shape, test_x, test_y)
    elif name == "array":
        if not path:
            raise ValueError("data.name='array' needs `data.path`: a .npy or .npz file.")
        train_x, val_x, test_x = array_files.read_array(path)
        train_x = array_files.as_matrix(train_x, path, "the training array")
        if test_x is not None:
            test_x = array_files.as_matrix(test_x, path, "the test array")
        if val_x is None:
            (train_x, _), (val_x, _), (test_x, _) = _hold_out(train_x, None, test_x, None, data_config, path)
        else:
            val_x = array_files.as_matrix(val_x, path, "the validation array")
        side = int(round(np.sqrt(train_x.shape[1])))
        shape = (side, side) if side * side == train_x.shape[1] else None
        splits = Splits(train_x, val_x, image_shape=shape, test=test_x)
        source = path
    else:
        raise ValueError(f"Unknown `data.name` {name!r}; expected one of {', '.join(NAMES)}.")
    for split in ("validation", "test"):
        examples = getattr(splits, split)
        if examples is not None and examples.shape[1] != splits.width:
            raise ValueError(
                f"{source}: {split} examples have width {examples.shape[1]}, "
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
