"""The int8 first pass of one user's top-K (`item_index`): the float32 top-K, not an estimate."""

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.recommender import recommend, top_k
from rawtf_ae.recommender.ratings import Vocabulary
from rawtf_ae.serving import saved_model


def _users(num_items, count, seed=0):
    """`count` one-user sparse rating rows, 1 to 30 ratings each (one user with none)."""
    rng = np.random.default_rng(seed)
    users = [tf.SparseTensor(np.zeros((0, 2), np.int64), np.zeros(0, np.float32), [1, num_items])]
    for _ in range(count - 1):
        items = np.sort(rng.choice(num_items, rng.integers(1, 31), replace=False))
        indices = np.stack([np.zeros_like(items), items], 1)
        users.append(
            tf.SparseTensor(indices, rng.integers(1, 6, len(items)).astype(np.float32), [1, num_items])
        )
    return users


def _assert_same_top_k(model, index, users, k):
    for ratings in users:
        expected_scores, expected_items = recommend.top_k_unrated(
            model.reconstruct_sparse(ratings), ratings, k
        )
        scores, items = index.top_k_unrated(ratings, k)
        np.testing.assert_allclose(scores, expected_scores, rtol=2e-5, atol=1e-6)
        np.testing.assert_array_equal(items, expected_items)


@pytest.mark.parametrize(
    "sizes, tied, output_activation",
    [((3000, 24, 8), True, "linear"), ((3000, 24, 8), [False, True], "selu"), ((3000, 16), True, "sigmoid")],
)
def test_the_first_pass_finds_the_float32_top_k(sizes, tied, output_activation):
    model = TiedAutoencoder(sizes, activation="selu", output_activation=output_activation, tied=tied, seed=3)
    rng = np.random.default_rng(1)
    model.decoder_biases[0].assign(rng.normal(0, 0.3, sizes[0]))
    index = top_k.ItemIndex(model)
    _assert_same_top_k(model, index, _users(sizes[0], 12), 10)  # k + ratings <= 47 blocks
    _assert_same_top_k(model, index, _users(sizes[0], 2, seed=5), 1)
    _assert_same_top_k(model, index, _users(sizes[0], 4, seed=6), 40)  # mostly more: all items


def test_every_logit_lies_within_its_bounds():
    # Against float64: rows that int8 represents exactly (only float32 rounding is left to
    # bound), rows of widely spread norms, large biases, a code of wide dynamic range.
    rng = np.random.default_rng(7)
    items, units = 4000, 64
    scales = np.exp(rng.normal(0, 2, items)) / 127
    kernel = (rng.integers(-127, 128, (items, units)) * scales[:, None]).astype(np.float32)
    spread = rng.normal(size=(items // 2, units)) * np.exp(rng.normal(0, 2, (items // 2, 1)))
    kernel[items // 2 :] = spread
    kernel[7] = 0.0
    bias = rng.normal(0, 10, items).astype(np.float32)
    model = TiedAutoencoder((items, units), activation="linear", output_activation="linear", seed=0)
    model.kernels[0].assign(kernel)
    model.decoder_biases[0].assign(bias)
    index = top_k.ItemIndex(model)
    for _ in range(20):
        hidden = (rng.normal(size=units) * np.exp(rng.normal(0, 3, units))).astype(np.float32)
        lower, upper, lower_maxima, upper_maxima = top_k._bounds(
            index.codes, index.scales, index.slack, model.decoder_biases[0], hidden, index._rounding
        )
        exact = kernel.astype(np.float64) @ hidden.astype(np.float64) + bias
        lower, upper = lower.numpy(), upper.numpy().reshape(-1)
        assert (lower[:items] <= exact).all() and (exact <= upper[:items]).all()
        assert np.isneginf(lower[items:]).all() and np.isneginf(upper[items:]).all()  # padding
        np.testing.assert_array_equal(lower_maxima, lower.reshape(-1, 64).max(1))
        np.testing.assert_array_equal(upper_maxima, upper.reshape(-1, 64).max(1))


def test_near_ties_that_int8_cannot_tell_apart_are_ranked_in_float32():
    # Every item's row is one row plus noise far below int8's resolution: the approximate
    # logits cannot rank the items, so all of them must reach the float32 pass.
    model = TiedAutoencoder((500, 12), activation="linear", output_activation="linear", seed=0)
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=12) + rng.normal(0, 1e-4, (500, 12))
    model.kernels[0].assign(kernel)
    index = top_k.ItemIndex(model)
    _assert_same_top_k(model, index, _users(500, 6), 5)


def test_an_item_whose_int8_logit_ranks_below_is_still_found_when_its_float32_one_wins():
    # Per-row scales 2/127 and 1/127; the user's direction is the one int8 rounds away:
    # item 0's logit is 20.98/127 (int8: 20/127), item 1's 20.6/127 (int8: 21/127). Only the
    # full error bound keeps item 0 a candidate.
    model = TiedAutoencoder((3, 2), activation="linear", output_activation="linear", seed=0)
    model.kernels[0].assign([[2.0, 20.98 / 127], [1.0, 20.6 / 127], [0.5, 0.0]])
    index = top_k.ItemIndex(model)
    np.testing.assert_array_equal(index.codes.numpy()[:2, 1], [10, 21])
    logits, items = index.top_k_logits(tf.constant([0.0, 1.0]), tf.zeros([0], tf.int64), 1)
    assert items.numpy().tolist() == [0]
    np.testing.assert_allclose(logits, [20.98 / 127], rtol=1e-6)


def test_fewer_unrated_items_than_k_and_k_zero():
    model = TiedAutoencoder((6, 3), activation="selu", output_activation="linear", seed=0)
    index = top_k.ItemIndex(model)
    ratings = tf.SparseTensor([[0, 1], [0, 2], [0, 4]], [3.0, 1.0, 2.0], [1, 6])
    scores, items = index.top_k_unrated(ratings, 10)  # clipped to 6: 3 unrated, 3 -inf
    assert scores.shape == items.shape == [1, 6]
    assert sorted(items.numpy()[0, :3]) == [0, 3, 5] and np.isinf(scores.numpy()[0, 3:]).all()
    assert index.top_k_unrated(ratings, 0)[0].shape == [1, 0]


def test_the_copy_is_a_snapshot_until_refreshed():
    model = TiedAutoencoder((400, 8), activation="selu", output_activation="linear", seed=0)
    vocabulary = Vocabulary([f"u{i}" for i in range(2)], [f"i{i}" for i in range(400)])
    recommender = recommend.Recommender(model, vocabulary, first_pass="int8")
    model.kernels[0].assign(-model.kernels[0])  # "trained further"
    recommender.refresh()
    users = _users(400, 4)
    _assert_same_top_k(model, recommender.index, users, 7)
    expected = recommend.Recommender(model, vocabulary, first_pass="none").recommend({"i3": 4.0}, 7)
    got = recommender.recommend({"i3": 4.0}, 7)
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=2e-5)


def test_models_the_first_pass_cannot_rank_are_refused_or_left_to_the_full_product():
    gelu = TiedAutoencoder((300, 8), output_activation="gelu", seed=0)  # not monotone
    with pytest.raises(ValueError, match="output activation 'gelu' is not nondecreasing"):
        top_k.wanted(gelu, "int8")
    assert not top_k.wanted(gelu, "auto")
    with pytest.raises(ValueError, match="`first_pass` is 'fast'"):
        top_k.wanted(gelu, "fast")
    small = TiedAutoencoder((300, 8), seed=0)
    assert not top_k.wanted(small, "auto") and top_k.wanted(small, "int8")
    at_threshold = TiedAutoencoder((top_k.AUTO_ITEMS, 2), seed=0)
    assert top_k.wanted(at_threshold, "auto")


def test_an_export_with_the_first_pass_recommends_as_the_model(tmp_path):
    model = TiedAutoencoder((300, 8, 4), activation="selu", output_activation="linear", seed=0)
    vocabulary = Vocabulary(["u0"], [f"i{i}" for i in range(300)])
    path = saved_model.save(model, str(tmp_path / "export"), vocabulary, first_pass="int8")
    assert tf.io.gfile.exists(path)
    loaded = saved_model.LoadedAutoencoder(path)
    user = {"i3": 5.0, "i17": 1.0, "i200": 3.0, "unknown": 2.0}
    expected = recommend.Recommender(model, vocabulary, first_pass="none").recommend(user, 8)
    got = loaded.recommend(user, 8)
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=2e-5)
    # An item given twice counts once, with its last rating (as in a dict).
    twice = loaded._loaded.signatures["recommend"](
        item_ids=tf.constant(["i17", "i3", "i17"]), ratings=tf.constant([1.0, 5.0, 4.0]), k=tf.constant(8)
    )
    once = recommend.Recommender(model, vocabulary, first_pass="none").recommend({"i3": 5.0, "i17": 4.0}, 8)
    assert [i.decode() for i in twice["item_ids"].numpy()] == [i for i, _ in once]
    np.testing.assert_allclose(twice["scores"], [s for _, s in once], rtol=2e-5)


@pytest.mark.parametrize("k", [1, 10, 1500])
def test_the_kth_largest_of_a_large_vector_by_slices(k):
    values = np.random.default_rng(k).normal(size=70_001).astype(np.float32)  # 64 slices of 1,094
    values[5] = -np.inf
    expected = np.sort(values)[-k]
    assert top_k._kth_largest(tf.constant(values), tf.constant(k)).numpy() == expected


def _reads_share_the_buffer(variable) -> bool:
    """Whether two plain reads of `variable` are one buffer (not copies): DLPack views."""
    first, second = variable.read_value(), variable.read_value()
    return np.from_dlpack(first).ctypes.data == np.from_dlpack(second).ctypes.data


@pytest.mark.parametrize("tied", [True, False])
def test_recommending_leaves_the_kernel_readable_without_copies(tied):
    # A gather on the variable itself would put it in TensorFlow's copy-on-read mode: every
    # later plain read (encode, decode, another request) would copy it whole (2 GiB at a
    # million items).
    model = TiedAutoencoder((300, 16, 8), activation="selu", output_activation="linear", tied=tied, seed=0)
    vocabulary = Vocabulary(["u0"], [str(i) for i in range(300)])
    recommend.Recommender(model, vocabulary, first_pass="int8").recommend({"3": 4.0, "77": 2.0}, 5)
    kernels = [model.kernels[0]] + ([] if tied else [model.decoder_kernels[0]])
    assert all(_reads_share_the_buffer(kernel) for kernel in kernels)
    tf.gather(model.kernels[0], [1])  # what the check detects
    assert not _reads_share_the_buffer(model.kernels[0])


def test_the_export_first_pass_is_checked_with_the_config():
    from rawtf_ae.config.checks import validate  # noqa: PLC0415
    from tests.conftest import tiny_ratings_config  # noqa: PLC0415

    config = tiny_ratings_config("r.csv", **{"train.export_first_pass": "fast"})
    with pytest.raises(ValueError, match="train.export_first_pass"):
        validate(config)
    config.train.export_first_pass, config.model.output_activation = "int8", "gelu"
    with pytest.raises(ValueError, match="cannot index this model: its output activation 'gelu' is not"):
        validate(config)
    config.model.output_activation, config.train.precision = "linear", "mixed_bfloat16"
    with pytest.raises(ValueError, match="cannot index this model: it computes in bfloat16, not float32"):
        validate(config)
    config.train.precision = "fp32"  # not a precision: its own key's error, not int8's
    with pytest.raises(ValueError, match="train.precision"):
        validate(config)
    config.train.precision = "float32"
    config.train.export_first_pass = "none"
    validate(config)
