"""Per-variable learning-rate multipliers (Caffe's `lr_mult`), exact for every optimizer.

Scaling a variable's gradient scales its learning rate only for plain SGD: Adam and RMSprop
divide the gradient by its running magnitude and undo the scaling. So each multiplier gets an
optimizer of its own, with the learning rate (or schedule) multiplied, updating only its
variables; `GroupedOptimizer` holds them and routes each gradient to its variable's optimizer.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import tensorflow as tf


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
