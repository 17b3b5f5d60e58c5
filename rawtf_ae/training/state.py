"""A run's state: the model, the optimizer and the training step, as a checkpoint holds them.

`create_train_state` is the one function that builds them (under a `tf.distribute` strategy),
from a config or from a model and an optimizer factory, for training, greedy pretraining, the
classifier, the benchmarks and the tests alike, as Flax's `create_train_state` does. Reading a
trained workdir back is `rawtf_ae.program.restore`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import ml_collections
import tensorflow as tf

from rawtf_ae.models import architectures
from rawtf_ae.optim import optimizers
from rawtf_ae.training import early_stopping, sharded_checkpoint


@dataclasses.dataclass
class TrainState:
    """The model, its optimizer (built) and the training step counter, all checkpointed."""

    model: tf.Module
    optimizer: object
    step: tf.Variable
    best: Optional[tf.Module] = None  # `early_stopping.BestSoFar` with train.keep_best

    def checkpoint(self) -> tf.train.Checkpoint:
        """A `tf.train.Checkpoint` of the three (the layout every rawtf_ae checkpoint has), and
        of the best-so-far record when there is one."""
        extra = {"best": self.best} if self.best is not None else {}
        # Sharded variables' slots joined: the checkpoint's keys and shapes are one device's.
        optimizer = sharded_checkpoint.layout_free(self.optimizer, self.model)
        return tf.train.Checkpoint(model=self.model, optimizer=optimizer, step=self.step, **extra)


def create_train_state(
    config: Optional[ml_collections.ConfigDict],
    strategy: Optional[tf.distribute.Strategy] = None,
    *,
    model: Optional[tf.Module] = None,
    variables=None,
    multipliers: bool = True,
    make_optimizer: Optional[Callable[[tf.Variable], object]] = None,
) -> TrainState:
    """The model of `config`, a step counter at 0 and the optimizer of `config.train`, built.

    Everything is created under `strategy.scope()` (default: the current strategy), so that
    the variables are mirrored and the optimizer is built on them, as Keras 3 needs under
    `MirroredStrategy`. The optimizer's schedule follows the step counter.

    Args:
      config: the run's config.
      strategy: the `tf.distribute` strategy.
      model: a model made already (e.g. a single pretraining layer, a classifier), instead of
        `architectures.create_model(config)`; create it under the same strategy's scope.
      variables: what the optimizer updates (default: `model.trainable_variables`).
      multipliers: apply `train.learning_rate_multipliers` (off for models whose variable
        names they do not describe, e.g. a pretraining layer).
      make_optimizer: `step -> optimizer` (not yet built), instead of `config.train`'s; with a
        `model`, `config` may then be None (e.g. the classifier's Adam).
    """
    if config is None and (model is None or make_optimizer is None):
        raise ValueError("create_train_state needs a config, or a model and make_optimizer.")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = architectures.create_model(config) if model is None else model
        variables = model.trainable_variables if variables is None else variables
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        if make_optimizer is None:
            optimizer = optimizers.create_optimizer(config.train, variables if multipliers else None, step)
        else:
            optimizer = make_optimizer(step)
        optimizer.build(variables)
        keep_best = config is not None and config.train.keep_best
        best = early_stopping.BestSoFar() if keep_best else None
    return TrainState(model=model, optimizer=optimizer, step=step, best=best)
