"""What a finished training run leaves in its workdir, written by the chief.

The reconstruction picture (`reconstructions.png`, also a TensorBoard image), the final
validation summaries, the export (`export/saved_model/`, `export/weights.npz`, and for ratings
the vocabulary) and `metrics.json`; every file atomically.
"""

from __future__ import annotations

import tensorflow as tf
from absl import logging

from rawtf_ae import files
from rawtf_ae.models import weights_file
from rawtf_ae.program import images
from rawtf_ae.serving import saved_model


def export(model, layout: files.Workdir, vocabulary, recommends: bool, first_pass: str) -> dict:
    """`export/saved_model/` (with a `recommend` signature if `recommends`), `export/weights.npz`
    and, for ratings, `export/vocabulary.json`; returns the first two paths."""
    exported = {
        "saved_model": saved_model.save(model, layout.saved_model, vocabulary if recommends else None, first_pass),
        "weights": weights_file.save_weights(model, layout.weights),
    }
    if vocabulary is not None:
        vocabulary.save(layout.export_vocabulary)
    return exported


def write_run_outputs(model, splits, config, workdir: str, metrics: dict, validation_writer) -> None:
    """The end-of-run outputs: the reconstruction picture, summaries, export, `metrics.json`."""
    layout = files.Workdir(workdir)
    originals = splits.picture_examples(config.train.num_picture_examples)
    with validation_writer.as_default(step=metrics["step"]):
        tf.summary.scalar("loss", metrics["val_loss"])
        if "val_rmse" in metrics:
            tf.summary.scalar("rmse", metrics["val_rmse"])
        if originals is not None and len(originals):
            grid = images.reconstruction_grid(originals, model(originals).numpy(), splits.image_shape)
            images.write_png(layout.reconstructions, grid)
            tf.summary.image("reconstructions", grid[None])
            logging.info("picture:     %s", layout.reconstructions)
    validation_writer.flush()
    if config.train.export:
        # A model with one row per user recommends; the vocabulary travels with the export.
        vocabulary = splits.vocabulary
        recommends = vocabulary is not None and splits.by == "user"
        exported = export(model, layout, vocabulary, recommends, config.train.export_first_pass)
        logging.info("export:      %s (and weights.npz beside it)", exported["saved_model"])
    files.write_json(layout.metrics, metrics)
    logging.info("metrics:     %s", layout.metrics)
    logging.info("TensorBoard: tensorboard --logdir %s", layout.summaries())
