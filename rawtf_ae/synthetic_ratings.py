"""Synthetic low-rank ratings: a known structure for tests and the offline recipe of docs/recommender.md.

    python -m rawtf_ae.synthetic_ratings synthetic_ratings.csv

writes ~52,000 ratings of 2,000 users on 500 items as a `user,item,rating` CSV.
"""

from __future__ import annotations

import sys

import numpy as np

from rawtf_ae.ratings import write_ratings


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


def main(argv) -> None:
    if len(argv) != 2 or not argv[1].endswith(".csv"):
        sys.exit("usage: python -m rawtf_ae.synthetic_ratings OUT.csv")
    triples = synthetic_ratings()
    print(f"wrote {len(triples)} ratings to {write_ratings(argv[1], triples)}")


if __name__ == "__main__":
    main(sys.argv)
