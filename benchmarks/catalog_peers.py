"""What `benchmarks.catalog_scale` measures the sparse step against: the PyTorch sparse peer,
and the memory traffic one step must move at least.

The peer is the same network written the way a strong PyTorch user would write it: the
encoder's first layer `F.embedding_bag(mode="sum", per_sample_weights=ratings, sparse=True)`
on the tied first kernel (`[items, width]`, one row per item), the decoder's outputs at the
rated items from `F.embedding(ids, kernel, sparse=True)` rows of the *same* parameter (and of
an `[items, 1]` output bias), `torch.optim.SparseAdam` for those two and Adam for the dense
layers, masked MSE over the batch's ratings, `torch.set_num_threads(2)`. Its batches are cut
once beforehand (no input pipeline is timed for it; ours runs `tf.data`).

The floor: the rows the batch rates (`touched_rows`) of the first kernel, read by the forward
pass and written by the update, of LazyAdam's two moments, read and written, and of the
gradient, written once: 7 passes over `rows x width` float32. `copy_seconds` times a plain
copy of that many bytes (two threads, each copying half); the step's share of the floor is
that time over the step's.
"""

import statistics
import threading
import time

import numpy as np

# Passes over the touched rows one sparse LazyAdam step needs at least (see the docstring).
FLOOR_PASSES = 7


def touched_rows(matrix, batch_size: int, batches: int = 32, seed: int = 0) -> float:
    """Mean number of distinct items in a batch of `batch_size` random rows of `matrix`."""
    rng = np.random.default_rng(seed)
    counts = []
    for _ in range(batches):
        rows = rng.choice(len(matrix), batch_size, replace=False)
        columns = [matrix.columns[matrix.indptr[r] : matrix.indptr[r + 1]] for r in rows]
        counts.append(len(np.unique(np.concatenate(columns))))
    return float(np.mean(counts))


def floor_bytes(rows: float, width: int) -> int:
    """The bytes one sparse LazyAdam step moves at least over `rows` rows of `width` floats."""
    return int(FLOOR_PASSES * rows * width * 4)


def copy_seconds(nbytes: int, threads: int = 2, repeats: int = 7) -> float:
    """Median seconds of a plain copy of `nbytes` bytes (`threads` threads, a slice each)."""
    source = np.ones(nbytes // 4, np.float32)
    target = np.empty_like(source)
    bounds = np.linspace(0, len(source), threads + 1).astype(int)

    def part(i):
        np.copyto(target[bounds[i] : bounds[i + 1]], source[bounds[i] : bounds[i + 1]])

    times = []
    for _ in range(repeats + 1):  # the first touches the pages
        workers = [threading.Thread(target=part, args=(i,)) for i in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def has_torch() -> bool:
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def torch_sparse_runner(matrix, widths, batch_size: int, threads: int = 2, batches: int = 8):
    """`window(min_seconds) -> users/s` of the PyTorch sparse peer on `matrix`, or None
    without torch. `widths`: the encoder's widths after the items, e.g. `(512, 512, 1024)`."""
    try:
        import torch  # noqa: PLC0415
        import torch.nn.functional as F  # noqa: PLC0415
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    items = matrix.width
    sizes = [items, *widths]

    def parameter(*shape, fan_in=None):
        scale = (1.0 / fan_in) ** 0.5 if fan_in else 0.0
        return torch.nn.Parameter(torch.randn(*shape) * scale)

    kernel = parameter(items, sizes[1], fan_in=items)  # tied first kernel, a row per item
    output_bias = parameter(items, 1)
    kernels = [parameter(b, a, fan_in=a) for a, b in zip(sizes[1:], sizes[2:])]
    encoder_biases = [parameter(b) for b in sizes[1:]]
    decoder_biases = [parameter(a) for a in sizes[1:-1]]
    sparse_optimizer = torch.optim.SparseAdam([kernel, output_bias], lr=1e-3)
    dense_optimizer = torch.optim.Adam([*kernels, *encoder_biases, *decoder_biases], lr=1e-3)
    cut = [
        _torch_batch(matrix, np.arange(i * batch_size, (i + 1) * batch_size) % len(matrix))
        for i in range(batches)
    ]

    def step(ids, values, offsets, owners):
        hidden = F.selu(
            F.embedding_bag(ids, kernel, offsets, mode="sum", per_sample_weights=values, sparse=True)
            + encoder_biases[0]
        )
        for weight, bias in zip(kernels, encoder_biases[1:]):
            hidden = F.selu(F.linear(hidden, weight, bias))
        for weight, bias in zip(reversed(kernels), reversed(decoder_biases)):
            hidden = F.selu(F.linear(hidden, weight.t(), bias))
        rows = F.embedding(ids, kernel, sparse=True)
        outputs = (hidden[owners] * rows).sum(-1) + F.embedding(ids, output_bias, sparse=True)[:, 0]
        loss = ((outputs - values) ** 2).mean()  # linear output, MSE over the observed ratings
        sparse_optimizer.zero_grad()
        dense_optimizer.zero_grad()
        loss.backward()
        sparse_optimizer.step()
        dense_optimizer.step()
        return loss

    calls = iter(range(2**62))
    return timed_windows(lambda: step(*cut[next(calls) % batches]).item(), batch_size)


def timed_windows(step_loss, batch_size: int):
    """`window(min_seconds) -> examples/s`: `step_loss()` (one training step, its loss, which
    must be finite) called until `min_seconds` have passed."""

    def window(min_seconds):
        count, started = 0, time.perf_counter()
        while True:
            loss = step_loss()
            assert np.isfinite(loss), loss
            count += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                return count * batch_size / elapsed

    return window


def _torch_batch(matrix, rows):
    """`(ids, ratings, offsets, owners)` tensors of `rows` of a `RatingMatrix`."""
    import torch  # noqa: PLC0415

    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    ids = np.concatenate([matrix.columns[s:e] for s, e in zip(starts, ends)])
    values = np.concatenate([matrix.values[s:e] for s, e in zip(starts, ends)])
    lengths = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    owners = np.repeat(np.arange(len(rows)), lengths)
    return (
        torch.from_numpy(ids.astype(np.int64)),
        torch.from_numpy(values.astype(np.float32)),
        torch.from_numpy(offsets.astype(np.int64)),
        torch.from_numpy(owners.astype(np.int64)),
    )
