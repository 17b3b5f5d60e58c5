"""Training throughput of a tied model against its untied twin, interleaved in one process.

    python benchmarks/tied_vs_untied.py [--layer_sizes=784,392,196] [--batch_size=128]

Runs the library's own compiled training loop (`make_train_loop`) on random batches for each
model in turn (A B A B ..., after a warm-up), each window at least `--window_seconds`, and prints
a markdown table of median examples/s and the tied/untied ratio. Speed is measured here, never
in the tests: these machines are shared and noisy, and interleaving cancels most of the drift.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from rawtf_ae import TiedAutoencoder, train  # noqa: E402

_SIZES = flags.DEFINE_list("layer_sizes", ["784", "392", "196"], "Input width, then encoder widths.")
_ACTIVATION = flags.DEFINE_string("activation", "selu", "Hidden activation.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Examples per step.")
_WINDOWS = flags.DEFINE_integer("windows", 7, "Timed windows per model.")
_WINDOW_SECONDS = flags.DEFINE_float("window_seconds", 1.5, "Minimum length of one window.")
_THREADS = flags.DEFINE_integer("threads", 0, "Pin TensorFlow's intra/inter-op threads (0: default).")


def _make_runner(tied: bool):
    sizes = [int(s) for s in _SIZES.value]
    model = TiedAutoencoder(sizes, activation=_ACTIVATION.value, tied=tied, seed=0)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    loop = train.make_train_loop(train.make_train_step(model, optimizer, "bce", _BATCH.value), step)
    batches = tf.random.stateless_uniform([16, _BATCH.value, sizes[0]], seed=[0, 1])
    iterator = iter(tf.data.Dataset.from_tensor_slices(batches).repeat())
    steps = tf.constant(10, tf.int64)

    def window():
        """Runs chunks of 10 steps for at least the window length; returns examples/s."""
        count, started = 0, time.perf_counter()
        while True:
            float(loop(iterator, steps))
            count += 10
            elapsed = time.perf_counter() - started
            if elapsed >= _WINDOW_SECONDS.value:
                return count * _BATCH.value / elapsed

    return model.num_parameters(), window


def main(argv):
    del argv
    if _THREADS.value:
        tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
        tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
    runners = {"tied": _make_runner(True), "untied": _make_runner(False)}
    for _, window in runners.values():
        window()  # warm-up: trace, compile, fill caches
    rates = {name: [] for name in runners}
    for _ in range(_WINDOWS.value):
        for name, (_, window) in runners.items():
            rates[name].append(window())
    medians = {name: statistics.median(values) for name, values in rates.items()}
    sizes = "-".join(_SIZES.value)
    print(f"\n{sizes} {_ACTIVATION.value}, BCE, Adam, batch {_BATCH.value}, ", end="")
    print(f"{_WINDOWS.value} interleaved windows")
    print("| model | trainable parameters | median examples/s | min | max |")
    print("|---|---:|---:|---:|---:|")
    for name, values in rates.items():
        parameters = runners[name][0]
        print(f"| {name} | {parameters:,} | {medians[name]:,.0f} | {min(values):,.0f} | {max(values):,.0f} |")
    print(f"\ntied / untied throughput: {medians['tied'] / medians['untied']:.2f}x")


if __name__ == "__main__":
    app.run(main)
