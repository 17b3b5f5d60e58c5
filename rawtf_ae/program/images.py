"""The picture people look at first: validation originals over their reconstructions."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rawtf_ae import files


def reconstruction_grid(
    originals, reconstructions, image_shape, columns: int = 8, gap: int = 1
) -> np.ndarray:
    """Interleaves rows of originals and reconstructions into one `uint8` image `[H, W, 1]`.

    Args:
      originals: `[n, height * width]` examples.
      reconstructions: `[n, height * width]`, the model's outputs for `originals`.
      image_shape: `(height, width)` of one example.
      columns: examples per row; each row of originals is followed by its reconstructions.
      gap: pixels of mid-grey between tiles.

    Values in `[0, 1]` are drawn as they are; anything else is scaled by the originals' range.
    """
    originals = np.asarray(originals, np.float32)
    reconstructions = np.asarray(reconstructions, np.float32)
    if originals.shape != reconstructions.shape or originals.ndim != 2 or len(originals) == 0:
        raise ValueError(
            f"Need matching non-empty `[n, width]` originals and reconstructions, got "
            f"{originals.shape} and {reconstructions.shape}."
        )
    height, width = image_shape
    if height * width != originals.shape[1]:
        raise ValueError(f"`image_shape` {tuple(image_shape)} does not match width {originals.shape[1]}.")
    low, high = float(originals.min()), float(originals.max())
    if low < 0 or high > 1:
        scale = max(high - low, 1e-12)
        originals, reconstructions = (originals - low) / scale, (reconstructions - low) / scale
    n = len(originals)
    columns = min(columns, n)
    rows = -(-n // columns)
    canvas = np.full((2 * rows * (height + gap) + gap, columns * (width + gap) + gap), 0.5, np.float32)
    for k in range(n):
        r, c = divmod(k, columns)
        x = gap + c * (width + gap)
        for which, images in enumerate((originals, reconstructions)):
            y = gap + (2 * r + which) * (height + gap)
            canvas[y : y + height, x : x + width] = images[k].reshape(height, width)
    return np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)[..., None]


def write_png(path: str, image: np.ndarray) -> None:
    """Writes a `uint8` `[H, W, C]` image as PNG, atomically (`files.write_bytes`)."""
    files.write_bytes(path, tf.io.encode_png(image).numpy())


def code_scatter(codes, labels, path: str):
    """A PNG scatter of the first two code dimensions (principal components when wider).

    Returns `path`, or `None` when matplotlib (the optional `plots` extra) is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    codes = np.asarray(codes, np.float64)
    if codes.shape[1] > 2:
        centred = codes - codes.mean(axis=0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        points, axes = centred @ components[:2].T, ("principal component 1", "principal component 2")
    else:
        points, axes = np.pad(codes, ((0, 0), (0, 2 - codes.shape[1]))), ("code 1", "code 2")
    figure, axis = plt.subplots(figsize=(6, 6), dpi=100)
    scatter = axis.scatter(
        points[:, 0], points[:, 1], c=labels, s=3, cmap="tab10" if labels is not None else None
    )
    if labels is not None:
        figure.colorbar(scatter, ax=axis, label="label")
    axis.set_xlabel(axes[0])
    axis.set_ylabel(axes[1])
    try:
        with files.atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary)
    finally:
        plt.close(figure)
    return path
