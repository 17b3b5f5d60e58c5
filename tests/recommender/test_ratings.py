"""Ratings files: the parser names the line of every problem, vocabularies, sparse rows built
into dense batches only per batch, held-out splits and the unseen-id policy."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.data import pipelines
from rawtf_ae.recommender import ratings, ratings_file
from rawtf_ae.recommender.synthetic import synthetic_ratings


def _write(tmp_path, text, name="ratings.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def test_reads_movielens_csv_with_header_timestamps_and_bom(tmp_path):
    path = _write(
        tmp_path,
        "\ufeffuserId,movieId,rating,timestamp\r\n1,31,2.5,1260759144\r\n1,1029,3.0,1\r\n\r\n7,31,5,2\r\n",
    )
    parsed = ratings_file.read_ratings(path)
    assert list(parsed.users) == ["1", "1", "7"]
    assert list(parsed.items) == ["31", "1029", "31"]
    np.testing.assert_array_equal(parsed.values, [2.5, 3.0, 5.0])
    assert list(parsed.lines) == [2, 3, 5]


@pytest.mark.parametrize("delimiter", ["\t", "::"])
def test_reads_headerless_files_with_other_delimiters(tmp_path, delimiter):
    path = _write(tmp_path, f"1{delimiter}10{delimiter}4\n2{delimiter}10{delimiter}3{delimiter}99\n")
    parsed = ratings_file.read_ratings(path, delimiter)
    assert len(parsed) == 2 and list(parsed.users) == ["1", "2"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "holds no ratings"),
        ("user,item,rating\n", "holds no ratings"),
        ("1,2,3\n1,2\n", r"line 2: expected 3 or 4 fields"),
        ("1,2,3\n1,3,4,5,6\n", r"line 2: expected 3 or 4 fields"),
        ("1,2,3\n1,3,good\n", r"line 2: the rating 'good' is not a number"),
        ("u,i,r\n1,2,nan\n", r"line 2: the rating is 'nan'"),
        ("1,2,inf\n", r"line 1: the rating is 'inf'"),
        ("1,,3\n", r"line 1: empty item id"),
        ("1,2,3\n2,2,3\n1,2,4\n", r"line 3: user '1' rated item '2' already on line 1"),
        ('1,"2,3\n', r"line 1: (cannot split the line|expected 3 or 4 fields)"),
    ],
)
def test_bad_ratings_files_name_the_line_and_problem(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        ratings_file.read_ratings(path)


def test_missing_directory_and_non_utf8_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ratings_file.read_ratings(str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="is a directory"):
        ratings_file.read_ratings(str(tmp_path))
    with pytest.raises(ValueError, match="not UTF-8"):
        ratings_file.read_ratings(_write(tmp_path, "1,2,3\n", encoding="utf-16"))
    with pytest.raises(ValueError, match="delimiter"):
        ratings_file.read_ratings(_write(tmp_path, "1,2,3\n"), "\n")


def test_vocabulary_orders_integer_ids_numerically_and_round_trips(tmp_path):
    parsed = ratings_file.read_ratings(_write(tmp_path, "10,b,1\n2,a,2\n1,c,3\n"))
    vocabulary = ratings.Vocabulary.build(parsed)
    assert vocabulary.users == ["1", "2", "10"]
    assert vocabulary.items == ["a", "b", "c"]
    path = str(tmp_path / "vocabulary.json")
    vocabulary.save(path)
    assert ratings.Vocabulary.load(path) == vocabulary
    (tmp_path / "vocabulary.json").write_text('{"users": [1]}')
    with pytest.raises(ValueError, match="must hold"):
        ratings.Vocabulary.load(path)


def _splits(tmp_path, train_text, validation_text=None, **options):
    train = ratings_file.read_ratings(_write(tmp_path, train_text))
    validation = (
        ratings_file.read_ratings(_write(tmp_path, validation_text, "held_out.csv")) if validation_text else None
    )
    return ratings.build_splits(train, validation, **options)


def test_validation_file_ratings_of_unseen_ids_are_skipped_and_counted_or_refused(tmp_path):
    train = "u1,a,5\nu1,b,3\nu2,b,4\n"
    held_out = "u1,c,1\nu3,a,2\nu2,a,5\n"  # item c and user u3 are new
    splits = _splits(tmp_path, train, held_out, unseen_ids="skip")
    assert splits.skipped == 2
    assert splits.validation_targets.nnz == 1
    with pytest.raises(
        ValueError, match=r"held_out.csv, line 1: item 'c' of the validation file never appears"
    ):
        _splits(tmp_path, train, held_out, unseen_ids="error")


def test_held_out_fraction_partitions_the_ratings_and_inputs_are_training_rows(tmp_path):
    triples = synthetic_ratings(num_users=60, num_items=40, density=0.2, seed=3)
    path = ratings_file.write_ratings(str(tmp_path / "s.csv"), triples)
    splits = ratings.build_splits(ratings_file.read_ratings(path), validation_fraction=0.2, split_seed=1)
    assert splits.train.nnz + splits.validation_targets.nnz == len(triples)
    assert 0.1 < splits.validation_targets.nnz / len(triples) < 0.3
    train_dense, train_mask = splits.train.to_dense()
    inputs, _ = splits.validation_inputs.to_dense()
    np.testing.assert_array_equal(inputs, train_dense[splits.evaluated_rows])
    _, target_mask = splits.validation_targets.to_dense()
    assert not np.any(target_mask * train_mask[splits.evaluated_rows])  # no rating in both


def test_rows_per_item_transpose_rows_per_user(tmp_path):
    text = "u1,a,5\nu1,b,3\nu2,b,4\nu3,a,1\n"
    by_user = _splits(tmp_path, text, text, by="user").train.to_dense()[0]
    by_item = _splits(tmp_path, text, text, by="item").train.to_dense()[0]
    np.testing.assert_array_equal(by_user.T, by_item)
    assert by_user.shape == (3, 2)


def test_dense_batches_match_the_sparse_rows_in_any_order():
    triples = synthetic_ratings(num_users=50, num_items=30, density=0.1, seed=0)
    matrix = ratings.RatingMatrix.from_triples(
        triples[:, 0].astype(np.int64), triples[:, 1].astype(np.int64), triples[:, 2], 50, 30
    )
    dense, mask = matrix.to_dense()
    assert mask.sum() == len(triples)
    rows = np.array([7, 0, 49, 7, 13])
    batch, batch_mask = matrix.dense_batch(tf.constant(rows, tf.int64))
    np.testing.assert_array_equal(batch.numpy(), dense[rows])
    np.testing.assert_array_equal(batch_mask.numpy(), mask[rows])
    np.testing.assert_array_equal(matrix.rows(rows).to_dense()[0], dense[rows])


def test_training_batches_are_dicts_resumable_at_any_step(tmp_path):
    triples = synthetic_ratings(num_users=40, num_items=25, density=0.2, seed=1)
    path = ratings_file.write_ratings(str(tmp_path / "s.csv"), triples)
    splits = ratings.build_splits(ratings_file.read_ratings(path))
    full = list(pipelines.train_dataset(splits.train, 8, seed=5).take(9))
    assert full[0]["inputs"].shape == full[0]["mask"].shape == (8, 25)
    resumed = list(pipelines.train_dataset(splits.train, 8, seed=5, start_step=6).take(3))
    for a, b in zip(full[6:], resumed):
        np.testing.assert_array_equal(a["inputs"].numpy(), b["inputs"].numpy())
        np.testing.assert_array_equal(a["mask"].numpy(), b["mask"].numpy())


def test_evaluation_batches_drop_no_user(tmp_path):
    triples = synthetic_ratings(num_users=53, num_items=20, density=0.3, seed=2)
    path = ratings_file.write_ratings(str(tmp_path / "s.csv"), triples)
    splits = ratings.build_splits(ratings_file.read_ratings(path), validation_fraction=0.3)
    batches = list(pipelines.eval_dataset(splits, 16))
    assert sum(int(b["mask"].shape[0]) for b in batches) == len(splits.validation_targets)
    assert sum(float(tf.reduce_sum(b["mask"])) for b in batches) == splits.validation_targets.nnz


def test_synthetic_ratings_are_half_stars_covering_every_user_and_item():
    triples = synthetic_ratings(num_users=30, num_items=12, density=0.05, seed=0)
    assert set(triples[:, 0].astype(int)) == set(range(30))
    assert set(triples[:, 1].astype(int)) == set(range(12))
    assert triples[:, 2].min() >= 1 and triples[:, 2].max() <= 5
    np.testing.assert_array_equal(triples[:, 2] * 2, np.round(triples[:, 2] * 2))
    with pytest.raises(ValueError, match="density"):
        synthetic_ratings(density=0)


def _held_out_pairs(splits):
    """The held-out (user id, item id, rating) triples of `splits`, whatever the orientation."""
    vocabulary, targets = splits.vocabulary, splits.validation_targets
    rows = np.repeat(splits.evaluated_rows, np.diff(targets.indptr))
    pairs = zip(rows, targets.columns, targets.values)
    if splits.by == "user":
        return sorted((vocabulary.users[r], vocabulary.items[c], float(v)) for r, c, v in pairs)
    return sorted((vocabulary.users[c], vocabulary.items[r], float(v)) for r, c, v in pairs)


@pytest.mark.parametrize("by", ["user", "item"])
def test_the_temporal_split_holds_out_each_users_latest_ratings(tmp_path, by):
    path = tmp_path / "ratings.csv"
    path.write_text(
        "userId,movieId,rating,timestamp\n"
        # user 1: five ratings, the latest two (times 50 and 40) are held out at fraction 0.4
        "1,10,1,50\n1,11,2,10\n1,12,3,40\n1,13,4,20\n1,14,5,30\n"
        # user 2: one rating, kept for training whatever the fraction
        "2,10,3,99\n"
        # user 3: three ratings, round(1.2) = 1 held out; a tie in time goes to the later line
        "3,11,4,7\n3,12,5,7\n3,10,2,1\n"
    )
    splits = ratings.build_splits(
        ratings_file.read_ratings(str(path)), by=by, validation_fraction=0.4, split="temporal"
    )
    assert _held_out_pairs(splits) == [("1", "10", 1.0), ("1", "12", 3.0), ("3", "12", 5.0)]
    assert splits.train.nnz == 6


def test_the_temporal_split_names_a_rating_without_a_timestamp(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("1,10,1,50\n1,11,2\n2,10,3,60\n")
    with pytest.raises(ValueError, match=r"ratings.csv, line 2: .*needs a numeric timestamp"):
        ratings.build_splits(ratings_file.read_ratings(str(path)), split="temporal")
    with pytest.raises(ValueError, match="`data.ratings_split` is 'latest'"):
        ratings.build_splits(ratings_file.read_ratings(str(path)), split="latest")


@pytest.mark.parametrize("block_bytes", [1 << 25, 7])  # 7 bytes: chunks end mid-file, line by line
def test_the_vectorized_reader_reads_what_the_line_by_line_reader_reads(tmp_path, monkeypatch, block_bytes):
    text = (
        "\ufeffuserId,movieId,rating,timestamp\r\n1,31,2.5,1260759144\r\n\r\n 1 , 1029 ,3.0,\r\n"
        "u7,31,5,2\n\n7,é,-1e-1\n7,31,.5"
    )
    path = _write(tmp_path, text)
    monkeypatch.setattr(ratings_file, "_BLOCK_BYTES", block_bytes)
    fast = ratings_file._read_vectorized(path, ",")
    assert fast is not None
    monkeypatch.setattr(ratings_file, "_read_vectorized", lambda path, delimiter: None)
    slow = ratings_file.read_ratings(path)
    for key in ("users", "items", "values", "lines"):
        np.testing.assert_array_equal(getattr(fast, key), getattr(slow, key))
    np.testing.assert_array_equal(fast.timestamps, slow.timestamps)  # NaN where not a number
    assert list(fast.users) == ["1", "1", "u7", "7", "7"] and list(fast.lines) == [2, 4, 5, 7, 8]


@pytest.mark.parametrize(
    "text", ['1,"2,3",4\n', "1,2,3\n1,2,4\n", "1,2,inf\n", b"1,\xff,3\n", "1,2,3\nx,y,z\n"]
)
def test_files_the_vectorized_reader_does_not_take_go_line_by_line(tmp_path, text):
    path = tmp_path / "r.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert ratings_file._read_vectorized(str(path), ",") is None


@pytest.mark.parametrize("block_bytes", [1 << 25, 7])
def test_a_timestamp_that_is_no_number_is_an_error_naming_its_line_whatever_the_split(
    tmp_path, monkeypatch, block_bytes
):
    # Not silently ignored unless data.ratings_split='temporal': both readers name the line.
    monkeypatch.setattr(ratings_file, "_BLOCK_BYTES", block_bytes)
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating,time\n1,10,4,100\n1,11,5,extra\n2,10,3,\n")
    with pytest.raises(ValueError, match=r"ratings.csv, line 3: the 4th field 'extra' is not a number"):
        ratings_file.read_ratings(str(path))
