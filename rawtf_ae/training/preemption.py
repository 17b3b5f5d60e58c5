"""Preemption and lost workers: how a run stops cleanly, saving first, and how it says why.

- `StopSignal` records SIGTERM (a scheduler's preemption) or SIGINT (Ctrl-C) so that the
  outer loop saves the current step and raises `Preempted` (exit status 143);
- `create_handler` is TensorFlow's `PreemptionCheckpointHandler` for multi-worker runs, where
  every worker must save the same step;
- `peer_lost` turns the collective errors of a worker that died into `PeerLost`, one line
  instead of a hang or a trace.
"""

from __future__ import annotations

import signal
import threading

import tensorflow as tf

# What a collective op raises on the survivors when a peer worker dies.
COLLECTIVE_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)


class PeerLost(RuntimeError):
    """A multi-worker run lost a worker: the others stop (exit 1) instead of hanging."""


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint; rerun to resume."""


class StopSignal:
    """Records SIGTERM (preemption) and SIGINT while training, so the loop can save and stop.

    The loop checks it after every call of the compiled loop (at most `train.steps_per_loop`
    steps), saves a checkpoint at that step and raises `Preempted`. Only in the main thread,
    and not under `multi_worker_mirrored`, whose workers must stop together.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received = None
        self._previous = {}

    def _handle(self, number, frame):
        self.received = signal.Signals(number).name

    def __enter__(self):
        if self.enabled:
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def create_handler(strategy, train_config, checkpointer, progress):
    """TensorFlow's `PreemptionCheckpointHandler` for a multi-worker run, else None.

    A SIGTERM to any worker makes all of them agree on a step, save a checkpoint there (through
    `checkpointer`, so only the chief keeps it) and raise `Preempted` (exit status 143 from the
    command line); restarting every worker resumes at that step. Created after the restore:
    the handler restores the newest checkpoint again and adds its own counter to it.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if train_config.strategy != "multi_worker_mirrored" or resolver is None:
        return None
    if not resolver.cluster_spec().jobs:
        return None

    def exit_fn():
        raise Preempted(
            f"A worker received SIGTERM: every worker saved step {progress['step']} "
            f"({checkpointer.latest} on the chief) and stopped. Restart every worker with the same "
            "command to resume from it."
        )

    return tf.distribute.experimental.PreemptionCheckpointHandler(
        resolver,
        checkpointer.manager,
        termination_config=tf.distribute.experimental.TerminationConfig(
            exit_fn=exit_fn, save_fn=lambda step: checkpointer.save(step)
        ),
    )


def peer_lost(error: Exception, first_step: int, last_step: int, latest_checkpoint) -> PeerLost:
    """The one-line `PeerLost` for a collective `error` raised between two steps."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = next((line for line in lines if "aborted by" in line), lines[0] if lines else "")
    return PeerLost(
        f"A peer worker failed or left between steps {first_step} and {last_step} "
        f"({type(error).__name__}: {cause[:200]}). Restart every worker with the same command; "
        f"training resumes from {latest_checkpoint}."
    )
