"""Implicit feedback: `user,item` files, binarizing, the strong-generalization split, the ranking
metrics against hand computations and vae_cf's own formulas, and the popularity/EASE baselines."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.recommender import baselines, implicit, ranking, ratings_file
from rawtf_ae.recommender.ratings import RatingMatrix


def _write(tmp_path, text, name="r.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("quoted", [False, True])  # the vectorized reader, the line-by-line one
def test_a_user_item_file_is_read_as_interactions_of_value_one(tmp_path, quoted):
    user = '"1"' if quoted else "1"
    path = _write(tmp_path, f"userId,movieId\n{user},10\n1,11\n2,10\n")
    read = ratings_file.read_ratings(path)
    assert read.implicit
    assert list(read.users) == ["1", "1", "2"] and list(read.items) == ["10", "11", "10"]
    assert read.values.tolist() == [1.0, 1.0, 1.0] and read.lines.tolist() == [2, 3, 4]
    # Without a header of column names, the first line is an interaction.
    headless = ratings_file.read_ratings(_write(tmp_path, "u1,i1\nu1,i2\n", "h.csv"))
    assert list(headless.users) == ["u1", "u1"] and headless.implicit
    assert not ratings_file.read_ratings(_write(tmp_path, "1,2,4.0\n", "e.csv")).implicit


@pytest.mark.parametrize(
    "text, message",
    [
        ("user,item\n1,2\n1,3,4\n", "line 3: expected 2 fields"),
        ("1,2,4\n1,3\n", "line 2: expected 3 or 4 fields"),
        ("user,item\n1,\n", "line 2: empty item id"),
        ("user,item\n1,2\n1,2\n", "line 3: user '1' rated item '2' already on line 2"),
    ],
)
def test_bad_implicit_files_name_their_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        ratings_file.read_ratings(_write(tmp_path, text))


def test_binarize_keeps_ratings_above_the_threshold_as_ones(tmp_path):
    read = ratings_file.read_ratings(_write(tmp_path, "a,x,4.0\na,y,3.5\nb,x,5\nc,z,1\n"))
    kept = implicit.binarize(read, 3.5)
    assert list(zip(kept.users, kept.items)) == [("a", "x"), ("b", "x")]
    assert kept.values.tolist() == [1.0, 1.0] and kept.lines.tolist() == [1, 3]
    with pytest.raises(
        ValueError, match=r"`data.binarize`: no rating of .* is above data.binarize_threshold=5"
    ):
        implicit.binarize(read, 5.0)
    interactions = ratings_file.read_ratings(_write(tmp_path, "a,x\nb,y\n", "i.csv"))
    assert implicit.binarize(interactions, 3.5) is interactions  # no rating column to threshold


def _interactions(num_users=60, num_items=40, seed=0):
    """Users with 2..30 interactions each; user ids `u<k>`, items `i<k>`."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(num_users):
        chosen = rng.choice(num_items, size=rng.integers(2, 31), replace=False)
        users += [f"u{u}"] * len(chosen)
        items += [f"i{i}" for i in chosen]
    n = len(users)
    return ratings_file.Ratings.from_ids(
        users, items, np.ones(n), np.arange(1, n + 1), "r.csv", implicit=True
    )


def _pairs(matrix, user_ids, vocabulary):
    rows = matrix.entry_rows()
    return {(user_ids[r], vocabulary.items[c]) for r, c in zip(rows, matrix.columns)}


def test_the_users_split_holds_out_whole_users_and_splits_their_items():
    read = _interactions()
    splits = implicit.user_split(read, validation_users=8, test_users=6, min_interactions=5, seed=3)
    counts = {u: int((read.users == u).sum()) for u in set(read.users)}
    active = {u for u, c in counts.items() if c >= 5}
    train_users = set(splits.vocabulary.users)
    validation, test = set(splits.heldout_ids["validation"]), set(splits.heldout_ids["test"])
    assert len(validation) == 8 and len(test) == 6 and len(train_users) == len(active) - 14
    assert train_users | validation | test == active
    assert not (train_users & validation) and not (train_users & test) and not (validation & test)
    # The catalog is the training users' items; held-out pairs outside it are gone.
    all_pairs = set(zip(read.users, read.items))
    train_pairs = _pairs(splits.train, splits.vocabulary.users, splits.vocabulary)
    assert train_pairs == {(u, i) for u, i in all_pairs if u in train_users}
    assert set(splits.vocabulary.items) == {i for _, i in train_pairs}
    for inputs, targets, members in (
        (splits.validation_inputs, splits.validation_targets, splits.heldout_ids["validation"]),
        (splits.test_inputs, splits.test_targets, splits.heldout_ids["test"]),
    ):
        fold_in, evaluated = (
            _pairs(inputs, members, splits.vocabulary),
            _pairs(targets, members, splits.vocabulary),
        )
        assert not fold_in & evaluated
        for user in members:
            known = {(u, i) for u, i in all_pairs if u == user and i in splits.vocabulary.item_index}
            mine = {p for p in evaluated if p[0] == user}
            assert {p for p in fold_in if p[0] == user} | mine == known
            assert len(mine) == int(0.2 * len(known))  # vae_cf: int(test_prop * n)
    again = implicit.user_split(read, validation_users=8, test_users=6, min_interactions=5, seed=3)
    assert list(again.heldout_ids["validation"]) == list(splits.heldout_ids["validation"])
    other = implicit.user_split(read, validation_users=8, test_users=6, min_interactions=5, seed=4)
    assert set(other.heldout_ids["validation"]) != validation


def test_the_users_split_refuses_what_cannot_be_held_out():
    read = _interactions(num_users=20)
    with pytest.raises(
        ValueError, match="too few to hold out data.validation_users=15 and data.test_users=10"
    ):
        implicit.user_split(read, validation_users=15, test_users=10)
    few = _interactions(num_users=30, seed=1)
    keep = np.isin(few.user_codes, np.arange(5)) | (np.arange(len(few)) % 1000 == 0)
    with pytest.raises(ValueError, match="has an item to evaluate"):
        implicit.user_split(
            few.subset(keep),
            validation_users=1,
            test_users=0,
            min_interactions=1,
            evaluated_fraction=0.01,
            seed=0,
        )


def test_ranking_metrics_match_a_hand_computation():
    scores = tf.constant([[0.9, 0.1, 0.8, 0.7, 0.3, 0.2]])
    seen = tf.constant([[True, False, False, False, False, False]])  # item 0 was shown
    relevant = tf.constant([[False, False, True, False, True, False]])  # items 2 and 4 held out
    found = ranking.per_user(
        ranking.exclude_seen(scores, seen), relevant, (("recall", 1), ("recall", 2), ("ndcg", 3))
    )
    # Ranked: 2, 3, 4, 5, 1. Recall@1 = 1 / min(1, 2); Recall@2 = 1 / 2; NDCG@3: hits at
    # ranks 1 and 3, (1 + 1/2) / (1 + 1/log2(3)).
    assert found["recall_at_1"].numpy()[0] == pytest.approx(1.0)
    assert found["recall_at_2"].numpy()[0] == pytest.approx(0.5)
    assert found["ndcg_at_3"].numpy()[0] == pytest.approx(1.5 / (1 + 1 / np.log2(3)))


def _vae_cf_metrics(scores, seen, heldout, k_recall, k_ndcg):
    """dawenl/vae_cf's Recall_at_k_batch and NDCG_binary_at_k_batch, on dense arrays."""
    scores = np.where(seen, -np.inf, scores)
    order = np.argsort(-scores, axis=1)
    batch = np.arange(len(scores))[:, None]
    hits = heldout[batch, order[:, :k_recall]].sum(axis=1)
    recall = hits / np.minimum(k_recall, heldout.sum(axis=1))
    tp = 1.0 / np.log2(np.arange(2, k_ndcg + 2))
    dcg = (heldout[batch, order[:, :k_ndcg]] * tp).sum(axis=1)
    idcg = np.array([tp[: min(n, k_ndcg)].sum() for n in heldout.sum(axis=1)])
    return recall, dcg / idcg


def test_ranking_metrics_match_vae_cfs_formulas_and_summaries_skip_users_without_items():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 200)).astype(np.float32)
    seen = rng.random((30, 200)) < 0.1
    heldout = (rng.random((30, 200)) < 0.08) & ~seen
    heldout[-1] = False  # a user with nothing held out: not scored
    recall, ndcg = _vae_cf_metrics(scores[:-1], seen[:-1], heldout[:-1], 20, 100)
    accumulator = ranking.Accumulator((("recall", 20), ("ndcg", 100)))
    accumulator.add(scores[:13], seen[:13], heldout[:13])
    accumulator.add(scores[13:], seen[13:], heldout[13:])
    summary = accumulator.summary("val")
    assert accumulator.unscored == 1 and summary["val_ranked_users"] == 29
    assert summary["val_recall_at_20"] == pytest.approx(recall.mean(), rel=1e-9)
    assert summary["val_ndcg_at_100"] == pytest.approx(ndcg.mean(), rel=1e-9)
    assert summary["val_ndcg_at_100_se"] == pytest.approx(ndcg.std() / np.sqrt(29), rel=1e-9)


def test_accumulate_keeps_each_users_metrics_in_the_files_order_over_batches():
    # The benchmark's paired comparison against EASE subtracts these per-user values.
    rng = np.random.default_rng(2)
    seen = rng.random((23, 150)) < 0.1
    heldout = (rng.random((23, 150)) < 0.1) & ~seen
    heldout[5] = False  # nothing held out: not scored, the others keep their order
    weights = rng.normal(size=(150, 150)).astype(np.float32)

    def matrix(dense):
        rows, columns = np.nonzero(dense)
        return RatingMatrix.from_triples(rows, columns, np.ones(len(rows), np.float32), *dense.shape)

    found = ranking.accumulate(lambda fold_in: fold_in @ weights, matrix(seen), matrix(heldout), 7)
    keep = heldout.any(axis=1)
    recall, ndcg = _vae_cf_metrics(seen[keep] @ weights, seen[keep], heldout[keep], 20, 100)
    assert np.concatenate(found.values["ndcg_at_100"]) == pytest.approx(ndcg, rel=1e-6)
    assert np.concatenate(found.values["recall_at_20"]) == pytest.approx(recall, rel=1e-6)
    assert found.unscored == 1


def test_ease_scores_are_the_closed_form_and_popularity_counts_training_items():
    rng = np.random.default_rng(1)
    x = (rng.random((50, 30)) < 0.2).astype(np.float64)
    train = RatingMatrix.from_triples(*np.nonzero(x), x[np.nonzero(x)], 50, 30)
    fold_in = (rng.random((7, 30)) < 0.2).astype(np.float64)
    for regularization in (1.0, 30.0):
        p = np.linalg.inv(x.T @ x + regularization * np.eye(30))
        b = np.eye(30) - p / np.diag(p)[None, :]  # B = I - P diag(1 / diag(P))
        assert np.allclose(np.diag(b), 0.0)
        expected = fold_in @ b
        assert np.allclose(
            baselines.ease_scores(fold_in, baselines.gram_eigen(train), regularization), expected
        )
    assert np.array_equal(baselines.item_counts(train), x.sum(axis=0))
