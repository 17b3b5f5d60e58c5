"""TensorFlow Lite: one `.tflite` model with the export's `encode`, `decode`, `reconstruct`.

Converted from the SavedModel (`tf.lite.TFLiteConverter.from_saved_model`), so a phone or a
microcontroller runs the very functions the SavedModel serves; `run` calls a signature through
TensorFlow's Lite interpreter (tested against the SavedModel).

Size: TFLite's `FULLY_CONNECTED` wants its weights as `[out, in]`, so the converter folds each
tied kernel into a constant for the encoder and a transposed one for the decoder. A model with
`reconstruct` (or both `encode` and `decode`) therefore holds each tied kernel twice: about
twice the SavedModel's variables (measured in docs/trained-models.md). The ratings export's
`recommend` signature (a hash table of item ids) is not converted.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import tensorflow as tf

from rawtf_ae import files

SIGNATURES = ("encode", "decode", "reconstruct")


def save(saved_model: str, path: str, signatures=SIGNATURES) -> str:
    """Converts `signatures` of the SavedModel at `saved_model` into one `.tflite` file `path`.

    Written atomically; returns the absolute path.

    Raises:
      OSError: the file could not be written (one line naming it).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=list(signatures))
    content = converter.convert()
    try:
        return files.write_bytes(path, content)
    except OSError as e:
        raise OSError(f"Could not write {path} ({files.write_error_cause(e)}).") from None


def run(path: str, signature: str, values: np.ndarray) -> np.ndarray:
    """Calls `signature` of the `.tflite` file at `path` on `values` `[batch, width]` (float32)."""
    with warnings.catch_warnings():  # tf.lite.Interpreter announces its move to ai_edge_litert
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
    runner = interpreter.get_signature_runner(signature)
    (name,) = runner.get_input_details()
    return next(iter(runner(**{name: np.asarray(values, np.float32)}).values()))
