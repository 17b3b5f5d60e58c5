"""The XLA-compiled sparse step: padded to a few sizes, the uncompiled step's updates, the
padding nowhere in the gradients or the optimizer's rows."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.data import pipelines
from rawtf_ae.training import distribute, sparse_compiled, state, steps
from tests.conftest import tiny_ratings_config
from tests.training.test_distribute import _assert_weights_close, _small_ratings, _train_pieces


def test_padded_counts_are_few_sizes_a_little_larger():
    padded = lambda n: int(sparse_compiled.padded_count(tf.constant(n)))  # noqa: E731
    counts = (0, 1, 1024, 1025, 8192, 8193, 12_800, 2**20 + 1)
    expected = (1024, 1024, 1024, 2048, 8192, 9216, 13_312, 2**20 + 2**17)
    assert tuple(padded(n) for n in counts) == expected
    counts = np.arange(8193, 16_385, 7)  # one doubling
    sizes = np.array([padded(n) for n in counts])
    assert np.all(sizes >= counts) and np.all(sizes <= counts * 1.125) and len(set(sizes)) == 8


def _ratings_config(**overrides):
    config = tiny_ratings_config("unused.csv", **{"model.layer_sizes": (40, 16, 8), **overrides})
    config.train.dense_refeeding, config.train.optimizer = 0, "lazy_adam"
    config.train.code_dropout = overrides.get("train.code_dropout", 0.0)
    return config


def _assert_compiled_takes_uncompiled_steps(config, steps_, matrix, strategy=None):
    """`steps_` compiled steps under `strategy` (default: one device) = as many uncompiled on one device."""
    one = tf.distribute.get_strategy()
    compiled = _train_pieces(strategy or one, config, steps_, matrix, sparse=True, jit_compile=True)
    uncompiled = _train_pieces(one, config, steps_, matrix, sparse=True, jit_compile=False)
    _assert_weights_close(
        [v.numpy() for v in compiled.trainable_variables], [v.numpy() for v in uncompiled.trainable_variables]
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"model.tied": False, "train.code_dropout": 0.5},
        {"train.corruption": "masking", "train.corruption_level": 0.3, "train.clip_norm": 0.05},
        {"model.activation": "selu,sigmoid", "train.sparsity_weight": 0.5},
    ],
    ids=lambda o: ",".join(k.split(".")[1] for k in o) or "plain",
)
def test_the_compiled_sparse_step_takes_the_uncompiled_steps(overrides):
    _assert_compiled_takes_uncompiled_steps(_ratings_config(**overrides), 8, _small_ratings())


def test_batches_past_8192_ratings_take_several_sizes_and_the_uncompiled_steps():
    # About 290 ratings per user, 32 users a batch: 9,081-9,347 entries, across the 9,216 boundary.
    matrix = _small_ratings(num_users=128, num_items=1830)
    config = _ratings_config(**{"model.layer_sizes": (1830, 16, 8), "train.batch_size": 32})
    counts = [
        len(b["inputs"].values) for b in pipelines.train_dataset(matrix, 32, seed=0, sparse=True).take(6)
    ]
    assert min(counts) > 8192 and len({int(sparse_compiled.padded_count(c)) for c in counts}) >= 2, counts
    _assert_compiled_takes_uncompiled_steps(config, 6, matrix)


def test_two_mirrored_replicas_compiled_take_one_devices_uncompiled_steps():
    config = _ratings_config(
        **{"train.batch_size": 32, "train.corruption": "masking", "train.corruption_level": 0.2}
    )
    mirrored = distribute.mirrored_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
    assert mirrored.num_replicas_in_sync == 2
    _assert_compiled_takes_uncompiled_steps(config, 6, _small_ratings(), mirrored)


@pytest.mark.parametrize("tied", [True, False])
def test_the_padding_reaches_neither_the_gradients_nor_the_optimizers_rows(tied):
    # Every batch is padded (the smallest size is 1,024 entries) with entries at column 0:
    # the sparse gradients the optimizer gets hold the batch's own entries alone.
    matrix = _small_ratings()
    config = _ratings_config(**{"model.tied": tied})
    trained = state.create_train_state(config)
    objective = steps.Objective(trained.model, trained.optimizer, steps.StepOptions.from_config(config))
    gradients = tf.function(sparse_compiled.make_gradients(objective, trained.model.trainable_variables))
    batch = next(iter(pipelines.train_dataset(matrix, 16, seed=0, sparse=True)))
    assert 0 < len(batch["inputs"].values) < 1024
    loss, grads, _ = gradients(batch, objective.normalizer(batch))
    sparse = [g for g in grads if isinstance(g, tf.IndexedSlices)]
    assert len(sparse) == (2 if tied else 3)  # the first kernel's rows (both, untied), the output bias's
    for g in sparse:
        np.testing.assert_array_equal(g.indices.numpy(), batch["inputs"].indices[:, 1].numpy())
    # The loss and every gradient are the uncompiled step's.
    with tf.GradientTape() as tape:
        inputs, targets, _ = steps.unpack(batch)
        expected = objective.reconstruction(inputs, targets, None, objective.normalizer(batch))[0]
    expected_grads = tape.gradient(expected, trained.model.trainable_variables)
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-5)
    for g, e in zip(grads, expected_grads):
        np.testing.assert_allclose(tf.convert_to_tensor(g), tf.convert_to_tensor(e), atol=1e-6)


def test_weight_decay_on_the_compiled_sparse_step_is_refused_not_dropped():
    config = _ratings_config()
    trained = state.create_train_state(config)
    options = steps.StepOptions.from_config(config, weight_decay=1e-3)
    objective = steps.Objective(trained.model, trained.optimizer, options)
    gradients = sparse_compiled.make_gradients(objective, trained.model.trainable_variables)
    batch = next(iter(pipelines.train_dataset(_small_ratings(), 16, seed=0, sparse=True)))
    with pytest.raises(ValueError, match="weight_decay=0.001 needs the whole first kernel"):
        gradients(batch, objective.normalizer(batch))
