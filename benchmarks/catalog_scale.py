"""Dense vs sparse ratings batches as the catalog grows: training examples/s and peak memory.

    python -m benchmarks.catalog_scale [--items=4096,32768,262144,1048576] [--memory]

The recommender autoencoder of Kuchaiev & Ginsburg (2017), items-512-512-1024 SELU, tied,
masked MSE, batch 128 users with `--ratings_per_user` ratings each, `train.optimizer`
(default lazy_adam). For each catalog size the dense step (`data.ratings_batches='dense'`:
`[batch, items]` batches, the first kernel multiplied in full both ways) and the sparse step
(gathers of the rated rows, outputs at the rated items only) are timed in interleaved windows
(`benchmarks.common`), and the ratio sparse/dense is printed beside what `auto` would pick.
With `--memory`, each (size, path) also runs alone in a subprocess for a few steps and its
peak resident memory is reported (the interleaved run cannot separate the two paths' memory).
"""

import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from rawtf_ae import data, loops, ratings, ratings_batches, state  # noqa: E402
from rawtf_ae.config import default_config  # noqa: E402
from rawtf_ae.steps import StepOptions, make_step  # noqa: E402

_ITEMS = flags.DEFINE_list("items", ["4096", "32768", "262144", "1048576"], "Catalog sizes.")
_WIDTHS = flags.DEFINE_list("widths", ["512", "512", "1024"], "Encoder widths after the items.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Users per batch.")
_PER_USER = flags.DEFINE_integer("ratings_per_user", 100, "Ratings of each user.")
_OPTIMIZER = flags.DEFINE_string("optimizer", "lazy_adam", "train.optimizer.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed windows per setting.")
_WINDOW = flags.DEFINE_float("window_seconds", 3.0, "Minimum length of one window.")
_MEMORY = flags.DEFINE_bool("memory", False, "Also measure each path's peak RSS in a subprocess.")
_ONLY = flags.DEFINE_string("only", "", "Internal: 'ITEMS:dense|sparse' runs that alone, prints peak RSS.")


def _config(items: int, batches: str):
    config = default_config()
    config.data.name, config.data.ratings_batches = "ratings", batches
    config.model.layer_sizes = (items, *map(int, _WIDTHS.value))
    config.model.activation, config.model.output_activation = "selu", "linear"
    config.train.loss, config.train.optimizer = "masked_mse", _OPTIMIZER.value
    config.train.batch_size, config.train.jit_compile = _BATCH.value, False
    return config


def _rows(items: int, num_rows: int) -> ratings.RatingMatrix:
    """`num_rows` users with `--ratings_per_user` distinct items each, uniformly drawn."""
    rng = np.random.default_rng(0)
    per_user = min(_PER_USER.value, items)
    columns = np.concatenate([rng.choice(items, per_user, replace=False) for _ in range(num_rows)])
    rows = np.repeat(np.arange(num_rows), per_user)
    values = rng.integers(1, 6, len(rows)).astype(np.float32)
    return ratings.RatingMatrix.from_triples(rows, columns, values, num_rows, items)


def _runner(items: int, batches: str, matrix):
    """`window(min_seconds) -> examples/s` of the `batches` step on `matrix`, built once."""
    config = _config(items, batches)
    trained = state.create_train_state(config)
    sparse = batches == "sparse"
    options = StepOptions.from_config(config, sparse_capacity=items)
    loop = loops.make_train_loop(make_step(trained.model, trained.optimizer, options), trained.step)
    iterator = iter(data.train_dataset(matrix, _BATCH.value, seed=0, sparse=sparse))
    steps = tf.constant(1, tf.int64)

    def window(min_seconds):
        count, started = 0, time.perf_counter()
        while True:
            loss = float(loop(iterator, steps))
            assert np.isfinite(loss), loss
            count += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                return count * _BATCH.value / elapsed

    return window


def _peak_rss(items: int, batches: str) -> float:
    """GiB of peak RSS of a process that builds the `batches` step at `items` and runs 5 steps."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.catalog_scale", f"--only={items}:{batches}", *_passed_flags()],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[-1])


def _passed_flags():
    return [
        f"--widths={','.join(_WIDTHS.value)}",
        f"--batch_size={_BATCH.value}",
        f"--ratings_per_user={_PER_USER.value}",
        f"--optimizer={_OPTIMIZER.value}",
    ]


def main(argv):
    del argv
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    if _ONLY.value:
        items, batches = _ONLY.value.split(":")
        window = _runner(int(items), batches, _rows(int(items), 8 * _BATCH.value))
        window(0)  # 1 step: build and trace
        window(0)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)  # KiB -> GiB
        return
    widths = "-".join(_WIDTHS.value)
    print(
        f"\nitems-{widths} SELU tied, masked MSE, {_OPTIMIZER.value}, batch {_BATCH.value} users x "
        f"{_PER_USER.value} ratings, 2 CPU threads, median of {_ROUNDS.value} interleaved windows\n"
    )
    memory = " dense peak RSS | sparse peak RSS |" if _MEMORY.value else ""
    print(f"| items | dense users/s | sparse users/s | sparse / dense | auto picks |{memory}")
    print(f"|---:|---:|---:|---:|---|{'---:|---:|' if memory else ''}")
    for items in map(int, _ITEMS.value):
        matrix = _rows(items, 8 * _BATCH.value)
        windows = {b: _runner(items, b, matrix) for b in ("dense", "sparse")}
        rates = {b: [] for b in windows}
        for window in windows.values():
            window(0)  # trace and warm up
        for _ in range(_ROUNDS.value):
            for name, window in windows.items():
                rates[name].append(window(_WINDOW.value))
        del windows
        dense, sparse = (statistics.median(rates[b]) for b in ("dense", "sparse"))
        auto = ratings_batches.choose(_config(items, "auto"), matrix)
        row = f"| {items:,} | {dense:,.0f} | {sparse:,.0f} | {sparse / dense:.2f}x | {auto} |"
        if _MEMORY.value:
            row += f" {_peak_rss(items, 'dense'):.2f} GiB | {_peak_rss(items, 'sparse'):.2f} GiB |"
        print(row, flush=True)


if __name__ == "__main__":
    app.run(main)
