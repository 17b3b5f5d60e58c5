"""Training: loss falls, exact resume, the non-finite stop, checkpoint mismatch, outputs, schedules."""

import json
import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae import files
from rawtf_ae.data import pipelines, sources
from rawtf_ae.models import architectures
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.optim import schedules
from rawtf_ae.program import restore, train
from rawtf_ae.training import evaluation, state, steps
from tests.conftest import tiny_config


def _initial_val_loss(config):
    splits = sources.load(config.data, config.seed)
    evaluate = evaluation.make_evaluate(architectures.create_model(config), config.train.loss)
    return evaluate(pipelines.eval_dataset(splits.validation, 100))


def _restore_model(config, workdir):
    trained = state.create_train_state(config)
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    trained.checkpoint().restore(path).assert_consumed()
    return trained.model, trained.optimizer, int(trained.step.numpy())


def test_training_on_curves_at_least_halves_the_validation_loss(tmp_path):
    config = tiny_config(
        **{"train.num_steps": 150, "train.log_every_steps": 50, "train.eval_every_steps": 50}
    )
    before = _initial_val_loss(config)
    metrics = train.train_and_evaluate(config, str(tmp_path))
    assert metrics["step"] == 150
    assert metrics["val_loss"] < 0.5 * before, (before, metrics)


def test_training_on_mnist_test_set_files_lowers_the_loss(tmp_path, mnist_dir):
    config = tiny_config(
        **{
            "data.name": "mnist",
            "data.path": mnist_dir,
            "data.num_train": 2_000,
            "data.num_validation": 500,
            "train.num_steps": 100,
            "train.batch_size": 64,
            "model.layer_sizes": (784, 128, 32),
        }
    )
    before = _initial_val_loss(config)
    metrics = train.train_and_evaluate(config, str(tmp_path))
    assert metrics["val_loss"] < 0.5 * before, (before, metrics)


def test_outputs_metrics_picture_summaries_and_config(tmp_path):
    config = tiny_config(**{"train.num_steps": 20})
    metrics = train.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "metrics.json") as f:
        written = json.load(f)
    assert written == metrics
    for key in ("step", "train_loss", "val_loss", "examples_per_sec"):
        assert np.isfinite(written[key]) and written[key] > 0
    assert written["trainable_parameters"] == 784 * 64 + 64 * 16 + 64 + 16 + 784 + 64
    picture = tf.io.decode_png(tf.io.read_file(str(tmp_path / "reconstructions.png"))).numpy()
    # 8 examples in one row: a row of originals over a row of reconstructions, 1-px gaps.
    assert picture.shape == (2 * 29 + 1, 8 * 29 + 1, 1)
    assert os.listdir(tmp_path / "summaries" / "train") and os.listdir(tmp_path / "summaries" / "validation")
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["train"]["num_steps"] == 20


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch, caplog):
    straight, interrupted = str(tmp_path / "straight"), "interrupted"
    monkeypatch.chdir(tmp_path)  # the resumed workdir is relative, as users type it
    config = tiny_config(**{"train.num_steps": 60, "train.checkpoint_every_steps": 20})
    train.train_and_evaluate(config, straight)
    # The same command stopped at 25 steps (checkpoint at 20, then 25 at the end), then run again.
    train.train_and_evaluate(
        tiny_config(**{"train.num_steps": 25, "train.checkpoint_every_steps": 20}), interrupted
    )
    caplog.set_level("INFO", logger="absl")
    metrics = train.train_and_evaluate(config, interrupted)
    # A fresh start would end with the same weights too: the log must say it resumed.
    assert "ckpt-25 at step 25" in caplog.text and "starting from scratch" not in caplog.text
    assert metrics["step"] == 60
    model_a, optimizer_a, step_a = _restore_model(config, straight)
    model_b, optimizer_b, step_b = _restore_model(config, interrupted)
    assert step_a == step_b == 60
    assert int(optimizer_a.iterations.numpy()) == int(optimizer_b.iterations.numpy()) == 60
    for a, b in zip(model_a.trainable_variables, model_b.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    for a, b in zip(optimizer_a.variables, optimizer_b.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_running_a_finished_workdir_again_only_evaluates(tmp_path):
    config = tiny_config(**{"train.num_steps": 20})
    first = train.train_and_evaluate(config, str(tmp_path))
    checkpoints = sorted(os.listdir(tmp_path / "checkpoints"))
    # What writes killed half way leave behind is removed by the next run (under the lock).
    leftovers = [
        tmp_path / "config.json.tmp-0123abcd",
        tmp_path / "checkpoints" / "vocabulary.json.tmp-89abcdef",
        tmp_path / "export" / "weights.npz.tmp-deadbeef.npz",
    ]
    for path in leftovers:
        path.write_text("half")
    folders = [tmp_path / "export" / "saved_model.tmp-0badcafe", tmp_path / "checkpoints" / "ckpt-10_temp"]
    for folder in folders:  # the second: TensorFlow's shards of a save killed before its merge
        folder.mkdir()
        (folder / "part-00000-of-00001.index").write_text("half")
    second = train.train_and_evaluate(config, str(tmp_path))
    assert not any(p.exists() for p in leftovers + folders)
    assert second["step"] == 20 and second["val_loss"] == pytest.approx(first["val_loss"], rel=1e-6)
    assert second["train_loss"] == first["train_loss"]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == checkpoints


def _snapshot(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_non_finite_loss_stops_with_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    good = tiny_config(
        **{
            "train.num_steps": 20,
            "train.optimizer": "sgd",
            "train.learning_rate": 0.01,
            "train.loss": "mse",
            "model.output_activation": "linear",
        }
    )
    train.train_and_evaluate(good, str(tmp_path))
    saved = _snapshot(tmp_path / "checkpoints")
    diverging = tiny_config(
        **{
            "train.num_steps": 60,
            "train.optimizer": "sgd",
            "train.learning_rate": 1e12,
            "train.loss": "mse",
            "model.output_activation": "linear",
        }
    )
    with pytest.raises(FloatingPointError, match=r"between steps 20 and 30.*ckpt-20"):
        train.train_and_evaluate(diverging, str(tmp_path))
    assert _snapshot(tmp_path / "checkpoints") == saved


@pytest.mark.parametrize("relative", [False, True])
def test_checkpoint_of_another_architecture_is_a_clear_error_and_writes_nothing(
    tmp_path, monkeypatch, relative
):
    if relative:  # from another folder, a relative workdir (it was silently overwritten)
        monkeypatch.chdir(tmp_path)
        tmp_path = tmp_path / "run"
    workdir = "run" if relative else str(tmp_path)
    train.train_and_evaluate(tiny_config(**{"train.num_steps": 10}), workdir)
    before = {name: (tmp_path / name).read_bytes() for name in ("config.json", "metrics.json")}
    checkpoints = _snapshot(tmp_path / "checkpoints")
    other = tiny_config(**{"model.layer_sizes": (784, 32, 16)})
    with pytest.raises(
        ValueError,
        match=r"model/kernels/0: the checkpoint has shape \[784, 64\], the config.s model \[784, 32\]",
    ):
        train.train_and_evaluate(other, workdir)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert _snapshot(tmp_path / "checkpoints") == checkpoints


@pytest.mark.parametrize("damage", [b"", b'{"model": {"layer_sizes": [0, 3', b"\xff\xfe not json", b"[1, 2]"])
def test_a_damaged_saved_config_is_a_one_line_error_naming_it(tmp_path, damage):
    # A truncated config.json used to read as "input width 0", silently.
    (tmp_path / "config.json").write_bytes(damage)
    with pytest.raises(ValueError, match=r"config .*config\.json is damaged") as error:
        restore.trained_input_width(str(tmp_path))
    assert "\n" not in str(error.value)
    (tmp_path / "config.json").unlink()
    assert restore.trained_input_width(str(tmp_path)) == 0  # no saved config: nothing to check


def test_config_json_is_written_atomically(tmp_path, monkeypatch):

    train.train_and_evaluate(tiny_config(**{"train.num_steps": 10}), str(tmp_path))
    before = (tmp_path / "config.json").read_bytes()

    def failing_fsync(fd):  # the write of the new config.json fails half way
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        train.train_and_evaluate(tiny_config(**{"train.num_steps": 20}), str(tmp_path))
    assert (tmp_path / "config.json").read_bytes() == before
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]


def test_data_width_that_does_not_match_the_model_is_an_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((50, 10), np.float32))
    config = tiny_config(
        **{
            "data.name": "array",
            "data.path": str(tmp_path / "x.npy"),
            "data.num_validation": 5,
            "data.num_train": 0,
        }
    )
    with pytest.raises(ValueError, match=r"has width 10, but `model.layer_sizes\[0\]` is 784"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize(
    "overrides",
    [
        {"train.optimizer": "sgd", "train.learning_rate": 0.5, "train.nesterov": True, "train.loss": "mse"},
        {"train.optimizer": "rmsprop", "train.learning_rate": 1e-3, "train.momentum": 0.0},
        {"train.schedule": "cosine", "train.warmup_steps": 10, "train.learning_rate": 5e-3},
        {"train.schedule": "exponential", "train.decay_steps": 40, "train.learning_rate": 5e-3},
        {"model.tied": False},
    ],
)
def test_optimizers_schedules_and_untied_models_lower_the_loss(tmp_path, overrides):
    config = tiny_config(**{"train.num_steps": 80, **overrides})
    before = _initial_val_loss(config)
    assert train.train_and_evaluate(config, str(tmp_path))["val_loss"] < 0.7 * before


def test_learning_rate_schedules_warm_up_then_decay():
    config = ml_collections.ConfigDict(
        dict(
            learning_rate=0.1,
            warmup_steps=10,
            schedule="cosine",
            num_steps=110,
            decay_steps=1,
            decay_rate=0.5,
        )
    )
    schedule = schedules.learning_rate_schedule(config)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(9)) == pytest.approx(0.1)
    assert float(schedule(60)) == pytest.approx(0.05, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)
    config.update(dict(schedule="exponential", warmup_steps=0, decay_steps=10))
    assert float(schedules.learning_rate_schedule(config)(20)) == pytest.approx(0.025)
    config.update(dict(schedule="constant"))
    assert schedules.learning_rate_schedule(config) == 0.1


def test_pieces_compose_into_a_custom_research_loop():
    model = TiedAutoencoder([784, 32], activation="sigmoid", seed=0)
    optimizer = tf.keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    step = tf.function(steps.make_train_step(model, optimizer, "bce", global_batch_size=64))
    batches = iter(pipelines.train_dataset(sources.curves(640, seed=0), batch_size=64, seed=0))
    losses = [float(step(next(batches))) for _ in range(60)]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:3])
    assert len(model.trainable_variables) == 3  # one kernel, two biases
