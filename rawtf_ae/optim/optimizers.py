"""The optimizer and its learning rate, built from `config.train`, and per-variable multipliers.

`create_optimizer(config.train, variables, step_counter)` is the one place a Keras optimizer
is made from a config (big_vision's `optax.py` plays this part there). Schedules follow the
*training* step (`TrainingStepSchedule`), not the optimizer's update count.

Per-variable learning-rate multipliers (Caffe's `lr_mult`) are exact for every optimizer.
Scaling a variable's gradient scales its learning rate only for plain SGD: Adam and RMSprop
divide the gradient by its running magnitude and undo the scaling. So each multiplier gets an
optimizer of its own, with the learning rate (or schedule) multiplied, updating only its
variables; `GroupedOptimizer` holds them and routes each gradient to its variable's optimizer.
"""


from __future__ import annotations

import re
from typing import Callable, Optional, Sequence

import tensorflow as tf

from rawtf_ae.optim import lazy
from rawtf_ae.optim.schedules import ScaledSchedule, TrainingStepSchedule, learning_rate_schedule, scaled

OPTIMIZERS = ("adam", "sgd", "rmsprop", "lazy_adam", "lazy_adagrad")


def parse_multipliers(text: str) -> list[tuple[str, float]]:
    """`"bias=2,encoder/layer_0=0.1"` -> `[("bias", 2.0), ("encoder/layer_0", 0.1)]`.

    Each pattern is a regular expression searched in the variable names (e.g.
    `encoder/layer_0/kernel`, `decoder/layer_1/bias`); a variable takes the multiplier of the
    first pattern that matches it, else 1.

    Raises:
      ValueError: naming `train.learning_rate_multipliers` and the bad entry.
    """
    pairs = []
    for entry in (part.strip() for part in text.split(",") if part.strip()):
        pattern, sep, value = entry.rpartition("=")
        try:
            multiplier = float(value)
            re.compile(pattern)
        except (ValueError, re.error):
            multiplier = None
        if not sep or not pattern or multiplier is None or not multiplier >= 0 or multiplier == float("inf"):
            raise ValueError(
                f"`train.learning_rate_multipliers` entry {entry!r} must be PATTERN=MULTIPLIER with a "
                "regular expression and a finite number >= 0, e.g. 'bias=2,encoder/layer_0=0.1'."
            )
        pairs.append((pattern, multiplier))
    return pairs


def variable_name(variable) -> str:
    """`tied_autoencoder/encoder/layer_0/kernel:0` -> `encoder/layer_0/kernel`."""
    name = variable.name.split(":")[0]
    found = re.search(r"(?:^|/)((?:en|de)coder/(?:layer|conv)_\d+/\w+)$", name)
    return found.group(1) if found else name


def multiplier_of(name: str, pairs: Sequence[tuple[str, float]]) -> float:
    for pattern, multiplier in pairs:
        if re.search(pattern, name):
            return multiplier
    return 1.0


def check_patterns(pairs, names: Sequence[str]) -> None:
    """Raises `ValueError` for a pattern that matches none of `names` (a typo, most likely)."""
    for pattern, _ in pairs:
        if not any(re.search(pattern, name) for name in names):
            raise ValueError(
                f"`train.learning_rate_multipliers` pattern {pattern!r} matches no variable; the "
                f"model's variables are {', '.join(names)}."
            )


class GroupedOptimizer(tf.Module):
    """One optimizer per learning-rate multiplier, each updating only its variables.

    Looks like one Keras optimizer to `make_train_step`: `build`, `apply_gradients`,
    `iterations` (the first group's; every group steps together) and `learning_rate`.
    Checkpoints hold each group's slots under `optimizers/<i>`.
    """

    def __init__(self, make_optimizer: Callable, learning_rate, pairs, variables):
        super().__init__(name="grouped_optimizer")
        multipliers = [multiplier_of(variable_name(v), pairs) for v in variables]
        self.multipliers = sorted(set(multipliers))
        self.optimizers = [make_optimizer(scaled(learning_rate, m)) for m in self.multipliers]
        self._group_of = {id(v): self.multipliers.index(m) for v, m in zip(variables, multipliers)}

    def build(self, variables) -> None:
        for index, optimizer in enumerate(self.optimizers):
            optimizer.build([v for v in variables if self._group_of[id(v)] == index])

    @property
    def iterations(self):
        return self.optimizers[0].iterations

    def set_learning_rate(self, learning_rate) -> None:
        """Sets every group's rate to `learning_rate` times its multiplier (on resume)."""
        for multiplier, optimizer in zip(self.multipliers, self.optimizers):
            optimizer.learning_rate = scaled(learning_rate, multiplier)

    def apply_gradients(self, gradients_and_variables) -> None:
        groups = [[] for _ in self.optimizers]
        for gradient, variable in gradients_and_variables:
            groups[self._group_of[id(variable)]].append((gradient, variable))
        for optimizer, pairs in zip(self.optimizers, groups):
            optimizer.apply_gradients(pairs)


def create_optimizer(train_config, variables=None, step_counter: Optional[tf.Variable] = None):
    """A `tf.keras.optimizers` optimizer for `config.train` (not yet built).

    With `precision="mixed_float16"` it is wrapped in a `LossScaleOptimizer` (dynamic loss
    scaling), which `make_train_step` recognizes. With `train.learning_rate_multipliers` and the
    model's `variables`, an `optimizers.GroupedOptimizer`: one optimizer per multiplier.

    Args:
      train_config: `config.train`.
      variables: the model's trainable variables (needed for learning-rate multipliers).
      step_counter: the training step variable that `make_train_loop` advances. A schedule
        follows it (`TrainingStepSchedule`); without it Keras drives the schedule from
        `optimizer.iterations`, which is the same only without dense re-feeding.

    Raises:
      ValueError: a schedule with `train.dense_refeeding` but no `step_counter` (the schedule
        would run 1 + dense_refeeding times too fast).
    """
    learning_rate = learning_rate_schedule(train_config)
    if callable(learning_rate):
        if step_counter is not None:
            learning_rate = TrainingStepSchedule(learning_rate, step_counter)
        elif train_config.get("dense_refeeding", 0):
            raise ValueError(
                "A learning-rate schedule with `train.dense_refeeding` needs the training step "
                "counter: create_optimizer(train_config, variables, step_counter)."
            )
    name = train_config.optimizer
    if name == "auto":
        raise ValueError(
            "`train.optimizer='auto'` depends on the batches: resolve it first with "
            "rawtf_ae.recommender.batching.resolve_auto(config, sparse) (train_and_evaluate does)."
        )

    def make(rate):
        if name == "adam":
            return tf.keras.optimizers.Adam(rate)
        if name == "sgd":
            return tf.keras.optimizers.SGD(
                rate, momentum=train_config.momentum, nesterov=train_config.nesterov
            )
        if name == "rmsprop":
            return tf.keras.optimizers.RMSprop(rate, momentum=train_config.momentum)
        if name == "lazy_adam":
            return lazy.LazyAdam(rate)
        if name == "lazy_adagrad":
            return lazy.LazyAdagrad(rate)
        raise ValueError(f"Unknown `train.optimizer` {name!r}; expected one of {', '.join(OPTIMIZERS)}.")

    pairs = parse_multipliers(train_config.get("learning_rate_multipliers", ""))
    if pairs and variables is not None:
        return GroupedOptimizer(make, learning_rate, pairs, variables)
    optimizer = make(learning_rate)
    if train_config.get("precision") == "mixed_float16":
        optimizer = tf.keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def follows_update_count(optimizer) -> bool:
    """Whether a (grouped, loss-scaled) Keras optimizer's schedule is driven by `iterations`."""
    inner = getattr(optimizer, "optimizers", None) or [getattr(optimizer, "inner_optimizer", optimizer)]
    for each in inner:
        rate = getattr(each, "_learning_rate", None)
        while isinstance(rate, ScaledSchedule):
            rate = rate.schedule
        if isinstance(rate, tf.keras.optimizers.schedules.LearningRateSchedule) and not getattr(
            rate, "follows_training_step", False
        ):
            return True
    return False


def reset_constant_rate(optimizer, train_config) -> None:
    """On resume, a constant rate comes from the config, not the checkpoint.

    Keras checkpoints a constant learning rate as a variable, which a restore overwrites with
    the old run's value; a schedule is not checkpointed and needs nothing.
    """
    rate = learning_rate_schedule(train_config)
    if callable(rate):
        return
    if isinstance(optimizer, GroupedOptimizer):
        optimizer.set_learning_rate(rate)
    else:
        optimizer.learning_rate = rate
