"""Top-K over a kernel sharded by rows (`shard_top_k`): the whole product's items, order and
scores, in every layout (uneven shards, a bias split elsewhere or whole, an untied decoder
kernel, ties, fewer unrated items than K), each shard's product placed on the shard's device,
and the Recommender and the ranking evaluation on a sharded model equal to the whole one's."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.models.dense import TiedAutoencoder, untie
from rawtf_ae.recommender import ranking, shard_top_k
from rawtf_ae.recommender.ratings import RatingMatrix, Vocabulary
from rawtf_ae.recommender.recommend import Recommender, predict_sparse, top_k_unrated
from rawtf_ae.training.evaluation import make_rank
from tests.conftest import sharded

ITEMS = 23


def _model(tied=True, seed=3, output_activation="linear"):
    model = TiedAutoencoder([ITEMS, 6, 3], activation="selu", output_activation=output_activation, seed=seed)
    return model if tied else untie(model, [0])


def _ratings(seed=0, users=5, per_user=4):
    rng = np.random.default_rng(seed)
    indices = [[u, c] for u in range(users) for c in sorted(rng.choice(ITEMS, per_user, replace=False))]
    return tf.SparseTensor(indices, rng.integers(1, 6, len(indices)).astype(np.float32), [users, ITEMS])


# Layouts as ParameterServerStrategy's partitioners make them (rows split evenly, the first
# shards one row longer: what `tf.nn.embedding_lookup` on a ShardedVariable expects).
LAYOUTS = {  # (kernel rows per shard, output bias rows per shard or None: whole)
    "two": ([12, 11], [12, 11]),
    "four": ([6, 6, 6, 5], [6, 6, 6, 5]),
    "bias in fewer shards": ([8, 8, 7], [12, 11]),
    "bias whole": ([8, 8, 7], None),
}


def _sharded_copy(model, kernel_rows, bias_rows):
    kernel_group = "kernels" if model.tied_layers[0] else "decoder_kernels"
    model = sharded(model, kernel_rows, groups=(kernel_group,))
    return sharded(model, bias_rows, groups=("decoder_biases",)) if bias_rows else model


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_each_shards_top_k_merged_is_the_whole_products(layout, tied):
    whole, ratings = _model(tied), _ratings()
    model = _sharded_copy(_model(tied), *LAYOUTS[layout])
    assert shard_top_k.is_sharded(model) and not shard_top_k.is_sharded(whole)
    expected_scores, expected_items = top_k_unrated(predict_sparse(whole, ratings), ratings, 7)
    scores, items = shard_top_k.top_k_unrated(model, ratings, 7)
    np.testing.assert_array_equal(items.numpy(), expected_items.numpy())
    np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), rtol=1e-6, atol=1e-6)
    # The normalizer is the log-sum-exp of every item's logit, the rated ones included.
    hidden, last = whole.last_layer_inputs(ratings)
    logits = tf.matmul(hidden, last, transpose_b=True) + whole.decoder_biases[0]
    _, _, normalizer = shard_top_k.by_shard(model, shard_top_k.hidden(model, ratings), ratings, 3, True)
    np.testing.assert_allclose(normalizer.numpy(), tf.reduce_logsumexp(logits, 1).numpy(), rtol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_ties_keep_the_whole_top_ks_order_and_short_rows_end_in_minus_infinity(layout):
    # relu outputs tie at 0; the bias makes some logits equal across shards: the merged order
    # of equal scores is the whole top_k's (lower index first), the -inf tail's too.
    whole = _model(output_activation="relu")
    whole.decoder_biases[0].assign(np.where(np.arange(ITEMS) % 3 == 0, 5.0, -50.0).astype(np.float32))
    whole.kernels[0].assign(np.where(np.arange(ITEMS)[:, None] % 3 == 0, 0.0, whole.kernels[0].numpy()))
    model = _sharded_copy(_model(output_activation="relu"), *LAYOUTS[layout])
    for variable, source in (
        (model.kernels[0], whole.kernels[0]),
        (model.decoder_biases[0], whole.decoder_biases[0]),
    ):
        variable.assign(source.numpy())
    ratings = _ratings(per_user=20)  # 3 unrated items each: K = 10 leaves 7 places at -inf
    for k in (5, 10, ITEMS + 4):
        expected_scores, expected_items = top_k_unrated(predict_sparse(whole, ratings), ratings, k)
        scores, items = shard_top_k.top_k_unrated(model, ratings, k)
        finite = np.isfinite(expected_scores.numpy())
        np.testing.assert_array_equal(items.numpy(), expected_items.numpy())
        np.testing.assert_array_equal(scores.numpy(), expected_scores.numpy())
    assert (~finite).any() and (expected_scores.numpy() == 5.0).sum() > 5  # ties and short rows met


def test_each_shards_product_is_placed_on_its_shards_device():
    # Two logical CPUs (tests/conftest.py) stand for two parameter servers: the traced graph
    # asks for each shard's product on the device that holds the shard, so only `hidden` goes
    # there and each shard's top K comes back.
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    model, rows = _model(), [12, 11]
    value, parts, start = model.kernels[0].numpy(), [], 0
    for k, (device, count) in enumerate(zip(devices, rows)):
        with tf.device(device):
            parts.append(tf.Variable(value[start : start + count], name=f"kernel/part_{k}"))
        start += count
    model.kernels[0] = tf.__internal__.distribute.ShardedVariable(parts)
    ratings = _ratings()
    function = tf.function(lambda x: shard_top_k.top_k_unrated(model, x, 4))
    graph = function.get_concrete_function(ratings).graph
    products = [op.device for op in graph.get_operations() if op.type in ("MatMul", "TopKV2")]
    for device in devices:
        spec = tf.DeviceSpec.from_string(device)
        placed = [d for d in products if d and tf.DeviceSpec.from_string(d).device_index == spec.device_index]
        assert len(placed) == 2, (device, products)  # the shard's MatMul and its TopKV2
    expected = top_k_unrated(predict_sparse(_model(), ratings), ratings, 4)[1]
    np.testing.assert_array_equal(function(ratings)[1].numpy(), expected.numpy())


def test_a_recommender_of_a_sharded_model_recommends_as_the_whole_one():
    users, items = [f"u{i}" for i in range(5)], [f"i{i}" for i in range(ITEMS)]
    vocabulary, ratings = Vocabulary(users, items), _ratings()
    indices = ratings.indices.numpy()
    train = RatingMatrix.from_triples(indices[:, 0], indices[:, 1], ratings.values.numpy(), len(users), ITEMS)
    model = _sharded_copy(_model(), [6, 6, 6, 5], [12, 11])
    got = Recommender(model, vocabulary, train=train)
    want = Recommender(_model(), vocabulary, train=train, first_pass="none")
    assert got.index is None
    new_user = {"i3": 5.0, "i17": 1.0, "i20": 4.0}
    for found, expected in zip(
        [got.recommend(new_user, k=6), *got.recommend_for_users(users, 4)],
        [want.recommend(new_user, k=6), *want.recommend_for_users(users, 4)],
    ):
        assert [i for i, _ in found] == [i for i, _ in expected]
        np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], rtol=1e-6)


def test_the_ranking_evaluation_of_a_sharded_model_is_the_whole_ones():
    fold_in, held_out = _ratings(seed=1, users=9, per_user=5), _ratings(seed=2, users=9, per_user=3)
    # Explicit 0s in the fold-in (every third entry): not rated items for the ranking, either way.
    values = np.where(np.arange(len(fold_in.values)) % 3 == 0, 0.0, fold_in.values.numpy()).astype(np.float32)
    fold_in = tf.SparseTensor(fold_in.indices, values, fold_in.dense_shape)
    # Held-out items the user did not fold in (vae_cf's split never repeats one).
    keep = [
        i
        for i, (u, c) in enumerate(held_out.indices.numpy())
        if c not in fold_in.indices.numpy()[fold_in.indices.numpy()[:, 0] == u][:, 1]
    ]
    held_out = tf.sparse.retain(held_out, np.isin(np.arange(len(held_out.values)), keep))
    targets = tf.SparseTensor(held_out.indices, tf.ones_like(held_out.values), held_out.dense_shape)
    batches = [{"inputs": fold_in, "targets": targets}]
    expected = make_rank(_model())(batches, "val")
    got = make_rank(_sharded_copy(_model(), [8, 8, 7], None))(batches, "val")
    assert expected["val_ranked_users"] == 9 and expected[f"val_{ranking.SELECTED}"] > 0
    for name, value in expected.items():
        if name == "val_loss":
            np.testing.assert_allclose(got[name], value, rtol=1e-6)
        else:
            assert got[name] == value, name
