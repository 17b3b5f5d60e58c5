"""eval / export / encode on a workdir trained on the MNIST test-set files, and their errors."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.models import weights_file
from rawtf_ae.program import modes, restore, train
from rawtf_ae.serving import saved_model
from tests.conftest import REPO, tiny_config

MNIST = {
    "data.name": "mnist",
    "data.num_train": 1_000,
    "data.num_validation": 300,
    "model.layer_sizes": (784, 64, 8),
    "train.num_steps": 30,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import MNIST_DIR

    if not os.path.exists(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")):
        pytest.skip(f"MNIST t10k files not found in {MNIST_DIR}")
    config = tiny_config(**MNIST, **{"data.path": MNIST_DIR})
    run = str(tmp_path_factory.mktemp("mnist") / "run")
    metrics = train.train_and_evaluate(config, run)
    return config, run, metrics


def _tree(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): os.path.getmtime(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    }


def test_training_exports_a_model_that_matches_the_checkpoint(trained):
    config, run, _ = trained
    model, step, _ = restore.restore_model(config, run)
    loaded = saved_model.load(os.path.join(run, "export", "saved_model"))
    x = tf.random.stateless_uniform([7, 784], seed=[4, 4])
    assert step == 30
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)
    rebuilt = weights_file.load_weights(os.path.join(run, "export", "weights.npz"))
    np.testing.assert_array_equal(rebuilt.encode(x).numpy(), model.encode(x).numpy())


def test_eval_reports_the_training_runs_validation_loss_and_draws_the_pictures(trained):
    config, run, metrics = trained
    result = modes.evaluate(config, run)
    assert result["step"] == 30
    assert result["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-5)
    out = os.path.join(run, "eval")
    picture = tf.io.decode_png(tf.io.read_file(os.path.join(out, "reconstructions.png"))).numpy()
    assert picture.shape == (2 * 29 + 1, 8 * 29 + 1, 1)
    with open(os.path.join(out, "projector", "metadata.tsv")) as f:
        labels = [int(line) for line in f]
    assert len(labels) == 300 and set(labels) <= set(range(10))
    assert os.path.exists(os.path.join(out, "projector", "projector_config.pbtxt"))
    saved = dict(tf.train.list_variables(tf.train.latest_checkpoint(os.path.join(out, "projector"))))
    assert saved["codes/.ATTRIBUTES/VARIABLE_VALUE"] == [300, 8]
    assert tf.io.decode_png(tf.io.read_file(os.path.join(out, "codes.png"))).shape[2] in (3, 4)


@pytest.mark.parametrize("split, count", [("validation", 300), ("train", 1_000)])
def test_encode_writes_the_codes_of_a_split_with_labels(trained, tmp_path, split, count):
    config, run, _ = trained
    output = modes.encode(config, run, str(tmp_path / "codes.npz"), split)
    with np.load(output, allow_pickle=False) as archive:
        codes, labels = archive["codes"], archive["labels"]
    assert codes.shape == (count, 8) and labels.shape == (count,)
    model, _, _ = restore.restore_model(config, run)
    from rawtf_ae.data import sources

    splits = sources.load(config.data, config.seed)
    examples = splits.validation if split == "validation" else splits.train
    np.testing.assert_allclose(codes, model.encode(examples).numpy(), rtol=1e-5, atol=1e-6)
    plain = modes.encode(config, run, str(tmp_path / "codes.npy"), split)
    np.testing.assert_array_equal(np.load(plain), codes)


def test_modes_on_a_workdir_without_checkpoint_or_of_another_model_fail_and_change_nothing(trained, tmp_path):
    config, run, _ = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    for call in (modes.evaluate, modes.export_workdir):
        with pytest.raises(FileNotFoundError, match="has no checkpoint"):
            call(config, str(empty))
    assert os.listdir(empty) == []
    before = _tree(run)
    other = tiny_config(**{**MNIST, "model.layer_sizes": (784, 32, 8), "data.path": config.data.path})
    message = r"model/kernels/0: the checkpoint has shape \[784, 64\], the config's model \[784, 32\]"
    with pytest.raises(ValueError, match=message):
        modes.evaluate(other, run)
    with pytest.raises(ValueError, match=message):
        modes.export_workdir(other, run)
    with pytest.raises(ValueError, match=message):
        modes.encode(other, run, str(tmp_path / "codes.npy"))
    with pytest.raises(ValueError, match="must end in .npy"):
        modes.encode(config, run, str(tmp_path / "codes.csv"))
    assert _tree(run) == before
    assert not os.path.exists(tmp_path / "codes.npy")


@pytest.mark.slow
def test_command_line_modes_end_to_end(trained, tmp_path):
    config, run, _ = trained
    # As users type it: from the workdir's parent folder, a relative --workdir and --output.
    flags = [
        f"--workdir={os.path.basename(run)}",
        "--config.data.name=mnist",
        f"--config.data.path={config.data.path}",
        "--config.data.num_train=1000",
        "--config.data.num_validation=300",
        "--config.model.layer_sizes=(784,64,8)",
        "--config.model.activation=selu,linear",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)

    def run_mode(*args):
        return subprocess.run(
            [sys.executable, os.path.join(REPO, "train.py"), *args],
            cwd=os.path.dirname(run),
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )

    output = f"codes-{tmp_path.name}.npy"
    encoded = run_mode("--mode=encode", f"--output={output}", *flags)
    assert encoded.returncode == 0, encoded.stderr[-3000:]
    assert np.load(os.path.join(os.path.dirname(run), output)).shape == (300, 8)
    onnx = ["--onnx"] if importlib.util.find_spec("tf2onnx") else []
    exported = run_mode("--mode=export", "--tflite", *onnx, *flags)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "exported" in exported.stderr
    assert os.path.getsize(os.path.join(run, "export", "model.tflite")) > 0
    if onnx:
        assert sorted(os.listdir(os.path.join(run, "export", "onnx"))) == [
            "decode.onnx",
            "encode.onnx",
            "reconstruct.onnx",
        ]
    evaluated = run_mode("--mode=eval", *flags)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "validation loss" in evaluated.stderr
    # The modes' bad inputs (no test split, an empty workdir, encode without --output, ...) are
    # cases of the bad-input campaign (tests/end_to_end/test_bad_inputs.py).


@pytest.mark.slow
def test_modes_use_the_workdirs_saved_config_and_refuse_another_architecture(trained, tmp_path):
    _, run, _ = trained
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)

    def run_mode(*args):
        return subprocess.run(
            [sys.executable, os.path.join(REPO, "train.py"), f"--workdir={os.path.basename(run)}", *args],
            cwd=os.path.dirname(run),
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )

    before = _tree(run)
    # No training flag retyped: the default config's model (784-512-128-32) would not fit.
    output = str(tmp_path / "codes.npy")
    encoded = run_mode("--mode=encode", f"--output={output}", "--config.data.num_validation=100")
    assert encoded.returncode == 0, encoded.stderr[-3000:]
    assert "config: the run's own" in encoded.stderr
    assert np.load(output).shape == (100, 8)  # the saved model, the override's validation split
    other = run_mode("--mode=export", "--config.model.layer_sizes=(784,32,8)")
    assert other.returncode == 1 and "Traceback" not in other.stderr
    last = other.stderr.strip().splitlines()[-1]
    assert "--config.model.layer_sizes=(784, 32, 8) changes the architecture" in last
    assert _tree(run) == before  # nothing written


def test_eval_on_the_test_split_leaves_the_validation_outputs(tmp_path):
    from tests.data.test_sources import _train_and_test_folder

    folder = tmp_path / "images"
    folder.mkdir()
    written = _train_and_test_folder(folder)
    overrides = {
        "data.path": str(folder),
        "data.num_train": 0,
        "data.num_validation": 7,
        "train.num_steps": 4,
    }
    config = tiny_config(**{**MNIST, **overrides, "train.batch_size": 8})
    run = str(tmp_path / "run")
    metrics = train.train_and_evaluate(config, run)
    validation = modes.evaluate(config, run)
    test = modes.evaluate(config, run, "test")
    assert (
        validation["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-5) and validation["examples"] == 7
    )
    assert test["split"] == "test" and test["examples"] == 10 and test["test_loss"] != validation["val_loss"]
    model, _, _ = restore.restore_model(config, run)
    images = written["t10k"][0].reshape(10, -1).astype(np.float32) / 255.0
    assert test["test_mse"] == pytest.approx(float(np.mean((model(images).numpy() - images) ** 2)), rel=1e-5)
    with open(os.path.join(run, "eval", "test", "projector", "metadata.tsv")) as f:
        assert [int(line) for line in f] == list(written["t10k"][1])
    assert os.path.exists(os.path.join(run, "eval", "metrics.json"))  # validation's, kept


def test_a_relative_data_path_is_saved_absolute_so_the_modes_run_from_anywhere(tmp_path, monkeypatch):
    # A run given data.path=ratings.csv from its folder saved the relative path: --mode=eval
    # from another folder then failed with "Ratings file ratings.csv does not exist".
    from rawtf_ae.config import saved
    from rawtf_ae.recommender import ratings_file
    from rawtf_ae.recommender.synthetic import synthetic_ratings
    from tests.conftest import tiny_ratings_config

    (tmp_path / "project").mkdir()
    ratings_file.write_ratings(str(tmp_path / "project" / "r.csv"), synthetic_ratings(num_users=60, num_items=20))
    monkeypatch.chdir(tmp_path / "project")
    trained = train.train_and_evaluate(tiny_ratings_config("r.csv", **{"train.num_steps": 4}), "run")
    monkeypatch.chdir(tmp_path)
    saved = saved.saved(str(tmp_path / "project" / "run" / "config.json"))
    assert saved.data.path == str(tmp_path / "project" / "r.csv")
    evaluated = modes.evaluate(saved, str(tmp_path / "project" / "run"))
    assert evaluated["val_rmse"] == pytest.approx(trained["val_rmse"], rel=1e-5)
