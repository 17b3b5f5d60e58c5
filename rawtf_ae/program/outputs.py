"""What a finished training run leaves in its workdir, written by the chief.

The reconstruction picture (`reconstructions.png`, also a TensorBoard image), the final
validation summaries, the export (`export/saved_model/`, `export/weights.npz`, and for ratings
the vocabulary) and `metrics.json`; every file atomically.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from rawtf_ae import files
from rawtf_ae.models import weights_file
from rawtf_ae.program import images
from rawtf_ae.serving import saved_model


def write_run_outputs(model, splits, config, workdir: str, metrics: dict, validation_writer) -> None:
    """The end-of-run outputs: the reconstruction picture, summaries, export, `metrics.json`."""
    originals = splits.picture_examples(config.train.num_picture_examples)
    with validation_writer.as_default(step=metrics["step"]):
        tf.summary.scalar("loss", metrics["val_loss"])
        if "val_rmse" in metrics:
            tf.summary.scalar("rmse", metrics["val_rmse"])
        if originals is not None and len(originals):
            grid = images.reconstruction_grid(originals, model(originals).numpy(), splits.image_shape)
            picture = os.path.join(workdir, "reconstructions.png")
            images.write_png(picture, grid)
            tf.summary.image("reconstructions", grid[None])
            logging.info("picture:     %s", picture)
    validation_writer.flush()
    if config.train.export:
        # A model with one row per user recommends; the vocabulary travels with the export.
        vocabulary = splits.vocabulary
        recommends = vocabulary is not None and splits.by == "user"
        saved_model_path = saved_model.save(
            model,
            os.path.join(workdir, "export", "saved_model"),
            vocabulary if recommends else None,
            config.train.export_first_pass,
        )
        weights_file.save_weights(model, os.path.join(workdir, "export", "weights.npz"))
        if vocabulary is not None:
            vocabulary.save(os.path.join(workdir, "export", "vocabulary.json"))
        logging.info("export:      %s (and weights.npz beside it)", saved_model_path)
    files.write_json(os.path.join(workdir, "metrics.json"), metrics)
    logging.info("metrics:     %s", os.path.join(workdir, "metrics.json"))
    logging.info("TensorBoard: tensorboard --logdir %s", os.path.join(workdir, "summaries"))
