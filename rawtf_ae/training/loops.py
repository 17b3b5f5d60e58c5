"""The N-step loop: one `tf.function` that runs `num_steps` training steps through `strategy.run`.

The middle of Orbit's three layers (the step, the N-step loop, the outer loop): training,
greedy pretraining and the classifier's fine-tuning all run their steps through
`make_train_loop`, and `train_steps` drives it for a fixed number of steps.
"""

from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf


def make_train_loop(
    train_step,
    step_counter: tf.Variable,
    strategy: Optional[tf.distribute.Strategy] = None,
    stop: Optional[tf.Variable] = None,
):
    """A `tf.function` `(iterator, num_steps) -> mean loss` running `num_steps` steps.

    `num_steps` is a scalar tensor, so a new count does not retrace. `step_counter` advances
    after every step, so a schedule that reads it (`optimizers.TrainingStepSchedule`) sees the
    step. The loss is the replicas' summed per-replica losses (each already a share of the
    global mean), averaged over the steps run.

    With `stop` (a boolean `tf.Variable`, e.g. `preemption.StopSignal.flag`), the loop reads it
    before every step and ends early once it is set, so that a preemption notice is honoured
    within one step whatever `num_steps` is; `step_counter` then says how far it got.
    """
    strategy = strategy or tf.distribute.get_strategy()

    @tf.function
    def train_loop(iterator, num_steps):
        total = tf.constant(0.0, tf.float32)
        done = tf.constant(0, tf.int64)
        for _ in tf.range(num_steps):
            if stop is not None and stop.read_value():
                break
            per_replica = strategy.run(train_step, args=(next(iterator),))
            total += tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None), tf.float32)
            step_counter.assign_add(1)
            done += 1
        return total / tf.cast(tf.maximum(done, 1), tf.float32)

    return train_loop


def train_steps(train_loop, iterator, num_steps: int, steps_per_loop: int, what: str) -> list[float]:
    """Runs `num_steps` steps in calls of at most `steps_per_loop`; returns each call's mean loss.

    Raises:
      FloatingPointError: a call's loss is NaN or infinite (naming `what` and the steps).
    """
    done, means = 0, []
    while done < num_steps:
        chunk = min(steps_per_loop, num_steps - done)
        mean = float(train_loop(iterator, tf.constant(chunk, tf.int64)))
        if not math.isfinite(mean):
            raise FloatingPointError(
                f"{what} diverged (loss {mean}) between steps {done} and {done + chunk}."
            )
        means.append(mean)
        done += chunk
    return means
