"""Throughput of the distribution and speed options against the plain float32 step.

    python -m benchmarks.speed_options [--layer_sizes=784,392,196] [--batch_size=256]

Settings, timed interleaved in one process: float32 without XLA (baseline), XLA
(`train.jit_compile`; "auto", the default, picks it for float32),
mixed_bfloat16, XLA + mixed_bfloat16, and `mirrored` over 2 logical CPUs (the same cores split in
two: on a CPU this shows the cost of replication, not a speed-up; on GPUs use real devices).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from rawtf_ae.training import distribute  # noqa: E402

_BATCH = flags.DEFINE_integer("batch_size", 256, "Global examples per step.")

SETTINGS = {
    "float32": {"jit_compile": False},
    "XLA": {"jit_compile": True},
    "mixed_bfloat16": {"jit_compile": False, "precision": "mixed_bfloat16"},
    "XLA + mixed_bfloat16": {"jit_compile": True, "precision": "mixed_bfloat16"},
    "mirrored, 2 logical CPUs": {"jit_compile": False, "strategy": "mirrored"},
}


def main(argv):
    del argv
    distribute.split_cpu(2)  # before anything initializes TensorFlow's devices
    windows = {}
    for name, overrides in SETTINGS.items():
        config = common.model_config(_BATCH.value, **overrides)
        strategy = (
            distribute.create_strategy(config.train)
            if "strategy" in overrides
            else tf.distribute.get_strategy()
        )
        _, windows[name] = common.loop_runner(config, strategy, window_seconds=common.WINDOW_SECONDS.value)
    rates = common.interleave(windows, common.ROUNDS.value)
    common.print_table(common.title(_BATCH.value), rates, baseline="float32")


if __name__ == "__main__":
    app.run(main)
