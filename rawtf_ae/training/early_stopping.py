"""The best validation loss so far: its weights kept, and early stopping when it stops improving.

With `train.keep_best`, every evaluation during training (every `train.eval_every_steps`, and
the last one) is compared with the lowest validation loss so far (for loss multinomial: the
highest validation NDCG@100, `rawtf_ae.recommender.ranking`). A new best writes the model's
weights to `checkpoints/best.npz` (atomically, on the chief); at the end the run takes those
weights back, so its final metrics, picture and export are the best evaluation's.
`train.early_stopping_evals=N` ends training after N evaluations in a row without a new best.

The record (best loss, its step, the evaluations since) is a `BestSoFar` module saved in every
checkpoint, so a resumed run goes on counting where it stopped, and an early-stopped run that
is run again does not train further. Model selection uses the validation split only: the test
split (`--mode=eval --split=test`) stays untouched.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from rawtf_ae import files
from rawtf_ae.models import weights_file


class BestSoFar(tf.Module):
    """The lowest validation loss so far, the step it was measured at, and the evaluations since."""

    def __init__(self):
        super().__init__(name="best_so_far")
        self.loss = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="loss")
        self.step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="step")
        self.stale = tf.Variable(0, dtype=tf.int64, trainable=False, name="evaluations_since")


class Tracker:
    """Updates a `BestSoFar` with each validation loss (or NDCG@100); keeps and restores the best weights."""

    def __init__(
        self,
        record: BestSoFar,
        model,
        workdir: str,
        patience: int,
        chief: bool,
        higher_is_better: bool = False,
    ):
        """`higher_is_better`: the values are a metric to raise (NDCG@100), not a loss; the
        record then holds their negatives."""
        self.record, self.model, self.patience, self.chief = record, model, patience, chief
        self.sign, self.what = (
            (-1.0, "validation NDCG@100 above") if higher_is_better else (1.0, "validation loss below")
        )
        self.path = files.Workdir(workdir).best_weights

    @property
    def stopped(self) -> bool:
        """Whether `patience` evaluations in a row brought no new best (never with patience 0)."""
        return bool(self.patience) and int(self.record.stale.numpy()) >= self.patience

    def update(self, step: int, val_loss: float) -> bool:
        """Records the evaluation at `step`; True when it is a new best (its weights then saved)."""
        record = self.record
        if int(record.step.numpy()) == step:  # the same evaluation again (the run's last)
            return False
        if self.sign * val_loss < float(record.loss.numpy()):
            record.loss.assign(self.sign * val_loss)
            record.step.assign(step)
            record.stale.assign(0)
            if self.chief:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                weights_file.save_weights(self.model, self.path)  # atomic, like the export's weights.npz
            return True
        record.stale.assign_add(1)
        if self.stopped:
            logging.info(
                "early stopping at step %d: %d evaluations without a %s %.5f (step %d)",
                step,
                self.patience,
                self.what,
                self.sign * float(record.loss.numpy()),
                int(record.step.numpy()),
            )
        return False

    def restore_best(self) -> int:
        """Assigns the best evaluation's weights to the model; returns its step."""
        step = int(self.record.step.numpy())
        try:
            weights_file.load_weights(self.path, self.model)  # checks every key and shape first
        except (OSError, ValueError) as e:
            raise ValueError(
                f"The best weights (of step {step}) cannot be restored: {e} The run's checkpoints "
                "are intact; set train.keep_best=False to finish with the last weights."
            ) from None
        return step
