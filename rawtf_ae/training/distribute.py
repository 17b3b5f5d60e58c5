"""Building the `tf.distribute` strategy a config names, before anything else touches TensorFlow.

`train.strategy`:
  default                 TensorFlow's default strategy (one device, no distribution).
  one_device              `OneDeviceStrategy` on `train.devices` (default: the first GPU, else the CPU).
  mirrored                `MirroredStrategy` on `train.devices` (default: all local GPUs; without GPUs,
                          every logical CPU, so `train.logical_cpus=2` gives two replicas anywhere).
  multi_worker_mirrored   `MultiWorkerMirroredStrategy`, the cluster from the `TF_CONFIG` variable.
  tpu                     `TPUStrategy` on `train.tpu` ("local" on a TPU VM, or a TPU name/address).
  parameter_server        `ParameterServerStrategy`, the catalog's rows sharded over the `ps`
                          tasks of `TF_CONFIG` (`rawtf_ae.training.parameter_server`).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from rawtf_ae.training import parameter_server

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu", "parameter_server")


def split_cpu(num_logical: int) -> None:
    """Splits the first physical CPU into `num_logical` logical devices (no-op for 0).

    Raises:
      ValueError: TensorFlow has already initialized its devices with another count.
    """
    if num_logical <= 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_logical
        )
    except RuntimeError:
        found = len(tf.config.list_logical_devices("CPU"))
        if found != num_logical:
            raise ValueError(
                f"`train.logical_cpus` ({num_logical}) must be applied before TensorFlow initializes "
                f"its devices, and this process already has {found} logical CPU(s)."
            ) from None


def _devices(train_config) -> list[str]:
    return [d.strip() for d in train_config.devices.split(",") if d.strip()]


def _check_known(devices) -> None:
    """Raises `ValueError` naming `train.devices` for devices this machine lacks (TensorFlow's
    soft placement would otherwise run on another device without a word)."""
    known = {d.name.lower() for d in tf.config.list_logical_devices()}
    missing = []
    for device in devices:
        try:
            name = tf.DeviceSpec.from_string(device).to_string().lower()
        except ValueError:
            name = None
        if name not in known:
            missing.append(device)
    if missing:
        raise ValueError(f"train.devices names devices this machine lacks: {missing}; it has {sorted(known)}.")


def mirrored_strategy(devices) -> tf.distribute.MirroredStrategy:
    """A `MirroredStrategy` over `devices` whose collective keys no earlier strategy used.

    Every `MirroredStrategy` numbers its collective ops from the same start, and the runtime
    remembers each number's shape: a second strategy in the same process (a sweep, a test
    suite) then fails with "Shape mismatch in the collective instance 100" as soon as its model
    differs. TensorFlow's own tests move the class's key base before each new strategy; so do we.
    """
    if hasattr(tf.distribute.MirroredStrategy, "_collective_key_base"):
        tf.distribute.MirroredStrategy._collective_key_base += 100_000
    return tf.distribute.MirroredStrategy(devices)


def _tpu_strategy(address: str) -> tf.distribute.Strategy:
    if not address:
        raise ValueError(
            "train.strategy='tpu' needs `train.tpu`: 'local' on a TPU VM, or the TPU's name or "
            "grpc:// address."
        )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ValueError(f"train.strategy='tpu' found no TPU at train.tpu={address!r}: {e}") from None
    if not tf.config.list_logical_devices("TPU"):
        raise ValueError(f"train.strategy='tpu' found no TPU devices at train.tpu={address!r}.")
    return tf.distribute.TPUStrategy(resolver)


def create_strategy(train_config) -> tf.distribute.Strategy:
    """The strategy for `config.train` (`strategy`, `devices`, `tpu`, `logical_cpus`).

    Call it first: splitting the CPU and multi-worker collectives need an uninitialized runtime.

    Raises:
      ValueError: an unknown strategy, `multi_worker_mirrored` without `TF_CONFIG`, `tpu` without
        a TPU, devices that do not exist.
    """
    name = train_config.strategy
    split_cpu(train_config.logical_cpus)
    devices = _devices(train_config)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        if len(devices) > 1:
            raise ValueError(f"train.strategy='one_device' takes one device, got train.devices={devices}.")
        _check_known(devices)
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(devices[0] if devices else ("/gpu:0" if gpus else "/cpu:0"))
    if name == "mirrored":
        if not devices:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        _check_known(devices)
        return mirrored_strategy(devices)
    if name == "multi_worker_mirrored":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "train.strategy='multi_worker_mirrored' needs the TF_CONFIG environment variable "
                '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
                '"index": 0}}) in every worker.'
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if name == "tpu":
        return _tpu_strategy(train_config.tpu)
    if name == "parameter_server":
        return parameter_server.create_strategy(train_config)
    raise ValueError(f"Unknown `train.strategy` {name!r}; expected one of {', '.join(STRATEGIES)}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (the chief, or worker 0 without a chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_id(strategy: tf.distribute.Strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "local"
    return f"{resolver.task_type}_{resolver.task_id}"
