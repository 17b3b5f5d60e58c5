"""Row-wise Adam and Adagrad: a NumPy reference, untouched rows, dense equivalence, exact resume,
and two mirrored replicas' sparse gradients."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.optim import lazy, optimizers
from rawtf_ae.training import distribute, state, steps
from tests.conftest import tiny_config

SHAPE = (7, 3)


def _sparse_gradients(steps, seed=0):
    """Per step `(indices, values)`, with repeated indices and rows left untouched."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        indices = np.array([6, 1, 4, 1]) if t % 2 == 0 else np.array([2, 0, 2])
        out.append((indices, rng.normal(size=(len(indices), SHAPE[1])).astype(np.float32)))
    return out


def _apply(optimizer, variable, indices, values):
    gradient = tf.IndexedSlices(
        tf.constant(values), tf.constant(indices, tf.int64), tf.constant(SHAPE, tf.int64)
    )
    optimizer.apply_gradients([(gradient, variable)])


def _numpy_lazy_adam(w, gradients, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    w, m, v = w.astype(np.float64), np.zeros(w.shape), np.zeros(w.shape)
    for t, (indices, values) in enumerate(gradients, start=1):
        g = np.zeros(w.shape)
        np.add.at(g, indices, values)  # repeated indices add up
        rows = np.unique(indices)
        m[rows] = beta_1 * m[rows] + (1 - beta_1) * g[rows]
        v[rows] = beta_2 * v[rows] + (1 - beta_2) * g[rows] ** 2
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        w[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + epsilon)
    return w


def _numpy_adagrad(w, gradients, lr, initial=0.1, epsilon=1e-7):
    w, accumulator = w.astype(np.float64), np.full(w.shape, initial)
    for indices, values in gradients:
        g = np.zeros(w.shape)
        np.add.at(g, indices, values)
        accumulator += g**2
        w -= lr * g / (np.sqrt(accumulator) + epsilon)
    return w


@pytest.mark.parametrize("index_dtype", [tf.int32, tf.int64])
@pytest.mark.parametrize("width", [None, 3])
def test_deduplicated_sums_repeated_rows_into_increasing_distinct_rows(index_dtype, width):
    rng = np.random.default_rng(4)
    indices = rng.integers(0, 40, size=200)  # unsorted, most rows repeated, some 9 times
    shape = (200,) if width is None else (200, width)
    values = rng.normal(size=shape).astype(np.float32)
    dense_shape = (40,) + shape[1:]
    gradient = tf.IndexedSlices(tf.constant(values), tf.constant(indices, index_dtype), dense_shape)
    unique = lazy.deduplicated(gradient)
    rows = unique.indices.numpy()
    assert isinstance(unique, lazy.UniqueRows) and unique.indices.dtype == index_dtype
    np.testing.assert_array_equal(rows, np.unique(indices))  # increasing, each once
    expected = np.zeros(dense_shape, np.float64)
    np.add.at(expected, indices, values)
    np.testing.assert_allclose(unique.values.numpy(), expected[rows], rtol=1e-5, atol=1e-5)
    assert lazy.deduplicated(unique) is unique


@pytest.mark.parametrize("name", ["lazy_adam", "lazy_adagrad"])
def test_sparse_updates_match_a_numpy_reference(name):
    w0 = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    gradients = _sparse_gradients(6)
    variable = tf.Variable(w0)
    optimizer = lazy.LazyAdam(0.05) if name == "lazy_adam" else lazy.LazyAdagrad(0.05)
    optimizer.build([variable])
    for indices, values in gradients:
        _apply(optimizer, variable, indices, values)
    reference = (_numpy_lazy_adam if name == "lazy_adam" else _numpy_adagrad)(w0, gradients, 0.05)
    np.testing.assert_allclose(variable.numpy(), reference, rtol=1e-5, atol=1e-6)
    # Row 3 and 5 are never touched: they keep their values, and so do their slots.
    np.testing.assert_array_equal(variable.numpy()[[3, 5]], w0[[3, 5]])
    assert not np.allclose(variable.numpy()[[0, 1, 2, 4, 6]], w0[[0, 1, 2, 4, 6]])


@pytest.mark.parametrize("name", ["lazy_adam", "lazy_adagrad"])
def test_a_vector_built_inside_a_tf_function_with_an_empty_step_matches_the_reference(name):
    # A decoder bias read by rows gets rank-1 sparse gradients; a research loop may build the
    # optimizer on its first apply inside its own tf.function; a batch may touch no row.
    w0 = np.random.default_rng(2).normal(size=SHAPE[0]).astype(np.float32)
    gradients = [(i, v[:, 0]) for i, v in _sparse_gradients(4)]
    gradients.insert(2, (np.zeros(0, np.int64), np.zeros(0, np.float32)))
    variable = tf.Variable(w0)
    optimizer = lazy.LazyAdam(0.05) if name == "lazy_adam" else lazy.LazyAdagrad(0.05)

    @tf.function
    def apply(indices, values):
        gradient = tf.IndexedSlices(values, indices, tf.constant([SHAPE[0]], tf.int64))
        optimizer.apply_gradients([(gradient, variable)])

    for indices, values in gradients:
        apply(tf.constant(indices, tf.int64), tf.constant(values))
    reference = (_numpy_lazy_adam if name == "lazy_adam" else _numpy_adagrad)(w0, gradients, 0.05)
    np.testing.assert_allclose(variable.numpy(), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_function", [False, True])
def test_lazy_adam_without_scratch_rows_is_bitwise_the_fused_update(in_function):
    # Under ParameterServerStrategy LazyAdam has no scratch variables (`_rows` None) and
    # updates the rows by elementwise ops: the same bits as the fused kernel, so a
    # synchronous parameter-server run can match one device exactly.
    rng = np.random.default_rng(5)
    w0 = rng.normal(size=(50, 9)).astype(np.float32)
    gradients = [(rng.integers(0, 50, 12), rng.normal(size=(12, 9)).astype(np.float32)) for _ in range(5)]
    results = []
    for scratch in (True, False):
        variable = tf.Variable(w0)
        optimizer = lazy.LazyAdam(0.01)
        optimizer.build([variable])
        if not scratch:
            optimizer._rows = [None]

        def apply(indices, values, optimizer=optimizer, variable=variable):
            optimizer.apply_gradients([(tf.IndexedSlices(values, indices, (50, 9)), variable)])

        apply = tf.function(apply) if in_function else apply
        for indices, values in gradients:
            apply(tf.constant(indices, tf.int64), tf.constant(values))
        slots = [optimizer._momentums[0], optimizer._velocities[0]]
        results.append(np.concatenate([variable.numpy()] + [s.numpy() for s in slots]))
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0][:50], w0)


def test_lazy_adam_differs_from_dense_adam_only_on_untouched_rows():
    """Dense Adam keeps moving a row its momentum remembers; lazy Adam leaves it alone."""
    w0 = np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)
    lazy_w, dense = tf.Variable(w0), tf.Variable(w0)
    lazy_optimizer, dense_optimizer = lazy.LazyAdam(0.05), tf.keras.optimizers.Adam(0.05)
    for indices, values in _sparse_gradients(2):
        _apply(lazy_optimizer, lazy_w, indices, values)
        g = np.zeros(SHAPE, np.float32)
        np.add.at(g, indices, values)
        dense_optimizer.apply_gradients([(tf.constant(g), dense)])
    # Step 1 touched rows 1, 4, 6 and step 2 rows 0, 2: at step 2 dense Adam moves 1, 4, 6 again.
    np.testing.assert_allclose(lazy_w.numpy()[[0, 2]], dense.numpy()[[0, 2]], rtol=1e-5, atol=1e-6)
    assert np.abs(lazy_w.numpy()[[1, 4, 6]] - dense.numpy()[[1, 4, 6]]).min() > 1e-3


def test_dense_gradients_get_the_dense_update():
    w0 = np.random.default_rng(3).normal(size=SHAPE).astype(np.float32)
    gradients = [np.random.default_rng(t).normal(size=SHAPE).astype(np.float32) for t in range(4)]
    lazy_w, keras_adam, adagrad = tf.Variable(w0), tf.Variable(w0), tf.Variable(w0)
    optimizers_ = [
        lazy.LazyAdam(0.05),
        tf.keras.optimizers.Adam(0.05),
        lazy.LazyAdagrad(0.05),
    ]
    for g in gradients:
        for optimizer, variable in zip(optimizers_, (lazy_w, keras_adam, adagrad)):
            optimizer.apply_gradients([(tf.constant(g), variable)])
    np.testing.assert_allclose(lazy_w.numpy(), keras_adam.numpy(), rtol=1e-5, atol=1e-5)
    reference = _numpy_adagrad(w0, [(np.arange(SHAPE[0]), g) for g in gradients], 0.05)
    np.testing.assert_allclose(adagrad.numpy(), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lazy_adam", "lazy_adagrad"])
def test_a_checkpoint_resumes_bit_exactly(tmp_path, name):
    config = tiny_config(**{"train.optimizer": name, "train.learning_rate": 0.05})
    w0 = np.random.default_rng(4).normal(size=SHAPE).astype(np.float32)
    gradients = _sparse_gradients(8)

    def fresh():
        variable = tf.Variable(w0)
        optimizer = optimizers.create_optimizer(config.train)
        optimizer.build([variable])
        return variable, optimizer, tf.train.Checkpoint(variable=variable, optimizer=optimizer)

    variable, optimizer, checkpoint = fresh()
    for indices, values in gradients[:4]:
        _apply(optimizer, variable, indices, values)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    for indices, values in gradients[4:]:
        _apply(optimizer, variable, indices, values)
    resumed, resumed_optimizer, resumed_checkpoint = fresh()
    resumed_checkpoint.read(path).assert_consumed()
    for indices, values in gradients[4:]:
        _apply(resumed_optimizer, resumed, indices, values)
    np.testing.assert_array_equal(resumed.numpy(), variable.numpy())
    assert int(resumed_optimizer.iterations) == 8


@pytest.mark.parametrize("cls", [lazy.LazyAdam, lazy.LazyAdagrad])
def test_two_mirrored_replicas_sparse_gradients_match_one_device(cls):
    """Each replica's gradient is sparse (a gather); the strategy gathers them, rows repeated."""
    table0 = np.random.default_rng(5).normal(size=(10, 4)).astype(np.float32)
    ids = tf.constant([[1, 3, 3], [3, 8, 0]], tf.int64)  # replica 0's rows, replica 1's rows

    def loss_of(table, rows):
        return tf.reduce_sum(tf.square(tf.gather(table, rows) - 1.0)) / 6.0

    single = tf.Variable(table0)
    single_optimizer = cls(0.1)
    single_optimizer.build([single])
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = loss_of(single, tf.reshape(ids, [-1]))
        gradient = tape.gradient(loss, single)
        assert isinstance(gradient, tf.IndexedSlices)
        single_optimizer.apply_gradients([(gradient, single)])

    strategy = distribute.mirrored_strategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = tf.Variable(table0)
        mirrored_optimizer = cls(0.1)
        mirrored_optimizer.build([mirrored])

    @tf.function
    def step():
        def replica_step():
            rows = tf.gather(ids, tf.distribute.get_replica_context().replica_id_in_sync_group)
            with tf.GradientTape() as tape:
                loss = loss_of(mirrored, rows)
            mirrored_optimizer.apply_gradients([(tape.gradient(loss, mirrored), mirrored)])

        strategy.run(replica_step)

    for _ in range(3):
        step()
    for component in strategy.experimental_local_results(mirrored):
        np.testing.assert_allclose(component.numpy(), single.numpy(), rtol=1e-6, atol=1e-7)
    untouched = [2, 4, 5, 6, 7, 9]
    np.testing.assert_array_equal(single.numpy()[untouched], table0[untouched])


def test_the_trainer_with_lazy_adam_on_dense_batches_trains_as_adam():
    """Dense gradients get Adam's update: `train.optimizer=lazy_adam` changes nothing there."""
    weights = {}
    for name in ("adam", "lazy_adam"):
        config = tiny_config(**{"train.optimizer": name, "train.jit_compile": False})
        trained = state.create_train_state(config)
        step = tf.function(steps.make_train_step(trained.model, trained.optimizer, "bce", 32))
        for s in range(3):
            step(tf.random.stateless_uniform([32, 784], seed=[s, 7]))
        weights[name] = [v.numpy() for v in trained.model.trainable_variables]
    for adam, lazy_weights in zip(weights["adam"], weights["lazy_adam"]):
        np.testing.assert_allclose(lazy_weights, adam, rtol=1e-5, atol=1e-7)
