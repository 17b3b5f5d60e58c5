"""Data: curves, IDX/Keras/array readers, splits, the resumable pipeline, and bad files."""

import gzip
import hashlib
import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.data import idx, pipelines, sources

# The official md5 of the MNIST test-set files (yann.lecun.com/exdb/mnist via torchvision).
T10K_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _data_config(**values):
    config = ml_collections.ConfigDict(
        dict(name="curves", path="", num_train=0, num_validation=0, split_seed=0)
    )
    config.update(values)
    return config


def _write_idx(path, array, type_code=0x08, compress=True):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(">u1" if type_code == 0x08 else array.dtype).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(raw)


def test_curves_are_deterministic_images_in_unit_range():
    a, b, c = sources.curves(50, seed=1), sources.curves(50, seed=1), sources.curves(50, seed=2)
    assert a.shape == (50, 784) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # Every image holds a drawn stroke, and most pixels stay background.
    assert (a.max(axis=1) > 0.9).all()
    assert 0.02 < a.mean() < 0.3


def test_mnist_files_in_shared_have_the_official_md5(mnist_dir):
    for name, md5 in T10K_MD5.items():
        with open(os.path.join(mnist_dir, name), "rb") as f:
            assert hashlib.md5(f.read()).hexdigest() == md5


def test_t10k_only_folder_is_split_into_train_and_validation(mnist_dir):
    splits = sources.load(_data_config(name="mnist", path=mnist_dir, num_validation=2_000), seed=0)
    assert splits.train.shape == (8_000, 784) and splits.validation.shape == (2_000, 784)
    assert splits.train.dtype == np.float32 and 0 <= splits.train.min() and splits.train.max() <= 1
    assert splits.train_labels.shape == (8_000,) and set(np.unique(splits.validation_labels)) == set(
        range(10)
    )
    assert splits.image_shape == (28, 28)
    # The split is a permutation: no example in both halves, none lost.
    total = np.concatenate([splits.train, splits.validation]).sum(axis=1)
    assert np.isclose(
        total.sum(), idx.read_idx(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz")).sum() / 255
    )
    capped = sources.load(
        _data_config(name="mnist", path=mnist_dir, num_validation=2_000, num_train=500), seed=0
    )
    np.testing.assert_array_equal(capped.train, splits.train[:500])


def _train_and_test_folder(folder):
    rng = np.random.default_rng(0)
    written = {}
    for prefix, n in (("train", 30), ("t10k", 10)):
        written[prefix] = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, (n,))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", written[prefix][0])
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", written[prefix][1])
    return written


def test_train_and_test_files_give_a_validation_split_of_the_last_training_examples(tmp_path):
    # The t10k files used to become the validation split: no test set was left untouched.
    written = _train_and_test_folder(tmp_path)
    splits = sources.load(_data_config(name="fashion_mnist", path=str(tmp_path), num_validation=7), seed=0)
    train_images, train_labels = written["train"]
    np.testing.assert_allclose(splits.train, train_images[:23].reshape(23, -1) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(splits.validation, train_images[23:].reshape(7, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(splits.validation_labels, train_labels[23:])
    np.testing.assert_allclose(splits.test, written["t10k"][0].reshape(10, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(splits.examples("test")[1], written["t10k"][1])
    assert (
        "23 training and 7 validation examples of width 784 (10 test examples kept aside)"
        in splits.describe("fashion_mnist")
    )
    # num_validation=0: validate on the test files (all 30 training examples train).
    splits = sources.load(_data_config(name="fashion_mnist", path=str(tmp_path)), seed=0)
    assert len(splits.train) == 30 and len(splits.validation) == 10 and splits.test is None
    with pytest.raises(ValueError, match=f"{tmp_path} has no test split"):
        splits.examples("test", str(tmp_path))
    with pytest.raises(ValueError, match=r"`data.num_validation` \(30\) must be between 1 and 29 .* or 0 to"):
        sources.load(_data_config(name="mnist", path=str(tmp_path), num_validation=30), seed=0)


def test_npz_test_arrays_are_kept_aside_like_test_files(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x_train=x, x_test=x[:4] + 1)
    splits = sources.load(_data_config(name="array", path=str(tmp_path / "x.npz"), num_validation=5), seed=0)
    np.testing.assert_array_equal(splits.validation, x[15:])
    np.testing.assert_array_equal(splits.test, x[:4] + 1)
    np.savez(tmp_path / "y.npz", x_train=x, x_validation=x[:2], x_test=x[:4] + 1)
    splits = sources.load(_data_config(name="array", path=str(tmp_path / "y.npz"), num_validation=5), seed=0)
    assert len(splits.train) == 20 and len(splits.validation) == 2 and len(splits.test) == 4


def test_keras_format_npz_loads(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    x_train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    np.savez(path, x_train=x_train, y_train=np.zeros(20), x_test=x_train[:5], y_test=np.zeros(5))
    splits = sources.load(_data_config(name="mnist", path=str(path)), seed=0)
    np.testing.assert_allclose(splits.train, x_train.reshape(20, -1) / 255.0, rtol=1e-6)
    assert len(splits.validation) == 5


def test_array_data_from_npy_and_npz(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    splits = sources.load(_data_config(name="array", path=str(tmp_path / "x.npy"), num_validation=10), seed=0)
    assert (
        splits.train.shape == (40, 12) and splits.validation.shape == (10, 12) and splits.image_shape is None
    )
    np.savez(tmp_path / "x.npz", x_train=x, x_validation=x[:3])
    splits = sources.load(_data_config(name="array", path=str(tmp_path / "x.npz")), seed=0)
    np.testing.assert_array_equal(splits.train, x)
    assert len(splits.validation) == 3


def _with_non_finite():
    x = np.zeros((6, 4))
    x[3, 1], x[5, 0] = np.nan, np.inf
    return x


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "does not exist"),
        (lambda d: np.save(d / "x.npy", _with_non_finite()), "2 non-finite values .*first in example 3"),
        (lambda d: np.save(d / "x.npy", np.zeros((0, 4))), "is empty"),
        (lambda d: np.save(d / "x.npy", np.zeros(7)), r"expected \[num_examples, width\]"),
        (lambda d: (d / "x.npy").write_bytes(b"not numpy at all"), r"x.npy \(data.path\) is not a NumPy array file"),
        (lambda d: np.save(d / "x.npy", np.array([{"a": 1}] * 3)), "holds Python objects, not numbers"),
    ],
)
def test_bad_array_file_raises_naming_the_file(tmp_path, make, message):
    make(tmp_path)
    path = str(tmp_path / "x.npy")
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        sources.load(_data_config(name="array", path=path, num_validation=1), seed=0)
    assert path in str(info.value)
    assert "allow_pickle" not in str(info.value)  # never advice to unpickle


def test_bad_npz_files_raise_naming_the_file(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match="bad.npz is corrupt"):
        sources.load(_data_config(name="array", path=str(tmp_path / "bad.npz")), seed=0)
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"two.npz holds arrays \['a', 'b'\]"):
        sources.load(_data_config(name="array", path=str(tmp_path / "two.npz")), seed=0)
    np.savez(tmp_path / "k.npz", images=np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="k.npz has no `x_train`"):
        sources.load(_data_config(name="mnist", path=str(tmp_path / "k.npz")), seed=0)


def test_bad_idx_files_raise_naming_the_file(tmp_path, mnist_dir):
    with open(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        raw = gzip.decompress(f.read())
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    with gzip.open(truncated / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(
        ValueError, match=r"is truncated: its data \(shape \(10000, 28, 28\), uint8\) needs 7840000 bytes"
    ):
        sources.load(_data_config(name="mnist", path=str(truncated), num_validation=10), seed=0)
    cut_gzip = tmp_path / "cut_gzip"
    cut_gzip.mkdir()
    with open(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        (cut_gzip / "t10k-images-idx3-ubyte.gz").write_bytes(f.read()[:5000])
    with pytest.raises(ValueError, match=r"cut_gzip/t10k-images-idx3-ubyte.gz is corrupt"):
        sources.load(_data_config(name="mnist", path=str(cut_gzip), num_validation=10), seed=0)
    not_idx = tmp_path / "not_idx"
    not_idx.mkdir()
    (not_idx / "t10k-images-idx3-ubyte").write_bytes(b"<html>proxy error</html>")
    with pytest.raises(ValueError, match="is not an IDX file"):
        sources.load(_data_config(name="mnist", path=str(not_idx), num_validation=10), seed=0)
    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    _write_idx(mismatch / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28)))
    _write_idx(mismatch / "t10k-labels-idx1-ubyte.gz", np.zeros((4,)))
    with pytest.raises(ValueError, match=r"holds \(4,\) labels for the 5 images"):
        sources.load(_data_config(name="mnist", path=str(mismatch), num_validation=1), seed=0)
    with pytest.raises(FileNotFoundError, match="holds neither"):
        sources.load(_data_config(name="mnist", path=str(tmp_path)), seed=0)


def test_impossible_split_sizes_raise(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"`data.num_validation` \(10\) must be between 1 and 9"):
        sources.load(_data_config(name="array", path=str(tmp_path / "x.npy"), num_validation=10), seed=0)
    with pytest.raises(ValueError, match=r"`data.num_train` \(50\) exceeds the 8"):
        sources.load(
            _data_config(name="array", path=str(tmp_path / "x.npy"), num_validation=2, num_train=50), seed=0
        )


def _batches(dataset, count):
    return [batch.numpy() for batch in dataset.take(count)]


def test_train_dataset_epochs_are_permutations_and_resume_at_any_step():
    examples = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    batches = _batches(pipelines.train_dataset(examples, batch_size=4, seed=7), 10)
    order = np.concatenate(batches)[:, 0]
    # 40 positions = 4 whole epochs of 10 examples, each a permutation of all of them.
    for epoch in range(4):
        assert sorted(order[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    assert not np.array_equal(order[:10], order[10:20])
    for start in (1, 2, 3, 7):  # mid-epoch (step 1 starts at position 4) and across epochs
        resumed = _batches(pipelines.train_dataset(examples, batch_size=4, seed=7, start_step=start), 10 - start)
        np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(batches[start:]))
    other_seed = np.concatenate(_batches(pipelines.train_dataset(examples, batch_size=4, seed=8), 10))
    assert not np.array_equal(other_seed, np.concatenate(batches))


def test_train_batches_are_the_datasets_batch_of_any_step_alone():
    # Parameter-server closures gather the ids of batch s (from (seed, s)): it must be the
    # dataset's batch s, across epoch ends too (10 examples, batches of 4), in any step order
    # (a rescheduled closure, a resumed run), dense arrays and sparse ratings rows.
    from rawtf_ae.recommender import ratings

    examples = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    batches = _batches(pipelines.train_dataset(examples, batch_size=4, seed=7), 12)
    batch_at = pipelines.TrainBatches(examples, batch_size=4, seed=7)
    gather = tf.function(batch_at.gather)  # as the workers trace it
    for step in (0, 2, 4, 11, 3, 2, 1):  # step 2 spans epochs 0 and 1; then back
        np.testing.assert_array_equal(gather(batch_at.ids(step)).numpy(), batches[step])
    rng = np.random.default_rng(0)
    rows, columns = np.divmod(rng.choice(9 * 50, 60, replace=False), 50)
    matrix = ratings.RatingMatrix.from_triples(rows, columns, rng.random(60).astype(np.float32), 9, 50)
    dataset = pipelines.train_dataset(matrix, batch_size=4, seed=3, sparse=True)
    sparse_at = pipelines.TrainBatches(matrix, batch_size=4, seed=3, sparse=True)
    for step, batch in enumerate(dataset.take(7)):
        expected, got = batch["inputs"], sparse_at(step)["inputs"]
        np.testing.assert_array_equal(tf.sparse.to_dense(got).numpy(), tf.sparse.to_dense(expected).numpy())
        np.testing.assert_array_equal(got.indices.numpy(), expected.indices.numpy())
    with pytest.raises(ValueError, match="batch_size <= 10"):
        pipelines.TrainBatches(examples, batch_size=11, seed=7)


def test_eval_dataset_keeps_every_example():
    examples = np.arange(25, dtype=np.float32).reshape(25, 1)
    batches = list(pipelines.eval_dataset(examples, batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate(batches), examples)


def test_train_dataset_gives_each_input_pipeline_its_replicas_slices_of_the_global_batch():
    examples = np.arange(24, dtype=np.float32)[:, None]
    (global_batch,) = _batches(pipelines.train_dataset(examples, batch_size=8, seed=3), 1)
    slices = []
    for pipeline in range(2):  # 2 workers x 2 replicas each, per-replica batch 2
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=4
        )
        slices += _batches(pipelines.train_dataset(examples, batch_size=8, seed=3, input_context=context), 2)
    assert [s.shape for s in slices] == [(2, 1)] * 4
    np.testing.assert_array_equal(np.concatenate(slices), global_batch)
