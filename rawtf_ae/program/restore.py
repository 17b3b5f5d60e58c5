"""A trained workdir read back: its model from the newest (or best) checkpoint, the input width
its run was trained with, and the id vocabularies a resumed ratings run must keep.

The workdir modes (`--mode=eval|export|encode`) and a resumed training run read a workdir
through here; `rawtf_ae.files.Workdir` names the files.
"""

from __future__ import annotations

import os

import ml_collections
import tensorflow as tf

from rawtf_ae import files
from rawtf_ae.config import checks
from rawtf_ae.models import architectures
from rawtf_ae.recommender import ratings
from rawtf_ae.training import checkpoints, early_stopping


def restore_model(config: ml_collections.ConfigDict, workdir: str) -> tuple:
    """The config's model with the weights of the newest checkpoint in `workdir`.

    With `train.keep_best` and `checkpoints/best.npz` there, the model gets the best
    evaluation's weights instead (`rawtf_ae.training.early_stopping`), and `step` is that evaluation's.

    Returns:
      `(model, step, checkpoint_path)`.

    Raises:
      FileNotFoundError: `workdir` has no checkpoint.
      ValueError: the checkpoint's shapes differ from the config's model (both named).
    """
    checks.validate(config)
    layout = files.Workdir(workdir)
    workdir, directory = layout.path, layout.checkpoints
    if not checkpoints.candidates(directory):
        raise FileNotFoundError(f"Workdir {workdir} has no checkpoint in {directory}; train first.")
    config = architectures.with_input_width(config, trained_input_width(workdir))
    if architectures.input_width(config) == 0:
        raise ValueError(
            f"`model.layer_sizes[0]` is 0 (the data's width) and {workdir}/config.json does not say "
            "which width the run was trained with; set it explicitly."
        )
    # The model and the step only: evaluating, exporting and encoding need no optimizer (its
    # slots would be twice the model's memory for Adam: 4 GiB at a million items).
    model = architectures.create_model(config)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, step=step)
    path = checkpoints.restore_latest(checkpoint, directory, move_aside=False)
    best = layout.best_weights
    if config.train.keep_best and os.path.exists(best):
        record = early_stopping.BestSoFar()
        tf.train.Checkpoint(best=record).read(path).expect_partial()
        best_step = early_stopping.Tracker(record, model, workdir, 0, True).restore_best()
        return model, best_step, best
    return model, int(step.numpy()), path


def trained_input_width(workdir: str) -> int:
    """The input width a workdir's run was trained with (from its `config.json`), or 0.

    0 when the workdir has no `config.json` (or a conv model's, without `layer_sizes`).

    Raises:
      ValueError: `config.json` exists but is damaged (one line naming it).
    """
    path = files.Workdir(workdir).config
    try:
        saved = files.read_json(path, "run's saved config")
    except FileNotFoundError:
        return 0
    try:
        return int(saved["model"]["layer_sizes"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
            return 0
        raise ValueError(f"The run's saved config {path} is damaged (it holds no `model` section).") from None


def check_vocabulary(splits, workdir: str) -> None:
    """A resumed ratings run must map ids as before: same users and items, same order."""
    path = files.Workdir(workdir).vocabulary
    if getattr(splits, "vocabulary", None) is not None and os.path.exists(path):
        saved = ratings.Vocabulary.load(path)
        if saved != splits.vocabulary:
            raise ValueError(
                f"The ratings in the training file define other ids than the run in {workdir} was "
                f"trained with ({path}: {saved.difference(splits.vocabulary)}). Use a new --workdir, "
                "or the original training file."
            )
