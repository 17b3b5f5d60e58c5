"""Learning-rate schedules built from `config.train`, and the wrappers that make them follow
the *training* step.

`learning_rate_schedule(config.train)`: a constant, cosine (to 0 at `num_steps`) or
exponential rate, after a linear warm-up (`WarmupSchedule`). `TrainingStepSchedule` drives a
schedule by the run's step counter, not the optimizer's update count (they differ with dense
re-feeding); `ScaledSchedule` multiplies one for per-variable learning-rate multipliers.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

SCHEDULES = ("constant", "cosine", "exponential")


class ScaledSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """`multiplier * schedule(step)`."""

    def __init__(self, schedule, multiplier: float):
        super().__init__()
        self.schedule, self.multiplier = schedule, multiplier

    def __call__(self, step):
        return self.multiplier * self.schedule(step)

    def get_config(self):
        return {"multiplier": self.multiplier}


def scaled(learning_rate, multiplier: float):
    """A learning rate (float or schedule) times `multiplier`."""
    if multiplier == 1:
        return learning_rate
    if callable(learning_rate):
        return ScaledSchedule(learning_rate, multiplier)
    return learning_rate * multiplier


class WarmupSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then `after(step - warmup_steps)`."""

    def __init__(self, peak: float, warmup_steps: int, after: Callable):
        super().__init__()
        self.peak, self.warmup_steps, self.after = peak, warmup_steps, after

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decayed = self.after(tf.maximum(step - self.warmup_steps, 0.0))
        if self.warmup_steps == 0:
            return decayed
        warming = self.peak * (step + 1.0) / float(self.warmup_steps)
        return tf.where(step < self.warmup_steps, warming, decayed)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


class TrainingStepSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """`schedule(step)` at the *training* step held in `step_counter`, not `optimizer.iterations`.

    Keras calls a schedule with `optimizer.iterations`, the number of updates applied, which
    advances 1 + `train.dense_refeeding` times per training step: driven by it, a cosine
    schedule reached 0 at half the run and warm-up ended early. Every update of training step
    `s` (the re-fed ones included) uses `schedule(s)`; `make_train_loop` advances the counter
    after each step (a loop of one's own must advance it too, or the rate stays put).

    A schedule of one's own that accounts for re-feeding sets `follows_training_step = True`,
    like this one; `make_train_step` refuses any other schedule with dense re-feeding.
    """

    follows_training_step = True

    def __init__(self, schedule, step_counter: tf.Variable):
        super().__init__()
        self.schedule, self.step_counter = schedule, step_counter

    def __call__(self, iterations):
        del iterations  # the optimizer's update count; see the class docstring
        return self.schedule(self.step_counter)

    def get_config(self):
        return {}


def learning_rate_at(train_config, step: int) -> float:
    """The (base) learning rate that `config.train` applies at training step `step`."""
    rate = learning_rate_schedule(train_config)
    return float(rate(step)) if callable(rate) else float(rate)


def learning_rate_schedule(train_config):
    """A float (constant, no warm-up) or a `LearningRateSchedule` for `config.train`."""
    peak, warmup = float(train_config.learning_rate), int(train_config.warmup_steps)
    schedules = tf.keras.optimizers.schedules
    if train_config.schedule == "constant":
        if warmup == 0:
            return peak
        after = lambda step: tf.constant(peak, tf.float32)  # noqa: E731
    elif train_config.schedule == "cosine":
        after = schedules.CosineDecay(peak, decay_steps=train_config.num_steps - warmup)
    elif train_config.schedule == "exponential":
        after = schedules.ExponentialDecay(peak, train_config.decay_steps, train_config.decay_rate)
    else:
        raise ValueError(f"Unknown `train.schedule` {train_config.schedule!r}.")
    return WarmupSchedule(peak, warmup, after)
