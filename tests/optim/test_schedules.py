"""Learning-rate schedules follow the training step, not the optimizer's update count.

Dense re-feeding applies 1 + k updates per training step; Keras drives a schedule from
`optimizer.iterations`, so a cosine schedule used to reach 0 at half the run. Every optimizer
and the per-variable multiplier groups are checked against an independently wired reference,
and the logged rate against the rate applied.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.optim import optimizers, schedules
from rawtf_ae.program import train
from rawtf_ae.recommender import ratings_file
from rawtf_ae.recommender.synthetic import synthetic_ratings
from rawtf_ae.training import loops, steps
from tests.conftest import tiny_config, tiny_ratings_config

STEPS, REFEEDS, BATCH, WIDTH = 6, 1, 6, 10


def _batches():
    rng = np.random.default_rng(0)
    mask = (rng.random((STEPS, BATCH, WIDTH)) < 0.4).astype(np.float32)
    inputs = (rng.integers(1, 6, mask.shape) * mask).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices({"inputs": inputs, "mask": mask})


def _model():
    return TiedAutoencoder([WIDTH, 8, 4], activation="selu", output_activation="linear", seed=0)


class _PerTrainingStep(tf.keras.optimizers.schedules.LearningRateSchedule):
    """The reference: Keras's own wiring (a schedule of `iterations`), with the update count
    turned back into the training step by hand: 1 + REFEEDS updates per step."""

    follows_training_step = True  # it does, by its own arithmetic

    def __init__(self, schedule, multiplier=1.0):
        super().__init__()
        self.schedule, self.multiplier = schedule, multiplier

    def __call__(self, iterations):
        return self.multiplier * self.schedule(iterations // (1 + REFEEDS))


def _reference_optimizer(train_config, schedule):
    def make(rate):
        if train_config.optimizer == "sgd":
            return tf.keras.optimizers.SGD(rate, momentum=train_config.momentum)
        if train_config.optimizer == "rmsprop":
            return tf.keras.optimizers.RMSprop(rate, momentum=train_config.momentum)
        return tf.keras.optimizers.Adam(rate)

    pairs = optimizers.parse_multipliers(train_config.learning_rate_multipliers)
    if not pairs:
        return make(_PerTrainingStep(schedule)), None
    return None, (make, pairs)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("multipliers", ["", "bias=3,encoder/layer_1=0.5"])
def test_every_update_of_a_training_step_uses_the_schedule_at_that_step(optimizer, multipliers):
    config = tiny_config(
        **{
            "train.optimizer": optimizer,
            "train.momentum": 0.9,
            "train.learning_rate": 0.05,
            "train.schedule": "cosine",
            "train.warmup_steps": 2,
            "train.num_steps": STEPS,
            "train.dense_refeeding": REFEEDS,
            "train.learning_rate_multipliers": multipliers,
        }
    )
    model, reference = _model(), _model()
    step = tf.Variable(0, dtype=tf.int64)
    library = optimizers.create_optimizer(config.train, model.trainable_variables, step)
    library.build(model.trainable_variables)
    loop = loops.make_train_loop(
        steps.make_train_step(model, library, "masked_mse", BATCH, dense_refeeding=REFEEDS), step
    )
    loop(iter(_batches()), tf.constant(STEPS, tf.int64))

    schedule = schedules.learning_rate_schedule(config.train)
    plain, grouped = _reference_optimizer(config.train, schedule)
    if grouped:
        make, pairs = grouped
        # GroupedOptimizer scales a schedule by calling it with `iterations`: the reference's.
        expected = optimizers.GroupedOptimizer(
            make, _PerTrainingStep(schedule), pairs, reference.trainable_variables
        )
    else:
        expected = plain
    expected.build(reference.trainable_variables)
    reference_step = tf.function(
        steps.make_train_step(reference, expected, "masked_mse", BATCH, dense_refeeding=REFEEDS)
    )
    for batch in _batches():
        reference_step(batch)

    assert int(step.numpy()) == STEPS
    for a, b in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-5, atol=1e-7, err_msg=a.name)


def test_a_schedule_with_refeeding_and_no_step_counter_is_refused():
    config = tiny_config(**{"train.schedule": "cosine", "train.dense_refeeding": 1})
    with pytest.raises(ValueError, match="needs the training step counter"):
        optimizers.create_optimizer(config.train)
    # Built by hand from the pieces: a plain Keras schedule follows the update count.
    for multipliers in ("", "bias=2"):
        model = _model()
        rate = tf.keras.optimizers.schedules.CosineDecay(0.01, decay_steps=10)
        if multipliers:
            make = tf.keras.optimizers.Adam
            pairs = optimizers.parse_multipliers(multipliers)
            optimizer = optimizers.GroupedOptimizer(make, rate, pairs, model.trainable_variables)
        else:
            optimizer = tf.keras.optimizers.Adam(rate)
        with pytest.raises(ValueError, match="must follow the training step"):
            steps.make_train_step(model, optimizer, "masked_mse", BATCH, dense_refeeding=1)


def _logged(workdir, tag):
    """`{step: value}` of a scalar summary under `workdir/summaries/train`."""
    directory = os.path.join(workdir, "summaries", "train")
    values = {}
    for name in os.listdir(directory):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def _checkpoint_kernel(workdir, step):
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", f"ckpt-{step}"))
    return reader.get_tensor("model/kernels/0/.ATTRIBUTES/VARIABLE_VALUE")


def test_cosine_with_refeeding_trains_to_the_end_and_logs_the_rate_it_applies(tmp_path):
    path = ratings_file.write_ratings(
        str(tmp_path / "r.csv"), synthetic_ratings(num_users=80, num_items=30, density=0.2)
    )
    config = tiny_ratings_config(
        path,
        **{
            "train.optimizer": "adam",
            "train.learning_rate": 0.005,
            "train.schedule": "cosine",
            "train.num_steps": 40,
            "train.steps_per_loop": 10,
            "train.log_every_steps": 10,
            "train.checkpoint_every_steps": 10,
            "train.keep_checkpoints": 5,
            "train.export": False,
        },
    )
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    # With the schedule at twice the speed, the rate was 0 from step 20 on: nothing changed.
    assert np.abs(_checkpoint_kernel(workdir, 40) - _checkpoint_kernel(workdir, 30)).max() > 1e-6
    cosine = tf.keras.optimizers.schedules.CosineDecay(0.005, decay_steps=40)
    logged = _logged(workdir, "learning_rate")
    assert sorted(logged) == [10, 20, 30, 40]
    for step, rate in logged.items():
        # The rate of the chunk's last update: training step `step - 1`.
        assert rate == pytest.approx(float(cosine(step - 1)), rel=1e-5), step
