"""tf.distribute: mirrored replicas match one device, checkpoints cross strategies, multi-worker
on 127.0.0.1, clear errors before training, and the speed options (XLA, mixed precision)."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from rawtf_ae.data import pipelines, sources
from rawtf_ae.models import architectures
from rawtf_ae.optim import optimizers
from rawtf_ae.program import train
from rawtf_ae.recommender import ratings, ratings_file, sparse_gradients
from rawtf_ae.recommender.synthetic import synthetic_ratings
from rawtf_ae.training import distribute, evaluation, loops, state
from rawtf_ae.training.steps import StepOptions, make_step
from tests.conftest import NUM_LOGICAL_CPUS, REPO, WORKDIR_OUTPUTS, tiny_config, tiny_ratings_config

MIRRORED = {"train.strategy": "mirrored", "train.logical_cpus": NUM_LOGICAL_CPUS}


def _checkpoint_weights(config, workdir):
    trained = state.create_train_state(config)
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    status = trained.checkpoint().restore(path)
    # A multi-worker checkpoint also holds PreemptionCheckpointHandler's run counter.
    status.assert_existing_objects_matched().expect_partial()
    return int(trained.step.numpy()), [v.numpy() for v in trained.model.trainable_variables]


def _assert_weights_close(a, b, rtol=1e-5):
    for x, y in zip(a, b):
        scale = max(np.abs(x).max(), 1e-6)
        assert np.abs(x - y).max() <= rtol * scale, np.abs(x - y).max() / scale


def _train_pieces(strategy, config, steps, examples=None, sparse=False, proposal=None, **changes):
    """Trains `steps` steps with the library's pieces under `strategy`; returns the model.

    The step is the config's (`StepOptions.from_config`), with `changes` to its options;
    `sparse`: ratings `examples` come in sparse batches; `proposal`: the sampled softmax's.
    """
    trained = state.create_train_state(config, strategy)
    examples = sources.curves(256, seed=0) if examples is None else examples
    batch = config.train.batch_size
    dataset = strategy.distribute_datasets_from_function(
        lambda context: pipelines.train_dataset(examples, batch, seed=0, input_context=context, sparse=sparse)
    )
    if sparse:
        per_replica = batch // strategy.num_replicas_in_sync
        capacity = sparse_gradients.gradient_capacity(examples, per_replica, config.train.sampled_softmax)
        changes.setdefault("sparse_capacity", capacity)
    options = StepOptions.from_config(config, **changes)
    step = make_step(trained.model, trained.optimizer, options, proposal)
    loops.make_train_loop(step, trained.step, strategy)(iter(dataset), tf.constant(steps, tf.int64))
    return trained.model


@pytest.mark.parametrize("jit_compile", [False, True])
def test_two_mirrored_replicas_match_one_device_and_share_each_tied_kernel(jit_compile):
    config = tiny_config(**{"train.jit_compile": jit_compile, "train.batch_size": 32})
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = distribute.mirrored_strategy(devices)
    assert mirrored.num_replicas_in_sync == 2
    distributed = _train_pieces(mirrored, config, steps=8)
    single = _train_pieces(tf.distribute.get_strategy(), config, steps=8)
    assert len(distributed.trainable_variables) == len(single.trainable_variables) == 6
    for kernel in distributed.kernels:
        assert isinstance(kernel, tf.distribute.DistributedValues)  # one mirrored variable
        copies = [v.numpy() for v in kernel.values]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1])
    _assert_weights_close(
        [v.numpy() for v in distributed.trainable_variables], [v.numpy() for v in single.trainable_variables]
    )


@pytest.mark.parametrize("jit_compile", [False, True])
def test_masked_ratings_loss_on_two_replicas_matches_one_device(jit_compile):
    # Replicas see different numbers of observed ratings: the loss must be divided by the
    # global count (an all-reduce), not each replica's own, to match one device.
    triples = synthetic_ratings(num_users=64, num_items=40, density=0.15, seed=4)
    rows = ratings.RatingMatrix.from_triples(
        triples[:, 0].astype(np.int64), triples[:, 1].astype(np.int64), triples[:, 2], 64, 40
    )
    config = tiny_config(
        **{
            "model.layer_sizes": (40, 16, 8),
            "model.activation": "selu",
            "model.output_activation": "linear",
            "train.loss": "masked_mse",
            "train.jit_compile": jit_compile,
            "train.batch_size": 16,
        }
    )
    options = dict(examples=rows, code_dropout=0.0, dense_refeeding=1)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    distributed = _train_pieces(distribute.mirrored_strategy(devices), config, 6, **options)
    single = _train_pieces(tf.distribute.get_strategy(), config, 6, **options)
    _assert_weights_close(
        [v.numpy() for v in distributed.trainable_variables], [v.numpy() for v in single.trainable_variables]
    )


def _small_ratings(num_users=64, num_items=40):
    triples = synthetic_ratings(num_users=num_users, num_items=num_items, density=0.15, seed=4)
    return ratings.RatingMatrix.from_triples(
        triples[:, 0].astype(np.int64), triples[:, 1].astype(np.int64), triples[:, 2], num_users, num_items
    )


_RATINGS_MODEL = {
    "model.layer_sizes": (40, 16, 8),
    "model.activation": "selu",
    "model.output_activation": "linear",
    "train.loss": "masked_mse",
    "train.batch_size": 16,
}


@pytest.mark.parametrize(
    "overrides",
    [
        {"train.weight_decay": 0.05},
        # The KL penalty of the mean code: over the global batch (each replica's own, before).
        {"model.activation": "selu,sigmoid", "train.sparsity_weight": 1.0, "train.sparsity_target": 0.1},
        {"model.activation": "selu,sigmoid", "train.sparsity_weight": 1.0, "train.jit_compile": False},
        {"train.contractive_weight": 0.1},
        # Noise is drawn for the global batch: N replicas corrupt each example as one device does.
        {"train.corruption": "gaussian", "train.corruption_level": 0.3},
        {"train.corruption": "masking", "train.corruption_level": 0.3},
        {"train.corruption": "salt_and_pepper", "train.corruption_level": 0.2},
        {"train.learning_rate_multipliers": "bias=2,encoder/layer_1=0.5", "train.schedule": "cosine"},
        {"train.precision": "mixed_bfloat16", "train.weight_decay": 0.01},
        # Options combined, on ratings: code dropout, re-feeding, a schedule, decay.
        {
            **_RATINGS_MODEL,
            "train.code_dropout": 0.5,
            "train.dense_refeeding": 1,
            "train.schedule": "cosine",
            "train.warmup_steps": 2,
            "train.weight_decay": 0.01,
        },
        # Clipping takes the global gradient's norm: each replica's share alone has another.
        {**_RATINGS_MODEL, "model.tied": False, "train.dense_refeeding": 1, "train.clip_norm": 0.05},
        # Mult-DAE: the multinomial over the catalog, dropout on the normalized input, decay, a schedule.
        {
            **_RATINGS_MODEL,
            "model.activation": "tanh",
            "model.input_norm": "l2",
            "train.loss": "multinomial",
            "train.corruption": "dropout",
            "train.corruption_level": 0.5,
            "train.weight_decay": 0.01,
            "train.schedule": "cosine",
        },
        # Mult-VAE: the sampled code's noise is drawn for the global batch; the KL annealed.
        {
            **_RATINGS_MODEL,
            "model.activation": "tanh,linear",
            "model.input_norm": "l2",
            "model.variational": True,
            "model.tied": False,
            "train.loss": "multinomial",
            "train.corruption": "dropout",
            "train.corruption_level": 0.5,
            "train.kl_anneal_steps": 4,
        },
    ],
    ids=lambda overrides: ",".join(k.split(".")[1] for k in overrides if k.startswith("train.")),
)
def test_every_option_on_two_mirrored_replicas_matches_one_device(overrides):
    config = tiny_config(**{"train.batch_size": 32, "train.num_steps": 8, **overrides})
    examples = _small_ratings() if config.train.loss in ("masked_mse", "multinomial") else None
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    distributed = _train_pieces(distribute.mirrored_strategy(devices), config, 8, examples)
    single = _train_pieces(tf.distribute.get_strategy(), config, 8, examples)
    rtol = 2e-2 if config.train.precision != "float32" else 1e-5
    _assert_weights_close(
        [v.numpy() for v in distributed.trainable_variables],
        [v.numpy() for v in single.trainable_variables],
        rtol=rtol,
    )


def test_ratings_train_mirrored_end_to_end(tmp_path):
    path = ratings_file.write_ratings(
        str(tmp_path / "r.csv"), synthetic_ratings(num_users=80, num_items=30, density=0.2)
    )
    config = tiny_ratings_config(path, **MIRRORED, **{"train.batch_size": 32})
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["replicas"] == 2 and np.isfinite(metrics["val_rmse"])


def test_checkpoints_cross_between_mirrored_and_default(tmp_path):
    base = {"train.num_steps": 40, "train.checkpoint_every_steps": 20}
    straight = str(tmp_path / "straight")
    train.train_and_evaluate(tiny_config(**base), straight)
    expected = _checkpoint_weights(tiny_config(**base), straight)
    for first, second in ((MIRRORED, {}), ({}, MIRRORED)):
        workdir = str(tmp_path / f"from_{first.get('train.strategy', 'default')}")
        train.train_and_evaluate(tiny_config(**{**base, **first, "train.num_steps": 20}), workdir)
        metrics = train.train_and_evaluate(tiny_config(**{**base, **second}), workdir)
        assert metrics["step"] == 40
        step, weights = _checkpoint_weights(tiny_config(**base), workdir)
        assert step == 40
        _assert_weights_close(weights, expected[1])


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(workdir, flags, cluster):
    processes = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=REPO,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            # PreemptionCheckpointHandler asks the GCE metadata server whether it runs on GCP:
            # point it at a closed local port, so that no traffic leaves 127.0.0.1.
            GCE_METADATA_IP="127.0.0.1:9",
        )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    os.path.join(REPO, "train.py"),
                    f"--workdir={workdir}",
                    "--config.train.strategy=multi_worker_mirrored",
                    *flags,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    return processes


def _wait_for_step(process, num_steps, at_least):
    """Reads `process`'s log until it reports step `at_least` (or later) of `num_steps`."""
    import re

    for line in process.stderr:
        found = re.search(rf"step (\d+)/{num_steps}", line)
        if found and int(found.group(1)) >= at_least:
            return


def _kill_all(processes):
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


_MULTI_WORKER_FLAGS = [
    "--config.model.layer_sizes=(784,32,8)",
    "--config.model.activation=selu,linear",
    "--config.data.num_train=512",
    "--config.data.num_validation=64",
    "--config.train.batch_size=32",
    "--config.train.num_steps=12",
    "--config.train.log_every_steps=4",
    "--config.train.eval_every_steps=100",
    "--config.train.checkpoint_every_steps=6",
    "--config.train.eval_batch_size=64",
]


# Sparse ratings batches: each worker's sparse gradients are gathered (padded to one shape).
_SPARSE_RATINGS_FLAGS = [
    "--config.data.name=ratings",
    "--config.model.layer_sizes=(0,16,8)",
    "--config.model.activation=selu",
    "--config.model.output_activation=linear",
    "--config.train.loss=masked_mse",
    "--config.data.ratings_batches=sparse",
    "--config.train.optimizer=lazy_adam",
    "--config.train.corruption=masking",
    "--config.train.corruption_level=0.2",
    "--config.train.batch_size=32",
    "--config.train.num_steps=12",
    "--config.train.log_every_steps=4",
    "--config.train.eval_every_steps=100",
    "--config.train.checkpoint_every_steps=6",
]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["images", "sparse_ratings"])
def test_two_workers_on_localhost_train_like_one_process(tmp_path, kind):
    flags, config = _MULTI_WORKER_FLAGS, tiny_config(**{"model.layer_sizes": (784, 32, 8)})
    if kind == "sparse_ratings":
        path = ratings_file.write_ratings(
            str(tmp_path / "r.csv"), synthetic_ratings(num_users=96, num_items=50, density=0.2)
        )
        flags = [*_SPARSE_RATINGS_FLAGS, f"--config.data.path={path}"]
        config = tiny_ratings_config(path, **{"model.layer_sizes": (50, 16, 8)})
    workdir = tmp_path / "cluster"
    processes = _start_workers(workdir, flags, {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]})
    try:  # never leave a worker behind, whatever happens
        outputs = [process.communicate(timeout=240)[1] for process in processes]
    finally:
        _kill_all(processes)
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert "2 replica(s)" in outputs[0]
    # Only the chief (worker 0) keeps checkpoints and outputs; worker 1's temporary dir is gone.
    pictures = kind == "images"  # ratings rows are no pictures
    assert sorted(os.listdir(workdir)) == [o for o in WORKDIR_OUTPUTS if pictures or not o.endswith(".png")]
    # The same global batches in one process give the same weights.
    single = tmp_path / "single"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), f"--workdir={single}", *flags],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cluster_step, cluster_weights = _checkpoint_weights(config, str(workdir))
    single_step, single_weights = _checkpoint_weights(config, str(single))
    assert cluster_step == single_step == 12
    _assert_weights_close(cluster_weights, single_weights)


@pytest.mark.slow
@pytest.mark.fault
def test_a_killed_worker_stops_the_other_quickly_and_a_restart_resumes(tmp_path):
    import re
    import time

    flags = [
        *_MULTI_WORKER_FLAGS,
        "--config.train.num_steps=240",
        "--config.train.checkpoint_every_steps=40",
        "--config.train.log_every_steps=20",
        "--config.train.export=False",
    ]
    workdir = tmp_path / "cluster"
    processes = _start_workers(workdir, flags, {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]})
    try:
        _wait_for_step(processes[0], 240, 60)  # the chief trains past its first checkpoint
        killed = time.monotonic()
        os.killpg(processes[1].pid, signal.SIGKILL)
        rest = processes[0].communicate(timeout=120)[1]
        assert time.monotonic() - killed < 60
        assert processes[0].returncode == 1
        assert "A peer worker failed or left" in rest and "Restart every worker" in rest
    finally:
        _kill_all(processes)
    restarted = _start_workers(workdir, flags, {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]})
    try:
        outputs = [process.communicate(timeout=240)[1] for process in restarted]
    finally:
        _kill_all(restarted)
    assert [p.returncode for p in restarted] == [0, 0], outputs[0][-2000:]
    resumed = re.search(r"resumed from \S+ at step (\d+)", outputs[0])
    assert resumed and int(resumed.group(1)) >= 40
    with open(workdir / "metrics.json") as f:
        assert json.load(f)["step"] == 240


@pytest.mark.slow
@pytest.mark.fault
def test_sigterm_to_one_worker_saves_the_same_step_on_all_and_a_restart_resumes_there(tmp_path):
    import re
    import time

    flags = [
        *_MULTI_WORKER_FLAGS,
        "--config.train.num_steps=1000000",
        "--config.train.checkpoint_every_steps=1000000",
        "--config.train.log_every_steps=10",
        "--config.train.steps_per_loop=10",
        "--config.train.export=False",
    ]
    workdir = tmp_path / "cluster"
    processes = _start_workers(workdir, flags, {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]})
    try:
        _wait_for_step(processes[0], 1000000, 40)  # the chief trains a while
        signalled = time.monotonic()
        os.kill(processes[1].pid, signal.SIGTERM)  # preempt the non-chief worker
        outputs = [processes[0].stderr.read(), processes[1].communicate(timeout=120)[1]]
        processes[0].wait(timeout=120)
        assert time.monotonic() - signalled < 60
    finally:
        _kill_all(processes)
    assert [p.returncode for p in processes] == [143, 143], outputs[1][-3000:]
    saved = re.search(r"every worker saved step (\d+)", outputs[0])
    assert saved, outputs[0][-3000:]
    step = int(saved.group(1))
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith(f"ckpt-{step}")
    assert not [name for name in os.listdir(workdir) if name.startswith("tmp_")]
    # Restart both (to a nearer horizon, only to keep the test short): no step is repeated.
    restart_flags = [*flags, f"--config.train.num_steps={step + 20}"]
    restarted = _start_workers(workdir, restart_flags, {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]})
    try:
        outputs = [process.communicate(timeout=240)[1] for process in restarted]
    finally:
        _kill_all(restarted)
    assert [p.returncode for p in restarted] == [0, 0], outputs[0][-2000:]
    assert re.search(rf"resumed from \S+ckpt-{step} at step {step}\b", outputs[0])
    with open(workdir / "metrics.json") as f:
        assert json.load(f)["step"] == step + 20


@pytest.mark.parametrize(
    "overrides, environment, message",
    [
        ({"train.strategy": "tpu"}, {}, "needs `train.tpu`"),
        ({"train.strategy": "tpu", "train.tpu": "local"}, {}, "found no TPU"),
        ({"train.strategy": "multi_worker_mirrored"}, {"TF_CONFIG": ""}, "needs the TF_CONFIG"),
        ({"train.strategy": "multi_worker_mirrored"}, {"TF_CONFIG": "{oops"}, "TF_CONFIG is not valid JSON"),
        ({**MIRRORED, "train.batch_size": 33}, {}, r"\(33\) is the global batch .* 2 replicas"),
        ({"train.strategy": "mirrored", "train.devices": "/gpu:0"}, {}, "lacks"),
        ({"train.strategy": "one_device", "train.devices": "/cpu:0,/cpu:1"}, {}, "takes one device"),
        ({"train.logical_cpus": 3}, {}, r"already has 2 logical CPU"),
    ],
)
def test_bad_strategy_settings_fail_before_anything_is_written(
    tmp_path, monkeypatch, overrides, environment, message
):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_one_device_strategy_trains(tmp_path):
    config = tiny_config(**{"train.strategy": "one_device", "train.devices": "/cpu:1", "train.num_steps": 20})
    assert train.train_and_evaluate(config, str(tmp_path))["replicas"] == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"train.jit_compile": True},
        {**MIRRORED, "train.jit_compile": True},
        {"train.precision": "mixed_bfloat16"},
        {"train.precision": "mixed_float16"},
        {**MIRRORED, "train.precision": "mixed_bfloat16"},
        {**MIRRORED, "train.precision": "mixed_float16", "train.jit_compile": True},
        {
            **MIRRORED,
            "model.activation": "sigmoid",
            "train.sparsity_weight": 0.1,
            "train.contractive_weight": 0.01,
            "train.weight_decay": 1e-4,
            "train.corruption": "salt_and_pepper",
            "train.corruption_level": 0.1,
        },
    ],
)
def test_speed_options_lower_the_loss_and_keep_the_kernels_tied(tmp_path, overrides):
    config = tiny_config(**{"train.num_steps": 100, **overrides})
    splits = sources.load(config.data, config.seed)
    before = evaluation.make_evaluate(architectures.create_model(config), "bce")(
        pipelines.eval_dataset(splits.validation, 100)
    )
    assert train.train_and_evaluate(config, str(tmp_path))["val_loss"] < 0.7 * before
    saved = tf.train.list_variables(tf.train.latest_checkpoint(str(tmp_path / "checkpoints")))
    kernels = [(name, shape) for name, shape in saved if name.startswith("model/") and len(shape) == 2]
    assert [shape for _, shape in kernels] == [[784, 64], [64, 16]]
    assert not any("decoder_kernels" in name for name, _ in kernels)


def test_mixed_precision_computes_in_half_and_keeps_float32_variables():
    config = tiny_config(**{"train.precision": "mixed_bfloat16"})
    model = architectures.create_model(config)
    assert model.compute_dtype == tf.bfloat16
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    x = tf.random.stateless_uniform([4, 784], seed=[0, 0])
    assert model(x).dtype == tf.float32
    full = architectures.create_model(tiny_config())
    np.testing.assert_allclose(model(x).numpy(), full(x).numpy(), atol=0.05)
    assert isinstance(
        optimizers.create_optimizer(tiny_config(**{"train.precision": "mixed_float16"}).train),
        tf.keras.optimizers.LossScaleOptimizer,
    )


def test_steps_per_loop_does_not_change_the_result(tmp_path):
    results = []
    for steps_per_loop in (1, 7):
        workdir = str(tmp_path / str(steps_per_loop))
        config = tiny_config(**{"train.num_steps": 20, "train.steps_per_loop": steps_per_loop})
        train.train_and_evaluate(config, workdir)
        results.append(_checkpoint_weights(config, workdir)[1])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_only_the_chief_or_worker_zero_writes_outputs():
    def strategy(cluster, task_type, task_id):
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
        )
        return type("FakeStrategy", (), {"cluster_resolver": resolver})()

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    with_chief = {"chief": ["127.0.0.1:3"], **workers}
    assert distribute.is_chief(tf.distribute.get_strategy())
    assert distribute.worker_id(tf.distribute.get_strategy()) == "local"
    assert distribute.is_chief(strategy(workers, "worker", 0))
    assert not distribute.is_chief(strategy(workers, "worker", 1))
    assert distribute.is_chief(strategy(with_chief, "chief", 0))
    assert not distribute.is_chief(strategy(with_chief, "worker", 0))
    assert distribute.worker_id(strategy(workers, "worker", 1)) == "worker_1"
