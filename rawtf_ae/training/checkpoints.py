"""Checkpoints that survive crashes: fit checks, fallback past corrupt files, one writer per workdir.

TensorFlow replaces the `checkpoint` state file atomically and writes each checkpoint before
naming it there, so a run killed at any moment leaves the previous checkpoint readable. This
module adds what TensorFlow leaves to the user:
  - `restore_latest` checks shapes before restoring (a clear error, no partial restore), and
    falls back past unreadable checkpoints (truncated or bit-flipped `.index`/`.data`, an empty
    or garbled state file), moving the bad files aside into `corrupt/`, never deleting them;
  - `Checkpointer.save` refuses to write non-finite weights;
  - `WorkdirLock` keeps a second run off a workdir in use (an `flock`, released by the kernel
    when its process dies, so a killed run never blocks the next one).
"""


from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import socket
import time
from typing import Optional

import tensorflow as tf
from absl import logging
from google.protobuf import text_format

from rawtf_ae import files
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.models.row_ops import read_without_copy

_NUMBERED = re.compile(r"^(.*-(\d+))\.index$")


def checkpoint_mismatches(path: str, model: TiedAutoencoder) -> list[str]:
    """How the model variables in checkpoint `path` differ from `model`'s (empty: they fit)."""
    saved = {name.split("/.ATTRIBUTES")[0]: shape for name, shape in tf.train.list_variables(path)}
    expected = {
        f"model/{group}/{i}": list(variable.shape)
        for group in ("kernels", "encoder_biases", "decoder_biases", "decoder_kernels")
        for i, variable in enumerate(getattr(model, group))
        if variable is not None
    }
    for name in ("log_variance_kernel", "log_variance_bias") if model.variational else ():  # Mult-VAE
        expected[f"model/{name}"] = list(getattr(model, name).shape)
    problems = []
    for name, shape in expected.items():
        if name not in saved:
            problems.append(f"{name}: the config's model has shape {shape}, the checkpoint has none")
        elif saved[name] != shape:
            problems.append(f"{name}: the checkpoint has shape {saved[name]}, the config's model {shape}")
    problems += [
        f"{name}: the checkpoint has shape {shape}, the config's model has none"
        for name, shape in saved.items()
        if name.startswith("model/") and name not in expected
    ]
    return problems


def check_fits(path: str, model: TiedAutoencoder) -> None:
    """Raises `ValueError` naming each variable whose shape differs between `path` and `model`."""
    problems = checkpoint_mismatches(path, model)
    if problems:
        raise ValueError(
            f"Checkpoint {path} does not match this config's model "
            f"(layer_sizes={list(model.layer_sizes)}, tied={model.tied}): "
            + "; ".join(problems)
            + ". Use the config it was written with, or another workdir."
        )


def candidates(directory: str) -> list[str]:
    """Checkpoint prefixes in `directory`, newest first: the state file's, else any `*.index`.

    The prefixes are absolute. TensorFlow's state file holds names relative to `directory` and
    `get_checkpoint_state` joins them onto `directory` as given, so a relative `directory` must
    be made absolute first: joining it again would name files that do not exist (the cause of
    relative workdirs never resuming).
    """
    directory = os.path.abspath(directory)
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception as e:  # an empty or garbled state file: TensorFlow raises a parse error
        logging.warning(
            "checkpoint state file in %s is unreadable (%s); scanning the directory", directory, e
        )
        state = None
    listed = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and state.model_checkpoint_path not in listed:
        listed.append(state.model_checkpoint_path)
    found = {}
    for path in listed + sorted(glob.glob(os.path.join(directory, "*.index"))):
        path = path[: -len(".index")] if path.endswith(".index") else path
        path = path if os.path.isabs(path) else os.path.join(directory, path)
        match = _NUMBERED.match(os.path.basename(path) + ".index")
        if match and os.path.exists(path + ".index"):
            found[path] = int(match.group(2))
    return sorted(found, key=found.get, reverse=True)


def _state_names(directory: str, path: str) -> bool:
    """Whether the state file in `directory` is readable and names `path` as the newest."""
    try:
        return tf.train.latest_checkpoint(directory) == path
    except Exception:  # garbled state file
        return False


def _set_aside_unreadable_state(directory: str, move_aside: bool) -> None:
    """A state file naming no checkpoint that exists, and unreadable, goes into `corrupt/`.

    Otherwise `tf.train.CheckpointManager` would fail on it with an error that names no file.
    """
    state = os.path.join(directory, "checkpoint")
    if not move_aside or not os.path.exists(state):
        return
    try:
        tf.train.get_checkpoint_state(directory)
        return
    except Exception:  # noqa: BLE001 (TensorFlow raises parse and decode errors of many types)
        pass
    target = os.path.join(directory, "corrupt")
    os.makedirs(target, exist_ok=True)
    os.replace(state, os.path.join(target, "checkpoint"))
    logging.warning(
        "checkpoint state file %s is unreadable and no checkpoint is beside it; moved it to %s",
        state,
        target,
    )


def _move_aside(path: str) -> str:
    """Moves every file of checkpoint `path` into `<dir>/corrupt/` (never deletes it)."""
    target = os.path.join(os.path.dirname(path), "corrupt")
    os.makedirs(target, exist_ok=True)
    for name in glob.glob(glob.escape(path) + ".*"):
        os.replace(name, os.path.join(target, os.path.basename(name)))
    return target


def restore_latest(
    checkpoint: tf.train.Checkpoint, directory: str, *, move_aside: bool = True
) -> Optional[str]:
    """Restores the newest readable checkpoint in `directory`; `None` when there is none at all.

    An unreadable checkpoint is logged and the next older one is tried. With `move_aside`
    (training, which will write there), the bad files go into `directory/corrupt/` and the
    state file is rewritten to name only readable checkpoints; without it nothing is changed.

    Raises:
      ValueError: a checkpoint of another architecture (each mismatching variable and both
        shapes named; nothing restored), or checkpoints exist but none is readable.
    """
    directory = os.path.abspath(directory)
    paths = candidates(directory)
    if not paths:
        _set_aside_unreadable_state(directory, move_aside)
        return None
    for index, path in enumerate(paths):
        try:
            # Reading the index (shapes) and every tensor (CRC-checked) finds corruption
            # before any variable is assigned.
            reader = tf.train.load_checkpoint(path)
            problems = checkpoint_mismatches(path, checkpoint.model)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)
        except (tf.errors.OpError, ValueError, OSError, IndexError, RuntimeError) as e:
            # TensorFlow's readers raise all of these for truncated or garbled files.
            where = f"moved to {_move_aside(path)}" if move_aside else "left in place"
            logging.warning(
                "checkpoint %s is unreadable (%s); %s, trying the previous one",
                path,
                " ".join(str(e).split())[:300],
                where,
            )
            continue
        if problems:
            check_fits(path, checkpoint.model)
        restoring = checkpoint
        if hasattr(checkpoint, "best") and not any(
            n.startswith("best/") for n in reader.get_variable_to_shape_map()
        ):
            # train.keep_best switched on for a run begun without it: its record starts afresh.
            restoring = tf.train.Checkpoint(
                model=checkpoint.model, optimizer=checkpoint.optimizer, step=checkpoint.step
            )
        try:
            status = restoring.restore(path)
            status.assert_existing_objects_matched()
            status.expect_partial()  # e.g. an eval restores the model without the optimizer
        except (ValueError, AssertionError, tf.errors.OpError) as e:
            raise ValueError(
                f"Checkpoint {path} does not match this config's model/optimizer; use another workdir "
                f"or the config it was written with. TensorFlow says: {e}"
            ) from None
        if move_aside and (index or not _state_names(directory, path)):
            # From now on the state file names only readable checkpoints (it was garbled, or
            # named the ones just moved aside); relative names keep the workdir movable.
            readable = [os.path.basename(p) for p in paths[index:] if os.path.exists(p + ".index")]
            tf.compat.v1.train.update_checkpoint_state(
                directory, os.path.basename(path), all_model_checkpoint_paths=list(reversed(readable))
            )
        if index:
            logging.warning("fell back to %s after %d unreadable checkpoint(s)", path, index)
        return path
    where = f"are now in {os.path.join(directory, 'corrupt')}" if move_aside else "were left in place"
    raise ValueError(
        f"No readable checkpoint in {directory}: all {len(paths)} were corrupt and {where}. "
        "Restore them from a backup, or use a new --workdir."
    )


def remove_partial_writes(directory: str) -> list[str]:
    """Removes TensorFlow's `<prefix>_temp/` folders that a killed save left in `directory`.

    TensorFlow writes a checkpoint's shards there before merging them into `<prefix>.index` and
    `.data-*`; a kill -9 in between leaves the folder behind for good. Call it while holding the
    workdir's lock. Returns the removed paths.
    """
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), "ckpt-*_temp*"))):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def all_finite(variables) -> bool:
    """Whether every value of every variable is finite (checked before saving): one pass over
    each, without a copy or a boolean tensor of its size (a million-item kernel is 2 GiB)."""
    try:
        for variable in variables:
            tf.debugging.check_numerics(read_without_copy(variable), "not finite")
    except tf.errors.InvalidArgumentError:
        return False
    return True


class Checkpointer:
    """Saves through a `CheckpointManager`; in a multi-worker run only the chief keeps its files.

    Every worker must save (TensorFlow's rule for `MultiWorkerMirroredStrategy`); the others
    write to a temporary directory of their own and delete it at once.
    """

    def __init__(self, checkpoint, workdir: str, keep: int, chief: bool, worker: str):
        layout = files.Workdir(workdir)
        self.directory = layout.checkpoints
        self._checkpoint = checkpoint
        self._chief = chief
        self._seconds = float("nan")  # how long the last `save` took
        scratch = None if chief else layout.temporary(worker)
        self._temporary = scratch and scratch.path
        directory = self.directory if chief else scratch.checkpoints
        try:
            self._manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)
        except (UnicodeDecodeError, text_format.ParseError, ValueError) as e:  # an unreadable state file
            raise ValueError(
                f"Checkpoint state file {os.path.join(directory, 'checkpoint')} is unreadable "
                f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); move it away to resume "
                "from the newest checkpoint beside it."
            ) from None

    def save(self, step: int) -> Optional[str]:
        """Saves at `step`; returns the path on the chief.

        Raises:
          FloatingPointError: a weight is NaN or infinite (nothing is written).
          OSError: the files could not be written (a full disk, a read-only or vanished
            workdir); the previous checkpoint stays the newest and intact, because TensorFlow
            names a checkpoint in the state file only after writing it completely.
        """
        if not all_finite(self._checkpoint.model.trainable_variables):
            raise FloatingPointError(
                f"Non-finite weights at step {step}: not saved. The last good checkpoint is {self.latest}."
            )
        started = time.monotonic()
        try:
            path = self._manager.save(checkpoint_number=step)
            self._seconds = time.monotonic() - started
        except (tf.errors.OpError, OSError) as e:
            cause = files.write_error_cause(e)
            raise OSError(
                f"Could not write the checkpoint of step {step} in {self._manager.directory} ({cause}). "
                f"The previous checkpoint {self.latest} is intact; free space or fix the workdir's "
                "permissions, then rerun to resume from it."
            ) from None
        if not self._chief:
            shutil.rmtree(self._temporary, ignore_errors=True)
            return None
        return path

    def described(self, path: str) -> str:
        """`path`, the checkpoint `save` just wrote, with its size and how long it took."""
        return f"{path} ({size_of(path)} in {self._seconds:.1f} s)"

    @property
    def latest(self) -> Optional[str]:
        return tf.train.latest_checkpoint(self.directory)

    @property
    def manager(self) -> tf.train.CheckpointManager:
        """The `CheckpointManager` this worker writes with (a temporary one off the chief)."""
        return self._manager


def size_of(checkpoint: str) -> str:
    """The size of `checkpoint`'s files (its prefix plus `.index`, `.data-*`), e.g. '6.1 GB'
    ('size unknown' if they cannot be listed: the checkpoint is written, this only describes it)."""
    folder, name = os.path.split(checkpoint)
    try:
        size = sum(
            tf.io.gfile.stat(os.path.join(folder, f)).length
            for f in tf.io.gfile.listdir(folder)
            if f.startswith(name + ".")
        )
    except (tf.errors.OpError, OSError):
        return "size unknown"
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


class WorkdirLock:
    """An exclusive `flock` on `workdir/.lock` while a run writes there.

    The kernel releases it when the process ends, however it ends (kill -9 included), so a
    dead run's lock never blocks the next one; the file keeps the holder's pid for the message.
    """

    def __init__(self, workdir: str):
        self.path = files.Workdir(workdir).lock
        self._file = None

    def acquire(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ValueError(
                f"Workdir {os.path.dirname(self.path)} is in use by {holder} (lock {self.path}); "
                "wait for that run to end or use another --workdir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
