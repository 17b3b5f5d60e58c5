"""Preemption and lost workers: how a run stops cleanly, saving first, and how it says why.

- `StopSignal` records SIGTERM (a scheduler's preemption) or SIGINT (Ctrl-C) and sets a flag
  that the compiled N-step loop reads before every step, so that the loop ends within one step
  and the outer loop saves that step and raises `Preempted` (exit status 143, or 130 for
  Ctrl-C);
- `create_handler` is TensorFlow's `PreemptionCheckpointHandler` for multi-worker runs, where
  every worker must save the same step;
- `peer_lost` turns the collective errors of a worker that died into `PeerLost`, one line
  instead of a hang or a trace.
"""

from __future__ import annotations

import os
import signal
import threading

import tensorflow as tf

# What a collective op raises on the survivors when a peer worker dies.
COLLECTIVE_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)


class PeerLost(RuntimeError):
    """A multi-worker run lost a worker: the others stop (exit 1) instead of hanging."""


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint; rerun to resume.

    `signal_number` is the signal's (the command exits with 128 + it: 143, or 130 for Ctrl-C).
    """

    def __init__(self, message: str, signal_number: int = signal.SIGTERM):
        super().__init__(message)
        self.signal_number = int(signal_number)


_STOPPING = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """Records SIGTERM (preemption) and SIGINT while training, so the loop can save and stop.

    A Python signal handler runs only when the main thread is back in the interpreter, which
    is after the compiled loop's call returns (up to `train.steps_per_loop` steps later). So
    the signal also reaches `flag`, a boolean variable that the loop reads before every step
    (`loops.make_train_loop(..., stop=flag)`), at once: the C-level handler writes the signal's
    number to a pipe (`signal.set_wakeup_fd`), and a thread waiting on it sets the flag while
    the step runs. The loop then ends after the step under way, the outer loop saves that step
    and raises `Preempted`. Only in the main thread, and not under `multi_worker_mirrored`,
    whose workers must stop together (TensorFlow's `PreemptionCheckpointHandler`).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received = None  # the signal's name, once the Python handler ran
        self.number = None
        self.flag = tf.Variable(False, trainable=False, name="stop_requested") if self.enabled else None
        self._previous = {}
        self._pipe = None
        self._previous_wakeup = -1

    def _handle(self, number, frame):
        self.number = self.number or number
        self.received = self.received or signal.Signals(self.number).name

    def _watch(self, read_end: int) -> None:
        try:
            while numbers := os.read(read_end, 64):  # b"" once the write end is closed
                stopping = [number for number in numbers if number in _STOPPING]
                if stopping:
                    self.number = self.number or stopping[0]
                    self.received = self.received or signal.Signals(self.number).name
                    self.flag.assign(True)
        finally:
            os.close(read_end)

    def __enter__(self):
        if self.enabled:
            for number in _STOPPING:
                self._previous[number] = signal.signal(number, self._handle)
            read_end, write_end = os.pipe()
            os.set_blocking(write_end, False)  # the handler must never block
            self._pipe = (read_end, write_end)
            self._previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
            threading.Thread(target=self._watch, args=(read_end,), name="stop-signal", daemon=True).start()
        return self

    def __exit__(self, *exc):
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            os.close(self._pipe[1])  # ends the watcher, which closes the read end
            self._pipe = None
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
