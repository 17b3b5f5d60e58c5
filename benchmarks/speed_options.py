"""Throughput of the distribution and speed options against the plain float32 step.

    python -m benchmarks.speed_options [--layer_sizes=784,392,196] [--batch_size=256]

Settings, timed interleaved in one process: float32 (baseline), XLA (`train.jit_compile`),
mixed_bfloat16, XLA + mixed_bfloat16, and `mirrored` over 2 logical CPUs (the same cores split in
two: on a CPU this shows the cost of replication, not a speed-up; on GPUs use real devices).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from rawtf_ae import distribute  # noqa: E402
from rawtf_ae.config import default_config  # noqa: E402

_SIZES = flags.DEFINE_list("layer_sizes", ["784", "392", "196"], "Input width, then encoder widths.")
_ACTIVATION = flags.DEFINE_string("activation", "selu", "Hidden activation.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global examples per step.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed windows per setting.")
_WINDOW_SECONDS = flags.DEFINE_float("window_seconds", 1.5, "Minimum length of one window.")

SETTINGS = {
    "float32": {},
    "XLA": {"jit_compile": True},
    "mixed_bfloat16": {"precision": "mixed_bfloat16"},
    "XLA + mixed_bfloat16": {"jit_compile": True, "precision": "mixed_bfloat16"},
    "mirrored, 2 logical CPUs": {"strategy": "mirrored"},
}


def main(argv):
    del argv
    distribute.split_cpu(2)  # before anything initializes TensorFlow's devices
    windows = {}
    for name, overrides in SETTINGS.items():
        config = default_config()
        config.model.layer_sizes = tuple(int(s) for s in _SIZES.value)
        config.model.activation = _ACTIVATION.value
        config.train.batch_size = _BATCH.value
        config.train.update(overrides)
        strategy = (
            distribute.create_strategy(config.train)
            if "strategy" in overrides
            else tf.distribute.get_strategy()
        )
        _, windows[name] = common.loop_runner(config, strategy, window_seconds=_WINDOW_SECONDS.value)
    rates = common.interleave(windows, _ROUNDS.value)
    title = (
        f"{'-'.join(_SIZES.value)} {_ACTIVATION.value}, BCE, Adam, global batch {_BATCH.value}, "
        f"median of {_ROUNDS.value} interleaved windows"
    )
    common.print_table(title, rates, baseline="float32")


if __name__ == "__main__":
    app.run(main)
