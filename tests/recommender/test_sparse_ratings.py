"""Sparse ratings batches: the same model, loss, weights and evaluation as dense batches, at a
cost that follows the ratings; refused options, `auto`, replicas, and no `[batch, items]` tensor."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.config.checks import validate
from rawtf_ae.data import pipelines
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.optim import lazy, optimizers
from rawtf_ae.program import restore, train
from rawtf_ae.recommender import batching, ratings, ratings_file, sparse_noise
from rawtf_ae.recommender.synthetic import catalog_ratings, synthetic_ratings
from rawtf_ae.training import distribute, evaluation, state, steps
from tests.conftest import REPO, tiny_ratings_config
from tests.training.test_distribute import _assert_weights_close, _small_ratings, _train_pieces

_SGD = {"train.optimizer": "sgd", "train.momentum": 0.0, "train.learning_rate": 0.05}


@pytest.mark.parametrize(
    "sizes, tied", [((50, 8), True), ((50, 16, 8, 4), True), ((50, 16, 8), [False, True])]
)
def test_sparse_encode_and_decode_at_equal_the_dense_model(sizes, tied):
    rng = np.random.default_rng(0)
    model = TiedAutoencoder(sizes, activation="selu", output_activation="linear", tied=tied, seed=1)
    for bias in model.encoder_biases + model.decoder_biases:
        bias.assign(rng.normal(size=bias.shape))
    dense = ((rng.random((6, 50)) < 0.2) * rng.integers(1, 6, (6, 50))).astype(np.float32)
    dense[3] = dense[5] = 0  # rows without ratings, the last one among them
    x = tf.sparse.from_dense(dense)
    np.testing.assert_allclose(model.encode_sparse(x), model.encode(dense), atol=1e-5)
    rows, columns = x.indices[:, 0].numpy(), x.indices[:, 1].numpy()
    expected = model(dense).numpy()[rows, columns]
    np.testing.assert_allclose(model.decode_at(model.encode_sparse(x), x), expected, atol=1e-5)
    np.testing.assert_allclose(model.reconstruct_sparse(x), model(dense), atol=1e-5)  # serving

    # The tie: the first kernel gets one sparse gradient holding both paths, equal to the
    # dense masked loss's gradient, and only at the rated rows.
    mask = (dense != 0).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        sparse_loss = tf.reduce_sum(tf.square(model.decode_at(model.encode_sparse(x), x) - x.values))
        dense_loss = tf.reduce_sum(mask * tf.square(model(dense) - dense))
    sparse_grads = tape.gradient(sparse_loss, model.trainable_variables)
    dense_grads = tape.gradient(dense_loss, model.trainable_variables)
    assert isinstance(sparse_grads[0], tf.IndexedSlices)
    assert set(sparse_grads[0].indices.numpy()) == set(columns)
    for s, d in zip(sparse_grads, dense_grads):
        np.testing.assert_allclose(tf.convert_to_tensor(s), d, atol=1e-4)


def test_sparse_inputs_of_the_wrong_kind_or_width_are_clear_errors():
    model = TiedAutoencoder((10, 4), seed=0)
    with pytest.raises(TypeError, match="must be a `tf.SparseTensor`"):
        model.encode_sparse(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match=r"dense shape \(2, 11\), expected \[batch_size, 10\]"):
        model.encode_sparse(tf.sparse.from_dense(np.ones((2, 11), np.float32)))
    unordered = tf.SparseTensor([[1, 0], [0, 3]], [1.0, 2.0], [2, 10])  # rows are summed in order
    for encode in (model.encode_sparse, tf.function(model.encode_sparse)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="row-major order"):
            encode(unordered)
    np.testing.assert_allclose(
        model.encode_sparse(tf.sparse.reorder(unordered)),
        model.encode(tf.sparse.to_dense(tf.sparse.reorder(unordered))),
    )


def test_a_sparse_batch_without_ratings_encodes_as_zeros_and_decodes_nothing():
    model = TiedAutoencoder((10, 4), activation="selu", output_activation="linear", seed=0)
    empty = tf.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0]), [3, 10])
    np.testing.assert_allclose(model.encode_sparse(empty), model.encode(tf.zeros([3, 10])), atol=1e-6)
    assert model.decode_at(model.encode_sparse(empty), empty).shape == [0]


def test_sparse_batches_hold_the_rows_ratings():
    matrix = _small_ratings()
    idx = tf.constant([5, 0, 63], tf.int64)
    batch = matrix.sparse_batch(idx)
    dense, mask = matrix.dense_batch(idx)
    np.testing.assert_array_equal(tf.sparse.to_dense(batch), dense)
    assert batch.indices.shape[0] == int(mask.numpy().sum())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"train.code_dropout": 0.5},  # code dropout draws the same noise on both paths
        {"train.clip_norm": 0.05, "model.tied": False},
        {"model.activation": "selu,sigmoid", "train.sparsity_weight": 0.5},
    ],
    ids=lambda o: ",".join(k.split(".")[1] for k in o) or "plain",
)
def test_sparse_and_dense_steps_take_the_same_sgd_steps(overrides):
    config = tiny_ratings_config("unused.csv", **{"model.layer_sizes": (40, 16, 8), **_SGD})
    config.train.dense_refeeding, config.train.code_dropout = 0, 0.0
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    strategy = tf.distribute.get_strategy()
    sparse = _train_pieces(strategy, config, 6, _small_ratings(), sparse=True)
    dense = _train_pieces(strategy, config, 6, _small_ratings())
    for a, b in zip(sparse.trainable_variables, dense.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"train.optimizer": "lazy_adam"},
        {"train.optimizer": "lazy_adagrad", "train.code_dropout": 0.5, "train.clip_norm": 0.1},
        # Masking noise drawn per (step, example, item): the same on any number of replicas.
        {"train.corruption": "masking", "train.corruption_level": 0.3},
    ],
    ids=lambda o: ",".join(str(v) for v in o.values()),
)
def test_sparse_step_on_two_mirrored_replicas_matches_one_device(overrides):
    config = tiny_ratings_config("unused.csv", **{"model.layer_sizes": (40, 16, 8), "train.batch_size": 32})
    config.train.dense_refeeding, config.train.code_dropout = 0, 0.0
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = distribute.mirrored_strategy(devices)
    two = _train_pieces(mirrored, config, 6, _small_ratings(), sparse=True)
    one = _train_pieces(tf.distribute.get_strategy(), config, 6, _small_ratings(), sparse=True)
    _assert_weights_close(
        [v.numpy() for v in two.trainable_variables], [v.numpy() for v in one.trainable_variables]
    )


def test_clipping_sums_a_sparse_gradients_rows_once_and_clips_the_sums():
    model = TiedAutoencoder((6, 3), seed=0)
    optimizer = lazy.LazyAdam(0.01)
    optimizer.build(model.trainable_variables)
    objective = steps.Objective(model, optimizer, steps.StepOptions("masked_mse", 4, clip_norm=0.5))
    rng = np.random.default_rng(0)
    sparse = tf.IndexedSlices(
        tf.constant(rng.normal(size=(5, 3)), tf.float32), tf.constant([4, 1, 4, 0, 1]), [6, 3]
    )
    dense = tf.constant(rng.normal(size=(3,)), tf.float32)
    clipped_sparse, clipped_dense = objective.clipped([sparse, dense])
    # Independently: the dense gradient the slices stand for, clipped by its global norm.
    as_dense = [tf.convert_to_tensor(sparse).numpy(), dense.numpy()]
    scale = 0.5 / np.sqrt(sum((g**2).sum() for g in as_dense))
    assert scale < 1
    assert isinstance(clipped_sparse, lazy.UniqueRows)
    assert sorted(clipped_sparse.indices.numpy()) == [0, 1, 4]  # each row once: summed
    np.testing.assert_allclose(tf.convert_to_tensor(clipped_sparse), scale * as_dense[0], rtol=1e-6)
    np.testing.assert_allclose(clipped_dense, scale * as_dense[1], rtol=1e-6)

    # In a clipped sparse step on one device the rows are summed once (one `Unique` each), not again
    # by the optimizer; on two replicas the shares are padded, so the optimizer sums again.
    config = tiny_ratings_config("unused.csv", **{"model.layer_sizes": (40, 8), "train.clip_norm": 0.1})
    config.train.optimizer, config.train.dense_refeeding, config.train.jit_compile = "lazy_adam", 0, False
    trained = state.create_train_state(config)
    step = tf.function(
        steps.make_step(trained.model, trained.optimizer, steps.StepOptions.from_config(config))
    )
    batch = next(iter(pipelines.train_dataset(_small_ratings(), 8, seed=0, sparse=True)))
    graph_def = step.get_concrete_function(batch).graph.as_graph_def()
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    summed = [n.input[0] for n in nodes if n.op == "Unique"]
    # The kernel's and the decoder bias's (read at the rated items) gradients, each summed once.
    assert len(summed) == len(set(summed)) == 2


def test_masking_noise_is_uniform_per_entry_and_independent_of_the_batch():
    seed = tf.constant([3, 7], tf.int64)
    rows = tf.range(200, dtype=tf.int64)[:, None] * tf.ones([1, 500], tf.int64)
    columns = tf.range(500, dtype=tf.int64)[None, :] * tf.ones([200, 1], tf.int64)
    u = sparse_noise.entry_uniform(seed, tf.reshape(rows, [-1]), tf.reshape(columns, [-1])).numpy()
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs((u < 0.3).mean() - 0.3) < 0.005
    assert (
        abs(np.corrcoef(u.reshape(200, 500)[:, :-1].ravel(), u.reshape(200, 500)[:, 1:].ravel())[0, 1]) < 0.01
    )
    some = sparse_noise.entry_uniform(seed, tf.constant([7, 150], tf.int64), tf.constant([0, 499], tf.int64))
    np.testing.assert_array_equal(some, [u[7 * 500], u[150 * 500 + 499]])
    other_step = sparse_noise.entry_uniform(tf.constant([3, 8], tf.int64), rows[0], columns[0]).numpy()
    assert not np.allclose(other_step, u[:500])


def test_sparse_evaluation_equals_dense_evaluation(tmp_path):
    path = ratings_file.write_ratings(str(tmp_path / "r.csv"), synthetic_ratings(num_users=60, num_items=40))
    splits = ratings.build_splits(ratings_file.read_ratings(path))
    model = TiedAutoencoder((40, 16), activation="selu", output_activation="linear", seed=0)
    evaluate = evaluation.make_evaluate(model, "masked_mse")
    dense = evaluate(pipelines.eval_dataset(splits, 7))
    sparse = evaluate(pipelines.eval_dataset(splits, 7, sparse=True))
    assert sparse == pytest.approx(dense, rel=1e-5)


def test_options_that_need_dense_batches_are_refused_or_make_auto_dense(tmp_path):
    config = tiny_ratings_config("r.csv", **{"data.ratings_batches": "sparse", "train.weight_decay": 0.01})
    with pytest.raises(ValueError, match="ratings_batches='sparse'` does not work with train.weight_decay"):
        validate(config)
    config.data.ratings_batches = "sideways"
    with pytest.raises(ValueError, match="`data.ratings_batches` is 'sideways'; expected one of"):
        validate(config)
    wide = ratings.RatingMatrix.from_triples(
        np.arange(10), np.arange(10) * 100, np.ones(10), num_rows=10, width=1000
    )
    config.data.ratings_batches = "auto"
    assert batching.choose(config, wide) == "dense"  # dense re-feeding and decay: dense
    config.train.weight_decay, config.train.dense_refeeding = 0.0, 0
    assert batching.choose(config, wide) == "sparse"
    assert batching.choose(config, _small_ratings()) == "dense"  # 40 items


def test_auto_is_decided_once_per_run(tmp_path, monkeypatch):
    # 3 ratings per user over 900 items: `auto` takes sparse batches, and says so once.
    triples = [(u, 3 * u + k, 1.0 + k) for u in range(300) for k in range(3)]
    path = ratings_file.write_ratings(str(tmp_path / "r.csv"), triples)
    overrides = {"data.ratings_batches": "auto", "train.dense_refeeding": 0, "train.optimizer": "lazy_adam"}
    logged = []
    with monkeypatch.context() as patch:
        # absl's logging, which program.train and recommender.batching both log through.
        patch.setattr(train.logging, "info", lambda message, *args: logged.append(message % args))
        train.train_and_evaluate(tiny_ratings_config(path, **overrides), str(tmp_path / "run"))
    assert sum(line.startswith("data.ratings_batches='auto': sparse") for line in logged) == 1
    assert sum("the first kernel is read by rows" in line for line in logged) == 1


@pytest.mark.parametrize("wide", [True, False])
def test_auto_optimizer_and_refeeding_follow_the_batches_and_are_saved(tmp_path, monkeypatch, wide):
    # The recipes' train.optimizer / dense_refeeding = "auto": lazy_adam and no re-feeding on
    # sparse batches (3 ratings per user over 900 items), adam and one re-feeding step on dense
    # ones (the same users over 30 items), each logged once and written to config.json as run.
    width = 900 if wide else 30
    triples = [(u, (3 * u + k) % width, 1.0 + k) for u in range(300) for k in range(3)]
    path = ratings_file.write_ratings(str(tmp_path / "r.csv"), triples)
    auto = {"train.optimizer": "auto", "train.dense_refeeding": "auto", "train.num_steps": 6}
    logged = []
    with monkeypatch.context() as patch:
        patch.setattr(train.logging, "info", lambda message, *args: logged.append(message % args))
        metrics = train.train_and_evaluate(tiny_ratings_config(path, **auto), str(tmp_path / "auto"))
    optimizer, refeeding = ("lazy_adam", 0) if wide else ("adam", 1)
    assert sum(line.startswith(f"train.optimizer='auto': {optimizer} (") for line in logged) == 1
    assert sum(line.startswith(f"train.dense_refeeding='auto': {refeeding} (") for line in logged) == 1
    saved = json.loads((tmp_path / "auto" / "config.json").read_text())["train"]
    assert (saved["optimizer"], saved["dense_refeeding"]) == (optimizer, refeeding)
    # The same updates as the resolved values set explicitly.
    explicit = {**auto, "train.optimizer": optimizer, "train.dense_refeeding": refeeding}
    again = train.train_and_evaluate(tiny_ratings_config(path, **explicit), str(tmp_path / "explicit"))
    assert again["val_rmse"] == metrics["val_rmse"]
    # Where nothing resolves them, the library says what to call.
    config = tiny_ratings_config(path, **auto)
    with pytest.raises(ValueError, match=r"train.optimizer='auto'` depends on the batches: resolve it first"):
        optimizers.create_optimizer(config.train)
    with pytest.raises(ValueError, match=r"train.dense_refeeding='auto'` depends on the batches"):
        steps.StepOptions.from_config(config)
    # An explicit re-feeding count keeps dense batches on the wide file; a bad one is named.
    rows, columns, values = np.array(triples).T
    matrix = ratings.RatingMatrix.from_triples(rows.astype(int), columns.astype(int), values, 300, width)
    assert batching.choose(tiny_ratings_config(path), matrix) == "dense"
    with pytest.raises(
        ValueError, match=r"`train.dense_refeeding` must be a non-negative integer, got 'sometimes'"
    ):
        validate(tiny_ratings_config(path, **{"train.dense_refeeding": "sometimes"}))


def test_train_py_trains_resumes_and_evaluates_on_sparse_batches(tmp_path, monkeypatch):
    path = ratings_file.write_ratings(
        str(tmp_path / "r.csv"), synthetic_ratings(num_users=80, num_items=30, density=0.2)
    )
    overrides = {"data.ratings_batches": "sparse", "train.dense_refeeding": 0, "train.optimizer": "lazy_adam"}
    straight = str(tmp_path / "straight")
    logged = []
    with monkeypatch.context() as patch:  # absl's log lines, whatever handlers earlier tests set
        patch.setattr(train.logging, "info", lambda message, *args: logged.append(message % args))
        expected = train.train_and_evaluate(tiny_ratings_config(path, **overrides), straight)
    # jit_compile="auto": the sparse step is compiled (its ratings padded), and the log says so:
    assert "strategy: default, 1 replica(s), float32, XLA" in logged
    assert any(line.startswith("sparse ratings batches:") and "XLA compiles" in line for line in logged)
    # Each checkpoint says its size and how long it took to write (a million items: 6.5 GB).
    assert any(re.fullmatch(r"saved .*ckpt-\d+ \(\d+\.\d [MG]B in \d+\.\d s\)", line) for line in logged)
    resumed = str(tmp_path / "resumed")
    train.train_and_evaluate(tiny_ratings_config(path, **overrides, **{"train.num_steps": 10}), resumed)
    metrics = train.train_and_evaluate(tiny_ratings_config(path, **overrides), resumed)
    assert metrics["val_rmse"] == pytest.approx(expected["val_rmse"], rel=1e-5)
    # Keras Adam gets dense gradients from the sparse step: the very updates of dense batches.
    runs = {
        batches: train.train_and_evaluate(
            tiny_ratings_config(
                path, **{**overrides, "data.ratings_batches": batches, "train.optimizer": "adam"}
            ),
            str(tmp_path / batches),
        )
        for batches in ("sparse", "dense")
    }
    assert runs["sparse"]["val_rmse"] == pytest.approx(runs["dense"]["val_rmse"], rel=1e-5)

    # Restoring for eval/export/encode makes no optimizer (its slots: 4 GiB at a million items).
    def no_optimizer(*args, **kwargs):
        raise AssertionError("restore_model made an optimizer")

    monkeypatch.setattr(optimizers, "create_optimizer", no_optimizer)
    model, _, _ = restore.restore_model(tiny_ratings_config(path, **overrides), resumed)
    assert model.input_width == 30


_NO_DENSE_BATCH = """
import numpy as np, tensorflow as tf
from rawtf_ae import data, loops, ratings
from rawtf_ae.optim.lazy import LazyAdam
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.training.steps import make_train_step
width, users = 1 << 23, 64  # a dense batch of 32 rows: 32 x 8.4M x 4 bytes = 1 GiB, twice (mask)
rng = np.random.default_rng(0)
rows = np.repeat(np.arange(users), 50)
columns, values = rng.integers(0, width, rows.size), rng.random(rows.size)
matrix = ratings.RatingMatrix.from_triples(rows, columns, values, users, width)
model = TiedAutoencoder((width, 4), activation="selu", output_activation="linear", seed=0)
optimizer = LazyAdam(1e-3)
optimizer.build(model.trainable_variables)
step = make_train_step(model, optimizer, "masked_mse", 32)
counter = tf.Variable(0, dtype=tf.int64)
loop = loops.make_train_loop(step, counter)
iterator = iter(data.train_dataset(matrix, 32, seed=0, sparse=True))
def peak():  # VmHWM: ru_maxrss would count the parent's memory at the fork
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
before = peak()
loss = float(loop(iterator, tf.constant(4, tf.int64)))
print(np.isfinite(loss), before, peak() - before)
"""


def _printed_by(script: str) -> list:
    """The words `script` prints, run in a fresh Python (its own peak memory, VmHWM)."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_no_dense_batch_exists_on_the_sparse_path():
    # One dense [32, 8.4M] batch (and its mask) would take 2 GiB; the sparse step takes a
    # sliver of one, beyond the model and optimizer built before the measurement.
    finite, _, growth = _printed_by(_NO_DENSE_BATCH)
    assert finite == "True" and int(growth) < 256 * 2**20, int(growth) / 2**20


_NO_KERNEL_COPY = """
import os, tempfile
import numpy as np, tensorflow as tf
from rawtf_ae import checkpoints, export
from rawtf_ae.optim.lazy import LazyAdam
from rawtf_ae.models.dense import TiedAutoencoder
width = 1 << 22  # a first kernel of 4.2M x 32 floats: 512 MiB
model = TiedAutoencoder((width, 32, 8), activation="selu", output_activation="linear", seed=0)
optimizer = LazyAdam(1e-3)
optimizer.build(model.trainable_variables)
x = tf.SparseTensor([[0, 5], [0, 70_000], [1, 3_000_000]], [4.0, 2.0, 5.0], [2, width])
with tf.GradientTape() as tape:  # a sparse training step: the kernel is read and updated by rows
    loss = tf.reduce_sum(model.decode_at(model.encode_sparse(x), x))
optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
before = peak()
predictions = model.reconstruct_sparse(x)  # one [2, width] output: 32 MiB
finite = checkpoints.all_finite(model.trainable_variables)
with tempfile.TemporaryDirectory() as folder:
    export.save_weights(model, os.path.join(folder, "weights.npz"))
served = peak() - before
expected = model.decode(model.encode_sparse(x))  # the plain reads: a copy of the kernel
print(finite, served, peak() - before - served, float(tf.reduce_max(tf.abs(predictions - expected))))
"""


def test_recommending_after_sparse_training_reads_the_kernel_without_copying_it():
    # A variable read or updated by rows is in TensorFlow's copy-on-read mode: a plain read
    # copies it whole. Serving predictions, the checkpoint's finite check and the weights
    # export must not (at a million items that copy is 2 GiB and took two thirds of one
    # user's top-K).
    finite, served, plain, difference = _printed_by(_NO_KERNEL_COPY)
    assert finite == "True" and float(difference) < 1e-5
    assert int(served) < 128 * 2**20, int(served) / 2**20
    if int(plain) < 400 * 2**20:  # what the test guards against, in TensorFlow 2.21
        pytest.skip("This TensorFlow no longer copies a variable read by rows on plain reads.")


def test_catalog_ratings_draw_distinct_items_per_user_with_power_law_popularity():
    triples = catalog_ratings(num_users=300, num_items=100_000, ratings_per_user=40, popularity_exponent=1.0)
    users, items = triples[:, 0].astype(np.int64), triples[:, 1].astype(np.int64)
    assert np.all(np.bincount(users, minlength=300) == 40)
    assert len(np.unique(users * 100_000 + items)) == len(triples)  # no pair twice
    assert set(np.unique(triples[:, 2] * 2)) <= set(range(2, 11))  # half stars 1..5
    counts = np.bincount(items, minlength=100_000)
    assert counts[:10].sum() > 20 * counts[-10_000:].sum() / 1000  # the head is far more popular
    uniform = catalog_ratings(300, 100_000, 40, popularity_exponent=0.0)
    assert np.bincount(uniform[:, 1].astype(np.int64), minlength=100_000)[:10].sum() < 5
    with pytest.raises(ValueError, match="ratings_per_user <= items"):
        catalog_ratings(10, 5, 6)


def test_the_synthetic_ratings_script_names_bad_flags_and_paths_in_one_line(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "rawtf_ae.recommender.synthetic", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            timeout=120,
        )

    bad = run("out.csv", "--items=50", "--ratings_per_user=60")
    assert bad.returncode != 0 and "ratings_per_user <= items" in bad.stderr.splitlines()[-1]
    missing = run("nowhere/out.csv", "--ratings_per_user=5")
    assert (
        missing.stderr.splitlines()[-1]
        == "synthetic_ratings: cannot write nowhere/out.csv: No such file or directory"
    )
    good = run("out.csv", "--users=20", "--items=1000", "--ratings_per_user=7")
    assert good.returncode == 0 and "wrote 140 ratings to out.csv" in good.stdout
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 141  # and the header
