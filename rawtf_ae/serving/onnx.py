"""ONNX: the export's `encode`, `decode` and `reconstruct` as `.onnx` files, for onnxruntime & co.

Needs the optional extra (`pip install -e ".[onnx]"`: `tf2onnx` and `onnxruntime`). Each
signature of the SavedModel is converted by `tf2onnx` into a file of its own, with one input
(`inputs` or `codes`) and one output; `run` calls one through onnxruntime (tested against the
SavedModel, `tests/serving/test_export.py`). The ratings export's `recommend` signature (a hash table of
item ids) is not converted.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from rawtf_ae import files

SIGNATURES = ("encode", "decode", "reconstruct")
OPSET = 17


def _require():
    try:
        import onnxruntime  # noqa: F401, PLC0415
        import tf2onnx  # noqa: PLC0415
    except ImportError as e:
        raise ValueError(
            f'ONNX export needs the onnx extra: pip install -e ".[onnx]" (tf2onnx, onnxruntime); {e}.'
        ) from None
    return tf2onnx


def save(saved_model: str, directory: str, signatures=SIGNATURES) -> dict:
    """Converts each of `signatures` into `<directory>/<signature>.onnx`; `{signature: path}`.

    Raises:
      ValueError: the onnx extra is not installed (one line saying how to install it).
    """
    tf2onnx = _require()
    loaded = tf.saved_model.load(saved_model)
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name in signatures:
        signature = loaded.signatures[name]
        ((argument, spec),) = signature.structured_input_signature[1].items()

        def call(values, signature=signature, argument=argument):
            return next(iter(signature(**{argument: values}).values()))

        function = tf.function(call, input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name=argument)])
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=function.input_signature, opset=OPSET
        )
        paths[name] = files.write_bytes(os.path.join(directory, f"{name}.onnx"), proto.SerializeToString())
    return paths


def run(path: str, values: np.ndarray) -> np.ndarray:
    """Runs the `.onnx` file at `path` on `values` `[batch, width]` with onnxruntime (on the CPU)."""
    _require()
    import onnxruntime  # noqa: PLC0415

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    return session.run(None, {given.name: np.asarray(values, np.float32)})[0]
