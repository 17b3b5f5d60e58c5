"""Dense vs sparse ratings batches as the catalog grows: training examples/s and peak memory.

    python -m benchmarks.catalog_scale [--items=4096,32768,262144,1048576] [--memory] [--top_k_items=1048576]

The recommender autoencoder of Kuchaiev & Ginsburg (2017), items-512-512-1024 SELU, tied,
masked MSE, batch 128 users with `--ratings_per_user` ratings each, `train.optimizer`
(default lazy_adam). For each catalog size the dense step (`data.ratings_batches='dense'`:
`[batch, items]` batches, the first kernel multiplied in full both ways) and the sparse step
(gathers of the rated rows, outputs at the rated items only) are timed in interleaved windows
(`benchmarks.common`), and the ratio sparse/dense is printed beside what `auto` would pick.
With `--memory`, each (size, path) also runs alone in a subprocess and its peak resident memory
(VmHWM) is reported; from `--alone_from` items on, the speeds come from those runs too (the
dense and the sparse model of a million items do not fit in 24 GiB together). Last, the latency
of top-10 recommending for one user over `--top_k_items` items (`--items=` alone runs just that).

Beside them, the PyTorch sparse peer (`--paths` has `torch` when torch is installed:
`catalog_peers.torch_sparse_runner`) and the sparse step's share of its memory-traffic floor
(`catalog_peers.floor_bytes`, timed as a plain copy in the same run); `--phases` adds the
sparse step's phases: forward, forward + backward (uncompiled and compiled), the row gathers
and scatters alone, both whole steps. Users/s are medians with the
range of the windows.

With `--recipe`, `configs/recommender_synthetic.py` with its defaults by `train.py` on files
of the same users and ratings over `--recipe_items` items (`train_py.print_recipe`).

With `--end_to_end`, `train.py` as the README runs it (`configs/catalog_synthetic.py`) on a
synthetic file of `--e2e_users` users x `--ratings_per_user` ratings over `--e2e_items` items
(written first, unless `--e2e_data` names one), `--e2e_runs` times in subprocesses: its logged
users/s, peak RSS, each checkpoint's size and save time, and the wall time. The million-item run alone:

    python -m benchmarks.catalog_scale --items= --top_k_items=0 --end_to_end
"""

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # the PyTorch peer (optional). torch's compiler stack (triton) crashes loaded after TensorFlow.
    import torch._dynamo  # noqa: F401
except ImportError:
    pass

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import catalog_peers, train_py  # noqa: E402
from rawtf_ae.config.defaults import default_config  # noqa: E402
from rawtf_ae.data import pipelines  # noqa: E402
from rawtf_ae.recommender import batching, ratings
from rawtf_ae.recommender.synthetic import catalog_ratings  # noqa: E402
from rawtf_ae.training import loops, sparse_compiled, state
from rawtf_ae.training.steps import Objective, StepOptions, make_step, unpack  # noqa: E402

_ITEMS = flags.DEFINE_list("items", ["4096", "32768", "262144", "1048576"], "Catalog sizes.")
_WIDTHS = flags.DEFINE_list("widths", ["512", "512", "1024"], "Encoder widths after the items.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Users per batch.")
_PER_USER = flags.DEFINE_integer("ratings_per_user", 100, "Ratings of each user.")
_OPTIMIZER = flags.DEFINE_string("optimizer", "lazy_adam", "train.optimizer.")
_MOMENTUM = flags.DEFINE_float(
    "momentum", 0.9, "train.momentum, for --optimizer=sgd (0: plain SGD, which updates the rated rows only)."
)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed windows per setting.")
_WINDOW = flags.DEFINE_float("window_seconds", 3.0, "Minimum length of one window.")
_MEMORY = flags.DEFINE_bool("memory", False, "Also measure each path's peak RSS in a subprocess.")
_ALONE_FROM = flags.DEFINE_integer(
    "alone_from", 1_000_000, "From this many items, time each path alone (two such models need > 24 GiB)."
)
_TOPK = flags.DEFINE_integer(
    "top_k_items", 1_048_576, "Time top-10 recommending over this many items (0: skip)."
)
_END_TO_END = flags.DEFINE_bool(
    "end_to_end", False, "Also run train.py with configs/catalog_synthetic.py on a synthetic catalog."
)
_E2E_DATA = flags.DEFINE_string(
    "e2e_data",
    "",
    "The ratings CSV for --end_to_end (empty: written first, --e2e_users x --ratings_per_user).",
)
_E2E_USERS = flags.DEFINE_integer("e2e_users", 100_000, "Users of the --end_to_end file.")
_E2E_ITEMS = flags.DEFINE_integer("e2e_items", 1_048_576, "Items of the --end_to_end file.")
_E2E_RUNS = flags.DEFINE_integer(
    "e2e_runs", 3, "--end_to_end: runs of train.py (medians and ranges over them)."
)
_E2E_STEPS = flags.DEFINE_integer(
    "e2e_steps", 0, "train.num_steps of the --end_to_end run (0: the config's)."
)
_PATHS = flags.DEFINE_list(
    "paths",
    ["dense", "sparse", "torch"],
    "What to time: dense, sparse (ours, XLA-compiled as train.jit_compile='auto' does), "
    "sparse_uncompiled (train.jit_compile=False), torch (the PyTorch sparse peer).",
)
_PHASES = flags.DEFINE_bool(
    "phases",
    False,
    "After the table: the sparse step's forward, forward + backward (uncompiled, compiled), "
    "row operations alone and whole-step times.",
)
_RECIPE = flags.DEFINE_bool(
    "recipe",
    False,
    "Run configs/recommender_synthetic.py with its defaults by train.py on --recipe_items files.",
)
_RECIPE_ITEMS = flags.DEFINE_list(
    "recipe_items", ["4096", "262144"], "--recipe: the catalogs (same users, ratings)."
)
_RECIPE_USERS = flags.DEFINE_integer("recipe_users", 20_000, "--recipe: users of each file.")
_RECIPE_RUNS = flags.DEFINE_integer("recipe_runs", 3, "--recipe: runs per file.")
_RECIPE_BEFORE = flags.DEFINE_bool(
    "recipe_before",
    False,
    "--recipe: also 60 steps of the largest with adam and re-feeding (the old defaults).",
)
_ONLY = flags.DEFINE_string(
    "only", "", "Internal: 'ITEMS:dense|sparse|torch' runs that alone, prints its rates and peak RSS."
)


def _config(items: int, batches: str):
    """`batches`: dense, sparse (compiled with XLA, the default `train.jit_compile='auto'`),
    sparse_uncompiled, or auto."""
    config = default_config()
    config.data.name = "ratings"
    config.data.ratings_batches = "sparse" if batches.startswith("sparse") else batches
    config.model.layer_sizes = (items, *map(int, _WIDTHS.value))
    config.model.activation, config.model.output_activation = "selu", "linear"
    config.train.loss, config.train.optimizer = "masked_mse", _OPTIMIZER.value
    config.train.momentum = _MOMENTUM.value
    config.train.batch_size = _BATCH.value
    config.train.jit_compile = False if batches in ("dense", "sparse_uncompiled") else "auto"
    return config


def _rows(items: int, num_rows: int) -> ratings.RatingMatrix:
    """`num_rows` users with `--ratings_per_user` distinct items each, uniformly drawn
    (`synthetic_ratings.catalog_ratings` with a flat popularity)."""
    per_user = min(_PER_USER.value, items)
    triples = catalog_ratings(num_rows, items, per_user, popularity_exponent=0.0)
    rows, columns = triples[:, 0].astype(np.int64), triples[:, 1].astype(np.int64)
    return ratings.RatingMatrix.from_triples(rows, columns, triples[:, 2], num_rows, items)


def _runner(items: int, batches: str, matrix):
    """`window(min_seconds) -> examples/s` of the `batches` step on `matrix`, built once;
    `batches="torch"`: the PyTorch sparse peer (`catalog_peers`), None without torch."""
    if batches == "torch":
        return catalog_peers.torch_sparse_runner(matrix, [int(w) for w in _WIDTHS.value], _BATCH.value)
    config = _config(items, batches)
    trained = state.create_train_state(config)
    sparse = batches.startswith("sparse")
    options = StepOptions.from_config(config, sparse_capacity=items)
    loop = loops.make_train_loop(make_step(trained.model, trained.optimizer, options), trained.step)
    iterator = iter(pipelines.train_dataset(matrix, _BATCH.value, seed=0, sparse=sparse))
    one = tf.constant(1, tf.int64)
    return catalog_peers.timed_windows(lambda: float(loop(iterator, one)), _BATCH.value)


def _peak_gib() -> float:
    """This process's peak resident memory (VmHWM; `ru_maxrss` would count the parent's at fork)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 2**20 for line in f if line.startswith("VmHWM"))


def _alone(items: int, batches: str) -> tuple[list, float]:
    """`(each window's users/s, peak RSS GiB)` of a subprocess training the `batches` step
    alone; NaNs if it was killed (out of memory: the dense step of a million items is, on 24 GiB)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.catalog_scale", f"--only={items}:{batches}", *_passed_flags()],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        print(f"({batches} at {items:,} items failed: exit {out.returncode}, {out.stderr[-300:].strip()!r})")
        return [float("nan")], float("nan")
    *rates, peak = out.stdout.split("\n")[-2].split()
    return [float(r) for r in rates], float(peak)


def _passed_flags():
    return [
        f"--widths={','.join(_WIDTHS.value)}",
        f"--batch_size={_BATCH.value}",
        f"--ratings_per_user={_PER_USER.value}",
        f"--optimizer={_OPTIMIZER.value}",
        f"--momentum={_MOMENTUM.value}",
        f"--rounds={_ROUNDS.value}",
        f"--window_seconds={_WINDOW.value}",
    ]


def main(argv):
    del argv
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    if _ONLY.value:
        items, batches = _ONLY.value.split(":")
        window = _runner(int(items), batches, _rows(int(items), 8 * _BATCH.value))
        window(0)  # build, trace and warm up
        rates = [window(_WINDOW.value) for _ in range(_ROUNDS.value)]
        print(*rates, _peak_gib())
        return
    if _END_TO_END.value and _E2E_DATA.value and not os.path.isfile(_E2E_DATA.value):
        sys.exit(f"--e2e_data={_E2E_DATA.value}: no such file (in {os.getcwd()}).")
    if _ITEMS.value:
        _print_table()
    if _RECIPE.value:
        sizes = [int(i) for i in _RECIPE_ITEMS.value]
        train_py.print_recipe(
            sizes, _RECIPE_USERS.value, _PER_USER.value, _RECIPE_RUNS.value, _RECIPE_BEFORE.value
        )
    if _END_TO_END.value:
        catalog = (_E2E_USERS.value, _E2E_ITEMS.value, _PER_USER.value)
        train_py.print_end_to_end(_E2E_DATA.value, catalog, _E2E_STEPS.value, _E2E_RUNS.value)
    if _TOPK.value:
        items = _TOPK.value
        print(f"\ntop-10 over {items:,} items for one user with {_PER_USER.value} ratings, median of 20:\n")
        for name, ms in _top_k_latency(items).items():
            print(f"- {name}: {ms:.1f} ms")


def _top_k_latency(items: int, k: int = 10, calls: int = 20) -> dict:
    """Median ms per user of top-`k` over `items` for one user with `--ratings_per_user`
    ratings: `Recommender.recommend` (eager, sparse input) and the export's `recommend`
    signature (SavedModel, loaded), each with the int8 first pass (`item_index`) and with the
    float32 product over the whole catalog. The weights are random: the latency does not depend on them."""

    from rawtf_ae.models import architectures  # noqa: PLC0415
    from rawtf_ae.recommender.recommend import Recommender  # noqa: PLC0415
    from rawtf_ae.serving import saved_model

    model = architectures.create_model(_config(items, "sparse"))
    users = 256
    train = _rows(items, users)
    vocabulary = ratings.Vocabulary([str(u) for u in range(users)], [str(i) for i in range(items)])
    first = slice(train.indptr[0], train.indptr[1])  # user 0's ratings, as a new user's
    user = {str(i): float(r) for i, r in zip(train.columns[first], train.values[first])}
    started = time.perf_counter()
    recommender = Recommender(model, vocabulary, train, first_pass="int8")
    built = time.perf_counter() - started
    full = Recommender(model, vocabulary, train, first_pass="none")
    kernel, hidden = model.kernels[0], tf.random.normal([1, model.layer_sizes[1]])
    with tempfile.TemporaryDirectory() as folder:
        loaded = {
            way: tf.saved_model.load(
                saved_model.save(model, os.path.join(folder, way), vocabulary, first_pass=way)
            )
            for way in ("int8", "none")
        }
        ids, values = tf.constant(list(user)), tf.constant(list(user.values()), tf.float32)
        ways = {
            "Recommender.recommend, int8 first pass": lambda: recommender.recommend(user, k),
            "Recommender.recommend, float32 product (first_pass='none')": lambda: full.recommend(user, k),
            **{
                f"export's recommend signature, {name}": lambda way=way: loaded[way].signatures["recommend"](
                    item_ids=ids, ratings=values, k=tf.constant(k)
                )
                for way, name in (("int8", "int8 first pass"), ("none", "float32 product"))
            },
            # The floor of the float32 product: one user's last layer reads the whole kernel.
            "one float32 product with the first kernel alone": lambda: tf.matmul(
                hidden, kernel, transpose_b=True
            ),
            f"recommend_for_users, {users} users in one batch, per user": lambda: (
                recommender.recommend_for_users(vocabulary.users, k)
            ),
        }
        latency = {}
        for name, way in ways.items():
            way()
            timings = []
            for _ in range(calls):
                started = time.perf_counter()
                way()
                timings.append((time.perf_counter() - started) * 1000)
            latency[name] = statistics.median(timings) / (users if "per user" in name else 1)
    latency["building the int8 copy (once per Recommender or export)"] = built * 1000
    return latency


def _print_table() -> None:
    """The dense step, the sparse step and the PyTorch sparse peer at each `--items` size."""
    paths = [p for p in _PATHS.value if p != "torch" or catalog_peers.has_torch()]
    widths, width = "-".join(_WIDTHS.value), int(_WIDTHS.value[0])
    optimizer = _OPTIMIZER.value + (f" (momentum {_MOMENTUM.value})" if _OPTIMIZER.value == "sgd" else "")
    print(
        f"\nitems-{widths} SELU tied, masked MSE, {optimizer}, batch {_BATCH.value} users x "
        f"{_PER_USER.value} ratings, 2 CPU threads; users/s as the median (range) of {_ROUNDS.value} "
        f"windows, interleaved (from {int(_ALONE_FROM.value):,} items each path alone in its own "
        f"process); {', '.join(paths)}"
        f"{'' if 'torch' in paths else ' (no PyTorch peer: torch is not installed)'}\n"
    )
    columns = [f"{_NAMES[p]} users/s" for p in paths] + [
        f"sparse / {_NAMES[p]}" for p in paths if p != "sparse"
    ]
    columns += ["sparse step / its memory floor"] * ("sparse" in paths) + ["auto picks"]
    columns += [f"{_NAMES[p]} peak RSS" for p in paths] if _MEMORY.value else []
    print(f"| items | {' | '.join(columns)} |")
    print(f"|---:|{'---:|' * len(columns)}")
    for items in map(int, _ITEMS.value):
        matrix = _rows(items, 8 * _BATCH.value)
        gc.collect()  # the last size's models (their functions hold them in reference cycles)
        alone = {p: _alone(items, p) for p in paths} if items >= _ALONE_FROM.value or _MEMORY.value else None
        rates = (
            {p: alone[p][0] for p in paths}
            if items >= _ALONE_FROM.value
            else _interleaved(items, matrix, paths)
        )
        medians = {p: statistics.median(r) for p, r in rates.items()}
        cells = [f"{medians[p]:,.0f} ({min(rates[p]):,.0f}-{max(rates[p]):,.0f})" for p in paths]
        if "sparse" in paths:
            cells += [f"{medians['sparse'] / medians[p]:.2f}x" for p in paths if p != "sparse"]
            cells.append(_floor_cell(matrix, width, medians["sparse"]))
        cells.append(batching.choose(_config(items, "auto"), matrix))
        cells += [f"{alone[p][1]:.2f} GiB" for p in paths] if _MEMORY.value else []
        print(f"| {items:,} | {' | '.join(cells)} |", flush=True)
    for items in map(int, _ITEMS.value) if _PHASES.value else ():
        _print_phases(items, _rows(items, 8 * _BATCH.value))


def _print_phases(items: int, matrix) -> None:
    """The sparse step's forward pass and forward + backward pass, each its own `tf.function`
    of the step's `Objective`, the compiled forward + backward (`sparse_compiled`), the row
    operations alone, and the library's whole step uncompiled and compiled (`_runner`), each the
    median of `--rounds` windows. The whole steps run first, interleaved, and are freed before
    the phases' model is built: a million-item model and its moments take 6 GiB."""
    gc.collect()  # the table's models
    rates = _interleaved(items, matrix, ["sparse_uncompiled", "sparse"])
    steps = [
        f"whole step {'compiled' if name == 'sparse' else 'uncompiled'} "
        f"{statistics.median(_BATCH.value / r * 1e3 for r in rates[name]):.1f} ms"
        for name in ("sparse_uncompiled", "sparse")
    ]
    gc.collect()
    config = _config(items, "sparse")
    trained = state.create_train_state(config)
    objective = Objective(trained.model, trained.optimizer, StepOptions.from_config(config))
    variables = trained.model.trainable_variables
    iterator = iter(pipelines.train_dataset(matrix, _BATCH.value, seed=0, sparse=True))
    batches = [next(iterator) for _ in range(8)]

    def loss(batch):
        inputs, targets, mask = unpack(batch)
        return objective.reconstruction(inputs, targets, mask, objective.normalizer(batch))[0]

    def gradients(batch):
        with tf.GradientTape() as tape:
            value = loss(batch)
        return value, tape.gradient(value, variables)

    compiled = sparse_compiled.make_gradients(objective, variables)

    def compiled_gradients(batch):
        return compiled(batch, objective.normalizer(batch))[:2]

    phases = (("forward", loss), ("forward + backward", gradients), ("compiled", compiled_gradients))
    cells = [f"{name} {_median_ms(tf.function(phase), batches):.1f} ms" for name, phase in phases]
    cells += _row_op_cells(trained, batches)
    print(f"- {items:,} items, sparse step phases: {', '.join(cells + steps)}", flush=True)


def _row_op_cells(trained, batches) -> list:
    """The row operations a row-wise update cannot avoid, alone: gathering a batch's distinct
    rated rows (increasing) of the first kernel and its two moments, and scattering them back
    (the same values: nothing changes), no arithmetic. TensorFlow's CPU scatter kernels copy
    row by row on one thread, so this bounds any update written with TensorFlow's own ops."""
    kernel = trained.model.kernels[0]
    slots = [v for v in trained.optimizer.variables if v.shape == kernel.shape]
    targets = [kernel] + [v if isinstance(v, tf.Variable) else v.value for v in slots]  # Keras wraps

    def rows(batch):
        return tf.sort(tf.unique(unpack(batch)[0].indices[:, 1])[0])

    @tf.function(reduce_retracing=True)
    def gathers(columns):  # one column of each, to wait for (returning the rows costs page faults)
        return [tf.gather(t, columns)[:, 0] for t in targets]

    @tf.function(reduce_retracing=True)
    def gathers_and_scatters(columns):
        for t in targets:
            t.scatter_update(tf.IndexedSlices(tf.gather(t, columns), columns))
        return tf.gather(kernel, columns[:1])  # to wait for

    columns = [rows(b) for b in batches]
    return [
        f"{len(targets)} row {name} alone {_median_ms(ops, columns):.1f} ms"
        for name, ops in (("gathers", gathers), ("gathers + scatters", gathers_and_scatters))
    ]


def _median_ms(function, inputs) -> float:
    """The median over `--rounds` windows of `function`'s ms per call, cycling through
    `inputs`, each result fetched (after one warm-up call per input)."""
    for x in inputs:
        function(x)
    times = []
    for _ in range(_ROUNDS.value):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < _WINDOW.value:
            tf.nest.map_structure(np.asarray, function(inputs[count % len(inputs)]), expand_composites=True)
            count += 1
        times.append((time.perf_counter() - started) / count * 1e3)
    return statistics.median(times)


_NAMES = {
    "dense": "dense",
    "sparse": "sparse",
    "sparse_uncompiled": "sparse uncompiled",
    "torch": "PyTorch sparse",
}


def _floor_cell(matrix, width: int, users_per_second: float) -> str:
    """`floor ms / step ms = share`: the bytes one sparse step moves at least (`catalog_peers`),
    timed as a plain copy here and now, over the sparse step's time."""
    rows = catalog_peers.touched_rows(matrix, _BATCH.value)
    floor = catalog_peers.copy_seconds(catalog_peers.floor_bytes(rows, width))
    step = _BATCH.value / users_per_second
    return f"{floor * 1e3:.1f} / {step * 1e3:.1f} ms = {floor / step:.0%} ({rows:,.0f} rows)"


def _interleaved(items: int, matrix, paths) -> dict:
    """Each path's users/s in `--rounds` windows, timed in turn in this process."""
    windows = {p: _runner(items, p, matrix) for p in paths}
    rates = {p: [] for p in windows}
    for window in windows.values():
        window(0)  # trace and warm up
    for _ in range(_ROUNDS.value):
        for name, window in windows.items():
            rates[name].append(window(_WINDOW.value))
    return rates


if __name__ == "__main__":
    app.run(main)
