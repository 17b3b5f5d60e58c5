"""The training program: `train_and_evaluate(config, workdir)`, the outer loop around the step.

The pieces it assembles, each in its own module and importable alone:
  - `state.create_train_state`: model + optimizer + step counter from the config;
  - `steps.make_step`: the per-replica step, from one frozen `steps.StepOptions`;
  - `loops.make_train_loop`: N steps in one `tf.function`;
  - `evaluation.make_evaluate`, `checkpoints.Checkpointer`, `preemption` (signals, lost peers).
This module is the eager outer loop only: logging, evaluation, checkpoints, summaries, the
non-finite check, and the end-of-run outputs (picture, `metrics.json`, export).
"""

from __future__ import annotations

import contextlib
import math
import os
import time

import ml_collections
import tensorflow as tf
from absl import logging

from rawtf_ae import files
from rawtf_ae.config import checks, saved
from rawtf_ae.data import pipelines, sources
from rawtf_ae.models import architectures
from rawtf_ae.optim import optimizers
from rawtf_ae.optim.schedules import learning_rate_at
from rawtf_ae.program import outputs, progress, restore
from rawtf_ae.recommender import baselines, batching, sparse_gradients
from rawtf_ae.training import (
    checkpoints,
    distribute,
    early_stopping,
    parameter_server,
    preemption,
    pretrain,
    sampled_softmax,
    state,
)
from rawtf_ae.training.evaluation import log_ranking, make_evaluate, make_rank, ratings_metrics
from rawtf_ae.training.loops import make_train_loop
from rawtf_ae.training.steps import StepOptions, make_step, uses_xla


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes training) the model of `config` in `workdir` and evaluates it.

    Writes into `workdir`: `checkpoints/` (resumed from on the next run), `summaries/` for
    TensorBoard, `config.json`, and at the end `reconstructions.png`, `metrics.json` and (with
    `train.export`) `export/`. In a multi-worker run only the chief writes them.

    Returns:
      The final metrics: `step`, `train_loss`, `val_loss`, `examples_per_sec`, ...

    Raises:
      ValueError, FileNotFoundError: a bad config, strategy, data, or a checkpoint that does
        not fit; all raised before anything is written.
      FloatingPointError: the loss or a weight became NaN or infinite (the last checkpoint is
        kept, nothing non-finite is saved).
      Preempted: SIGTERM or SIGINT arrived; a checkpoint of the current step was saved first.
    """
    checks.validate(config)
    workdir = files.workdir_path(workdir)
    train_config = config.train
    # First: splitting the CPU and multi-worker collectives need an uninitialized runtime.
    strategy = distribute.create_strategy(train_config)
    batch_size, replicas = train_config.batch_size, strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"`train.batch_size` ({batch_size}) is the global batch and must divide evenly over the "
            f"{replicas} replicas of train.strategy={train_config.strategy!r}."
        )
    chief = distribute.is_chief(strategy)
    if chief:  # one prober: workers starting together must not remove each other's folder
        files.check_writable(workdir)
        files.Workdir(workdir).check_folders(export=train_config.export)
    logging.info("workdir: %s", workdir)
    config, splits = _load_data(config, workdir)
    parameter_server.shard_catalog(strategy, splits.width)  # before the model is made
    sparse = batching.uses_sparse(config, splits)  # decided once: `auto` logs its choice
    # The recipes' train.optimizer / dense_refeeding = "auto" follow the batches (logged).
    config = batching.resolve_auto(config, sparse)
    train_config = config.train
    # Several replicas: the sparsity penalty's all-reduce keeps the step uncompiled (`steps.make_step`).
    xla = uses_xla(train_config) and not (replicas > 1 and train_config.sparsity_weight)
    precision = train_config.precision + ", XLA" * xla
    logging.info("strategy: %s, %d replica(s), %s", train_config.strategy, replicas, precision)
    if sparse:
        compiled = "; XLA compiles the rest, its ratings padded to a few sizes" * xla
        logging.info("sparse ratings batches: the first kernel is read by rows%s", compiled)
    # One writer per workdir: the chief holds its lock from the first write to the last.
    with checkpoints.WorkdirLock(workdir) if chief else contextlib.nullcontext():
        with preemption.StopSignal(enabled=train_config.strategy != "multi_worker_mirrored") as stop_signal:
            run = _Run(config, workdir, strategy, splits, sparse, chief, stop_signal)
            with parameter_server.lost_servers(strategy, lambda: getattr(run, "checkpointer", None)):
                run.start()
                run.train()
                return run.finish()


def _load_data(config, workdir: str):
    """`(config with the data's input width, splits)`; checks the width and the vocabulary."""
    splits = sources.load(config.data, config.seed)
    config = architectures.with_input_width(config, splits.width)
    expected_width = architectures.input_width(config)
    if splits.width != expected_width:
        raise ValueError(
            f"The data ({config.data.name} {config.data.path}) has width {splits.width}, but "
            f"{architectures.input_width_name(config)} is {expected_width}."
        )
    logging.info("data: %s", splits.describe(config.data.name))
    examples, batch_size = len(splits.train), config.train.batch_size
    if batch_size > examples:
        what = "rows of ratings" if splits.vocabulary is not None else "examples"
        raise ValueError(
            f"`train.batch_size` ({batch_size:,}) is larger than the {examples:,} training {what} of "
            f"data {config.data.name!r}: every batch would repeat each of them; set it to at most {examples:,}."
        )
    restore.check_vocabulary(splits, workdir)
    return config, splits


class _Run:
    """One run of `train_and_evaluate` while it holds the workdir: start, train, finish."""

    def __init__(self, config, workdir, strategy, splits, sparse, chief, stop_signal):
        self.config, self.workdir, self.strategy = config, workdir, strategy
        self.splits, self.sparse, self.chief, self.stop_signal = splits, sparse, chief, stop_signal
        self.train_config = config.train
        self.layout = files.Workdir(workdir)

    def start(self) -> None:
        """Builds the state, restores (or pretrains), writes `config.json`, makes the loop."""
        config, train_config, workdir, chief = self.config, self.train_config, self.workdir, self.chief
        self.state = state.create_train_state(config, self.strategy)
        model = self.state.model
        parameter_server.check_layout(self.strategy, model, self.state.optimizer, self.sparse)
        checkpoint = self.state.checkpoint()
        # Restore first: it may repair the state file that the CheckpointManager then reads.
        directory = self.layout.checkpoints
        restored = checkpoints.restore_latest(checkpoint, directory, move_aside=chief)
        self.checkpointer = checkpoints.Checkpointer(
            checkpoint, workdir, train_config.keep_checkpoints, chief, distribute.worker_id(self.strategy)
        )
        if restored:
            # Keras checkpoints a constant learning rate as a variable; on resume the config decides.
            optimizers.reset_constant_rate(self.state.optimizer, train_config)
        self.start_step = int(self.state.step.numpy())
        self.tracker = None
        if self.state.best is not None:
            better = train_config.loss == "multinomial"  # NDCG@100: higher is better
            evals = train_config.early_stopping_evals
            self.tracker = early_stopping.Tracker(self.state.best, model, workdir, evals, chief, better)
        if chief and self.splits.vocabulary is not None:
            os.makedirs(directory, exist_ok=True)
            self.splits.vocabulary.save(self.layout.vocabulary)
        if not restored and config.pretrain.steps_per_layer:
            # Pretraining runs on one device, whatever the strategy: under MirroredStrategy,
            # training a second model in the same process collides on collective instance keys
            # (TensorFlow issue #62790), and the greedy stage is short. Every worker pretrains
            # identically.
            pretrain.assemble(model, pretrain.pretrain_layers(config, self.splits.train))
            logging.info("saved the pretrained model as %s", self.checkpointer.save(0))
        logging.info(
            "%s",
            f"resumed from {restored} at step {self.start_step}" if restored else "starting from scratch",
        )
        self.progress = {"step": self.start_step}
        handler = preemption.create_handler
        self.preemption = handler(self.strategy, train_config, self.checkpointer, self.progress)
        logging.info("model: %s", model.describe())
        if chief:
            os.makedirs(workdir, exist_ok=True)
            leftovers = checkpoints.remove_partial_writes(directory)
            for folder in (workdir, directory, self.layout.export):
                leftovers += files.remove_leftovers(folder)
            for leftover in leftovers:
                logging.info("removed %s, left by an interrupted write", leftover)
            files.write_text(self.layout.config, saved.to_json(config))
        self._make_loop()

    def _make_loop(self) -> None:
        splits, start = self.splits, self.start_step
        batch_size, replicas = self.train_config.batch_size, self.strategy.num_replicas_in_sync
        sparse = self.sparse  # sparse ratings batches (rawtf_ae.recommender.batching)
        samples = self.train_config.sampled_softmax if sparse else 0  # dense batches: the full softmax
        if self.train_config.sampled_softmax and not sparse:
            logging.info("train.sampled_softmax is for sparse batches: dense ones take the full softmax")
        per_replica = batch_size // replicas
        capacity = sparse_gradients.gradient_capacity(splits.train, per_replica, samples) if sparse else 0
        options = StepOptions.from_config(self.config, sparse_capacity=capacity, sampled_softmax=samples)
        proposal = sampled_softmax.proposal_for(self.config, splits.train) if samples else None
        step = make_step(self.state.model, self.state.optimizer, options, proposal)
        seed, stop = self.config.seed, self.stop_signal.flag
        if parameter_server.is_parameter_server(self.strategy):  # closures scheduled on the workers
            batches = pipelines.TrainBatches(splits.train, batch_size, seed, sparse)
            synchronous = self.train_config.ps_synchronous
            steps = parameter_server.Scheduler(self.strategy, step, self.state.step, batches, synchronous)
            self.run_steps = lambda count: steps(self.current, count, stop)
        else:
            dataset = lambda c: pipelines.train_dataset(splits.train, batch_size, seed, start, c, sparse)  # noqa: E731
            iterator = iter(self.strategy.distribute_datasets_from_function(dataset))
            loop = make_train_loop(step, self.state.step, self.strategy, stop)
            self.run_steps = lambda count: float(loop(iterator, tf.constant(count, tf.int64)))
        self.evaluate = make_evaluate(self.state.model, self.train_config.loss)
        # Implicit feedback: Recall@K and NDCG@K beside the loss; keep_best selects on NDCG@100.
        self.rank = make_rank(self.state.model) if self.train_config.loss == "multinomial" else None
        self.validation = splits.evaluation_dataset(self.train_config.eval_batch_size, sparse)
        self.train_writer, self.validation_writer = self._writer("train"), self._writer("validation")

    def _writer(self, name):
        if not self.chief:
            return tf.summary.create_noop_writer()
        return tf.summary.create_file_writer(self.layout.summaries(name))

    def train(self) -> None:
        """The outer loop: calls of the N-step loop, ended by log, eval and checkpoint steps."""
        train_config = self.train_config
        previous = progress.read_previous_metrics(self.layout.metrics)
        self.train_loss = previous.get("train_loss", float("nan"))
        self.examples_per_sec = previous.get("examples_per_sec", float("nan"))
        self.current, num_steps = self.start_step, train_config.num_steps
        self.last_evaluation = None  # (step, validation loss)
        if self.current >= num_steps:
            logging.info(
                "already trained to step %d (train.num_steps=%d): evaluating only; raise "
                "--config.train.num_steps to train longer, or use a new --workdir",
                self.current,
                num_steps,
            )
        if self._stopped_early():
            logging.info("stopped early already, at step %d: evaluating only", self.current)
        throughput = progress.Throughput()
        while self.current < num_steps and not self._stopped_early():
            stop = min(
                num_steps,
                self.current + train_config.steps_per_loop,
                *(
                    (self.current // every + 1) * every
                    for every in (
                        train_config.log_every_steps,
                        train_config.eval_every_steps,
                        train_config.checkpoint_every_steps,
                    )
                ),
            )
            started = time.perf_counter()
            chunk_loss = self._call_loop(stop)
            seconds = time.perf_counter() - started
            if self._signalled():
                # A signal ended the call early, after the step under way: save where it got.
                stop = int(self.state.step.numpy())
                chunk_loss = chunk_loss if stop > self.current else self.train_loss
            throughput.add((stop - self.current) * train_config.batch_size, seconds, stop == num_steps)
            chunk_rate = (stop - self.current) * train_config.batch_size / seconds
            self.current, self.train_loss = stop, chunk_loss
            if throughput.seconds > 0:
                self.examples_per_sec = throughput.examples / throughput.seconds
            self._after_call(chunk_rate, throughput)

    def _validate(self) -> tuple:
        """`(validation loss, ranking metrics or {})` of the model now."""
        if self.rank is None:
            return self.evaluate(self.validation), {}
        ranked = self.rank(self.validation, "val")  # the loss from the same pass
        return ranked.pop("val_loss"), ranked

    @staticmethod
    def _selected(val_loss: float, ranked: dict) -> float:
        """What `train.keep_best` compares: NDCG@100 (higher is better) or the loss."""
        return ranked["val_ndcg_at_100"] if ranked else val_loss

    def _signalled(self) -> bool:
        return self.stop_signal.flag is not None and bool(self.stop_signal.flag.numpy())

    def _stopped_early(self) -> bool:
        return self.tracker is not None and self.tracker.stopped

    def _call_loop(self, stop: int) -> float:
        """Runs the steps up to `stop`; the mean loss, checked to be finite."""
        try:
            chunk_loss = self.run_steps(stop - self.current)
        except preemption.COLLECTIVE_ERRORS as e:
            if (
                self.strategy.num_replicas_in_sync == 1
                or self.train_config.strategy != "multi_worker_mirrored"
            ):
                raise
            raise preemption.peer_lost(e, self.current, stop, self.checkpointer.latest) from None
        if not math.isfinite(chunk_loss):
            raise FloatingPointError(
                f"The training loss became {chunk_loss} between steps {self.current} and {stop}; stopped "
                f"without saving. The last good checkpoint is {self.checkpointer.latest}. Try a lower "
                "`train.learning_rate`."
            )
        return chunk_loss

    def _after_call(self, chunk_rate: float, throughput: progress.Throughput) -> None:
        """Summaries, the progress line, evaluation, checkpoints and signals at `self.current`."""
        train_config, current, num_steps = self.train_config, self.current, self.train_config.num_steps
        with self.train_writer.as_default(step=current):
            tf.summary.scalar("loss", self.train_loss)
            tf.summary.scalar("examples_per_sec", chunk_rate)
            # The rate the call's last step (current - 1) applied, to every update of that step.
            tf.summary.scalar("learning_rate", learning_rate_at(train_config, current - 1))
        if current % train_config.log_every_steps == 0 or current == num_steps:
            rate = self.examples_per_sec if throughput.seconds else chunk_rate
            eta = (num_steps - current) * train_config.batch_size / max(rate, 1e-9)
            logging.info(
                "step %d/%d: loss %.5f, %.0f examples/s, ETA %s",
                current,
                num_steps,
                self.train_loss,
                chunk_rate,
                progress.format_duration(eta),
            )
        if current % train_config.eval_every_steps == 0 or current == num_steps:
            # The last step's too, for the checkpoint's best-so-far record (`finish` logs it).
            val_loss, ranked = self._validate()
            self.last_evaluation = (current, val_loss, ranked)
            if current != num_steps:
                logging.info("step %d: validation loss %.5f", current, val_loss)
                with self.validation_writer.as_default(step=current):
                    tf.summary.scalar("loss", val_loss)
                    for name, value in ranked.items():
                        if not name.endswith(("_se", "_users")):
                            tf.summary.scalar(name.removeprefix("val_"), value)
                if ranked:
                    log_ranking(ranked, "val", f"step {current}")
            if self.tracker is not None:
                self.tracker.update(current, self._selected(val_loss, ranked))
        stopping = self.stop_signal.received is not None
        ends = current == num_steps or self._stopped_early()
        if current % train_config.checkpoint_every_steps == 0 or ends or stopping:
            if saved := self.checkpointer.save(current):
                logging.info("saved %s", self.checkpointer.described(saved))
        if stopping:
            raise preemption.Preempted(
                f"Received {self.stop_signal.received} at step {current}: saved {self.checkpointer.latest} "
                "and stopped. Run the same command again to resume from it.",
                self.stop_signal.number,
            )
        if self.preemption is not None:
            # Every worker calls it once per loop call, so their counts agree. After a SIGTERM to
            # any worker, all save at the same step and `exit_fn` raises `Preempted`.
            self.progress["step"] = current
            self.preemption.save_checkpoint_if_preempted(current)

    def finish(self) -> dict:
        """The final evaluation, metrics and (on the chief) the end-of-run outputs."""
        model, train_config = self.state.model, self.train_config
        step, val_loss, ranked = self.last_evaluation or (None, None, None)
        if step != self.current:
            val_loss, ranked = self._validate()
        logging.info("step %d: validation loss %.5f", self.current, val_loss)
        best = {}
        if self.tracker is not None:
            self.tracker.update(self.current, self._selected(val_loss, ranked))
            if self.chief:  # the weights file is the chief's; other workers write nothing
                best = {"best_step": self.tracker.restore_best(), "early_stopped": self._stopped_early()}
                val_loss, ranked = self._validate()
                logging.info(
                    "the best evaluation's weights, of step %d: validation loss %.5f",
                    best["best_step"],
                    val_loss,
                )
        metrics = {
            "step": self.current,
            "train_loss": self.train_loss,
            "val_loss": val_loss,
            "examples_per_sec": self.examples_per_sec,
            "loss": train_config.loss,
            "tied": model.tied,
            "tied_layers": list(model.tied_layers),
            "layer_sizes": list(model.layer_sizes),
            "trainable_parameters": model.num_parameters(),
            "data": self.config.data.name,
            "strategy": train_config.strategy,
            "replicas": self.strategy.num_replicas_in_sync,
            "precision": train_config.precision,
            **best,
        }
        if ranked:  # implicit feedback: ranking metrics, and the baselines' on the same users
            metrics.update(ranked)
            if train_config.ranking_baselines:
                metrics.update(baselines.ranking_baselines(self.splits))
            log_ranking(metrics, "val", "validation")
        elif self.splits.vocabulary is not None:
            metrics.update(ratings_metrics(self.splits, val_loss))
        if self.chief:
            outputs.write_run_outputs(
                self.state.model, self.splits, self.config, self.workdir, metrics, self.validation_writer
            )
            logging.info("checkpoints: %s", self.checkpointer.directory)
        self.train_writer.flush()
        return metrics
