"""Training throughput of a tied model against its untied twin, interleaved in one process.

    python -m benchmarks.tied_vs_untied [--layer_sizes=784,392,196] [--batch_size=128]

Times the library's own compiled training loop on random batches for each model in turn
(A B A B ..., after a warm-up) and prints a markdown table of median examples/s and ratios.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from rawtf_ae.config import default_config  # noqa: E402

_SIZES = flags.DEFINE_list("layer_sizes", ["784", "392", "196"], "Input width, then encoder widths.")
_ACTIVATION = flags.DEFINE_string("activation", "selu", "Hidden activation.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Examples per step.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Timed windows per model.")
_WINDOW_SECONDS = flags.DEFINE_float("window_seconds", 1.5, "Minimum length of one window.")


def main(argv):
    del argv
    parameters, windows = {}, {}
    for name, tied in (("tied", True), ("untied", False)):
        config = default_config()
        config.model.layer_sizes = tuple(int(s) for s in _SIZES.value)
        config.model.activation = _ACTIVATION.value
        config.model.tied = tied
        config.train.batch_size = _BATCH.value
        parameters[name], windows[name] = common.loop_runner(config, window_seconds=_WINDOW_SECONDS.value)
    rates = common.interleave(windows, _ROUNDS.value)
    title = (
        f"{'-'.join(_SIZES.value)} {_ACTIVATION.value}, BCE, Adam, batch {_BATCH.value}, "
        f"median of {_ROUNDS.value} interleaved windows"
    )
    common.print_table(title, rates, baseline="untied", parameters=parameters)


if __name__ == "__main__":
    app.run(main)
