"""`train.strategy=parameter_server`: the catalog's first kernel sharded over parameter servers.

Mirrored strategies copy every variable to every machine: the first kernel of a catalog and its
two Adam moments must fit on each (a million items x 512 floats x 3 = 6 GiB). TensorFlow's
`ParameterServerStrategy` places variables on parameter-server tasks instead, splitting the
large ones into shards (its `variable_partitioner`); a coordinator (the chief) schedules steps
on worker tasks (`tf.distribute.coordinator.ClusterCoordinator`), each step reading the rows it
needs from the shards and writing its updates back.

Here:
  - `create_strategy`: the cluster from `TF_CONFIG` (`chief`, `worker` and `ps` tasks), checked
    first, each problem one line; `serve` is `--mode=server`, what workers and parameter
    servers run.
  - `CatalogRows`: the partitioner. Variables whose first dimension is the catalog (the first
    kernel, an untied first decoder kernel, the output bias) are split by rows into
    `train.ps_shards` shards (0: one per parameter server), none smaller than
    `train.ps_min_shard_bytes` (small models stay whole); every other variable stays whole.
    The lazy optimizers' slots are made beside each shard (Keras colocates them).
  - `Scheduler`: the training loop's steps as closures. Closure `s` trains global batch `s`
    of `(seed, s)`, whose example ids the chief sends with it (`pipelines.TrainBatches`), so
    each batch trains once whichever worker runs it. `train.ps_synchronous` runs one closure
    at a time: one device's run, bit for bit. Otherwise the workers run closures concurrently
    (asynchronous training: a step may read rows that another worker's step is updating, and
    steps finish out of order).

Its checkpoints keep one device's layout (`sharded_checkpoint.layout_free`). The sparse step
reads the shards with `row_ops.lookup` (`tf.gather` on a sharded variable returns the rows
grouped by shard, not in the order asked).
"""

from __future__ import annotations

import contextlib
import json
import logging as std_logging
import math
import os
import re
import socket

import tensorflow as tf
from absl import logging

from rawtf_ae.models import row_ops
from rawtf_ae.optim import lazy
from rawtf_ae.training import preemption, sharded_checkpoint

# What a parameter server that died makes the chief's calls raise.
SERVER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)

ROLES = ("chief", "worker", "ps")
_EXAMPLE = (
    '{"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"], '
    '"ps": ["host3:2222", "host4:2222"]}, "task": {"type": "chief", "index": 0}}'
)


def tf_config(purpose: str) -> dict:
    """`TF_CONFIG`, parsed and checked: a cluster with at least one task of each role, and a
    task it names. `purpose` says who needs it, for the one-line errors (`ValueError`)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ValueError(f"{purpose} needs the TF_CONFIG environment variable, e.g. {_EXAMPLE}.")
    try:
        parsed = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}); expected e.g. {_EXAMPLE}.") from None
    cluster = parsed.get("cluster") if isinstance(parsed, dict) else None
    if not isinstance(cluster, dict):
        raise ValueError(f"TF_CONFIG has no 'cluster' object; expected e.g. {_EXAMPLE}.")
    for role in ROLES:
        addresses = cluster.get(role)
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(
                f"TF_CONFIG's cluster has no {role!r} task ({purpose} needs a chief, workers and "
                f"parameter servers 'ps'); it lists {sorted(cluster)}."
            )
        if role == "chief" and len(addresses) != 1:
            raise ValueError(f"TF_CONFIG's cluster lists {len(addresses)} chief tasks; it takes one.")
    task = parsed.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise ValueError(f"TF_CONFIG has no 'task' (the task this process is, e.g. {_EXAMPLE}).")
    role, index = task["type"], task.get("index", 0)
    if role not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[role]):
        count = len(cluster.get(role, []))
        raise ValueError(
            f"TF_CONFIG's task is {role} {index!r}, but its cluster has {count} {role!r} task(s)."
        )
    return parsed


def serve() -> None:
    """`--mode=server`: this process is the worker or parameter server `TF_CONFIG` names; it
    serves until it is killed. Raises `ValueError` (one line) for a `TF_CONFIG` without one."""
    parsed = tf_config("--mode=server")
    role, index = parsed["task"]["type"], parsed["task"].get("index", 0)
    if role not in ("worker", "ps"):
        raise ValueError(
            f"TF_CONFIG's task is {role} {index}: --mode=server is for the 'worker' and 'ps' tasks; "
            "the chief runs training (--mode=train with train.strategy=parameter_server)."
        )
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(
        resolver.cluster_spec(), job_name=role, task_index=index, protocol="grpc", start=True
    )
    logging.info("%s %d serving at %s", role, index, parsed["cluster"][role][index])
    server.join()


class CatalogRows:
    """`ParameterServerStrategy`'s `variable_partitioner`: variables `[rows, ...]` whose first
    dimension is the catalog's are split by rows (see the module docstring); `rows` is set
    once the data's width is known (`shard_catalog`), before the model is made."""

    def __init__(self, shards: int, min_shard_bytes: int):
        self.shards, self.min_shard_bytes = shards, min_shard_bytes
        self.rows = None

    def count(self, shape, dtype) -> int:
        """How many shards a variable of `shape` and `dtype` gets."""
        shape = tf.TensorShape(shape)
        if self.rows is None or shape.rank == 0 or shape[0] != self.rows:
            return 1
        size = shape.num_elements() * tf.as_dtype(dtype).size
        return int(max(1, min(self.shards, size // self.min_shard_bytes, shape[0])))

    def __call__(self, shape, dtype, axis=0):
        shape = tf.TensorShape(shape)
        return [self.count(shape, dtype)] + [1] * (shape.rank - 1) if shape.rank else []


def create_strategy(train_config) -> tf.distribute.ParameterServerStrategy:
    """The strategy of `train.strategy=parameter_server`, from `TF_CONFIG` (checked first)."""
    parsed = tf_config("train.strategy='parameter_server'")
    task = parsed["task"]
    if task["type"] != "chief":
        raise ValueError(
            f"TF_CONFIG's task is {task['type']} {task.get('index', 0)}: with "
            "train.strategy='parameter_server' training runs on the chief; workers and parameter "
            "servers run `train.py --mode=server`."
        )
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")  # a lost worker fails its closures fast
    servers = len(parsed["cluster"]["ps"])
    partitioner = CatalogRows(train_config.ps_shards or servers, train_config.ps_min_shard_bytes)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    strategy.catalog_rows, strategy.tf_config_cluster = partitioner, parsed["cluster"]
    return strategy


def is_parameter_server(strategy) -> bool:
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def shard_catalog(strategy, width: int) -> None:
    """Tells the partitioner of a parameter-server `strategy` the catalog's width: call it
    before the model is made."""
    if is_parameter_server(strategy):
        strategy.catalog_rows.rows = width


def describe_shards(model) -> str:
    """E.g. `encoder/layer_0/kernel in 2 shards (500,000-500,000 rows, on ps 0, 1)`, one per
    sharded variable, or that none is."""
    parts = []
    for variable in sharded_checkpoint.model_variables(model):
        if row_ops.is_sharded(variable):
            shards = variable.variables
            tasks = ", ".join(str(tf.DeviceSpec.from_string(s.device).task) for s in shards)
            rows = [s.shape[0] for s in shards]
            name = shards[0].name.split("/part_")[0].removeprefix(f"{model.name}/")
            parts.append(f"{name} in {len(shards)} shards ({min(rows):,}-{max(rows):,} rows, on ps {tasks})")
    return "; ".join(parts) or "no variable is sharded (each is below train.ps_min_shard_bytes x 2)"


def check_layout(strategy, model, optimizer, sparse: bool) -> None:
    """Under a parameter-server `strategy`, logs which variables are sharded and raises
    `ValueError` (one line) for what would move a sharded variable whole on every step: dense
    batches, or an optimizer that updates every row (`lazy.applies_rows`)."""
    if not is_parameter_server(strategy):
        return
    logging.info("parameter servers: %s", describe_shards(model))
    refuse_whole_reads(model, optimizer, sparse)


def refuse_whole_reads(model, optimizer, sparse: bool) -> None:
    """`check_layout`'s refusals, for a model whatever made its sharded variables."""
    sharded = [v for v in sharded_checkpoint.model_variables(model) if row_ops.is_sharded(v)]
    if not sharded:
        return
    if not sparse:
        raise ValueError(
            "train.strategy='parameter_server' with a sharded first kernel needs sparse ratings "
            "batches (data.ratings_batches='sparse'): a dense batch reads every row of it on every step."
        )
    if not lazy.applies_rows(optimizer):
        raise ValueError(
            "train.strategy='parameter_server' with a sharded first kernel needs a row-wise optimizer "
            "(train.optimizer='lazy_adam', 'lazy_adagrad' or plain 'sgd'): the others update every "
            "row on every step."
        )


def _addresses(strategy, role: str) -> list:
    return list(strategy.tf_config_cluster.get(role, []))


def _unreachable(strategy, role: str) -> list:
    """`["ps 1 (host:port)", ...]`: the tasks of `role` whose port takes no connection."""
    found = []
    for index, address in enumerate(_addresses(strategy, role)):
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError:
            found.append(f"{role} {index} ({address})")
    return found


@contextlib.contextmanager
def lost_servers(strategy, checkpointer):
    """Under a parameter-server `strategy`, turns what a dead parameter server raises into one
    line (`preemption.PeerLost`) naming it and the checkpoint a rerun resumes from
    (`checkpointer()`: the run's `Checkpointer`, or None before it exists). Workers that die
    are TensorFlow's to survive: `Scheduler` says so in the log."""
    if not is_parameter_server(strategy):
        yield
        return
    try:
        yield
    except SERVER_ERRORS as e:
        dead = _unreachable(strategy, "ps") or [
            f"task {t}" for t in sorted(set(re.findall(r"/job:(ps/replica:0/task:\d+)", str(e))))
        ]
        latest = getattr(checkpointer(), "latest", None)
        resume = f"it resumes from {latest}" if latest else "it starts from scratch (no checkpoint yet)"
        cause = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise preemption.PeerLost(
            f"lost parameter server {', '.join(dead) or '(unknown: all answer now)'} ({cause[:160]}); "
            f"restart it and run the same command again: {resume}."
        ) from None


class _LostWorkers(std_logging.Filter):
    """Notes each failure of a worker `ClusterCoordinator` reports ("Worker /job:worker/
    replica:0/task:1 failed with ...", a task each time), letting its line through."""

    def __init__(self):
        super().__init__()
        self.tasks = []

    @classmethod
    def installed(cls) -> "_LostWorkers":
        """The process's one filter on the `tensorflow` logger (added on first use)."""
        logger = std_logging.getLogger("tensorflow")
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls())
        return next(f for f in logger.filters if isinstance(f, cls))

    def filter(self, record) -> bool:
        found = re.match(r"Worker /job:worker/replica:\d+/task:(\d+) failed", record.getMessage())
        if found:
            self.tasks.append(int(found.group(1)))
        return True


class Scheduler:
    """`scheduler(start, count, stop=None) -> mean loss`: training steps
    `start, ..., start + count - 1` scheduled on the workers, closure `s` training global batch
    `s` (`batches`, a `pipelines.TrainBatches`: the chief sends the batch's example ids with the
    closure, the worker gathers their rows). With `synchronous` one closure runs at a time (one
    device's run); otherwise all are scheduled and then joined. `stop` (a boolean variable, the
    preemption flag) is read before each closure is scheduled."""

    def __init__(self, strategy, step, step_counter, batches, synchronous: bool):
        self.coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
        self.synchronous, self.batches = synchronous, batches

        @tf.function
        def closure(ids):
            per_replica = strategy.run(step, args=(batches.gather(ids),))
            loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            step_counter.assign_add(1)
            return tf.cast(loss, tf.float32)

        self.closure = closure
        self.workers = _addresses(strategy, "worker")
        self.lost = _LostWorkers.installed()
        self.first, self.reported = len(self.lost.tasks), set()  # the workers lost from here on

    def _report_lost(self, step: int) -> None:
        for task in sorted(set(self.lost.tasks[self.first :]) - self.reported):
            self.reported.add(task)
            address = self.workers[task] if task < len(self.workers) else "?"
            left = len(self.workers) - len(self.reported)
            logging.warning(
                "lost worker %d (%s) before step %d: TensorFlow runs its steps on the %d other(s) "
                "(a step it had under way may run twice), and takes it back if it restarts",
                *(task, address, step, left),
            )

    def __call__(self, start: int, count: int, stop=None) -> float:
        results = []
        for s in range(start, start + count):
            if stop is not None and bool(stop.numpy()):
                break
            results.append(self.coordinator.schedule(self.closure, args=(self.batches.ids(s),)))
            if self.synchronous:
                self.coordinator.join()
        self.coordinator.join()
        self._report_lost(start + len(results))
        losses = [float(r.fetch()) for r in results]
        return math.fsum(losses) / len(losses) if losses else float("nan")
