"""Implicit feedback: binarized ratings, and the strong-generalization split of held-out users.

Liang et al. (2018, "Variational Autoencoders for Collaborative Filtering"; code: dawenl/vae_cf)
define the protocol recommender practitioners use for implicit feedback:

- `binarize`: ratings above a threshold become interactions of value 1, the others are dropped
  (vae_cf keeps MovieLens ratings > 3.5). A `user,item` file is implicit already.
- `user_split` (`data.ratings_split='users'`, *strong generalization*): users with fewer than
  `min_interactions` interactions are dropped (vae_cf's 5); a seeded permutation of the others
  holds out `validation_users` and `test_users` users, whose rows the model never trains on.
  The catalog is the items the training users have: items seen only by held-out users are
  dropped, as vae_cf does. Each held-out user's interactions are split, seeded, into fold-in
  items (what the model is shown) and `int(evaluated_fraction * n)` evaluated items (what it
  must rank first); a user with none to evaluate (fewer than 1 / evaluated_fraction) is left
  out of the evaluation and counted.

The ranking metrics on such a split are `rawtf_ae.recommender.ranking`.
"""

from __future__ import annotations

import numpy as np
from absl import logging

from rawtf_ae.recommender.ratings import RatingMatrix, RatingSplits, Vocabulary, _id_order
from rawtf_ae.recommender.ratings_file import Ratings


def binarize(ratings: Ratings, threshold: float) -> Ratings:
    """The ratings above `threshold` as interactions of value 1; the others dropped.

    Raises:
      ValueError: no rating of the file is above `threshold` (naming the file and the key).
    """
    if ratings.implicit:
        logging.info(
            "data.binarize: %s has no rating column, every line is an interaction already", ratings.path
        )
        return ratings
    keep = ratings.values > threshold
    if not keep.any():
        raise ValueError(
            f"`data.binarize`: no rating of {ratings.path} is above data.binarize_threshold="
            f"{threshold} (its ratings lie in [{ratings.values.min():g}, {ratings.values.max():g}]): "
            "nothing would be left."
        )
    lost = len(np.unique(ratings.user_codes)) - len(np.unique(ratings.user_codes[keep]))
    logging.info(
        "data.binarize: kept %d of %d ratings of %s (> %g) as interactions of value 1; %d users "
        "have none left and are dropped",
        int(keep.sum()),
        len(ratings),
        ratings.path,
        threshold,
        lost,
    )
    return ratings.subset(keep, np.ones(int(keep.sum()), np.float32))


def _evaluated_entries(users: np.ndarray, fraction: float, rng) -> np.ndarray:
    """`[n]` bool: for each user (codes `users`, any order) a seeded random `int(fraction * n_u)`
    of its entries, as vae_cf's `np.random.choice(n_u, int(test_prop * n_u), replace=False)`."""
    keys = rng.random(len(users))
    order = np.lexsort((keys, users))  # by user, then by a random key
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_users = users[order]
    rank = np.arange(len(order)) - starts[sorted_users]
    chosen = np.zeros(len(users), bool)
    chosen[order] = rank < (counts * fraction).astype(np.int64)[sorted_users]
    return chosen


def _rows(users: np.ndarray, items: np.ndarray, values: np.ndarray, members: np.ndarray, width: int):
    """The `RatingMatrix` of the users `members` (codes, in that row order) over `width` items."""
    position = np.full(int(max(users.max(initial=0), members.max(initial=0))) + 1, -1, np.int64)
    position[members] = np.arange(len(members))
    keep = position[users] >= 0
    return RatingMatrix.from_triples(position[users[keep]], items[keep], values[keep], len(members), width)


def _held_out(ratings, columns, members, name, evaluated_fraction, rng, width):
    """`((fold-in rows, evaluated rows, user ids), items dropped, users dropped)` of one group
    of held-out users `members` (codes); `columns` maps each rating to its catalog column."""
    mine = np.isin(ratings.user_codes, members)
    lost_items = int((mine & (columns < 0)).sum())
    mine &= columns >= 0  # items only held-out users have are not in the catalog
    users, items, values = ratings.user_codes[mine], columns[mine], ratings.values[mine]
    evaluated = _evaluated_entries(users, evaluated_fraction, rng)
    with_targets = np.unique(users[evaluated])  # users with something to evaluate
    if not len(with_targets) and len(members):
        key = "data.validation_users" if name == "validation" else "data.test_users"
        raise ValueError(
            f"{ratings.path}: none of the {len(members)} {name} users ({key}) has an item to "
            f"evaluate: with data.evaluated_fraction={evaluated_fraction} a user needs at least "
            f"{int(np.ceil(1 / evaluated_fraction))} interactions with the training users' items."
        )
    members_kept = np.sort(with_targets)
    part = (
        _rows(users[~evaluated], items[~evaluated], values[~evaluated], members_kept, width),
        _rows(users[evaluated], items[evaluated], values[evaluated], members_kept, width),
        ratings.user_ids[members_kept],
    )
    return part, lost_items, len(members) - len(with_targets)


def user_split(
    ratings: Ratings,
    *,
    validation_users: int,
    test_users: int,
    min_interactions: int = 5,
    evaluated_fraction: float = 0.2,
    seed: int = 0,
) -> RatingSplits:
    """The strong-generalization split of `ratings` (the module docstring): `train` rows are the
    training users (the vocabulary's, in id order), validation/test inputs and targets the
    held-out users' fold-in and evaluated items; `evaluated_rows` is None. Raises `ValueError`
    naming the key when too few users remain, or a held-out group has nothing to evaluate.
    """
    counts = np.bincount(ratings.user_codes, minlength=len(ratings.user_ids))
    active = np.flatnonzero(counts >= min_interactions)
    held = validation_users + test_users
    if len(active) <= held:
        raise ValueError(
            f"{ratings.path}: {len(active)} users have at least data.min_interactions="
            f"{min_interactions} interactions, too few to hold out data.validation_users="
            f"{validation_users} and data.test_users={test_users} and train on the rest."
        )
    rng = np.random.default_rng(seed)
    permuted = active[rng.permutation(len(active))]
    train_users = permuted[: len(active) - held]
    groups = {
        "validation": permuted[len(active) - held : len(active) - test_users],
        "test": permuted[len(active) - test_users :],
    }
    in_train = np.zeros(len(ratings.user_ids), bool)
    in_train[train_users] = True
    train_part = in_train[ratings.user_codes]
    # The catalog: the items of the training users (vae_cf's unique_sid), in id order.
    catalog_items = np.unique(ratings.item_codes[train_part])
    vocabulary = Vocabulary(
        _id_order(ratings.user_ids[train_users]), _id_order(ratings.item_ids[catalog_items])
    )
    item_column = np.full(len(ratings.item_ids), -1, np.int64)
    item_column[catalog_items] = [vocabulary.item_index[i] for i in ratings.item_ids[catalog_items]]
    user_row = np.array([vocabulary.user_index[u] for u in ratings.user_ids[train_users]], np.int64)
    width = len(vocabulary.items)
    columns = item_column[ratings.item_codes]
    train = _rows(
        ratings.user_codes[train_part],
        columns[train_part],
        ratings.values[train_part],
        train_users[np.argsort(user_row)],
        width,
    )
    parts, dropped = {}, {"items": 0, "users": 0}
    for name, members in groups.items():
        parts[name], lost_items, lost_users = _held_out(
            ratings, columns, members, name, evaluated_fraction, rng, width
        )
        dropped["items"] += lost_items
        dropped["users"] += lost_users
    splits = RatingSplits(
        train,
        parts["validation"][0],
        parts["validation"][1],
        None,
        vocabulary,
        "user",
        test_inputs=parts["test"][0] if test_users else None,
        test_targets=parts["test"][1] if test_users else None,
        heldout_ids={name: part[2] for name, part in parts.items()},
    )
    counts_line = (len(active), len(counts), min_interactions, len(train_users))
    held_line = (len(parts["validation"][2]), len(parts["test"][2]), dropped["items"], dropped["users"])
    logging.info(
        "data.ratings_split='users': %d users of %d with >= %d interactions; %d training, %d validation, "
        "%d test users; %d held-out interactions with items no training user has and %d held-out users "
        "with nothing to evaluate left out",
        *counts_line,
        *held_line,
    )
    return splits


def _count(name, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}.")


def check_config(data_config) -> None:
    """The keys of binarizing and of the users split (`rawtf_ae.recommender.implicit`)."""
    if not isinstance(data_config.binarize, bool):
        raise ValueError(f"`data.binarize` must be True or False, got {data_config.binarize!r}.")
    threshold = data_config.binarize_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise ValueError(f"`data.binarize_threshold` must be a finite number, got {threshold!r}.")
    _count("data.validation_users", data_config.validation_users, 1)
    _count("data.test_users", data_config.test_users, 0)
    _count("data.min_interactions", data_config.min_interactions, 1)
    fraction = data_config.evaluated_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"`data.evaluated_fraction` must be in (0, 1), got {fraction!r}.")
    if data_config.ratings_split != "users":
        return
    if data_config.validation_path:
        raise ValueError(
            "`data.ratings_split='users'` holds out users of data.path itself; leave "
            f"data.validation_path empty (it is {data_config.validation_path!r})."
        )
    if data_config.ratings_by != "user":
        raise ValueError("`data.ratings_split='users'` needs data.ratings_by='user' (it holds out users).")
