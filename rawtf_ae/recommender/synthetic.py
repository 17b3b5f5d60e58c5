"""Synthetic low-rank ratings: a known structure for tests, the offline recipe of
docs/recommender.md, and catalogs of any size (docs/large-catalogs.md).

    python -m rawtf_ae.recommender.synthetic synthetic_ratings.csv
    python -m rawtf_ae.recommender.synthetic catalog.csv --users=20000 --items=1048576 \\
        --ratings_per_user=100 --popularity_exponent=1.0

The first writes ~52,000 ratings of 2,000 users on 500 items as a `user,item,rating` CSV
(`synthetic_ratings`); with `--ratings_per_user`, each user rates that many distinct items
drawn with power-law popularity (`catalog_ratings`), without any `[users, items]` array.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

from rawtf_ae import files


def synthetic_ratings(
    num_users: int = 2000,
    num_items: int = 500,
    rank: int = 5,
    density: float = 0.05,
    noise: float = 0.25,
    seed: int = 0,
) -> np.ndarray:
    """A low-rank ratings matrix with a known structure, for tests and offline examples.

    `rating = clip(round_half(3 + user bias + item bias + <u, v> + noise), 1, 5)` with user
    bias ~ N(0, 0.3^2), item bias ~ N(0, 0.6^2), `u ~ N(0, 1.44 / rank)` and `v ~ N(0, 1)` of
    dimension `rank` (so `<u, v>` has standard deviation 1.2 whatever the rank) and noise ~
    N(0, noise^2). A model that learns the factors beats the per-item mean by the spread of
    `<u, v>`; none can beat the noise floor: with the defaults, predicting each rating from its
    noiseless score gives RMSE 0.267 (noise and half-star rounding, sqrt(0.25^2 + 0.5^2 / 12) =
    0.289 before clipping at 1 and 5). Returns `[n, 3]` float rows `(user, item, rating)` for a
    random `density` of the pairs (every user and item rated at least once).
    """
    if not (num_users > 0 and num_items > 0 and rank > 0 and 0 < density <= 1 and noise >= 0):
        raise ValueError(
            f"synthetic_ratings needs positive sizes, density in (0, 1] and noise >= 0, got "
            f"{num_users} users, {num_items} items, rank {rank}, density {density}, noise {noise}."
        )
    rng = np.random.default_rng(seed)
    users = rng.normal(0, 1 / np.sqrt(rank), (num_users, rank)) * 1.2
    items = rng.normal(0, 1, (num_items, rank))
    scores = 3 + rng.normal(0, 0.3, (num_users, 1)) + rng.normal(0, 0.6, (1, num_items)) + users @ items.T
    scores = np.clip(np.round(2 * (scores + rng.normal(0, noise, scores.shape))) / 2, 1, 5)
    observed = rng.random((num_users, num_items)) < density
    observed[np.arange(num_users), rng.integers(0, num_items, num_users)] = True
    observed[rng.integers(0, num_users, num_items), np.arange(num_items)] = True
    rows, columns = np.nonzero(observed)
    return np.stack([rows, columns, scores[rows, columns]], axis=1)


def catalog_ratings(
    num_users: int,
    num_items: int,
    ratings_per_user: int,
    popularity_exponent: float = 1.0,
    rank: int = 5,
    noise: float = 0.25,
    seed: int = 0,
) -> np.ndarray:
    """`synthetic_ratings`' low-rank model on a catalog of any size, with power-law popularity.

    Item `i` (0 the most popular) is drawn with probability proportional to
    `(i + 1) ** -popularity_exponent` (0: uniform; 1: Zipf, as real catalogs' long tails);
    each user rates `ratings_per_user` distinct items (fewer only when the draws keep
    repeating the head of a steep popularity curve). Scores are computed for the drawn pairs
    only, so memory follows the ratings, not `users x items`. Returns `[n, 3]` float rows
    `(user, item, rating)`, grouped by user.
    """
    if not (num_users > 0 and num_items > 0 and 0 < ratings_per_user <= num_items):
        raise ValueError(
            f"catalog_ratings needs positive users and items and 0 < ratings_per_user <= items, got "
            f"{num_users} users, {num_items} items, {ratings_per_user} ratings per user."
        )
    if popularity_exponent < 0:
        raise ValueError(f"popularity_exponent must be >= 0, got {popularity_exponent}.")
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(np.arange(1, num_items + 1, dtype=np.float64) ** -popularity_exponent)
    users, items = [], []
    for start in range(0, num_users, 4096):  # users in chunks: bounded memory for any count
        count = min(4096, num_users - start)
        draws = 2 * ratings_per_user + 8
        picked = np.searchsorted(cumulative, rng.random((count, draws)) * cumulative[-1], side="right")
        picked = np.sort(np.minimum(picked, num_items - 1), axis=1)
        fresh = np.concatenate([np.ones((count, 1), bool), picked[:, 1:] != picked[:, :-1]], axis=1)
        order = rng.random((count, draws)) + ~fresh  # distinct ones first, in random order
        keep = np.argsort(order, axis=1)[:, :ratings_per_user]
        chosen = np.take_along_axis(picked, keep, axis=1)
        distinct = np.take_along_axis(fresh, keep, axis=1)
        users.append(np.repeat(np.arange(start, start + count), ratings_per_user)[distinct.ravel()])
        items.append(chosen.ravel()[distinct.ravel()])
    users, items = np.concatenate(users), np.concatenate(items)
    user_factors = rng.normal(0, 1.2 / np.sqrt(rank), (num_users, rank)).astype(np.float32)
    item_factors = rng.normal(0, 1, (num_items, rank)).astype(np.float32)
    scores = (
        3
        + rng.normal(0, 0.3, num_users)[users]
        + rng.normal(0, 0.6, num_items)[items]
        + np.einsum("nr,nr->n", user_factors[users], item_factors[items])
        + rng.normal(0, noise, len(users))
    )
    values = np.clip(np.round(2 * scores) / 2, 1, 5)
    return np.stack([users, items, values], axis=1)


def _define_flags() -> None:
    """The script's flags: defined only when it runs, so importing the module defines none."""
    flags.DEFINE_integer("users", 2000, "Users.")
    flags.DEFINE_integer("items", 500, "Items.")
    flags.DEFINE_integer(
        "ratings_per_user",
        0,
        "Ratings of each user, with power-law item popularity (0: a random 5% of all pairs).",
    )
    flags.DEFINE_float("popularity_exponent", 1.0, "Item i is drawn with weight (i + 1) ** -exponent.")
    flags.DEFINE_integer("seed", 0, "Random seed.")


def main(argv) -> None:
    if len(argv) != 2 or not argv[1].endswith(".csv"):
        sys.exit(
            "usage: python -m rawtf_ae.recommender.synthetic OUT.csv [--users --items --ratings_per_user ...]"
        )
    given = flags.FLAGS
    try:
        if given.ratings_per_user:
            triples = catalog_ratings(
                given.users, given.items, given.ratings_per_user, given.popularity_exponent, seed=given.seed
            )
        else:
            triples = synthetic_ratings(given.users, given.items, seed=given.seed)
        with files.quiet_standard_error("--verbose" not in sys.argv):  # TensorFlow loads here
            from rawtf_ae.recommender.ratings_file import write_ratings  # noqa: PLC0415

        print(f"wrote {len(triples):,} ratings to {write_ratings(argv[1], triples)}")
    except ValueError as e:  # one line naming the flags
        sys.exit(f"synthetic_ratings: {e}")
    except OSError as e:
        sys.exit(f"synthetic_ratings: cannot write {argv[1]}: {e.strerror}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
