"""Ratings data for recommender autoencoders (Kuchaiev & Ginsburg 2017; Sedhain et al. 2015).

A ratings file is a CSV of `user,item,rating[,timestamp]` lines (MovieLens-style), with or
without a header line; the fields are not quoted and the delimiter is configurable (`,`, `\\t`,
or MovieLens-1M's `::`). `read_ratings` parses it and names the line of every problem.

From a training file, `Vocabulary.build` makes the id vocabularies (users and items, in
numeric order when every id is an integer, else in string order); they are saved with the
checkpoints and the export, so that evaluation, recommending and resuming map ids the same way.
Each user (or item, with `by="item"`) becomes one sparse row over the items (users):
`RatingMatrix` holds the rows in CSR form and builds dense `[batch, width]` batches only when
a batch is drawn, so the whole matrix is never dense in memory.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from rawtf_ae import files
from rawtf_ae.recommender.ratings_file import Ratings

UNSEEN_POLICIES = ("skip", "error")
ORIENTATIONS = ("user", "item")
SPLITS = ("random", "temporal", "users")


def _id_order(ids) -> list[str]:
    unique = sorted(set(ids))
    try:
        return sorted(unique, key=int)
    except ValueError:
        return unique


@dataclasses.dataclass
class Vocabulary:
    """The user and item ids a model was trained on; position = row/column index."""

    users: list
    items: list

    def __post_init__(self):
        self.user_index = {user: i for i, user in enumerate(self.users)}
        self.item_index = {item: i for i, item in enumerate(self.items)}

    @classmethod
    def build(cls, ratings: Ratings) -> "Vocabulary":
        return cls(_id_order(ratings.user_ids), _id_order(ratings.item_ids))

    def to_json(self) -> dict:
        return {"users": list(self.users), "items": list(self.items)}

    def save(self, path: str) -> None:
        """Writes `{"users": [...], "items": [...]}` atomically."""
        files.write_json(path, self.to_json(), indent=None, sort_keys=False)

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        try:
            with open(path) as f:
                content = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"Vocabulary file {path} does not exist.") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"Vocabulary file {path} is corrupt: {e}") from None
        if (
            not isinstance(content, dict)
            or not all(isinstance(content.get(key), list) for key in ("users", "items"))
            or not all(isinstance(i, str) for key in ("users", "items") for i in content[key])
        ):
            raise ValueError(f"Vocabulary file {path} must hold {{'users': [str], 'items': [str]}}.")
        return cls(content["users"], content["items"])

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.users == other.users and self.items == other.items

    def difference(self, other: "Vocabulary") -> str:
        """One sentence on how `other` differs (for resume errors)."""
        for name in ("users", "items"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                extra = sorted(set(theirs) - set(mine))[:3]
                gone = sorted(set(mine) - set(theirs))[:3]
                return (
                    f"{len(mine)} vs {len(theirs)} {name}"
                    + (f"; new: {extra}" if extra else "")
                    + (f"; missing: {gone}" if gone else "")
                )
        return "identical"


@dataclasses.dataclass
class RatingMatrix:
    """Sparse rows in CSR form: row r's entries are `columns/values[indptr[r]:indptr[r+1]]`."""

    indptr: np.ndarray  # [num_rows + 1] int64
    columns: np.ndarray  # [nnz] int64
    values: np.ndarray  # [nnz] float32
    width: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def entry_rows(self) -> np.ndarray:
        """`[nnz]` int64: the row of each entry (COO row indices)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    @classmethod
    def from_triples(cls, rows, columns, values, num_rows: int, width: int) -> "RatingMatrix":
        order = np.lexsort((columns, rows))
        rows, columns, values = rows[order], columns[order], values[order]
        indptr = np.zeros(num_rows + 1, np.int64)
        np.add.at(indptr, rows + 1, 1)
        return cls(np.cumsum(indptr), columns.astype(np.int64), values.astype(np.float32), width)

    def rows(self, indices: Sequence[int]) -> "RatingMatrix":
        """The sub-matrix of the given rows, in that order."""
        indices = np.asarray(indices, np.int64)
        starts, ends = self.indptr[indices], self.indptr[indices + 1]
        lengths = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # Position k of the result is entry `starts[r] + (k - indptr[r])` of its row r.
        positions = np.arange(indptr[-1]) + np.repeat(starts - indptr[:-1], lengths)
        return RatingMatrix(indptr, self.columns[positions], self.values[positions], self.width)

    def to_dense(self) -> tuple[np.ndarray, np.ndarray]:
        """`(ratings, mask)`, both `[num_rows, width]` float32 (small matrices only)."""
        ratings = np.zeros((len(self), self.width), np.float32)
        mask = np.zeros_like(ratings)
        rows = self.entry_rows()
        ratings[rows, self.columns] = self.values
        mask[rows, self.columns] = 1.0
        return ratings, mask

    def _batch_entries(self, row_indices: tf.Tensor):
        """Rows `[b]` -> `(indices [nnz, 2], values [nnz], dense shape [2])` of the batch, in TF."""
        indptr = tf.constant(self.indptr)
        starts = tf.gather(indptr, row_indices)
        positions = tf.ragged.range(starts, tf.gather(indptr, row_indices + 1))
        columns = tf.gather(tf.constant(self.columns), positions.flat_values)
        values = tf.gather(tf.constant(self.values), positions.flat_values)
        size = tf.shape(row_indices, tf.int64)[0]
        indices = tf.stack([positions.value_rowids(), columns], axis=1)
        return indices, values, tf.stack([size, tf.constant(self.width, tf.int64)])

    def sparse_batch(self, row_indices: tf.Tensor) -> tf.SparseTensor:
        """Rows `[b]` -> a `tf.SparseTensor` `[b, width]` of their ratings (row-major order).

        Call it inside a `tf.data` map; nothing `[b, width]` is ever allocated.
        """
        return tf.SparseTensor(*self._batch_entries(row_indices))

    def dense_batch(self, row_indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Rows `[b]` -> `(ratings, mask)`, each `[b, width]` float32, built in TensorFlow.

        Call it inside a `tf.data` map: only the batch is ever dense.
        """
        indices, values, shape = self._batch_entries(row_indices)
        ratings = tf.scatter_nd(indices, values, shape)
        mask = tf.scatter_nd(indices, tf.ones_like(values), shape)
        if row_indices.shape[0] is not None:
            ratings.set_shape([row_indices.shape[0], self.width])
            mask.set_shape([row_indices.shape[0], self.width])
        return ratings, mask


@dataclasses.dataclass
class RatingSplits:
    """Training rows, and the held-out ratings to evaluate, ready for `tf.data`.

    `validation_inputs` row r is training row `evaluated_rows[r]` (what the model sees of the
    r-th evaluated user); `validation_targets` row r holds that user's held-out ratings (what
    it must predict).
    """

    train: RatingMatrix
    validation_inputs: RatingMatrix
    validation_targets: RatingMatrix
    evaluated_rows: Optional[np.ndarray]
    vocabulary: Vocabulary
    by: str
    skipped: int = 0  # held-out ratings dropped because training never saw their user or item
    test_inputs: Optional[RatingMatrix] = None
    test_targets: Optional[RatingMatrix] = None
    heldout_ids: Optional[dict] = None

    @property
    def width(self) -> int:
        return self.train.width

    def evaluated(self, split: str = "validation") -> tuple[RatingMatrix, RatingMatrix]:
        """`(inputs, targets)` of the evaluated rows of `split` ("validation" or "test")."""
        if split == "test":
            if self.test_inputs is None:
                raise ValueError(
                    "--split=test: these ratings have no test users (they are evaluated on their "
                    "held-out ratings only; test users come with data.ratings_split='users' and "
                    "data.test_users > 0)."
                )
            return self.test_inputs, self.test_targets
        if split != "validation":
            raise ValueError(f"--split={split}: ratings are evaluated on their held-out ratings only.")
        return self.validation_inputs, self.validation_targets

    def evaluation_dataset(
        self, batch_size: int, sparse: bool = False, split: str = "validation"
    ) -> tf.data.Dataset:
        """The evaluated users of `split` in batches, none dropped: `{"inputs", "targets",
        "mask"}`, each `[b, width]`, or with `sparse` `{"inputs", "targets"}`, each a
        `tf.SparseTensor`."""
        inputs, targets = self.evaluated(split)

        def gather(idx):
            if sparse:
                return {"inputs": inputs.sparse_batch(idx), "targets": targets.sparse_batch(idx)}
            held_out, mask = targets.dense_batch(idx)
            return {"inputs": inputs.dense_batch(idx)[0], "targets": held_out, "mask": mask}

        rows = tf.data.Dataset.range(len(targets)).batch(batch_size)
        return rows.map(gather).prefetch(tf.data.AUTOTUNE)

    def describe(self, name: str = "ratings") -> str:
        if self.heldout_ids is not None:  # held-out users (`implicit.user_split`)
            pairs = [("validation", self.validation_targets, self.validation_inputs)]
            pairs += [("test", self.test_targets, self.test_inputs)] * (self.test_targets is not None)
            held = "; ".join(f"{len(t)} {n} users ({i.nnz} fold-in, {t.nnz} evaluated)" for n, t, i in pairs)
            users, items = len(self.vocabulary.users), len(self.vocabulary.items)
            return f"{name}, {users} training users x {items} items, {self.train.nnz} training interactions; {held}"
        return (
            f"{name}, {len(self.vocabulary.users)} users x {len(self.vocabulary.items)} items; "
            f"{self.train.nnz} training ratings in {len(self.train)} rows (by {self.by}), "
            f"{self.validation_targets.nnz} validation ratings of {len(self.validation_targets)} rows"
            + (f"; skipped {self.skipped} of ids training never saw" if self.skipped else "")
        )

    def picture_examples(self, count: int):
        return None  # ratings rows are no images


def _indices(ratings: Ratings, vocabulary: Vocabulary, by: str, policy: str, what: str):
    """`(rows, columns, values, skipped)` of `ratings`; ratings of unseen ids as `policy` says."""
    # One lookup per distinct id, then a gather per rating.
    users = np.array([vocabulary.user_index.get(u, -1) for u in ratings.user_ids], np.int64)[
        ratings.user_codes
    ]
    items = np.array([vocabulary.item_index.get(i, -1) for i in ratings.item_ids], np.int64)[
        ratings.item_codes
    ]
    unseen = (users < 0) | (items < 0)
    if unseen.any():
        if policy == "error":
            first = int(np.flatnonzero(unseen)[0])
            which = "user" if users[first] < 0 else "item"
            codes, ids = (
                (ratings.user_codes, ratings.user_ids)
                if which == "user"
                else (ratings.item_codes, ratings.item_ids)
            )
            name = ids[codes[first]]
            raise ValueError(
                f"{ratings.path}, line {ratings.lines[first]}: {which} {name!r} of the {what} file never "
                f"appears in the training file ({int(unseen.sum())} such ratings); set "
                "`data.unseen_ids='skip'` to leave them out."
            )
    keep = ~unseen
    users, items, values = users[keep], items[keep], ratings.values[keep]
    rows, columns = (users, items) if by == "user" else (items, users)
    return rows, columns, values, int(unseen.sum())


def _latest_of_each_user(ratings: Ratings, users: np.ndarray, num_users: int, fraction: float) -> np.ndarray:
    """Marks each user's latest `round(n * fraction)` ratings (at most n - 1), `[n]` bool.

    Ties in time go by line: of two ratings with one timestamp, the later line is the later.
    """
    times = ratings.timestamps
    missing = np.flatnonzero(np.isnan(times)) if times is not None else np.array([0])
    if len(missing):
        raise ValueError(
            f"{ratings.path}, line {ratings.lines[missing[0]]}: `data.ratings_split='temporal'` needs a "
            "numeric timestamp as the 4th field of every rating."
        )
    order = np.lexsort((ratings.lines, times, users))  # by user, then time, then line
    counts = np.bincount(users, minlength=num_users)
    held = np.minimum(np.rint(counts * fraction).astype(np.int64), np.maximum(counts - 1, 0))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, counts)  # 0 = the user's earliest
    mask = np.zeros(len(order), bool)
    mask[order] = rank >= np.repeat(counts - held, counts)
    return mask


def build_splits(
    train_ratings: Ratings,
    validation_ratings: Optional[Ratings] = None,
    *,
    by: str = "user",
    unseen_ids: str = "skip",
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    split: str = "random",
) -> RatingSplits:
    """Vocabulary from `train_ratings`, rows per user (or item), and the evaluation rows.

    Args:
      train_ratings: the training file's ratings; they define the vocabularies.
      validation_ratings: held-out ratings to evaluate on; None: hold out `validation_fraction`
        of the training file's ratings, as `split` says.
      by: `"user"`: one row per user over the items (the paper's setting, needed to
        recommend); `"item"`: one row per item over the users (I-AutoRec).
      unseen_ids: `"skip"` held-out ratings of ids training never saw (counted in `skipped`),
        or `"error"`.
      split: `"random"`: a random `validation_fraction` of all ratings (seeded by
        `split_seed`); `"temporal"`: each user's latest ratings by timestamp (the 4th field),
        `round(n * validation_fraction)` of a user's n, keeping at least one in training (how a
        recommender is used: it predicts what a user rates next).
    """
    if by not in ORIENTATIONS:
        raise ValueError(f"`data.ratings_by` is {by!r}; expected 'user' or 'item'.")
    if unseen_ids not in UNSEEN_POLICIES:
        raise ValueError(f"`data.unseen_ids` is {unseen_ids!r}; expected 'skip' or 'error'.")
    vocabulary = Vocabulary.build(train_ratings)
    num_users, num_items = len(vocabulary.users), len(vocabulary.items)
    num_rows, width = (num_users, num_items) if by == "user" else (num_items, num_users)
    rows, columns, values, _ = _indices(train_ratings, vocabulary, by, "error", "training")
    skipped = 0
    if validation_ratings is None:
        if not 0 < validation_fraction < 1:
            raise ValueError(
                f"`data.validation_fraction` ({validation_fraction}) must be in (0, 1) to hold out "
                f"ratings of {train_ratings.path} for validation."
            )
        if split == "temporal":
            users = rows if by == "user" else columns
            held_out = _latest_of_each_user(train_ratings, users, num_users, validation_fraction)
        elif split == "random":
            held_out = np.random.default_rng(split_seed).random(len(values)) < validation_fraction
        else:
            raise ValueError(f"`data.ratings_split` is {split!r}; expected one of {', '.join(SPLITS)}.")
        if held_out.all() or not held_out.any():
            raise ValueError(
                f"{train_ratings.path} has too few ratings ({len(values)}) to hold out a fraction "
                f"{validation_fraction} for validation; give `data.validation_path`."
            )
        val_rows, val_columns, val_values = rows[held_out], columns[held_out], values[held_out]
        rows, columns, values = rows[~held_out], columns[~held_out], values[~held_out]
    else:
        val_rows, val_columns, val_values, skipped = _indices(
            validation_ratings, vocabulary, by, unseen_ids, "validation"
        )
        if len(val_values) == 0:
            raise ValueError(
                f"No rating of the validation file {validation_ratings.path} has a user and item "
                f"seen in training ({skipped} skipped)."
            )
    train = RatingMatrix.from_triples(rows, columns, values, num_rows, width)
    evaluated = np.unique(val_rows)
    position = np.full(num_rows, -1, np.int64)
    position[evaluated] = np.arange(len(evaluated))
    targets = RatingMatrix.from_triples(position[val_rows], val_columns, val_values, len(evaluated), width)
    return RatingSplits(train, train.rows(evaluated), targets, evaluated, vocabulary, by, skipped)


def check_config(config) -> None:
    """Raises `ValueError` for ratings settings of `config` that cannot work."""
    data_config = config.data
    if data_config.ratings_by not in ORIENTATIONS:
        raise ValueError(f"`data.ratings_by` is {data_config.ratings_by!r}; expected 'user' or 'item'.")
    if data_config.ratings_split not in SPLITS:
        raise ValueError(
            f"`data.ratings_split` is {data_config.ratings_split!r}; expected one of {', '.join(SPLITS)}."
        )
    if data_config.unseen_ids not in UNSEEN_POLICIES:
        raise ValueError(f"`data.unseen_ids` is {data_config.unseen_ids!r}; expected 'skip' or 'error'.")
    if (
        data_config.ratings_split != "users"
        and not data_config.validation_path
        and not 0 < data_config.validation_fraction < 1
    ):
        raise ValueError(
            f"`data.validation_fraction` must be in (0, 1) without data.validation_path, got "
            f"{data_config.validation_fraction!r}."
        )
    if not data_config.delimiter or data_config.delimiter in "\r\n":
        raise ValueError(f"`data.delimiter` ({data_config.delimiter!r}) must be a non-empty field separator.")
    if config.model.kind != "dense":
        raise ValueError("data.name='ratings' needs model.kind='dense'.")
    if config.pretrain.steps_per_layer:
        raise ValueError(
            "`pretrain.steps_per_layer` does not work with data.name='ratings' (it has no mask)."
        )
