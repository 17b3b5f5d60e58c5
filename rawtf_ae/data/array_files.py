"""Reading example matrices from files: Keras-format `.npz`, IDX folders, `.npy`/`.npz` arrays.

Each reader checks what it reads and raises `ValueError`/`FileNotFoundError` naming the file
and the problem; `data.load` turns what they return into `Splits`.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from rawtf_ae.data.idx import read_idx_pair


def _read_keras_npz(path: str):
    arrays = read_npz(path)
    if "x_train" not in arrays:
        raise ValueError(
            f"{path} has no `x_train` array (Keras's mnist.npz layout); it has {sorted(arrays)}."
        )
    train = (arrays["x_train"], arrays.get("y_train"))
    test = (arrays["x_test"], arrays.get("y_test")) if "x_test" in arrays else None
    return train, test


def load_images(name: str, path: str):
    """Returns `((train_images, train_labels), test_pair or None)` as uint8 `[n, rows, cols]`."""
    if not path:
        loader = getattr(tf.keras.datasets, name)
        try:
            return loader.load_data()
        except Exception as e:  # no internet, a proxy page, a broken cache ...
            raise ValueError(
                f"Could not download {name} through tf.keras.datasets ({e}); set `data.path` to a "
                "Keras-format .npz or a folder holding the IDX .gz files."
            ) from None
    if os.path.isdir(path):
        train = read_idx_pair(path, "train")
        test = read_idx_pair(path, "t10k")
        if train is None and test is None:
            raise FileNotFoundError(
                f"Folder {path} (data.path) holds neither train-images-idx3-ubyte(.gz) nor "
                "t10k-images-idx3-ubyte(.gz)."
            )
        # A folder with only the t10k pair: those examples are all there is to split.
        return (train, test) if train is not None else (test, None)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} file {path} (data.path) does not exist.")
    return _read_keras_npz(path)


# Arrays larger than this (uncompressed) are refused before loading: a corrupt or hostile
# .npz could otherwise exhaust memory while decompressing.
MAX_ARRAY_BYTES = 8 * 2**30
_NPY_MAGIC = b"\x93NUMPY"


def read_npz(path: str) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(member.file_size for member in archive.infolist())
        if total > MAX_ARRAY_BYTES:
            raise ValueError(
                f"Data file {path} decompresses to {total} bytes, over the {MAX_ARRAY_BYTES}-byte limit."
            )
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"Data file {path} does not exist.") from None
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        KeyError,
        NotImplementedError,
    ) as e:
        if str(e).startswith(f"Data file {path}"):
            raise
        if "allow_pickle" in str(e):
            raise ValueError(
                f"Data file {path} holds Python objects, not numbers; rawtf_ae never unpickles data."
            ) from None
        raise ValueError(f"Data file {path} is corrupt or not a NumPy .npz: {e}") from None


def read_array(path: str):
    """`(train, validation or None, test or None)`: `.npy` -> one matrix; `.npz` -> `x_train`
    with optional `x_validation` and `x_test`, or its only array."""
    if path.endswith(".npz"):
        arrays = read_npz(path)
        if "x_train" in arrays:
            return arrays["x_train"], arrays.get("x_validation"), arrays.get("x_test")
        if len(arrays) != 1:
            raise ValueError(
                f"{path} holds arrays {sorted(arrays)}; expected `x_train` (and optionally "
                "`x_validation`, `x_test`) or exactly one array."
            )
        return next(iter(arrays.values())), None, None
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
        if magic != _NPY_MAGIC:  # else np.load would take it for a pickle (and suggest one)
            raise ValueError(
                f"Data file {path} (data.path) is not a NumPy array file: it does not start with the "
                ".npy header (np.save writes one)."
            )
        return np.load(path, allow_pickle=False), None, None
    except FileNotFoundError:
        raise FileNotFoundError(f"Data file {path} (data.path) does not exist.") from None
    except IsADirectoryError:
        raise ValueError(f"Data file {path} (data.path) is a folder, not a .npy file.") from None
    except (OSError, ValueError, EOFError) as e:
        if str(e).startswith(f"Data file {path}"):
            raise
        if "allow_pickle" in str(e):  # NumPy's message would point at unpickling: never
            raise ValueError(
                f"Data file {path} (data.path) holds Python objects, not numbers; rawtf_ae never "
                "unpickles data: save a numeric array (np.save(path, array.astype(np.float32)))."
            ) from None
        raise ValueError(f"Data file {path} is corrupt or not a NumPy .npy: {' '.join(str(e).split())}") from None


def as_matrix(array, path: str, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} in {path} has dtype {array.dtype}; expected numbers.")
    if array.ndim < 2:
        raise ValueError(f"{what} in {path} has shape {array.shape}; expected [num_examples, width].")
    if array.shape[0] == 0 or array[0].size == 0:
        raise ValueError(f"{what} in {path} is empty (shape {array.shape}).")
    matrix = array.reshape(array.shape[0], -1).astype(np.float32)
    if not np.all(np.isfinite(matrix)):
        bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        bad = int(np.count_nonzero(~np.isfinite(matrix)))
        raise ValueError(
            f"{what} in {path} has {bad} non-finite values (NaN or inf), first in example {bad_rows[0]}."
        )
    return matrix
