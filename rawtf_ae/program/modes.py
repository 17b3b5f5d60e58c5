"""Using a trained workdir: evaluate it, export it, encode a dataset with it.

Each reads the newest checkpoint in `workdir/checkpoints` for the config's architecture and
fails with a clear error, having written nothing, when there is none or it does not fit.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from rawtf_ae import files
from rawtf_ae.data import pipelines, sources
from rawtf_ae.models import pca
from rawtf_ae.program import images, outputs, restore
from rawtf_ae.recommender import baselines, batching, ratings
from rawtf_ae.training import evaluation

SPLITS = ("validation", "train", "test")
_PREFIX = {"validation": "val", "train": "train", "test": "test"}


def _atomic_numpy_save(path: str, arrays: dict) -> None:
    with files.atomic_path(path, suffix=os.path.splitext(path)[1]) as temporary:
        if path.endswith(".npz"):
            np.savez(temporary, **arrays)
        else:
            np.save(temporary, arrays["codes"])


def encode_examples(model, examples: np.ndarray, batch_size: int) -> np.ndarray:
    """`[n, layer_sizes[0]]` -> `[n, layer_sizes[-1]]` codes, in batches (none dropped)."""
    encode = tf.function(model.encode, input_signature=[tf.TensorSpec([None, model.input_width], tf.float32)])
    return np.concatenate([encode(batch).numpy() for batch in pipelines.eval_dataset(examples, batch_size)])


def evaluate(config: ml_collections.ConfigDict, workdir: str, split: str = "validation") -> dict:
    """The loss of the newest checkpoint on `split` against PCA, plus the pictures.

    Reports the training loss on the split (validation by default; "test" for data with test
    files kept aside, see `data.num_validation`) and, comparable across losses, the mean squared
    error per input of the autoencoder and of PCA with as many components as the code (fit on
    the training split). Metrics are named by split: `val_loss`, `test_loss`, ...

    Writes into `eval/` (validation) or `eval/<split>/`: `reconstructions.png`, `metrics.json`,
    the codes for TensorBoard's Embedding Projector (`projector/`, labels as metadata where the
    data has them) and, with matplotlib installed (`pip install rawtf_ae[plots]`), `codes.png`.
    """
    workdir = files.workdir_path(workdir)
    if split not in SPLITS:
        raise ValueError(f"--split is {split!r}; expected one of {', '.join(SPLITS)}.")
    model, step, path = restore.restore_model(config, workdir)
    splits = sources.load(config.data, config.seed)
    if splits.width != model.input_width:
        raise ValueError(f"The data has width {splits.width}, the checkpoint's model {model.input_width}.")
    if splits.vocabulary is not None:  # ratings
        if config.train.loss == "multinomial":
            return _evaluate_ranking(model, step, path, splits, config, workdir, split)
        splits.evaluated(split)  # only the held-out ratings (one line otherwise)
        return _evaluate_ratings(model, step, path, splits, config, workdir)
    examples, labels = splits.examples(split, config.data.path or config.data.name)
    prefix = _PREFIX[split]
    loss = evaluation.make_evaluate(model, config.train.loss)(
        pipelines.eval_dataset(examples, config.train.eval_batch_size)
    )
    reconstructions = np.concatenate([model(b).numpy() for b in pipelines.eval_dataset(examples, 1000)])
    mse = float(np.mean((reconstructions - examples) ** 2))
    logging.info("%s (step %d): %s loss %.5f over %d examples", path, step, split, loss, len(examples))
    if model.code_width < min(splits.train.shape):
        pca_mse = pca.pca_mse(splits.train, examples, model.code_width)
        logging.info(
            "%s MSE per input: autoencoder %.5f, PCA with %d components %.5f",
            split,
            mse,
            model.code_width,
            pca_mse,
        )
    else:  # an overcomplete code: PCA with as many components reconstructs exactly
        pca_mse = None
        logging.info("%s MSE per input: autoencoder %.5f (code wider than the data: no PCA)", split, mse)
    out = files.Workdir(workdir).evaluation(split)
    os.makedirs(out.folder, exist_ok=True)
    metrics = {
        "step": step,
        "checkpoint": path,
        "split": split,
        "examples": len(examples),
        f"{prefix}_loss": loss,
        "loss": config.train.loss,
        f"{prefix}_mse": mse,
        f"pca_{prefix}_mse": pca_mse,
    }
    originals = examples[: config.train.num_picture_examples]
    if splits.image_shape and len(originals):
        grid = images.reconstruction_grid(originals, model(originals).numpy(), splits.image_shape)
        images.write_png(out.reconstructions, grid)
    codes = encode_examples(model, examples, config.train.eval_batch_size)
    write_projector(out.projector, codes, labels)
    scatter = images.code_scatter(codes, labels, out.codes)
    if scatter is None:
        logging.info(
            "codes.png skipped: install matplotlib (pip install rawtf_ae[plots]) for the scatter plot"
        )
    files.write_json(out.metrics, metrics)
    logging.info("eval outputs: %s (tensorboard --logdir %s for the projector)", out.folder, out.projector)
    return metrics


def _evaluate_ratings(model, step, path, splits, config, workdir) -> dict:
    """Held-out RMSE of a ratings model against the per-item mean, into `eval/metrics.json`."""
    restore.check_vocabulary(splits, workdir)
    val_loss = evaluation.make_evaluate(model, config.train.loss)(
        pipelines.eval_dataset(splits, config.train.eval_batch_size, batching.uses_sparse(config, splits))
    )
    logging.info("%s (step %d):", path, step)
    metrics = {
        "step": step,
        "checkpoint": path,
        "val_loss": val_loss,
        "loss": config.train.loss,
        **evaluation.ratings_metrics(splits, val_loss),
    }
    out = files.Workdir(workdir).evaluation()
    os.makedirs(out.folder, exist_ok=True)
    files.write_json(out.metrics, metrics)
    return metrics


def _evaluate_ranking(model, step, path, splits, config, workdir, split: str) -> dict:
    """Recall@20/50 and NDCG@100 of the held-out users of `split` ("validation" or "test"), and
    the popularity and EASE baselines' on the same users (EASE's lambda chosen on validation),
    into `eval/metrics.json` or `eval/test/metrics.json`."""
    restore.check_vocabulary(splits, workdir)
    splits.evaluated(split)  # one line if the split has no such users
    prefix = _PREFIX[split]
    dataset = splits.evaluation_dataset(config.train.eval_batch_size, split=split)
    metrics = {
        "step": step,
        "checkpoint": path,
        "split": split,
        "loss": config.train.loss,
        **evaluation.make_rank(model)(dataset, prefix),  # and f"{prefix}_loss"
    }
    if config.train.ranking_baselines:
        metrics.update(baselines.ranking_baselines(splits, (split,)))
    evaluation.log_ranking(metrics, prefix, f"{path} (step {step}), {split} users")
    out = files.Workdir(workdir).evaluation(split)
    os.makedirs(out.folder, exist_ok=True)
    files.write_json(out.metrics, metrics)
    return metrics


def write_projector(directory: str, codes: np.ndarray, labels=None) -> None:
    """Writes `codes` `[n, code_width]` for TensorBoard's Embedding Projector (with labels)."""
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    os.makedirs(directory, exist_ok=True)
    embedding = tf.Variable(codes, name="codes")
    tf.train.Checkpoint(codes=embedding).save(os.path.join(directory, "embedding.ckpt"))
    config = projector.ProjectorConfig()
    entry = config.embeddings.add()
    entry.tensor_name = "codes/.ATTRIBUTES/VARIABLE_VALUE"
    if labels is not None:
        files.write_text(os.path.join(directory, "metadata.tsv"), "".join(f"{label}\n" for label in labels))
        entry.metadata_path = "metadata.tsv"
    # What `projector.visualize_embeddings` writes, but atomically.
    files.write_text(os.path.join(directory, "projector_config.pbtxt"), text_format.MessageToString(config))


def export_workdir(
    config: ml_collections.ConfigDict, workdir: str, tflite: bool = False, onnx: bool = False
) -> dict:
    """Exports the newest checkpoint: `export/saved_model/` and `export/weights.npz`.

    With `tflite`, also `export/model.tflite` (`rawtf_ae.serving.tflite`); with `onnx`,
    `export/onnx/{encode,decode,reconstruct}.onnx` (`rawtf_ae.serving.onnx`, the onnx extra).
    """
    layout = files.Workdir(workdir)
    layout.check_folders()
    model, step, path = restore.restore_model(config, layout.path)
    vocabulary = None
    if config.data.name == "ratings":
        vocabulary = ratings.Vocabulary.load(layout.vocabulary)
    recommends = vocabulary is not None and config.data.ratings_by == "user"
    exported = outputs.export(model, layout, vocabulary, recommends, config.train.export_first_pass)
    logging.info(
        "exported %s (step %d) to %s and %s", path, step, exported["saved_model"], exported["weights"]
    )
    exported["step"] = step
    if tflite:
        from rawtf_ae.serving import tflite  # noqa: PLC0415 (the converter loads slowly)

        exported["tflite"] = tflite.save(exported["saved_model"], layout.tflite)
        logging.info("exported %s (%d bytes)", exported["tflite"], os.path.getsize(exported["tflite"]))
    if onnx:
        from rawtf_ae.serving import onnx  # noqa: PLC0415 (an optional extra)

        exported["onnx"] = onnx.save(exported["saved_model"], layout.onnx)
        logging.info("exported %s", ", ".join(exported["onnx"].values()))
    return exported


def encode(config: ml_collections.ConfigDict, workdir: str, output: str, split: str = "validation") -> str:
    """Encodes a split of the config's data with the newest checkpoint into `output`.

    `.npy`: the codes `[n, code_width]`; `.npz`: `codes` and, where the data has them, `labels`.
    """
    workdir = files.workdir_path(workdir)
    if split not in SPLITS:
        raise ValueError(f"--split is {split!r}; expected one of {', '.join(SPLITS)}.")
    if not output.endswith((".npy", ".npz")):
        raise ValueError(f"--output ({output!r}) must end in .npy (codes) or .npz (codes and labels).")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--output's folder {parent} does not exist.")
    if config.data.name == "ratings":
        raise ValueError(
            "--mode=encode works on dense examples; for ratings, encode rows in Python: "
            "model.encode(splits.train.rows(...).to_dense()[0])."
        )
    model, step, path = restore.restore_model(config, workdir)
    splits = sources.load(config.data, config.seed)
    examples, labels = splits.examples(split, config.data.path or config.data.name)
    if examples.shape[1] != model.input_width:
        raise ValueError(
            f"The data has width {examples.shape[1]}, the checkpoint's model {model.input_width}."
        )
    arrays = {"codes": encode_examples(model, examples, config.train.eval_batch_size)}
    if labels is not None:
        arrays["labels"] = labels
    _atomic_numpy_save(output, arrays)
    logging.info("encoded %d %s examples with %s (step %d) into %s", len(examples), split, path, step, output)
    return output
