"""Export: SavedModel signatures and .npz weights round trips, tying kept, atomic replacement."""

import os

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.models import weights_file
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.serving import saved_model


def _model(tied=True):
    model = TiedAutoencoder([20, 8, 4], activation=["selu", "linear"], tied=tied, seed=3)
    for bias in model.encoder_biases + model.decoder_biases:
        bias.assign(tf.random.stateless_normal(bias.shape, seed=[bias.shape[0], 1]))
    return model


@pytest.mark.parametrize("tied", [True, False, [True, False]])
def test_saved_model_round_trip_gives_the_same_outputs(tmp_path, tied):
    model = _model(tied)
    path = saved_model.save(model, str(tmp_path / "export"))
    loaded = saved_model.load(path)
    flags = tied if isinstance(tied, list) else [tied, tied]
    # One flag per layer: a partially tied model must not read as untied (it did).
    assert loaded.layer_sizes == (20, 8, 4) and loaded.metadata["tied"] == flags
    for batch in (1, 5):
        x = tf.random.stateless_uniform([batch, 20], seed=[batch, 2])
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(loaded.encode(x).numpy(), model.encode(x).numpy(), rtol=1e-6, atol=1e-7)
        z = model.encode(x)
        np.testing.assert_allclose(loaded.decode(z).numpy(), model.decode(z).numpy(), rtol=1e-6, atol=1e-7)
    # Plain TensorFlow, as a server would: three signatures, batch dimension unknown.
    plain = tf.saved_model.load(path)
    assert sorted(plain.signatures) == ["decode", "encode", "reconstruct"]
    (spec,) = plain.signatures["encode"].structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, 20]
    x = tf.random.stateless_uniform([3, 20], seed=[0, 0])
    np.testing.assert_allclose(
        plain.signatures["reconstruct"](inputs=x)["reconstructions"].numpy(), model(x).numpy(), rtol=1e-6
    )
    kernels = [
        shape
        for _, shape in tf.train.list_variables(os.path.join(path, "variables", "variables"))
        if len(shape) == 2
    ]
    assert len(kernels) == 2 + flags.count(False)  # each tied kernel saved once


def test_a_failed_export_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    model = _model()
    path = saved_model.save(model, str(tmp_path / "export"))
    before = {name: open(os.path.join(path, name), "rb").read() for name in ("saved_model.pb",)}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        saved_model.save(_model(tied=False), path)
    assert {name: open(os.path.join(path, name), "rb").read() for name in before} == before
    assert sorted(os.listdir(tmp_path)) == ["export"]  # no temporary left behind
    monkeypatch.undo()
    saved_model.save(_model(tied=False), path)
    assert saved_model.load(path).metadata["tied"] == [False, False]


def test_loading_something_that_is_not_an_export_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no SavedModel"):
        saved_model.load(str(tmp_path))


@pytest.mark.parametrize("tied", [True, False, [True, False]])
def test_npz_weights_round_trip_into_a_new_and_an_existing_model(tmp_path, tied):
    model = _model(tied)
    path = weights_file.save_weights(model, str(tmp_path / "weights.npz"))
    with np.load(path, allow_pickle=False) as archive:
        assert archive["kernel_0"].shape == (20, 8) and list(archive["layer_sizes"]) == [20, 8, 4]
        assert ("decoder_kernel_1" in archive.files) == (tied is not True)
    x = tf.random.stateless_uniform([4, 20], seed=[1, 1])
    rebuilt = weights_file.load_weights(path)
    np.testing.assert_array_equal(rebuilt(x).numpy(), model(x).numpy())
    target = TiedAutoencoder([20, 8, 4], activation=["selu", "linear"], tied=tied, seed=99)
    weights_file.load_weights(path, target)
    np.testing.assert_array_equal(target(x).numpy(), model(x).numpy())


def test_npz_weights_that_do_not_fit_are_errors_and_change_nothing(tmp_path):
    path = weights_file.save_weights(_model(), str(tmp_path / "weights.npz"))
    other = TiedAutoencoder([20, 6, 4], seed=0)
    before = [v.numpy() for v in other.trainable_variables]
    with pytest.raises(
        ValueError,
        match=r"a tied model with layer_sizes \[20, 8, 4\]; the model is a tied model with "
        r"layer_sizes \[20, 6, 4\]",
    ):
        weights_file.load_weights(path, other)
    untied = TiedAutoencoder([20, 8, 4], tied=False, seed=0)
    with pytest.raises(ValueError, match="holds a tied model"):
        weights_file.load_weights(path, untied)
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["kernel_1"] = np.zeros((8, 5), np.float32)
    np.savez(tmp_path / "bad_shape.npz", **arrays)
    fresh = TiedAutoencoder([20, 8, 4], activation=["selu", "linear"], seed=0)
    before = [v.numpy() for v in fresh.trainable_variables]
    with pytest.raises(ValueError, match=r"`kernel_1` has shape \(8, 5\), the model's variable has \(8, 4\)"):
        weights_file.load_weights(str(tmp_path / "bad_shape.npz"), fresh)
    for variable, value in zip(fresh.trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)  # nothing half-assigned
    del arrays["encoder_bias_0"]
    arrays["kernel_1"] = np.zeros((8, 4), np.float32)
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(ValueError, match="lacks `encoder_bias_0`"):
        weights_file.load_weights(str(tmp_path / "missing.npz"))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 nope")
    with pytest.raises(ValueError, match="corrupt.npz is corrupt"):
        weights_file.load_weights(str(tmp_path / "corrupt.npz"))
    np.savez(tmp_path / "pickled.npz", layer_sizes=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled.npz is corrupt"):
        weights_file.load_weights(str(tmp_path / "pickled.npz"))


def _client_model(kind):
    from rawtf_ae.models.conv import TiedConvAutoencoder

    if kind == "conv":
        return TiedConvAutoencoder((8, 8, 1), (4, 8), activation="relu", seed=1)
    return _model(tied=[True, False] if kind == "partially tied" else True)


def _assert_client_matches(model, saved, run):
    """`run(signature, inputs)` of another runtime against the SavedModel, signature by signature."""
    x = tf.random.stateless_uniform([5, model.input_width], seed=[4, 2]).numpy()
    z = model.encode(x).numpy()
    loaded = saved_model.load(saved)
    for signature, inputs, expected in (
        ("encode", x, loaded.encode(x)),
        ("decode", z, loaded.decode(z)),
        ("reconstruct", x, loaded(x)),
    ):
        np.testing.assert_allclose(run(signature, inputs), expected.numpy(), rtol=1e-5, atol=1e-6)


def _client_export(model, path, kind):
    """A SavedModel; a ratings export also has the `recommend` signature (not converted)."""
    from rawtf_ae.recommender.ratings import Vocabulary

    vocabulary = None
    if kind == "ratings":
        vocabulary = Vocabulary([str(u) for u in range(7)], [str(i) for i in range(model.input_width)])
    return saved_model.save(model, path, vocabulary)


CLIENT_KINDS = ["dense", "partially tied", "conv", "ratings"]


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_tflite_model_matches_the_saved_model_on_every_signature(tmp_path, kind):
    from rawtf_ae.serving import tflite

    model = _client_model(kind)
    saved = _client_export(model, str(tmp_path / "saved_model"), kind)
    path = tflite.save(saved, str(tmp_path / "model.tflite"))
    _assert_client_matches(model, saved, lambda signature, inputs: tflite.run(path, signature, inputs))
    assert sorted(os.listdir(tmp_path)) == ["model.tflite", "saved_model"]  # no temporary left


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_onnx_files_match_the_saved_model_in_onnxruntime(tmp_path, kind):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from rawtf_ae.serving import onnx

    model = _client_model(kind)
    saved = _client_export(model, str(tmp_path / "saved_model"), kind)
    paths = onnx.save(saved, str(tmp_path / "onnx"))
    assert sorted(paths) == ["decode", "encode", "reconstruct"]
    _assert_client_matches(model, saved, lambda signature, inputs: onnx.run(paths[signature], inputs))


def test_a_frozen_keras_tfsmlayer_on_the_export_feeds_a_keras_classifier(tmp_path):
    # docs/trained-models.md's Keras 3 example: the exported encoder as a frozen layer.
    import keras

    model = _model()
    path = saved_model.save(model, str(tmp_path / "saved_model"))
    encoder = keras.layers.TFSMLayer(path, call_endpoint="encode", trainable=False)
    inputs = keras.Input(shape=(20,))
    classifier = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(encoder(inputs)["codes"]))
    classifier.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((64, 20)).astype(np.float32)
    y = (model.encode(x).numpy()[:, 0] > np.median(model.encode(x).numpy()[:, 0])).astype(np.int64)
    np.testing.assert_allclose(encoder(x)["codes"].numpy(), model.encode(x).numpy(), rtol=1e-6, atol=1e-7)
    frozen = [w.numpy().copy() for w in encoder.weights]
    head = classifier.layers[-1].kernel.numpy().copy()
    classifier.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(frozen, encoder.weights))
    assert not np.array_equal(head, classifier.layers[-1].kernel.numpy())
