"""The multinomial (Mult-DAE) step: its loss and one update against an independent computation,
dropout drawn on the normalized input, XLA = no XLA, and train.py with the implicit protocol."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.models import weights_file
from rawtf_ae.program import modes, train
from rawtf_ae.recommender import ratings, recommend
from rawtf_ae.serving import saved_model
from rawtf_ae.training import corruption, losses, multinomial, state
from rawtf_ae.training.steps import StepOptions, make_step
from tests.conftest import tiny_config

_MULT_DAE = {
    "data.name": "ratings",
    "data.path": "r.csv",
    "model.layer_sizes": (30, 12, 6),
    "model.activation": "tanh",
    "model.output_activation": "linear",
    "model.input_norm": "l2",
    "train.loss": "multinomial",
    "train.batch_size": 8,
    "train.optimizer": "sgd",
    "train.momentum": 0.0,
    "train.learning_rate": 0.5,
}


def _interactions(num_users=40, num_items=30, seed=0, density=0.25):
    rng = np.random.default_rng(seed)
    x = (rng.random((num_users, num_items)) < density).astype(np.float32)
    x[np.arange(num_users), rng.integers(0, num_items, num_users)] = 1.0  # none empty
    rows, columns = np.nonzero(x)
    return x, ratings.RatingMatrix.from_triples(rows, columns, x[rows, columns], num_users, num_items)


def test_the_multinomial_log_likelihood_is_minus_the_rows_weighted_log_softmax():
    rng = np.random.default_rng(0)
    targets, logits = rng.random((4, 9)), rng.normal(size=(4, 9))
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(targets * log_softmax).sum(axis=1)
    assert np.allclose(losses.multinomial_log_likelihood(tf.constant(targets), tf.constant(logits)), expected)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_one_step_is_the_tied_mult_dae_update_computed_independently(dropout):
    """The normalized input, dropped out (scaled by 2), through tanh layers; the decoder multiplies
    by the same kernels transposed; each tied kernel moves by the sum of both paths' gradients."""
    config = tiny_config(**_MULT_DAE, **{"train.corruption": "dropout", "train.corruption_level": dropout})
    trained = state.create_train_state(config)
    model = trained.model
    x = _interactions(8)[0]
    w0, w1 = (tf.Variable(k) for k in model.kernels)
    b0, b1 = (tf.Variable(b) for b in model.encoder_biases)
    c0, c1 = (tf.Variable(b) for b in model.decoder_biases)
    normalized = x / np.linalg.norm(x, axis=1, keepdims=True)
    seed = corruption.noise_seed(config.seed, 0)
    inputs = corruption.dropout(tf.constant(normalized), dropout, seed) if dropout else normalized
    with tf.GradientTape() as tape:
        code = tf.tanh(tf.tanh(inputs @ w0 + b0) @ w1 + b1)
        logits = tf.tanh(code @ tf.transpose(w1) + c1) @ tf.transpose(w0) + c0
        loss = tf.reduce_mean(-tf.reduce_sum(x * tf.nn.log_softmax(logits), axis=1))
    reference = [w0, w1, b0, b1, c0, c1]
    gradients = tape.gradient(loss, reference)
    step = tf.function(make_step(model, trained.optimizer, StepOptions.from_config(config)))
    assert float(step({"inputs": tf.constant(x), "mask": tf.constant(x)})) == pytest.approx(
        float(loss), rel=1e-5
    )
    updated = list(model.kernels) + list(model.encoder_biases) + list(model.decoder_biases)
    for variable, before, gradient in zip(updated, reference, gradients):
        assert np.allclose(variable.numpy(), before.numpy() - 0.5 * gradient.numpy(), atol=2e-6)
    assert len(model.trainable_variables) == 6  # tied: two kernels, four biases


@pytest.mark.parametrize("tied", [True, False])
def test_one_mult_vae_step_is_the_annealed_elbo_computed_independently(tied):
    """The code sampled as mean + eps * exp(log_variance / 2) (eps drawn from the step's seed),
    the decoder on the sample, plus beta * KL(N(mean, var) || N(0, I)) per user."""
    overrides = {"model.activation": "tanh,linear", "model.variational": True, "model.tied": tied}
    config = tiny_config(**{**_MULT_DAE, **overrides, "train.kl_cap": 0.3, "train.kl_anneal_steps": 0})
    trained = state.create_train_state(config)
    model = trained.model
    x = _interactions(8)[0]
    w0, w1, lv = (tf.Variable(k) for k in (*model.kernels, model.log_variance_kernel))
    b0, b1, lb = (tf.Variable(b) for b in (*model.encoder_biases, model.log_variance_bias))
    c0, c1 = (tf.Variable(b) for b in model.decoder_biases)
    d0, d1 = (tf.Variable(k if k is not None else w) for k, w in zip(model.decoder_kernels, (w0, w1)))
    seed = tf.random.experimental.stateless_fold_in(corruption.noise_seed(config.seed, 0), -1, alg="philox")
    eps = corruption.normal(tf.constant([8, 6]), seed)
    normalized = x / np.linalg.norm(x, axis=1, keepdims=True)
    with tf.GradientTape() as tape:
        hidden = tf.tanh(normalized @ w0 + b0)
        mean, log_variance = hidden @ w1 + b1, hidden @ lv + lb
        z = mean + eps * tf.exp(0.5 * log_variance)
        up0, up1 = (w0, w1) if tied else (d0, d1)
        logits = tf.tanh(z @ tf.transpose(up1) + c1) @ tf.transpose(up0) + c0
        nll = -tf.reduce_sum(x * tf.nn.log_softmax(logits), axis=1)
        kl = 0.5 * tf.reduce_sum(-log_variance + tf.exp(log_variance) + mean**2 - 1, axis=1)
        loss = tf.reduce_mean(nll + 0.3 * kl)
    reference = [w0, w1, lv, b0, b1, lb, c0, c1] + ([] if tied else [d0, d1])
    gradients = tape.gradient(loss, reference)
    step = tf.function(make_step(model, trained.optimizer, StepOptions.from_config(config)))
    assert float(step({"inputs": tf.constant(x), "mask": tf.constant(x)})) == pytest.approx(
        float(loss), rel=1e-5
    )
    updated = [*model.kernels, model.log_variance_kernel, *model.encoder_biases, model.log_variance_bias]
    updated += [*model.decoder_biases] + ([] if tied else [k for k in model.decoder_kernels])
    for variable, before, gradient in zip(updated, reference, gradients):
        assert np.allclose(variable.numpy(), before.numpy() - 0.5 * gradient.numpy(), atol=2e-6)
    # Serving decodes the mean: encode() is the mean of encode_distribution().
    assert np.allclose(model.encode(tf.constant(x)), model.encode_distribution(tf.constant(x))[0], atol=1e-6)


def test_the_kl_weight_rises_linearly_to_its_cap():
    options = StepOptions(loss="multinomial", global_batch_size=8, kl_cap=0.2, kl_anneal_steps=1000)
    weights = [float(multinomial.kl_weight(options, s)) for s in (0, 100, 1000, 5000)]
    assert weights == pytest.approx([0.0, 0.1, 0.2, 0.2])
    constant = StepOptions(loss="multinomial", global_batch_size=8, kl_cap=0.2, kl_anneal_steps=0)
    assert float(multinomial.kl_weight(constant, 0)) == pytest.approx(0.2)


@pytest.mark.parametrize("variational", [False, True])
def test_the_compiled_multinomial_step_trains_as_the_uncompiled_one(variational):
    x, matrix = _interactions()
    results = []
    vae = {"model.activation": "tanh,linear", "model.variational": True, "train.kl_anneal_steps": 4}
    for jit in (False, True):
        config = tiny_config(
            **{
                **_MULT_DAE,
                **(vae if variational else {}),
                **{"train.corruption": "dropout", "train.corruption_level": 0.5, "train.weight_decay": 0.01},
                **{"train.optimizer": "adam", "train.learning_rate": 1e-2, "train.jit_compile": jit},
            }
        )
        trained = state.create_train_state(config)
        step = make_step(trained.model, trained.optimizer, StepOptions.from_config(config))
        step = tf.function(step) if not jit else step
        for s in range(6):
            batch = x[(s * 8) % 40 : (s * 8) % 40 + 8]
            step({"inputs": tf.constant(batch), "mask": tf.constant(batch)})
        results.append([v.numpy() for v in trained.model.trainable_variables])
    for a, b in zip(*results):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_serving_paths_normalize_the_input_as_training_does():
    config = tiny_config(**_MULT_DAE)
    model = state.create_train_state(config).model
    x = _interactions(5)[0]
    scaled = tf.constant(x * 7.0)  # a direction: the scale of a row does not matter
    assert np.allclose(model(scaled), model(tf.constant(x)), atol=1e-6)
    sparse = tf.sparse.from_dense(tf.constant(x))
    assert np.allclose(model.reconstruct_sparse(sparse), model(tf.constant(x)), atol=1e-5)
    assert np.allclose(model.encode_sparse(sparse), model.encode(tf.constant(x)), atol=1e-6)


def _implicit_file(tmp_path, num_users=90, num_items=200):
    x, _ = _interactions(num_users, num_items, seed=2, density=0.1)
    rows, columns = np.nonzero(x)
    path = tmp_path / "plays.csv"
    path.write_text("userId,itemId\n" + "".join(f"u{r},i{c}\n" for r, c in zip(rows, columns)))
    return str(path)


def test_train_py_ranks_held_out_users_keeps_the_best_ndcg_and_reports_the_test_users_once(tmp_path):
    overrides = {
        **_MULT_DAE,
        "data.path": _implicit_file(tmp_path),
        "data.ratings_split": "users",
        "data.validation_users": 15,
        "data.test_users": 15,
        "model.layer_sizes": (0, 16, 8),
        "train.optimizer": "adam",
        "train.learning_rate": 3e-3,
        "train.corruption": "dropout",
        "train.corruption_level": 0.5,
        "train.num_steps": 40,
        "train.eval_every_steps": 10,
        "train.keep_best": True,
    }
    workdir = str(tmp_path / "run")
    metrics = train.train_and_evaluate(tiny_config(**overrides), workdir)
    for name in ("val_recall_at_20", "val_recall_at_50", "val_ndcg_at_100"):
        assert 0.0 < metrics[name] <= 1.0 and metrics[f"{name}_se"] > 0
        assert 0.0 < metrics[f"popularity_{name}"] <= 1.0 and 0.0 < metrics[f"ease_{name}"] <= 1.0
    assert metrics["val_ranked_users"] == 15 and metrics["ease_lambda"] is not None
    assert metrics["best_step"] in (10, 20, 30, 40)
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["val_ndcg_at_100"] == pytest.approx(metrics["val_ndcg_at_100"])
    # The kept weights are those of the best validation NDCG@100: evaluating them gives it again.
    again = modes.evaluate(tiny_config(**overrides), workdir)
    assert again["val_ndcg_at_100"] == pytest.approx(metrics["val_ndcg_at_100"], rel=1e-6)
    test = modes.evaluate(tiny_config(**overrides), workdir, split="test")
    assert test["test_ranked_users"] == 15 and 0.0 < test["test_ndcg_at_100"] <= 1.0
    assert "ease_test_ndcg_at_100" in test and "popularity_test_recall_at_20" in test
    assert os.path.exists(os.path.join(workdir, "eval", "test", "metrics.json"))
    # A new user's item ids alone, folded in without retraining: the export's recommend_items
    # signature, the same items as the Recommender of the exported weights, fold-in excluded.
    exported = saved_model.load(os.path.join(workdir, "export", "saved_model"))
    items = list(exported.vocabulary.items[:4])
    top = exported.recommend(items + ["no-such-item"], k=5)
    assert len(top) == 5 and not {item for item, _ in top} & set(items)
    assert [i for i, _ in exported.recommend(dict.fromkeys(items, 1.0), k=5)] == [i for i, _ in top]
    model = weights_file.load_weights(os.path.join(workdir, "export", "weights.npz"))
    assert model.input_norm == "l2"
    local = recommend.Recommender(model, exported.vocabulary).recommend(items, k=5)
    assert [i for i, _ in local] == [i for i, _ in top]
    assert np.allclose([s for _, s in local], [s for _, s in top], rtol=1e-4, atol=1e-5)


def test_a_variational_models_weights_round_trip_and_bad_settings_are_refused(tmp_path):
    from rawtf_ae.config import checks

    overrides = {
        **_MULT_DAE,
        "model.activation": "tanh,linear",
        "model.variational": True,
        "model.tied": False,
    }
    model = state.create_train_state(tiny_config(**overrides)).model
    path = weights_file.save_weights(model, str(tmp_path / "w.npz"))
    loaded = weights_file.load_weights(path)
    assert loaded.variational and not loaded.tied
    x = tf.constant(_interactions(4)[0])
    for a, b in zip(model.encode_distribution(x), loaded.encode_distribution(x)):
        assert np.array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="`model.variational=True` needs .* a linear code layer"):
        checks.validate(tiny_config(**{**overrides, "model.activation": "tanh"}))
    with pytest.raises(ValueError, match="`train.kl_anneal_steps` must be a non-negative integer"):
        checks.validate(tiny_config(**{**overrides, "train.kl_anneal_steps": -1}))
    with pytest.raises(ValueError, match="`train.kl_cap` must be >= 0"):
        checks.validate(tiny_config(**{**overrides, "train.kl_cap": -0.1}))
