"""The sampled softmax of sparse implicit-feedback batches: the draw, the accidental hits and the
loss against independent computations, the full softmax as the draws grow, rows read and moved,
XLA = no XLA, two mirrored replicas = one device, sparse evaluation = dense, and train.py."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.config import checks
from rawtf_ae.data import sources
from rawtf_ae.models import architectures
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.optim import lazy
from rawtf_ae.program import modes, train
from rawtf_ae.training import distribute, evaluation, losses, sampled_softmax, state
from rawtf_ae.training.steps import Objective, StepOptions, make_step
from tests.conftest import tiny_config
from tests.training.test_distribute import _assert_weights_close, _small_ratings, _train_pieces
from tests.training.test_multinomial import _MULT_DAE, _implicit_file, _interactions


def _sparse(x):
    return tf.sparse.from_dense(tf.constant(x))


def test_draws_follow_the_proposal_in_increasing_order():
    counts = np.array([0, 1, 3, 7, 15, 31, 63, 127])
    proposal = sampled_softmax.Proposal(8, 40_000, power=1.0, item_counts=counts)
    ids, log_expected = proposal.draw(tf.constant([3, 4]))
    ids = ids.numpy()
    q = (counts + 1) / (counts + 1).sum()
    assert np.all(np.diff(ids) >= 0) and ids.min() >= 0 and ids.max() <= 7
    assert np.abs(np.bincount(ids, minlength=8) / 40_000 - q).max() < 0.01
    np.testing.assert_allclose(log_expected.numpy(), np.log(40_000 * q[ids]), rtol=1e-5)
    uniform = sampled_softmax.Proposal(8, 40_000)  # power 0 needs no counts
    assert (
        np.abs(np.bincount(uniform.draw(tf.constant([3, 4]))[0].numpy(), minlength=8) / 40_000 - 1 / 8).max()
        < 0.01
    )
    with pytest.raises(ValueError, match="needs the items' training counts"):
        sampled_softmax.Proposal(8, 10, power=0.75)
    with pytest.raises(ValueError, match="`train.sampled_softmax` must be a positive sample count"):
        sampled_softmax.Proposal(8, 0)


def test_accidental_hits_mark_exactly_the_users_own_drawn_items():
    x, _ = _interactions(6, 12, seed=3, density=0.3)
    ids = tf.constant([0, 0, 2, 5, 5, 5, 7, 11], tf.int64)
    real = tf.sequence_mask(int(x.sum()) - 2, int(x.sum()))  # the last two entries: padding
    hits = sampled_softmax.accidental_hits(_sparse(x), ids, real).numpy()
    rows, columns = np.nonzero(x)
    owned = np.zeros_like(x, bool)
    owned[rows[:-2], columns[:-2]] = True
    np.testing.assert_array_equal(hits, owned[:, ids.numpy()])


def _objective(model, samples, power=0.0, counts=None):
    options = StepOptions(
        loss="multinomial", global_batch_size=8, sampled_softmax=samples, sampling_power=power
    )
    proposal = sampled_softmax.Proposal(model.input_width, samples, power, counts)
    return Objective(model, tf.keras.optimizers.SGD(), options, proposal), proposal


@pytest.mark.parametrize("tied", [True, False])
def test_the_sampled_loss_is_the_importance_weighted_partition_computed_independently(tied):
    x, _ = _interactions(8, 30, seed=1, density=0.2)
    model = TiedAutoencoder(
        (30, 12, 6), activation="tanh", output_activation="linear", tied=tied, input_norm="l2", seed=2
    )
    counts = x.sum(axis=0)
    objective, proposal = _objective(model, 20, power=1.0, counts=counts)
    targets = _sparse(x)
    negatives = sampled_softmax.draw_negatives(proposal, targets, tf.constant([5, 6]))
    first = model.kernels[0] if tied else model.decoder_kernels[0]
    inputs = model.normalize_sparse(targets)
    with tf.GradientTape() as tape:
        loss, _ = sampled_softmax.reconstruction(objective, inputs, targets, negatives)
    gradient = tape.gradient(loss, first)
    # Independently: every logit of the dense model, then the estimator of the partition.
    logits = model.reconstruction_logits(tf.constant(x)).numpy().astype(np.float64)
    ids = negatives.ids.numpy()
    q = (counts + 1) / (counts + 1).sum()
    per_user = []
    for u in range(8):
        own = x[u] > 0
        drawn = np.exp(logits[u, ids]) / (20 * q[ids])
        partition = np.exp(logits[u, own]).sum() + drawn[~own[ids]].sum()
        per_user.append((x[u, own] * (np.log(partition) - logits[u, own])).sum())
    assert float(loss) == pytest.approx(np.mean(per_user), rel=1e-5)
    # Its gradient: rows of the users' and the drawn items only, as the dense estimator's.
    assert isinstance(gradient, tf.IndexedSlices)
    assert set(gradient.indices.numpy()) == set(np.nonzero(x)[1]) | set(ids)
    owned = tf.constant(x > 0)
    weights = tf.constant(np.bincount(ids, minlength=30) / (20 * q), tf.float32)  # each draw's 1 / (S q)
    with tf.GradientTape() as tape:
        dense = model.reconstruction_logits(tf.constant(x))
        terms = tf.where(owned, tf.exp(dense), tf.exp(dense) * weights)  # drawn, not owned: weighted
        partition = tf.reduce_sum(terms, axis=1, keepdims=True)
        reference = tf.reduce_mean(tf.reduce_sum(x * (tf.math.log(partition) - dense), axis=1))
    expected = tape.gradient(reference, first)
    assert float(reference) == pytest.approx(float(loss), rel=1e-5)
    np.testing.assert_allclose(tf.convert_to_tensor(gradient).numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)
    # Many uniform draws: the full softmax's loss.
    objective, proposal = _objective(model, 200_000)
    negatives = sampled_softmax.draw_negatives(proposal, targets, tf.constant([5, 6]))
    many, _ = sampled_softmax.reconstruction(objective, model.normalize_sparse(targets), targets, negatives)
    full = tf.reduce_mean(losses.multinomial_log_likelihood(tf.constant(x), model.reconstruction_logits(x)))
    assert float(many) == pytest.approx(float(full), rel=2e-3)


@pytest.mark.parametrize("tied, variational", [(True, False), (False, False), (True, True)])
def test_the_sparse_step_moves_only_the_users_and_drawn_rows_compiled_or_not(tied, variational):
    x, _ = _interactions(8, 300, seed=0, density=0.03)
    activation = ["tanh", "linear"] if variational else "tanh"
    results = []
    for jit in (False, True):
        model = TiedAutoencoder(
            (300, 24, 8),
            activation=activation,
            output_activation="linear",
            tied=tied,
            input_norm="l2",
            seed=1,
            variational=variational,
        )
        optimizer = lazy.LazyAdam(1e-2)
        optimizer.build(model.trainable_variables)
        options = StepOptions(
            loss="multinomial",
            global_batch_size=8,
            jit_compile=jit,
            sampled_softmax=40,
            corruption_kind="dropout",
            corruption_level=0.5,
            kl_anneal_steps=2,
        )
        step = make_step(model, optimizer, options)
        step = step if jit else tf.function(step)
        before = [k.numpy().copy() for k in (model.kernels[0], model.decoder_kernels[0]) if k is not None]
        drawn = (
            sampled_softmax.Proposal(300, 40)
            .draw(tf.random.experimental.stateless_fold_in(options_seed(options, 0), -2, alg="philox"))[0]
            .numpy()
        )
        step({"inputs": _sparse(x)})
        own = np.unique(np.nonzero(x)[1])
        moved = [
            np.nonzero(np.any(k.numpy() != b, axis=1))[0]
            for k, b in zip(
                [v for v in (model.kernels[0], model.decoder_kernels[0]) if v is not None], before
            )
        ]
        assert set(moved[0]) <= set(own) | set(drawn if tied else [])
        assert set(moved[-1]) <= set(own) | set(drawn) and set(drawn) - set(own) & set(moved[-1])
        for _ in range(3):
            step({"inputs": _sparse(x)})
        results.append([v.numpy() for v in model.trainable_variables])
        assert all(np.all(np.isfinite(v)) for v in results[-1])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)


def options_seed(options, step):
    from rawtf_ae.training import corruption

    return corruption.noise_seed(options.seed, step)


_SAMPLED = {
    "model.layer_sizes": (40, 16, 8),
    "model.activation": "tanh",
    "model.output_activation": "linear",
    "model.input_norm": "l2",
    "train.loss": "multinomial",
    "train.sampled_softmax": 24,
    "train.sampling_power": 0.75,
    "train.corruption": "dropout",
    "train.corruption_level": 0.5,
    "train.optimizer": "lazy_adam",
    "train.batch_size": 32,
}


@pytest.mark.parametrize("variational", [False, True])
def test_the_sampled_step_on_two_mirrored_replicas_matches_one_device(variational):
    vae = {"model.activation": "tanh,linear", "model.variational": True, "train.kl_anneal_steps": 4}
    config = tiny_config(**{"data.name": "ratings", **_SAMPLED, **(vae if variational else {})})
    examples = _small_ratings()
    proposal = sampled_softmax.proposal_for(config, examples)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    two = _train_pieces(
        distribute.mirrored_strategy(devices), config, 6, examples, sparse=True, proposal=proposal
    )
    one = _train_pieces(tf.distribute.get_strategy(), config, 6, examples, sparse=True, proposal=proposal)
    _assert_weights_close(
        [v.numpy() for v in two.trainable_variables], [v.numpy() for v in one.trainable_variables]
    )


def test_sparse_evaluation_gives_the_dense_loss_and_ranking(tmp_path):
    config = tiny_config(
        **{
            **_MULT_DAE,
            "data.path": _implicit_file(tmp_path),
            "data.ratings_split": "users",
            "data.validation_users": 15,
            "data.test_users": 15,
            "model.layer_sizes": (0, 16, 8),
        }
    )
    splits = sources.load(config.data, config.seed)
    model = state.create_train_state(architectures.with_input_width(config, splits.width)).model
    results = []
    for sparse in (False, True):
        dataset = splits.evaluation_dataset(7, sparse)
        loss = evaluation.make_evaluate(model, "multinomial")(dataset)
        results.append((loss, evaluation.make_rank(model)(dataset, "val")))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for loss, ranked in results:  # the ranking pass's loss is make_evaluate's
        assert ranked["val_loss"] == pytest.approx(loss, rel=1e-5)
    for name, value in results[0][1].items():
        assert results[1][1][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


@pytest.mark.parametrize("variational", [False, True])
def test_train_py_trains_sparse_sampled_batches_and_ranks_the_held_out_users(tmp_path, variational):
    vae = {"model.activation": "tanh,linear", "model.variational": True, "train.kl_anneal_steps": 10}
    overrides = {
        **_MULT_DAE,
        **{k: v for k, v in _SAMPLED.items() if k != "model.layer_sizes"},
        "data.path": _implicit_file(tmp_path),
        "data.ratings_split": "users",
        "data.ratings_batches": "sparse",
        "data.validation_users": 15,
        "data.test_users": 15,
        "model.layer_sizes": (0, 16, 8),
        "train.batch_size": 16,
        "train.learning_rate": 3e-3,
        "train.num_steps": 30,
        "train.eval_every_steps": 15,
        "train.keep_best": True,
        **(vae if variational else {}),
    }
    workdir = str(tmp_path / "run")
    metrics = train.train_and_evaluate(tiny_config(**overrides), workdir)
    assert metrics["val_ranked_users"] == 15 and 0.0 < metrics["val_ndcg_at_100"] <= 1.0
    assert np.isfinite(metrics["val_loss"]) and metrics["best_step"] in (15, 30)
    # The workdir's checkpoint is read back as it was written (a Mult-VAE's log-variance layer too).
    test = modes.evaluate(tiny_config(**overrides), workdir, split="test")
    assert test["test_ranked_users"] == 15 and 0.0 < test["test_ndcg_at_100"] <= 1.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.sampled_softmax": -1}, "`train.sampled_softmax` must be a non-negative integer"),
        ({"train.sampling_power": 3.0}, r"`train.sampling_power` must be in \[0, 2\]"),
        ({"train.loss": "masked_mse", "model.input_norm": "none"}, "`train.sampled_softmax` samples loss"),
        ({"train.sampled_softmax": 0}, "multinomial' without train.sampled_softmax"),
        (
            {"model.layer_sizes": (40, 8), "model.activation": "linear", "model.variational": True},
            "one-layer model.variational",
        ),
    ],
)
def test_bad_sampled_softmax_settings_are_one_line_each(overrides, message):
    config = tiny_config(
        **{
            "data.name": "ratings",
            "data.path": "r.csv",
            **_SAMPLED,
            "data.ratings_batches": "sparse",
            **overrides,
        }
    )
    with pytest.raises(ValueError, match=message):
        checks.validate(config)


def test_dense_batches_take_the_full_softmax_whatever_train_sampled_softmax_says(tmp_path):
    overrides = {
        **_MULT_DAE,
        **{k: v for k, v in _SAMPLED.items() if k != "model.layer_sizes"},
        "data.path": _implicit_file(tmp_path),
        "data.ratings_split": "users",
        "data.ratings_batches": "dense",
        "data.validation_users": 15,
        "data.test_users": 15,
        "model.layer_sizes": (0, 16, 8),
        "train.optimizer": "adam",
        "train.batch_size": 16,
        "train.num_steps": 5,
        "train.eval_every_steps": 5,
    }
    metrics = train.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "run"))
    assert np.isfinite(metrics["val_loss"]) and 0.0 < metrics["val_ndcg_at_100"] <= 1.0
