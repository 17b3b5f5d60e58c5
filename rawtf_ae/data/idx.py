"""IDX files, MNIST's own format (http://yann.lecun.com/exdb/mnist/), read safely.

The magic number, element type, dimension count and total size are checked before anything
large is allocated; truncated or trailing bytes and out-of-range labels are errors that name
the file.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import Optional

import numpy as np

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Nothing larger is read: a header promising more is rejected before any large allocation.
MAX_IDX_BYTES = 8 * 2**30
MAX_IDX_DIMENSIONS = 4


def _read_exactly(stream, count: int, path: str, what: str) -> bytes:
    chunks, remaining = [], count
    while remaining:
        chunk = stream.read(min(remaining, 2**24))
        if not chunk:
            raise ValueError(
                f"IDX file {path} is truncated: its {what} needs {count} bytes, only "
                f"{count - remaining} are there."
            )
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (`.gz` or not), checking magic, type, dimensions and size first.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: not an IDX file, an unknown type byte, absurd dimensions, truncated data,
        trailing bytes, or a corrupt gzip stream; the message names the file.
    """
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        stream = gzip.open(path, "rb") if compressed else open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file {path} does not exist.") from None
    try:
        with stream:
            magic = stream.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise ValueError(f"{path} is not an IDX file (bad magic number {magic.hex()!r}).")
            ndim = magic[3]
            if not 1 <= ndim <= MAX_IDX_DIMENSIONS:
                raise ValueError(
                    f"IDX file {path} declares {ndim} dimensions; expected 1 to {MAX_IDX_DIMENSIONS}."
                )
            shape = struct.unpack(f">{ndim}I", _read_exactly(stream, 4 * ndim, path, "header"))
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if size > MAX_IDX_BYTES:
                raise ValueError(
                    f"IDX file {path} declares shape {shape} ({size} bytes), over the "
                    f"{MAX_IDX_BYTES}-byte limit: the header is corrupt."
                )
            payload = _read_exactly(stream, size, path, f"data (shape {shape}, {dtype})")
            if stream.read(1):
                raise ValueError(
                    f"IDX file {path} has bytes after the data its header (shape {shape}) declares."
                )
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"IDX file {path} is corrupt: {e}.") from None
    return np.frombuffer(payload, dtype).reshape(shape)


def idx_file(folder: str, stem: str) -> Optional[str]:
    for name in (f"{stem}.gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def read_idx_pair(folder: str, prefix: str):
    """`(images, labels)` of `<prefix>-images-idx3-ubyte[.gz]` and its labels in `folder`; None if absent."""
    images_path = idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    if images_path is None:
        return None
    images = read_idx(images_path)
    if images.ndim != 3 or images.dtype != np.uint8:  # magic 2051
        raise ValueError(
            f"IDX file {images_path} should hold uint8 images [n, rows, cols] (magic 2051), got "
            f"{images.dtype} of shape {images.shape}."
        )
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.ndim != 1 or labels.dtype != np.uint8:  # magic 2049
            raise ValueError(
                f"IDX file {labels_path} should hold uint8 labels [n] (magic 2049), got "
                f"{labels.dtype} of shape {labels.shape}."
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"{labels_path} holds {labels.shape} labels for the {images.shape[0]} images "
                f"of {images_path}."
            )
        if labels.size and labels.max() > 9:
            raise ValueError(f"{labels_path} has label {labels.max()}; MNIST labels are 0 to 9.")
    return images, labels
