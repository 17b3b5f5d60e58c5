"""Shared timing for the benchmarks: the library's own compiled loop, timed in interleaved windows.

Speed is measured here, never in the tests: these machines are shared and noisy. Each runner
is timed in turn (A B C A B C ...) after a warm-up, each window lasting at least a few seconds,
and the medians are compared, so drift on the machine falls on every runner alike.
"""

import statistics
import time

import numpy as np
import tensorflow as tf
from absl import flags

from rawtf_ae.config.defaults import default_config
from rawtf_ae.data import pipelines
from rawtf_ae.recommender import ratings
from rawtf_ae.training import loops, state
from rawtf_ae.training.steps import StepOptions, make_step

LAYER_SIZES = flags.DEFINE_list("layer_sizes", ["784", "392", "196"], "Input width, then encoder widths.")
ACTIVATION = flags.DEFINE_string("activation", "selu", "Hidden activation.")
ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed windows per setting.")
WINDOW_SECONDS = flags.DEFINE_float("window_seconds", 1.5, "Minimum length of one window.")


def model_config(batch_size: int, **train_overrides):
    """The default config with the benchmark's model flags, batch size and `train` overrides."""
    config = default_config()
    config.model.layer_sizes = tuple(int(s) for s in LAYER_SIZES.value)
    config.model.activation = ACTIVATION.value
    config.train.batch_size = batch_size
    config.train.update(train_overrides)
    return config


def title(batch_size: int) -> str:
    return (
        f"{'-'.join(LAYER_SIZES.value)} {ACTIVATION.value}, BCE, Adam, batch {batch_size}, "
        f"median of {ROUNDS.value} interleaved windows"
    )


# The share of observed entries in the benchmarks' ratings rows (the issue's case C: ~2%).
RATINGS_DENSITY = 0.02


def random_ratings(num_rows: int, width: int, density: float, seed: int = 0):
    """`num_rows` sparse rows of 1-5 star ratings, each entry observed with probability `density`."""
    rng = np.random.default_rng(seed)
    observed = rng.random((num_rows, width)) < density
    rows, columns = np.nonzero(observed)
    values = rng.integers(1, 6, len(rows)).astype(np.float32)
    return ratings.RatingMatrix.from_triples(rows, columns, values, num_rows, width)


def loop_runner(config, strategy=None, window_seconds=1.5, steps_per_call=10, stop_check=True):
    """Builds the model/optimizer/step of `config` under `strategy`; returns `(parameters, window)`.

    `window()` runs calls of `steps_per_call` steps on random batches for at least
    `window_seconds` and returns the examples/s it measured.
    """
    strategy = strategy or tf.distribute.get_strategy()
    batch = config.train.batch_size
    trained = state.create_train_state(config, strategy)
    model = trained.model
    step_fn = make_step(model, trained.optimizer, StepOptions.from_config(config))
    # With the preemption flag the program's loop reads before every step (train.py's loop).
    stop = tf.Variable(False, trainable=False) if stop_check else None
    loop = loops.make_train_loop(step_fn, trained.step, strategy, stop)
    if config.train.loss == "masked_mse":
        examples = random_ratings(16 * batch, model.input_width, RATINGS_DENSITY)
    else:
        examples = tf.random.stateless_uniform([16 * batch, model.input_width], seed=[0, 1]).numpy()
    dataset = strategy.distribute_datasets_from_function(
        lambda context: pipelines.train_dataset(examples, batch, seed=0, input_context=context)
    )
    iterator = iter(dataset)
    steps = tf.constant(steps_per_call, tf.int64)

    def window():
        count, started = 0, time.perf_counter()
        while True:
            float(loop(iterator, steps))
            count += steps_per_call
            elapsed = time.perf_counter() - started
            if elapsed >= window_seconds:
                return count * batch / elapsed

    return model.num_parameters(), window


def interleave(windows: dict, rounds: int) -> dict:
    """Times every `name -> window()` once for warm-up, then `rounds` times in turn."""
    for window in windows.values():
        window()
    rates = {name: [] for name in windows}
    for _ in range(rounds):
        for name, window in windows.items():
            rates[name].append(window())
    return rates


def print_table(title: str, rates: dict, baseline: str, parameters: dict = None) -> None:
    """A markdown table of medians (min, max) and each runner's ratio to `baseline`."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\n{title}\n")
    print(
        f"| setting | {'trainable parameters | ' if parameters else ''}median examples/s | min | max | "
        f"ratio to {baseline} |"
    )
    print(f"|---|{'---:|' if parameters else ''}---:|---:|---:|---:|")
    for name, values in rates.items():
        count = f"{parameters[name]:,} | " if parameters else ""
        print(
            f"| {name} | {count}{medians[name]:,.0f} | {min(values):,.0f} | {max(values):,.0f} | "
            f"{medians[name] / medians[baseline]:.2f}x |"
        )

