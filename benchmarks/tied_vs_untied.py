"""Training throughput of a tied model against its untied twin, interleaved in one process.

    python -m benchmarks.tied_vs_untied [--layer_sizes=784,392,196] [--batch_size=128] [--rounds=7]

Times the library's own compiled training loop on random batches for each model in turn
(A B A B ..., after a warm-up) and prints a markdown table of median examples/s and ratios.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402

_BATCH = flags.DEFINE_integer("batch_size", 128, "Examples per step.")


def main(argv):
    del argv
    parameters, windows = {}, {}
    for name, tied in (("tied", True), ("untied", False)):
        config = common.model_config(_BATCH.value)
        config.model.tied = tied
        parameters[name], windows[name] = common.loop_runner(
            config, window_seconds=common.WINDOW_SECONDS.value
        )
    rates = common.interleave(windows, common.ROUNDS.value)
    common.print_table(common.title(_BATCH.value), rates, baseline="untied", parameters=parameters)


if __name__ == "__main__":
    app.run(main)
