"""`train.py`'s real throughput as a share of the bare training step's, and its peak memory.

    python -m benchmarks.end_to_end [--steps=3000] [--batch_size=256] [--repeats=3]

Alternates (A B A B ...) a full `train.py` run in a subprocess (data pipeline, logging every
`--log_every` steps, checkpoints and evaluations every 2,000 steps; throughput from the wall
clock between its first and last progress lines, so everything between them counts, but not
start-up and the first, compiling, call) with the bare compiled step of the same model on in-memory batches
(`benchmarks.common.loop_runner`), and prints the median ratio and the subprocess's peak
resident memory. Model A: 784-392-196 SELU, BCE, on the MNIST test-set files.
"""

import datetime
import os
import re
import resource
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from benchmarks import common, train_py  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEPS = flags.DEFINE_integer("steps", 3000, "Training steps per train.py run.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Examples per step.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "train.py runs (each followed by bare-step windows).")
_LOG_EVERY = flags.DEFINE_integer("log_every", 500, "train.py's log interval.")
_DATA = flags.DEFINE_string("data", os.path.join(REPO, "..", "shared", "data", "mnist"), "MNIST IDX folder.")


def _train_py(workdir):
    log = train_py.run(
        "mnist_tied.py",
        _DATA.value,
        workdir,
        f"--config.train.num_steps={_STEPS.value}",
        f"--config.train.batch_size={_BATCH.value}",
        f"--config.train.log_every_steps={_LOG_EVERY.value}",
        "--config.train.export=False",
    ).log
    # absl lines: "I1123 19:31:23.123456 ... step 500/3000: loss ..."
    progress = [
        (int(step), datetime.datetime.strptime(clock, "%H:%M:%S.%f"))
        for clock, step in re.findall(r"^I\d{4} (\S+) .*step (\d+)/\d+: loss", log, flags=re.M)
    ]
    (first_step, first_time), (last_step, last_time) = progress[0], progress[-1]
    return (last_step - first_step) * _BATCH.value / (last_time - first_time).total_seconds()


def main(argv):
    del argv
    config = common.model_config(_BATCH.value)
    config.model.layer_sizes, config.model.activation = (784, 392, 196), "selu"
    _, bare_window = common.loop_runner(config, window_seconds=common.WINDOW_SECONDS.value)
    bare_window()  # warm-up
    full, bare = [], []
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(_REPEATS.value):
            full.append(_train_py(os.path.join(root, str(repeat))))
            bare.append(statistics.median(bare_window() for _ in range(3)))
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    ratio = statistics.median(f / b for f, b in zip(full, bare))
    print(
        f"\n784-392-196 SELU, BCE, Adam, batch {_BATCH.value}, {_STEPS.value} steps per train.py run, "
        f"{_REPEATS.value} alternating repeats\n"
    )
    print("| | median examples/s |")
    print("|---|---:|")
    print(f"| bare step (in-memory batches) | {statistics.median(bare):,.0f} |")
    print(f"| train.py end to end | {statistics.median(full):,.0f} |")
    print(f"\ntrain.py / bare step: {ratio:.0%}; train.py peak resident memory: {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    app.run(main)
