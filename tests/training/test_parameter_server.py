"""train.strategy=parameter_server on a loopback cluster: one device's run bit for bit when
synchronous (resumed in other layouts too), implicit feedback ranked shard by shard as one
device ranks it, asynchronous training that reaches one device's RMSE with a worker killed,
a dead parameter server, and the refusals that need a cluster. Bad TF_CONFIGs are in the
bad-input campaign.

The servers (2 parameter servers, 2 workers: `train.py --mode=server`) run once for the module
inside a network namespace with only loopback up (`local_cluster --serve_only`, under
`unshare -n`): `tf.distribute.Server` listens on every interface. Each chief is `train.py`
entered into that namespace (`nsenter`), with a timeout as the watchdog.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.config import saved
from rawtf_ae.models import row_ops
from rawtf_ae.program import train
from rawtf_ae.recommender import ratings_file
from rawtf_ae.recommender.synthetic import synthetic_ratings
from rawtf_ae.training import parameter_server
from tests.conftest import REPO, sharded, tiny_config, tiny_ratings_config

_ENV = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"} | {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONPATH": REPO,
}
# Two shards of the first kernel: its 32-unit rows are far above 1 KiB in all.
SHARDED = {"train.ps_min_shard_bytes": 1024, "data.ratings_batches": "sparse", "train.jit_compile": False}


def _namespaces_work() -> bool:
    if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


class Cluster:
    """The module's servers; `chief(config, workdir)` runs `train.py` as their chief."""

    def __init__(self, logs):
        command = (
            f"ip link set lo up && exec {sys.executable} -m rawtf_ae.program.local_cluster --serve_only "
            f"--ps=2 --workers=2 --logs={logs} {os.path.join(REPO, 'train.py')}"
        )
        self.process = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_ENV,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the servers did not start (logs in {logs})")
        started = json.loads(line)
        self.spec, self.pids, self.restarted = started["cluster"], started["pids"], []

    def chief(self, config, workdir, timeout=240):
        """`train.py --workdir=workdir` with `config` (written as the workdir's config.json)."""
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(saved.to_json(config))
        env = _ENV | {"TF_CONFIG": json.dumps({"cluster": self.spec, "task": {"type": "chief", "index": 0}})}
        command = [
            "nsenter",
            "-t",
            str(self.process.pid),
            "-n",
            sys.executable,
            os.path.join(REPO, "train.py"),
            f"--workdir={workdir}",
        ]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)

    def start_chief(self, config, workdir, stderr_path):
        """The chief of `chief`, started in the background, its stderr into `stderr_path`."""
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(saved.to_json(config))
        env = _ENV | {"TF_CONFIG": json.dumps({"cluster": self.spec, "task": {"type": "chief", "index": 0}})}
        command = self._inside(sys.executable, os.path.join(REPO, "train.py"), f"--workdir={workdir}")
        with open(stderr_path, "w") as log:
            return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)

    def kill(self, task: str) -> None:
        os.kill(self.pids[task], signal.SIGKILL)

    def restart(self, task: str) -> None:
        """Starts `task` ("ps_1", "worker_0") again on its port (`--mode=server`)."""
        role, index = task.rsplit("_", 1)
        env = _ENV | {
            "TF_CONFIG": json.dumps({"cluster": self.spec, "task": {"type": role, "index": int(index)}})
        }
        command = self._inside(sys.executable, os.path.join(REPO, "train.py"), "--mode=server")
        self.restarted.append(
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        self.pids[task] = self.restarted[-1].pid

    def _inside(self, *command):
        return ["nsenter", "-t", str(self.process.pid), "-n", *command]

    def close(self):
        for process in self.restarted:
            process.kill()
            process.wait()
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not _namespaces_work():
        pytest.skip("needs unshare -n and nsenter (root)")
    started = Cluster(tmp_path_factory.mktemp("cluster_logs"))
    yield started
    started.close()


@pytest.fixture(scope="module")
def ratings_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ps_data") / "ratings.csv")
    return ratings_file.write_ratings(path, synthetic_ratings(num_users=600, num_items=300, density=0.08))


def _config(path, **overrides):
    return tiny_ratings_config(path, **{"train.strategy": "parameter_server", **SHARDED, **overrides})


def _weights(workdir):
    """Every value of the workdir's newest checkpoint: model, optimizer slots, step."""
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
    names = sorted(
        k for k in reader.get_variable_to_shape_map() if k.startswith(("model/", "step/", "optimizer/"))
    )
    return {name: reader.get_tensor(name) for name in names}


def _one_device(config, workdir):
    config = config.copy_and_resolve_references()
    config.train.strategy = "default"
    return train.train_and_evaluate(config, str(workdir))


def test_synchronous_training_is_one_devices_bit_for_bit_and_resumes_in_any_layout(
    cluster, ratings_path, tmp_path
):
    # The recipe's options together (clipping: its norm over the shards; code dropout, masking
    # noise, warm-up and decay). 20 steps on 2 shards, then resumed to 40 on 3 shards and on
    # one device: each is one device's 40 steps (one device's checkpoint restoring sharded is
    # the unit test below).
    options = {
        "train.ps_synchronous": True,
        "train.clip_norm": 1.0,
        "train.corruption": "masking",
        "train.corruption_level": 0.2,
        "train.schedule": "exponential",
        "train.decay_steps": 10,
        "train.warmup_steps": 5,
        "train.dense_refeeding": 0,
        "train.optimizer": "lazy_adam",
        "train.checkpoint_every_steps": 20,
        "train.eval_every_steps": 20,
        "train.log_every_steps": 20,
        "train.export": False,
    }
    half, full = {**options, "train.num_steps": 20}, {**options, "train.num_steps": 40}
    first = cluster.chief(_config(ratings_path, **half), str(tmp_path / "ps"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "encoder/layer_0/kernel in 2 shards" in first.stderr, first.stderr[-3000:]
    for name in ("ps_then_3_shards", "ps_then_one_device"):
        shutil.copytree(tmp_path / "ps", tmp_path / name)
    resumed = cluster.chief(
        _config(ratings_path, **full, **{"train.ps_shards": 3}), str(tmp_path / "ps_then_3_shards")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 20" in resumed.stderr and "kernel in 3 shards" in resumed.stderr, resumed.stderr[-3000:]
    _one_device(_config(ratings_path, **full), tmp_path / "ps_then_one_device")
    reference = _one_device(_config(ratings_path, **full), tmp_path / "one")
    expected = _weights(str(tmp_path / "one"))
    assert int(expected["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 40
    for name in ("ps_then_3_shards", "ps_then_one_device"):
        got = _weights(str(tmp_path / name))
        assert sorted(got) == sorted(expected), name
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}: {key}")
        with open(tmp_path / name / "metrics.json") as f:
            assert json.load(f)["val_rmse"] == reference["val_rmse"], name


def test_implicit_feedback_is_ranked_shard_by_shard_as_one_device_ranks_it(cluster, tmp_path):
    # The tied Mult-DAE on sparse batches with a sampled softmax, synchronous: the chief ranks
    # the held-out users over the sharded kernel shard by shard (`shard_top_k`: each shard's top
    # K, merged; the kernel in 3 shards, the output bias in 2 on other boundaries) and keeps the
    # best NDCG@100; every ranking metric is one device's, bit for bit, and the loss (a
    # log-sum-exp per shard) within rounding.
    from tests.training.test_multinomial import _implicit_file
    from tests.training.test_sampled_softmax import _SAMPLED

    options = {
        **_SAMPLED,
        "data.name": "ratings",
        "data.path": _implicit_file(tmp_path),
        "data.ratings_split": "users",
        "data.validation_users": 15,
        "data.test_users": 15,
        "train.batch_size": 16,
        "train.learning_rate": 3e-3,
        "train.num_steps": 20,
        "train.eval_every_steps": 10,
        "train.keep_best": True,
        "train.export": False,
        "train.strategy": "parameter_server",
        "train.ps_synchronous": True,
        **SHARDED,
        "train.ps_shards": 3,
        "train.ps_min_shard_bytes": 300,  # the bias (under 900 bytes) in 2 shards, the kernel in 3
    }
    options["model.layer_sizes"] = (0, 16, 8)
    result = cluster.chief(tiny_config(**options), str(tmp_path / "ps"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "encoder/layer_0/kernel in 3 shards" in result.stderr, result.stderr[-3000:]
    assert "decoder/layer_0/bias in 2 shards" in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("] ranked shard by shard") == 1, result.stderr[-3000:]
    with open(tmp_path / "ps" / "metrics.json") as f:
        sharded_metrics = json.load(f)
    reference = _one_device(tiny_config(**options), tmp_path / "one")
    ranked = [k for k in reference if k.startswith("val_") and ("_at_" in k or k.endswith("_users"))]
    assert len(ranked) >= 7 and reference["val_ranked_users"] == 15
    assert {k: sharded_metrics[k] for k in ranked} == {k: reference[k] for k in ranked}
    assert sharded_metrics["best_step"] == reference["best_step"]
    np.testing.assert_allclose(sharded_metrics["val_loss"], reference["val_loss"], rtol=1e-5)


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"data.ratings_batches": "dense"}, "needs sparse ratings batches"),
    ],
    ids=["dense batches"],
)
def test_what_would_move_a_sharded_kernel_whole_is_one_line(
    cluster, ratings_path, tmp_path, overrides, named
):
    result = cluster.chief(_config(ratings_path, **overrides), str(tmp_path / "w"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("train.py: error:")]
    assert result.returncode == 1 and len(errors) == 1 and named in errors[0], result.stderr[-3000:]
    assert set(os.listdir(tmp_path / "w")) <= {"config.json", ".lock"}  # no checkpoint, no output


def test_the_partitioner_shards_only_the_catalogs_rows_and_keeps_small_ones_whole():
    partitioner = parameter_server.CatalogRows(shards=4, min_shard_bytes=1 << 20)
    assert partitioner([1000, 512], tf.float32) == [1, 1]  # the width is not known yet
    partitioner.rows = 1000
    assert partitioner([1000, 512], tf.float32) == [1, 1] and partitioner.count([1000, 512], tf.float32) == 1
    partitioner.rows = 100_000
    assert partitioner([100_000, 512], tf.float32) == [4, 1]  # 195 MiB: 4 shards
    assert partitioner([100_000, 2], tf.float32) == [1, 1]  # 781 KiB: below one shard's minimum
    assert partitioner([100_000], tf.float32) == [1]
    assert partitioner([512, 100_000], tf.float32) == [1, 1]  # not rows of the catalog
    assert partitioner([], tf.float32) == []


def test_a_sharded_variables_rows_gradients_and_norm_are_the_whole_ones_bit_for_bit():
    # A ShardedVariable made here (no cluster): `lookup` keeps the order asked, the tape's
    # per-shard slices are `row_gradients`' split of the whole variable's, and their norm
    # terms join into the whole gradient's (clipping then scales by the same norm).
    from rawtf_ae.optim import lazy

    value = tf.random.stateless_normal([7, 3], [1, 2])
    whole = tf.Variable(value, name="k")
    parts = [tf.Variable(value[:4], name="k/part_0"), tf.Variable(value[4:], name="k/part_1")]
    sharded = tf.__internal__.distribute.ShardedVariable(parts)
    ids = tf.constant([6, 0, 4, 3, 0, 5], tf.int64)
    np.testing.assert_array_equal(row_ops.lookup(sharded, ids).numpy(), tf.gather(value, ids).numpy())
    weights = tf.random.stateless_normal([6, 3], [3, 4])
    gradients = []
    for variable, sources in ((whole, [whole]), (sharded, parts)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(row_ops.lookup(variable, ids) * weights))
        gradients.append(tape.gradient(loss, sources))
    (one,), shards = gradients
    split = row_ops.row_gradients(sharded, one.values, one.indices)
    for part, gradient in zip(parts, shards):
        expected = tf.convert_to_tensor(split[part.ref()])
        np.testing.assert_array_equal(tf.convert_to_tensor(gradient).numpy(), expected.numpy())
    joined = row_ops.norm_terms(shards, parts, lazy.deduplicated)
    (single,) = row_ops.norm_terms([one], [whole], lazy.deduplicated)
    assert len(joined) == 1
    np.testing.assert_array_equal(joined[0].numpy(), single.numpy())
    assert tf.linalg.global_norm(joined).numpy() == tf.linalg.global_norm([single]).numpy()


def _trained_state(rows, steps):
    from rawtf_ae.models.dense import TiedAutoencoder
    from rawtf_ae.optim import lazy
    from rawtf_ae.training import state

    model = TiedAutoencoder([10, 4, 3], seed=1)
    model = sharded(model, rows) if rows else model
    optimizer, variables = lazy.LazyAdam(0.1), model.trainable_variables
    optimizer.build(variables)
    x = tf.SparseTensor([[0, 1], [0, 7], [1, 2], [1, 9]], [1.0, 2.0, 3.0, 4.0], [2, 10])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model.decode_at(model.encode_sparse(x), x)))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return state.TrainState(model, optimizer, tf.Variable(steps, dtype=tf.int64))


def test_a_sharded_runs_checkpoint_has_one_devices_keys_and_restores_into_any_layout(tmp_path):
    # Keras makes each part's slots beside it; the checkpoint joins them (`layout_free`), so
    # it is one device's checkpoint: same keys, shapes and values, restored with 3 parts or
    # none, and saved again the same.
    one, two = _trained_state(None, 3), _trained_state([6, 4], 3)
    assert len(two.model.trainable_variables) == len(one.model.trainable_variables) + 2
    paths = {name: str(tmp_path / name) for name in ("one", "two", "three", "plain")}
    one.checkpoint().write(paths["one"])
    two.checkpoint().write(paths["two"])
    for name, rows, source in (
        ("three", [3, 3, 4], "two"),
        ("plain", None, "two"),
        ("resharded", [6, 4], "one"),
    ):
        restored = _trained_state(rows, 0)
        restored.checkpoint().read(paths[source]).assert_consumed()
        restored.checkpoint().write(paths.setdefault(name, str(tmp_path / name)))
    expected = tf.train.load_checkpoint(paths["one"])
    keys = dict(tf.train.list_variables(paths["one"]))
    for name in ("two", "three", "plain", "resharded"):
        assert dict(tf.train.list_variables(paths[name])) == keys, name
        reader = tf.train.load_checkpoint(paths[name])
        for key in keys:
            if key != "_CHECKPOINTABLE_OBJECT_GRAPH":
                np.testing.assert_array_equal(
                    reader.get_tensor(key), expected.get_tensor(key), err_msg=f"{name} {key}"
                )


def _wait_for(path, text, process, timeout=120):
    """Waits until the file `path` holds `text` (a chief's log line); fails if `process` ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            if text in f.read():
                return
        assert process.poll() is None, open(path).read()[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} within {timeout} s")


# The fault tests run last: they kill servers of the module's cluster (and start them again).
_FAULTS = {
    "train.dense_refeeding": 0,
    "train.optimizer": "lazy_adam",
    "train.log_every_steps": 50,
    "train.export": False,
}


def test_asynchronous_training_reaches_one_devices_held_out_rmse_and_survives_a_killed_worker(
    cluster, ratings_path, tmp_path
):
    # 2 workers x 2 ps, asynchronous; worker 1 is killed after step 100 of 300 (200 steps left
    # to run: the kill lands before they end): the run finishes on the other, says so in its
    # log, and reaches one device's held-out RMSE.
    options = {
        "train.num_steps": 300,
        "train.batch_size": 32,
        "train.dense_refeeding": 0,
        "train.optimizer": "lazy_adam",
        "train.learning_rate": 3e-3,
        "train.eval_every_steps": 300,
        "train.log_every_steps": 50,
        "train.export": False,
    }
    log = tmp_path / "chief.log"
    chief = cluster.start_chief(_config(ratings_path, **options), str(tmp_path / "ps"), log)
    try:
        _wait_for(log, "step 100/300", chief)
        cluster.kill("worker_1")
        assert chief.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        chief.kill()
        cluster.restart("worker_1")  # for the next tests
    assert "lost worker 1 (" in log.read_text()
    with open(tmp_path / "ps" / "metrics.json") as f:
        asynchronous = json.load(f)
    assert asynchronous["step"] == 300
    reference = _one_device(_config(ratings_path, **options), tmp_path / "one")["val_rmse"]
    assert abs(asynchronous["val_rmse"] - reference) <= 0.05 * reference, (asynchronous, reference)


def test_a_dead_parameter_server_is_one_line_and_the_rerun_resumes(cluster, ratings_path, tmp_path):
    options = {**_FAULTS, "train.num_steps": 200, "train.checkpoint_every_steps": 50}
    config, workdir, log = _config(ratings_path, **options), str(tmp_path / "w"), tmp_path / "chief.log"
    chief = cluster.start_chief(config, workdir, log)
    try:
        _wait_for(log, "saved " + os.path.join(workdir, "checkpoints", "ckpt-100"), chief)
        cluster.kill("ps_1")
        assert chief.wait(timeout=120) == 1
    finally:
        chief.kill()
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("train.py: error:")]
    assert len(errors) == 1 and "Traceback" not in text, text[-3000:]
    assert "lost parameter server ps 1 (127.0.0.1:" in errors[0] and "resumes from" in errors[0], errors[0]
    cluster.restart("ps_1")
    time.sleep(1)
    rerun = cluster.chief(config, workdir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in rerun.stderr
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["step"] == 200


def test_adam_on_a_sharded_kernel_is_refused_and_lazy_adam_is_not():
    from rawtf_ae.models.dense import TiedAutoencoder
    from rawtf_ae.optim import lazy

    model = sharded(TiedAutoencoder([10, 4, 3], seed=1), [6, 4])
    with pytest.raises(ValueError, match="needs a row-wise optimizer"):
        parameter_server.refuse_whole_reads(model, tf.keras.optimizers.Adam(), sparse=True)
    with pytest.raises(ValueError, match="needs sparse ratings batches"):
        parameter_server.refuse_whole_reads(model, lazy.LazyAdam(), sparse=False)
    parameter_server.refuse_whole_reads(model, lazy.LazyAdam(), sparse=True)
