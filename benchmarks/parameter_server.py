"""Parameter servers on a loopback cluster against one device: users/s and bytes per step, and
top-K over the sharded kernel shard by shard against assembling it.

    python -m benchmarks.parameter_server [--items=131072] [--users=20000] [--ratings_per_user=100]
        [--steps=200] [--ps=2] [--workers=2]

`configs/catalog_synthetic.py` (items-512-512-1024 SELU, tied, sparse batches of 128 users,
lazy_adam) as users run it: `train.py` on a synthetic file (`train_py.write_catalog`), once on
one device (XLA, as `auto` picks) and once as the chief of `--ps` parameter servers and
`--workers` workers on 127.0.0.1 (`train.strategy=parameter_server`, asynchronous), each at
`--warmup` and at `--warmup + --steps` steps. users/s: the median of the logged windows after
each run's first. Bytes per step: the loopback traffic (`lo`'s received bytes in
`/proc/net/dev`, TCP/IP headers included) of the longer run less the shorter's, over the
`--steps` steps between them (start-up, evaluation and the final checkpoint cancel out).
Beside it, what the step must move at least: the batch's distinct kernel rows and every dense
weight, to the worker and back as gradients (float32).

Then this process becomes the chief and ranks the top 10 of `--top_k_users` users over the
sharded kernel, shard by shard (`shard_top_k`: each parameter server multiplies its own rows
and sends back its top 10) and assembled (`predict_sparse`: the whole kernel read onto the
chief), checks they agree, and prints each one's latency (median of `--top_k_calls`) and bytes
per call.

The benchmark runs itself in a new network namespace with only loopback up
(`local_cluster.isolated`, as root): the servers stay off the network and `lo` counts their
traffic alone.
"""

import importlib.util
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from benchmarks import train_py  # noqa: E402
from rawtf_ae.program import local_cluster  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("items", 131_072, "catalog size")
flags.DEFINE_integer("users", 20_000, "users in the synthetic file")
flags.DEFINE_integer("ratings_per_user", 100, "distinct items each user rates")
flags.DEFINE_integer("steps", 200, "steps measured (between the short and the long run)")
flags.DEFINE_integer("warmup", 20, "steps of the short run")
flags.DEFINE_integer("ps", 2, "parameter servers")
flags.DEFINE_integer("workers", 2, "workers")
flags.DEFINE_integer("top_k_users", 128, "users ranked per top-K call")
flags.DEFINE_integer("top_k_calls", 10, "top-K calls timed per way")
_INSIDE = "RAWTF_AE_BENCHMARK_ISOLATED"
CONFIG = "catalog_synthetic.py"


def recipe():
    """`configs/catalog_synthetic.py`'s config."""
    spec = importlib.util.spec_from_file_location("recipe", os.path.join(train_py.REPO, "configs", CONFIG))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def loopback_bytes() -> int:
    """Bytes `lo` has received in this network namespace."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[0])
    raise RuntimeError("/proc/net/dev has no `lo`")


def _train(data: str, workdir: str, steps: int, cluster=None) -> tuple:
    """`(run, loopback bytes)` of `train.py` for `steps` steps, on one device or as `cluster`'s chief."""
    overrides = [
        f"--config.train.num_steps={steps}",
        f"--config.train.log_every_steps={max(steps // 10, 1)}",
        f"--config.train.eval_every_steps={steps}",
        f"--config.train.checkpoint_every_steps={steps}",
        "--config.train.export=False",
    ]
    if cluster:
        os.environ["TF_CONFIG"] = local_cluster.tf_config(cluster, "chief", 0)
        overrides.append("--config.train.strategy=parameter_server")
    before = loopback_bytes()
    try:
        run = train_py.run(CONFIG, data, workdir, *overrides)
    finally:
        os.environ.pop("TF_CONFIG", None)
    return run, loopback_bytes() - before


def _least_bytes_per_step(items: int, layer_sizes: list, batch: int, per_user: int) -> float:
    """What a step moves at least: the batch's expected distinct kernel rows (a flat
    catalog) and every dense weight, each once to the worker and once back (float32)."""
    rows = items * (1 - (1 - per_user / items) ** batch)
    dense = sum(a * b + b for a, b in zip(layer_sizes[1:-1], layer_sizes[2:]))  # kernels, biases
    dense += sum(layer_sizes[1:-1])  # the decoder's biases (the output bias is a row's)
    return 2 * 4 * (rows * (layer_sizes[1] + 1) + dense + layer_sizes[1])


def _print_training(data: str, folder: str, cluster: dict) -> None:
    config = recipe()
    layer_sizes = [FLAGS.items, *config.model.layer_sizes[1:]]
    least = _least_bytes_per_step(FLAGS.items, layer_sizes, config.train.batch_size, FLAGS.ratings_per_user)
    print(
        f"| run | users/s (median, range of windows) | bytes per step | x the least ({least / 1e6:.1f} MB) |"
    )
    print("|---|---|---|---|")
    rates = {}
    for name, where in (
        ("one device (XLA)", None),
        (f"{FLAGS.ps} ps x {FLAGS.workers} workers, async", cluster),
    ):
        runs = []
        for steps in (FLAGS.warmup, FLAGS.warmup + FLAGS.steps):
            runs.append(_train(data, os.path.join(folder, f"{bool(where)}_{steps}"), steps, where))
        per_step = (runs[1][1] - runs[0][1]) / FLAGS.steps
        rates[name] = statistics.median(runs[1][0].rates)
        ratio = f"{per_step / least:.2f}" if where else "-"
        print(f"| {name} | {train_py.spread(runs[1][0].rates)} | {per_step / 1e6:,.1f} MB | {ratio} |")
        if where:
            sharding = runs[1][0].logged("parameter servers: ").strip()
    one, ps = rates.values()
    print(
        f"\nParameter servers / one device: {ps / one:.2f}x the users/s ({one / ps:.1f}x slower); {sharding}"
    )


def _print_top_k(cluster: dict) -> None:
    import numpy as np
    import tensorflow as tf

    from rawtf_ae.models import architectures
    from rawtf_ae.recommender import recommend, shard_top_k
    from rawtf_ae.training import parameter_server

    os.environ["TF_CONFIG"] = local_cluster.tf_config(cluster, "chief", 0)
    config = recipe()
    config.model.layer_sizes = (FLAGS.items, *config.model.layer_sizes[1:])
    strategy = parameter_server.create_strategy(config.train)
    parameter_server.shard_catalog(strategy, FLAGS.items)
    with strategy.scope():
        model = architectures.create_model(config)
    shards = parameter_server.describe_shards(model)
    print(f"\nTop 10 of {FLAGS.top_k_users} users over {FLAGS.items:,} items; {shards}")
    rng = np.random.default_rng(0)
    columns = np.sort(
        np.stack(
            [rng.choice(FLAGS.items, FLAGS.ratings_per_user, replace=False) for _ in range(FLAGS.top_k_users)]
        )
    )
    rows = np.repeat(np.arange(FLAGS.top_k_users), FLAGS.ratings_per_user)
    ratings = tf.SparseTensor(
        np.stack([rows, columns.reshape(-1)], 1), rng.integers(1, 6, rows.size).astype(np.float32),
        [FLAGS.top_k_users, FLAGS.items],
    )  # fmt: skip
    ways = {
        "shard by shard": tf.function(lambda x: shard_top_k.top_k_unrated(model, x, 10)),
        "assembled": tf.function(
            lambda x: recommend.top_k_unrated(recommend.predict_sparse(model, x), x, 10)
        ),
    }
    found = {name: way(ratings)[1].numpy() for name, way in ways.items()}  # traced, and checked
    agree = (found["shard by shard"] == found["assembled"]).mean()
    units, shards = config.model.layer_sizes[1], len(model.kernels[0].variables)
    kernel = FLAGS.items * units * 4
    # At least: the distinct rated rows to the chief, the hidden vectors to each shard, its top 10 back.
    least = 4 * np.unique(columns).size * units + shards * FLAGS.top_k_users * (4 * units + 12 * 10)
    print(f"\nAt least {least / 1e6:.2f} MB per call by shard; the kernel is {kernel / 1e6:.1f} MB")
    print(f"| top-10 | latency (median of {FLAGS.top_k_calls}) | bytes per call | items agree |")
    print("|---|---|---|---|")
    for name, way in ways.items():
        seconds, moved = [], []
        for _ in range(FLAGS.top_k_calls):
            before, started = loopback_bytes(), time.perf_counter()
            way(ratings)[1].numpy()
            seconds.append(time.perf_counter() - started)
            moved.append(loopback_bytes() - before)
        print(
            f"| {name} | {statistics.median(seconds) * 1e3:.1f} ms | {statistics.median(moved) / 1e6:.2f} MB "
            f"({statistics.median(moved) / kernel:.3f} x the kernel) | {agree:.1%} |"
        )


def main(argv):
    del argv
    if not os.environ.get(_INSIDE):
        os.environ[_INSIDE] = "1"
        sys.exit(local_cluster.isolated([sys.executable, "-m", "benchmarks.parameter_server", *sys.argv[1:]]))
    folder = tempfile.mkdtemp(prefix="rawtf_ae_ps_benchmark_")
    data = train_py.write_catalog(
        os.path.join(folder, "catalog.csv"), FLAGS.users, FLAGS.items, FLAGS.ratings_per_user
    )
    print(
        f"configs/{CONFIG} on {FLAGS.users:,} users x {FLAGS.ratings_per_user} ratings over "
        f"{FLAGS.items:,} items; {FLAGS.steps} steps measured after {FLAGS.warmup}; loopback, "
        f"{os.cpu_count()} cores shared by every task\n"
    )
    script = os.path.join(train_py.REPO, "train.py")
    cluster, servers = local_cluster.start_cluster(script, FLAGS.ps, FLAGS.workers, folder)
    try:
        _print_training(data, folder, cluster)
        _print_top_k(cluster)
        sys.stdout.flush()
    finally:
        for process in servers.values():
            process.kill()
    os._exit(0)  # the coordinator's threads may keep the interpreter from exiting


if __name__ == "__main__":
    app.run(main)
