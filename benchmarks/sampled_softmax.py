"""The sampled-softmax step (Mult-DAE on sparse batches) at catalog scale: users/s and peak RSS.

    python -m benchmarks.sampled_softmax [--items=1048576] [--layers=600,200] [--samples=1024,4096]

A tied Mult-DAE `[items-600-200]` (tanh, logits out, the input L2-normalized, dropout 0.5 on
it), batch `--batch_size` users with `--interactions` distinct items each (`catalog_ratings`,
Zipf popularity `--popularity`), `lazy_adam`, compiled with XLA (`train.jit_compile='auto'`).
Each setting runs alone in a subprocess, so that its peak resident memory (VmHWM) is its own:
the sampled softmax with each `--samples` count (drawn from the items' training counts to
`--sampling_power`), and, as the same run's baseline, the masked-MSE sparse step of the same
model (the step whose cost the sampled softmax adds to). Users/s are medians of `--rounds`
windows of at least `--window_seconds`, with their range.
"""

import os
import statistics
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import catalog_peers  # noqa: E402
from rawtf_ae.config.defaults import default_config  # noqa: E402
from rawtf_ae.data import pipelines  # noqa: E402
from rawtf_ae.recommender import ratings, sparse_gradients  # noqa: E402
from rawtf_ae.recommender.synthetic import catalog_ratings  # noqa: E402
from rawtf_ae.training import loops, sampled_softmax, state  # noqa: E402
from rawtf_ae.training.steps import StepOptions, make_step  # noqa: E402

_ITEMS = flags.DEFINE_integer("items", 1_048_576, "Catalog size.")
_LAYERS = flags.DEFINE_list("layers", ["600", "200"], "Encoder widths after the items.")
_SAMPLES = flags.DEFINE_list("samples", ["1024", "4096"], "train.sampled_softmax values.")
_POWER = flags.DEFINE_float("sampling_power", 0.75, "train.sampling_power.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Users per batch.")
_PER_USER = flags.DEFINE_integer("interactions", 100, "Items of each user.")
_USERS = flags.DEFINE_integer("users", 4096, "Users in the training rows (cycled).")
_POPULARITY = flags.DEFINE_float("popularity", 1.0, "Zipf exponent of the items' popularity.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed windows per setting.")
_WINDOW = flags.DEFINE_float("window_seconds", 5.0, "Minimum length of one window.")
_ONLY = flags.DEFINE_string("only", "", "Internal: run one setting ('masked_mse' or a sample count) here.")


def _rows() -> ratings.RatingMatrix:
    triples = catalog_ratings(_USERS.value, _ITEMS.value, _PER_USER.value, _POPULARITY.value)
    rows, columns = triples[:, 0].astype(np.int64), triples[:, 1].astype(np.int64)
    ones = np.ones(len(rows), np.float32)  # implicit feedback: every interaction is a 1
    return ratings.RatingMatrix.from_triples(rows, columns, ones, _USERS.value, _ITEMS.value)


def _config(setting: str):
    config = default_config()
    config.data.name, config.data.ratings_batches = "ratings", "sparse"
    config.model.layer_sizes = (_ITEMS.value, *map(int, _LAYERS.value))
    config.model.activation, config.model.output_activation = "tanh", "linear"
    train = config.train
    train.optimizer, train.batch_size = "lazy_adam", _BATCH.value
    if setting == "masked_mse":
        train.loss = "masked_mse"
    else:
        config.model.input_norm = "l2"
        train.loss, train.corruption, train.corruption_level = "multinomial", "dropout", 0.5
        train.sampled_softmax, train.sampling_power = int(setting), _POWER.value
    return config


def _run_here(setting: str) -> None:
    """Trains `setting` in this process: prints each window's users/s, then the peak RSS GiB."""
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    matrix, config = _rows(), _config(setting)
    trained = state.create_train_state(config)
    samples = config.train.sampled_softmax
    proposal = sampled_softmax.proposal_for(config, matrix) if samples else None
    capacity = sparse_gradients.gradient_capacity(matrix, _BATCH.value, samples)
    options = StepOptions.from_config(config, sparse_capacity=capacity)
    loop = loops.make_train_loop(make_step(trained.model, trained.optimizer, options, proposal), trained.step)
    iterator = iter(pipelines.train_dataset(matrix, _BATCH.value, seed=0, sparse=True))
    one = tf.constant(1, tf.int64)
    window = catalog_peers.timed_windows(lambda: float(loop(iterator, one)), _BATCH.value)
    for _ in range(3):
        window(0)  # build, trace, compile the padded sizes met first
    rates = [window(_WINDOW.value) for _ in range(_ROUNDS.value)]
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) / 2**20 for line in f if line.startswith("VmHWM"))
    print(*rates, peak)


def _alone(setting: str):
    flags_passed = [
        f"--items={_ITEMS.value}",
        f"--layers={','.join(_LAYERS.value)}",
        f"--sampling_power={_POWER.value}",
        f"--batch_size={_BATCH.value}",
        f"--interactions={_PER_USER.value}",
        f"--users={_USERS.value}",
        f"--popularity={_POPULARITY.value}",
        f"--rounds={_ROUNDS.value}",
        f"--window_seconds={_WINDOW.value}",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.sampled_softmax", f"--only={setting}", *flags_passed],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        print(f"({setting} failed: exit {out.returncode}, {out.stderr[-400:].strip()!r})")
        return [float("nan")], float("nan")
    *rates, peak = out.stdout.split("\n")[-2].split()
    return [float(r) for r in rates], float(peak)


def main(argv):
    del argv
    if _ONLY.value:
        return _run_here(_ONLY.value)
    print(
        f"tied Mult-DAE [{_ITEMS.value:,}-{'-'.join(_LAYERS.value)}], batch {_BATCH.value} users x "
        f"{_PER_USER.value} items, lazy_adam, XLA; sampling power {_POWER.value}\n"
    )
    print("| step | users/s (median, range) | vs masked-MSE sparse step | peak RSS |")
    print("|---|---|---|---|")
    baseline = None
    for setting in ["masked_mse", *_SAMPLES.value]:
        rates, peak = _alone(setting)
        median = statistics.median(rates)
        baseline = median if setting == "masked_mse" else baseline
        name = (
            "masked MSE (baseline)" if setting == "masked_mse" else f"sampled softmax, {int(setting):,} drawn"
        )
        print(
            f"| {name} | {median:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | "
            f"{median / baseline:.2f}x | {peak:.1f} GiB |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
