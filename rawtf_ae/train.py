"""Training: building the state, the step, evaluation, and the loop with checkpoints.

Three layers, as in Sonnet's distributed example and Orbit's loop functions:
  1. `make_train_step`: the per-replica step, `batch -> loss`, with `tf.GradientTape`.
  2. `make_train_loop`: one `tf.function` that runs `num_steps` steps through `strategy.run`.
  3. `train_and_evaluate`: the eager outer loop (logging, evaluation, checkpoints, summaries,
     the non-finite check, the final picture and `metrics.json`).
Each piece can be imported alone to build a research loop of one's own.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from typing import Callable, Optional

import ml_collections
import tensorflow as tf
from absl import logging

from rawtf_ae import (
    baselines,
    checkpoints,
    corruption,
    data,
    distribute,
    export,
    files,
    images,
    losses,
    optimizers,
    ratings,
)
from rawtf_ae import config as config_lib
from rawtf_ae.model import TiedAutoencoder

_COMPUTE_DTYPES = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}


def compute_dtype(config: ml_collections.ConfigDict) -> tf.DType:
    """The dtype of the matrix multiplies for `config.train.precision` (variables stay float32)."""
    return _COMPUTE_DTYPES[config.train.precision]


def tied_flags(model_config) -> list[bool]:
    """One tying flag per layer from `model.tied` and `model.untied_layers`."""
    num_layers = (
        len(model_config.layer_sizes) - 1 if model_config.kind == "dense" else len(model_config.filters)
    )
    return [bool(model_config.tied) and i not in set(model_config.untied_layers) for i in range(num_layers)]


def create_model(config: ml_collections.ConfigDict):
    """The model a config describes (`config.model`, seeded by `config.seed`).

    `model.kind="dense"`: a `TiedAutoencoder`; `"conv"`: a `TiedConvAutoencoder`. Variables are
    float32; `config.train.precision` sets the dtype of the matrix multiplies / convolutions.
    """
    model_config = config.model
    common = dict(
        activation=config_lib.activation_spec(model_config.activation),
        output_activation=model_config.output_activation,
        tied=tied_flags(model_config),
        kernel_initializer=model_config.kernel_initializer,
        seed=config.seed,
        compute_dtype=compute_dtype(config),
    )
    if model_config.kind == "conv":
        from rawtf_ae.conv import TiedConvAutoencoder

        return TiedConvAutoencoder(
            tuple(model_config.image_shape),
            tuple(model_config.filters),
            kernel_size=model_config.kernel_size,
            strides=model_config.strides,
            **common,
        )
    return TiedAutoencoder(list(model_config.layer_sizes), **common)


class WarmupSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then `after(step - warmup_steps)`."""

    def __init__(self, peak: float, warmup_steps: int, after: Callable):
        super().__init__()
        self.peak, self.warmup_steps, self.after = peak, warmup_steps, after

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decayed = self.after(tf.maximum(step - self.warmup_steps, 0.0))
        if self.warmup_steps == 0:
            return decayed
        warming = self.peak * (step + 1.0) / float(self.warmup_steps)
        return tf.where(step < self.warmup_steps, warming, decayed)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


class TrainingStepSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """`schedule(step)` at the *training* step held in `step_counter`, not `optimizer.iterations`.

    Keras calls a schedule with `optimizer.iterations`, the number of updates applied, which
    advances 1 + `train.dense_refeeding` times per training step: driven by it, a cosine
    schedule reached 0 at half the run and warm-up ended early. Every update of training step
    `s` (the re-fed ones included) uses `schedule(s)`; `make_train_loop` advances the counter
    after each step (a loop of one's own must advance it too, or the rate stays put).

    A schedule of one's own that accounts for re-feeding sets `follows_training_step = True`,
    like this one; `make_train_step` refuses any other schedule with dense re-feeding.
    """

    follows_training_step = True

    def __init__(self, schedule, step_counter: tf.Variable):
        super().__init__()
        self.schedule, self.step_counter = schedule, step_counter

    def __call__(self, iterations):
        del iterations  # the optimizer's update count; see the class docstring
        return self.schedule(self.step_counter)

    def get_config(self):
        return {}


def learning_rate_at(train_config, step: int) -> float:
    """The (base) learning rate that `config.train` applies at training step `step`."""
    rate = learning_rate_schedule(train_config)
    return float(rate(step)) if callable(rate) else float(rate)


def learning_rate_schedule(train_config):
    """A float (constant, no warm-up) or a `LearningRateSchedule` for `config.train`."""
    peak, warmup = float(train_config.learning_rate), int(train_config.warmup_steps)
    schedules = tf.keras.optimizers.schedules
    if train_config.schedule == "constant":
        if warmup == 0:
            return peak
        after = lambda step: tf.constant(peak, tf.float32)  # noqa: E731
    elif train_config.schedule == "cosine":
        after = schedules.CosineDecay(peak, decay_steps=train_config.num_steps - warmup)
    elif train_config.schedule == "exponential":
        after = schedules.ExponentialDecay(peak, train_config.decay_steps, train_config.decay_rate)
    else:
        raise ValueError(f"Unknown `train.schedule` {train_config.schedule!r}.")
    return WarmupSchedule(peak, warmup, after)


def create_optimizer(train_config, variables=None, step_counter: Optional[tf.Variable] = None):
    """A `tf.keras.optimizers` optimizer for `config.train` (not yet built).

    With `precision="mixed_float16"` it is wrapped in a `LossScaleOptimizer` (dynamic loss
    scaling), which `make_train_step` recognizes. With `train.learning_rate_multipliers` and the
    model's `variables`, an `optimizers.GroupedOptimizer`: one optimizer per multiplier.

    Args:
      train_config: `config.train`.
      variables: the model's trainable variables (needed for learning-rate multipliers).
      step_counter: the training step variable that `make_train_loop` advances. A schedule
        follows it (`TrainingStepSchedule`); without it Keras drives the schedule from
        `optimizer.iterations`, which is the same only without dense re-feeding.

    Raises:
      ValueError: a schedule with `train.dense_refeeding` but no `step_counter` (the schedule
        would run 1 + dense_refeeding times too fast).
    """
    learning_rate = learning_rate_schedule(train_config)
    if callable(learning_rate):
        if step_counter is not None:
            learning_rate = TrainingStepSchedule(learning_rate, step_counter)
        elif train_config.get("dense_refeeding", 0):
            raise ValueError(
                "A learning-rate schedule with `train.dense_refeeding` needs the training step "
                "counter: create_optimizer(train_config, variables, step_counter)."
            )
    name = train_config.optimizer

    def make(rate):
        if name == "adam":
            return tf.keras.optimizers.Adam(rate)
        if name == "sgd":
            return tf.keras.optimizers.SGD(
                rate, momentum=train_config.momentum, nesterov=train_config.nesterov
            )
        if name == "rmsprop":
            return tf.keras.optimizers.RMSprop(rate, momentum=train_config.momentum)
        raise ValueError(
            f"Unknown `train.optimizer` {name!r}; expected one of {', '.join(config_lib.OPTIMIZERS)}."
        )

    pairs = optimizers.parse_multipliers(train_config.get("learning_rate_multipliers", ""))
    if pairs and variables is not None:
        return optimizers.GroupedOptimizer(make, learning_rate, pairs, variables)
    optimizer = make(learning_rate)
    if train_config.get("precision") == "mixed_float16":
        optimizer = tf.keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _follows_update_count(optimizer) -> bool:
    """Whether a (grouped, loss-scaled) Keras optimizer's schedule is driven by `iterations`."""
    inner = getattr(optimizer, "optimizers", None) or [getattr(optimizer, "inner_optimizer", optimizer)]
    for each in inner:
        rate = getattr(each, "_learning_rate", None)
        while isinstance(rate, optimizers.ScaledSchedule):
            rate = rate.schedule
        if isinstance(rate, tf.keras.optimizers.schedules.LearningRateSchedule) and not getattr(
            rate, "follows_training_step", False
        ):
            return True
    return False


def _unpack(batch):
    """A batch -> `(inputs, targets, mask)`.

    A tensor `[b, width]` is its own target (mask None); a ratings batch is a dict with
    `inputs` and `mask` (the observed entries) and, for evaluation, `targets`.
    """
    if isinstance(batch, dict):
        return batch["inputs"], batch.get("targets", batch["inputs"]), batch["mask"]
    return batch, batch, None


def _global_sum(value):
    """`value` summed over the replicas of the current replica context (itself on one)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def make_train_step(
    model: TiedAutoencoder,
    optimizer,
    loss: str,
    global_batch_size: int,
    *,
    jit_compile: bool = False,
    corruption_kind: str = "none",
    corruption_level: float = 0.0,
    seed: int = 0,
    weight_decay: float = 0.0,
    sparsity_weight: float = 0.0,
    sparsity_target: float = 0.05,
    contractive_weight: float = 0.0,
    code_dropout: float = 0.0,
    dense_refeeding: int = 0,
):
    """The per-replica step `batch -> scalar loss contribution`.

    Wrap it in `tf.function` to call it directly on one device, or pass it to
    `make_train_loop`. The optimizer must already be built on `model.trainable_variables`.

    Args:
      model: the autoencoder.
      optimizer: a built Keras optimizer (a `LossScaleOptimizer` scales the loss).
      loss: `"bce"` or `"mse"` for batches `[per_replica_batch, width]`; `"masked_mse"` for
        ratings batches `{"inputs", "mask"}` (Kuchaiev & Ginsburg 2017: the squared error over
        the observed ratings, divided by their number in the global batch).
      global_batch_size: the batch size summed over all replicas.
      jit_compile: compile with XLA: the whole step on one replica; across replicas only the
        loss and gradients, because the optimizer's all-reduce (`merge_call`) cannot be compiled.
      corruption_kind, corruption_level: denoising (see `rawtf_ae.corruption`); the noise is
        seeded by `(seed, optimizer.iterations)` and drawn for the global batch, so N replicas
        draw what one device draws.
      seed: the run's seed, for the noise.
      weight_decay: L2 penalty `weight_decay / 2 * sum(W^2)` on the kernels only (biases are
        never decayed, as in Caffe-style setups with decay multiplier 0 for biases). It is part
        of every update, the re-fed ones included (NVIDIA's DeepRecommender decays in the
        optimizer, so on each of its steps).
      sparsity_weight, sparsity_target: `sparsity_weight * sum_j KL(target || mean code_j)`
        (`losses.kl_sparsity_of_mean`; codes must lie in (0, 1), e.g. a sigmoid code layer).
        The mean is over the global batch (`losses.global_mean`, an all-reduce across
        replicas), so N replicas match one device; with several replicas this step is then
        not compiled with XLA (the all-reduce cannot be).
      contractive_weight: `contractive_weight * ||d code / d input||_F^2` per example
        (`losses.contractive`, Rifai et al. 2011).
      code_dropout: the probability of dropping each code unit during training (Kuchaiev &
        Ginsburg 2017 drop 0.8 of the code layer); seeded like the corruption noise.
      dense_refeeding: after the update on the batch, this many more updates on dense
        re-fed examples (Kuchaiev & Ginsburg 2017, section 2.3): `y = f(x)`, computed by the
        forward pass just done, becomes a new example whose input and target are both `y`
        (held constant), with every entry observed; the next re-feed uses `f(y)`, and so on.
        The original ratings are the target of the first update only, as in the paper and
        NVIDIA's code. Needs `loss="masked_mse"`. A learning-rate schedule must follow the
        training step, not the update count (`create_optimizer(..., step_counter)`).

    The returned loss is the reconstruction loss of the (first) update, without penalties.
    """
    if dense_refeeding and loss != "masked_mse":
        raise ValueError(f"`dense_refeeding` needs loss 'masked_mse', got {loss!r}.")
    if dense_refeeding and _follows_update_count(optimizer):
        raise ValueError(
            "With `dense_refeeding`, a learning-rate schedule must follow the training step, not "
            "the optimizer's update count (1 + dense_refeeding updates per step): create the "
            "optimizer with `create_optimizer(train_config, variables, step_counter)`."
        )
    variables = model.trainable_variables
    scales_loss = isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer)
    decayed = list(model.kernels) + [k for k in model.decoder_kernels if k is not None]

    def drop_codes(codes, stream):
        if not code_dropout:
            return codes
        noise_seed = corruption.noise_seed(seed, optimizer.iterations)
        noise_seed = tf.random.experimental.stateless_fold_in(noise_seed, stream)
        return corruption.dropout(codes, code_dropout, noise_seed)

    def with_weight_decay(objective):
        if not weight_decay:
            return objective
        penalty = 0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in decayed])
        # Each replica adds its share, so the replicas' sum holds the penalty once.
        return objective + tf.nn.scale_regularization_loss(penalty)

    def with_penalties(loss_value, codes, inputs):
        """`loss_value` plus the configured penalties (call it while the tape records)."""
        objective = with_weight_decay(loss_value)
        if sparsity_weight:
            # Every replica adds the whole penalty of the global mean; `global_mean` passes
            # each replica the gradient of its own rows only, so the sum is the gradient once.
            mean = losses.global_mean(codes, global_batch_size)
            objective += sparsity_weight * losses.kl_sparsity_of_mean(mean, sparsity_target)
        if contractive_weight:
            objective += tf.nn.compute_average_loss(
                contractive_weight * losses.contractive(model, inputs),
                global_batch_size=global_batch_size,
            )
        # float16 gradients underflow: differentiate the scaled loss; the optimizer unscales.
        if scales_loss:
            objective = optimizer.scale_loss(objective)
        return objective

    def loss_and_gradients(batch, normalizer):
        """`(loss, gradients, outputs)`; `normalizer` divides the masked loss's sum."""
        clean, targets, mask = _unpack(batch)
        inputs = clean
        if corruption_kind != "none":
            noise_seed = corruption.noise_seed(seed, optimizer.iterations)
            inputs = corruption.corrupt(clean, corruption_kind, corruption_level, noise_seed)
        outputs = None
        with tf.GradientTape() as tape:
            # Denoising: the encoder sees `inputs`, the loss compares with the clean `targets`.
            if mask is not None:
                codes = model.encode(inputs)
                outputs = model.decode(drop_codes(codes, 0))
                loss_value = tf.reduce_sum(losses.masked_squared_error(targets, outputs, mask)) / normalizer
            else:
                if sparsity_weight or code_dropout:  # encode once for the penalty and the loss
                    codes = model.encode(inputs)
                    per_example = losses.loss_from_codes(model, drop_codes(codes, 0), targets, loss)
                else:
                    codes = None
                    per_example = losses.reconstruction_loss(model, inputs, targets, loss)
                # Keras optimizers sum the replicas' gradients, so every replica divides its sum
                # by the *global* batch size: the sum over replicas is then the global mean.
                loss_value = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            objective = with_penalties(loss_value, codes, inputs)
        # A tied kernel is one variable used twice: the tape sums both paths' gradients.
        return loss_value, tape.gradient(objective, variables), outputs

    def refeed_gradients(refed, stream):
        """Gradients of the dense re-feeding loss on `refed` `[b, width]`; `(gradients, f(refed))`."""
        refed = tf.stop_gradient(refed)
        with tf.GradientTape() as tape:
            outputs = model.decode(drop_codes(model.encode(refed), stream))
            # Every entry is observed: the global count is the global batch times the width.
            squared = tf.reduce_sum(tf.math.squared_difference(refed, outputs))
            objective = with_weight_decay(squared / float(global_batch_size * model.input_width))
            if scales_loss:
                objective = optimizer.scale_loss(objective)
        return tape.gradient(objective, variables), outputs

    def normalizer_of(batch):
        _, _, mask = _unpack(batch)
        if mask is None:
            return tf.constant(float(global_batch_size))
        # The masked loss is a mean over the global batch's observed ratings: count them all.
        return tf.maximum(_global_sum(tf.reduce_sum(mask)), 1.0)

    def run_step(batch, gradients_fn, refeed_fn):
        loss_value, gradients, outputs = gradients_fn(batch, normalizer_of(batch))
        optimizer.apply_gradients(zip(gradients, variables))
        for stream in range(1, dense_refeeding + 1):
            gradients, outputs = refeed_fn(outputs, stream)
            optimizer.apply_gradients(zip(gradients, variables))
        return loss_value

    if not jit_compile:
        return lambda batch: run_step(batch, loss_and_gradients, refeed_gradients)
    compiled_step = tf.function(
        lambda batch: run_step(batch, loss_and_gradients, refeed_gradients), jit_compile=True
    )
    compiled_gradients = tf.function(loss_and_gradients, jit_compile=True)
    compiled_refeed = tf.function(refeed_gradients, jit_compile=True)

    def train_step(batch):
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return compiled_step(batch)
        if sparsity_weight:  # its all-reduce of the mean code cannot be compiled
            return run_step(batch, loss_and_gradients, refeed_gradients)
        return run_step(batch, compiled_gradients, compiled_refeed)

    return train_step


def uses_xla(train_config) -> bool:
    """Whether the step is compiled with XLA: `train.jit_compile`, with "auto" resolved.

    "auto" compiles float32 steps, the fastest setting in every case of
    `benchmarks/throughput.py` (1.26-1.5x on this project's CPU). It leaves mixed precision
    uncompiled (XLA with bfloat16 measured slower than bfloat16 alone in
    `benchmarks/speed_options.py`; float16 loss scaling is not compiled), steps with the
    contractive penalty (XLA took minutes to compile its `batch_jacobian` on a tiny model), and
    TPUs alone (they compile everything anyway).
    """
    if train_config.jit_compile != "auto":
        return bool(train_config.jit_compile)
    return (
        train_config.precision == "float32"
        and train_config.strategy != "tpu"
        and not train_config.contractive_weight
    )


def step_options(config: ml_collections.ConfigDict, seed: Optional[int] = None) -> dict:
    """`make_train_step`'s keyword arguments from a config (XLA, corruption, penalties)."""
    train_config = config.train
    return dict(
        jit_compile=uses_xla(train_config),
        corruption_kind=train_config.corruption,
        corruption_level=train_config.corruption_level,
        seed=config.seed if seed is None else seed,
        weight_decay=train_config.weight_decay,
        sparsity_weight=train_config.sparsity_weight,
        sparsity_target=train_config.sparsity_target,
        contractive_weight=train_config.contractive_weight,
        code_dropout=train_config.code_dropout,
        dense_refeeding=train_config.dense_refeeding,
    )


def make_train_loop(train_step, step_counter: tf.Variable, strategy: Optional[tf.distribute.Strategy] = None):
    """A `tf.function` `(iterator, num_steps) -> mean loss` running `num_steps` steps.

    `num_steps` is a scalar tensor, so a new count does not retrace. `step_counter` advances
    after every step, so a schedule that reads it (`TrainingStepSchedule`) sees the step.
    """
    strategy = strategy or tf.distribute.get_strategy()

    @tf.function
    def train_loop(iterator, num_steps):
        total = tf.constant(0.0, tf.float32)
        for _ in tf.range(num_steps):
            per_replica = strategy.run(train_step, args=(next(iterator),))
            total += tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None), tf.float32)
            step_counter.assign_add(1)
        return total / tf.cast(num_steps, tf.float32)

    return train_loop


def make_evaluate(model: TiedAutoencoder, loss: str):
    """Returns `evaluate(dataset) -> float` over every example of `dataset`.

    `"bce"`/`"mse"`: the mean per-example loss over batches `[b, width]`. `"masked_mse"`: the
    squared error per observed rating over batches `{"inputs", "targets", "mask"}` (its square
    root is the RMSE recommender papers report).
    """
    width = model.input_width
    vector = tf.TensorSpec([None, width], tf.float32)

    @tf.function(input_signature=[vector])
    def batch_sum(batch):
        return tf.reduce_sum(losses.reconstruction_loss(model, batch, batch, loss)), tf.shape(batch)[0]

    @tf.function(input_signature=[{"inputs": vector, "targets": vector, "mask": vector}])
    def masked_sum(batch):
        squared = losses.masked_squared_error(batch["targets"], model(batch["inputs"]), batch["mask"])
        return tf.reduce_sum(squared), tf.reduce_sum(batch["mask"])

    def evaluate(dataset) -> float:
        total, count = 0.0, 0.0
        for batch in dataset:
            batch_total, batch_count = masked_sum(batch) if isinstance(batch, dict) else batch_sum(batch)
            total += float(batch_total)
            count += float(batch_count)
        if count == 0:
            raise ValueError("Cannot evaluate on an empty dataset.")
        return total / count

    return evaluate


write_json = files.write_json  # kept here for existing imports


def restore_model(config: ml_collections.ConfigDict, workdir: str) -> tuple[TiedAutoencoder, int, str]:
    """The config's model with the weights of the newest checkpoint in `workdir`.

    Returns:
      `(model, step, checkpoint_path)`.

    Raises:
      FileNotFoundError: `workdir` has no checkpoint.
      ValueError: the checkpoint's shapes differ from the config's model (both named).
    """
    config_lib.validate(config)
    workdir = files.workdir_path(workdir)
    directory = os.path.join(workdir, "checkpoints")
    if not checkpoints.candidates(directory):
        raise FileNotFoundError(f"Workdir {workdir} has no checkpoint in {directory}; train first.")
    config = config_lib.with_input_width(config, trained_input_width(workdir))
    if config.model.kind == "dense" and config.model.layer_sizes[0] == 0:
        raise ValueError(
            f"`model.layer_sizes[0]` is 0 (the data's width) and {workdir}/config.json does not say "
            "which width the run was trained with; set it explicitly."
        )
    model = create_model(config)
    step = tf.Variable(0, dtype=tf.int64)
    path = checkpoints.restore_latest(
        tf.train.Checkpoint(model=model, step=step), directory, move_aside=False
    )
    return model, int(step.numpy()), path


def vocabulary_path(workdir: str) -> str:
    """Where a ratings run keeps its id vocabularies, beside its checkpoints."""
    return os.path.join(workdir, "checkpoints", "vocabulary.json")


def trained_input_width(workdir: str) -> int:
    """The input width a workdir's run was trained with (from its `config.json`), or 0.

    0 when the workdir has no `config.json` (or a conv model's, without `layer_sizes`).

    Raises:
      ValueError: `config.json` exists but is damaged (one line naming it).
    """
    path = os.path.join(workdir, "config.json")
    try:
        saved = files.read_json(path, "run's saved config")
    except FileNotFoundError:
        return 0
    try:
        return int(saved["model"]["layer_sizes"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
            return 0
        raise ValueError(f"The run's saved config {path} is damaged (it holds no `model` section).") from None


def check_vocabulary(splits, workdir: str) -> None:
    """A resumed ratings run must map ids as before: same users and items, same order."""
    path = vocabulary_path(workdir)
    if isinstance(splits, ratings.RatingSplits) and os.path.exists(path):
        saved = ratings.Vocabulary.load(path)
        if saved != splits.vocabulary:
            raise ValueError(
                f"The ratings in the training file define other ids than the run in {workdir} was "
                f"trained with ({path}: {saved.difference(splits.vocabulary)}). Use a new --workdir, "
                "or the original training file."
            )


def ratings_metrics(splits, val_loss: float) -> dict:
    """RMSE of a masked-MSE validation loss next to the per-item-mean baseline; logs one line."""
    metrics = {
        "val_rmse": math.sqrt(val_loss),
        "item_mean_val_rmse": baselines.item_mean_rmse(splits),
        "val_ratings": splits.validation_targets.nnz,
        "val_rows": len(splits.validation_targets),
        "val_skipped_ratings": splits.skipped,
    }
    logging.info(
        "validation RMSE %.4f over %d held-out ratings (per-item mean: %.4f; %d skipped)",
        metrics["val_rmse"],
        metrics["val_ratings"],
        metrics["item_mean_val_rmse"],
        metrics["val_skipped_ratings"],
    )
    return metrics


class PeerLost(RuntimeError):
    """A multi-worker run lost a worker: the others stop (exit 1) instead of hanging."""


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint; rerun to resume."""


class _StopSignal:
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


def _preemption_handler(strategy, train_config, checkpointer, progress):
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


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _read_previous_metrics(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


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
    config_lib.validate(config)
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
    logging.info("workdir: %s", workdir)
    logging.info(
        "strategy: %s, %d replica(s), %s%s",
        train_config.strategy,
        replicas,
        train_config.precision,
        ", XLA" if uses_xla(train_config) else "",
    )
    splits = data.load(config.data, config.seed)
    config = config_lib.with_input_width(config, splits.width)
    expected_width = config_lib.input_width(config)
    if splits.width != expected_width:
        what = (
            "`model.layer_sizes[0]`" if config.model.kind == "dense" else "the product of `model.image_shape`"
        )
        raise ValueError(
            f"The data ({config.data.name} {config.data.path}) has width {splits.width}, but "
            f"{what} is {expected_width}."
        )
    if isinstance(splits, ratings.RatingSplits):
        logging.info(
            "data: ratings, %d users x %d items; %d training ratings in %d rows (by %s), %d "
            "validation ratings of %d rows%s",
            len(splits.vocabulary.users),
            len(splits.vocabulary.items),
            splits.train.nnz,
            len(splits.train),
            splits.by,
            splits.validation_targets.nnz,
            len(splits.validation_targets),
            f"; skipped {splits.skipped} of ids training never saw" if splits.skipped else "",
        )
        check_vocabulary(splits, workdir)
    else:
        logging.info(
            "data: %s, %d training and %d validation examples of width %d",
            config.data.name,
            len(splits.train),
            len(splits.validation),
            splits.width,
        )

    # One writer per workdir: the chief holds its lock from the first write to the last.
    with checkpoints.WorkdirLock(workdir) if chief else contextlib.nullcontext():
        with _StopSignal(enabled=train_config.strategy != "multi_worker_mirrored") as stop_signal:
            return _train(config, workdir, strategy, splits, chief, stop_signal)


def _train(config, workdir, strategy, splits, chief, stop_signal) -> dict:
    """The body of `train_and_evaluate`, run while holding the workdir."""
    train_config = config.train
    batch_size, replicas = train_config.batch_size, strategy.num_replicas_in_sync
    with strategy.scope():
        model = create_model(config)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        optimizer = create_optimizer(train_config, model.trainable_variables, step)
        optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    # Restore first: it may repair the state file that the CheckpointManager then reads.
    restored = checkpoints.restore_latest(checkpoint, os.path.join(workdir, "checkpoints"), move_aside=chief)
    checkpointer = checkpoints.Checkpointer(
        checkpoint, workdir, train_config.keep_checkpoints, chief, distribute.worker_id(strategy)
    )
    learning_rate = learning_rate_schedule(train_config)
    if restored and isinstance(learning_rate, float):
        # Keras checkpoints a constant learning rate as a variable; on resume the config decides.
        if isinstance(optimizer, optimizers.GroupedOptimizer):
            optimizer.set_learning_rate(learning_rate)
        else:
            optimizer.learning_rate = learning_rate
    start_step = int(step.numpy())
    if chief and isinstance(splits, ratings.RatingSplits):
        os.makedirs(os.path.dirname(vocabulary_path(workdir)), exist_ok=True)
        splits.vocabulary.save(vocabulary_path(workdir))
    if not restored and config.pretrain.steps_per_layer:
        from rawtf_ae import pretrain  # noqa: PLC0415 (pretrain imports this module)

        # Pretraining runs on one device, whatever the strategy: under MirroredStrategy, training
        # a second model in the same process collides on collective instance keys (TensorFlow
        # issue #62790), and the greedy stage is short. Every worker pretrains identically.
        pretrain.assemble(model, pretrain.pretrain_layers(config, splits.train))
        logging.info("saved the pretrained model as %s", checkpointer.save(0))
    logging.info(
        "%s", f"resumed from {restored} at step {start_step}" if restored else "starting from scratch"
    )
    progress = {"step": start_step}
    preemption = _preemption_handler(strategy, train_config, checkpointer, progress)
    logging.info(
        "model: %s %s, %d trainable parameters",
        "tied"
        if model.tied
        else "untied"
        if not any(model.tied_layers)
        else f"partially tied {model.tied_layers}",
        "-".join(map(str, model.layer_sizes)),
        model.num_parameters(),
    )

    if chief:
        os.makedirs(workdir, exist_ok=True)
        for folder in (workdir, os.path.join(workdir, "checkpoints"), os.path.join(workdir, "export")):
            for leftover in files.remove_leftovers(folder):
                logging.info("removed %s, left by an interrupted write", leftover)
        files.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2) + "\n")

    dataset = strategy.distribute_datasets_from_function(
        lambda context: data.train_dataset(splits.train, batch_size, config.seed, start_step, context)
    )
    iterator = iter(dataset)
    train_step = make_train_step(model, optimizer, train_config.loss, batch_size, **step_options(config))
    train_loop = make_train_loop(train_step, step, strategy)
    evaluate = make_evaluate(model, train_config.loss)
    is_ratings = isinstance(splits, ratings.RatingSplits)
    validation = data.eval_dataset(splits if is_ratings else splits.validation, train_config.eval_batch_size)

    def writer(name):
        if not chief:
            return tf.summary.create_noop_writer()
        return tf.summary.create_file_writer(os.path.join(workdir, "summaries", name))

    train_writer, validation_writer = writer("train"), writer("validation")
    metrics_path = os.path.join(workdir, "metrics.json")
    previous = _read_previous_metrics(metrics_path)
    train_loss = previous.get("train_loss", float("nan"))
    examples_per_sec = previous.get("examples_per_sec", float("nan"))
    timed_examples, timed_seconds = 0, 0.0
    num_steps, current = train_config.num_steps, start_step
    if current >= num_steps:
        logging.info(
            "already trained to step %d (train.num_steps=%d): evaluating only; raise "
            "--config.train.num_steps to train longer, or use a new --workdir",
            current,
            num_steps,
        )

    def next_multiple(k):
        return (current // k + 1) * k

    first_chunk = True
    while current < num_steps:
        stop = min(
            num_steps,
            current + train_config.steps_per_loop,
            next_multiple(train_config.log_every_steps),
            next_multiple(train_config.eval_every_steps),
            next_multiple(train_config.checkpoint_every_steps),
        )
        started = time.perf_counter()
        try:
            chunk_loss = float(train_loop(iterator, tf.constant(stop - current, tf.int64)))
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as e:
            if replicas == 1 or train_config.strategy != "multi_worker_mirrored":
                raise
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            cause = next((line for line in lines if "aborted by" in line), lines[0] if lines else "")
            raise PeerLost(
                f"A peer worker failed or left between steps {current} and {stop} ({type(e).__name__}: "
                f"{cause[:200]}). Restart every worker with the same command; training resumes from "
                f"{checkpointer.latest}."
            ) from None
        seconds = time.perf_counter() - started
        if not math.isfinite(chunk_loss):
            raise FloatingPointError(
                f"The training loss became {chunk_loss} between steps {current} and {stop}; stopped "
                f"without saving. The last good checkpoint is {checkpointer.latest}. Try a lower "
                "`train.learning_rate`."
            )
        chunk_rate = (stop - current) * batch_size / seconds
        if not first_chunk or (stop == num_steps and timed_seconds == 0):
            # The first call traces and compiles: its time would understate the throughput.
            timed_examples += (stop - current) * batch_size
            timed_seconds += seconds
        first_chunk = False
        current, train_loss = stop, chunk_loss
        if timed_seconds > 0:
            examples_per_sec = timed_examples / timed_seconds
        with train_writer.as_default(step=current):
            tf.summary.scalar("loss", train_loss)
            tf.summary.scalar("examples_per_sec", chunk_rate)
            # The rate the chunk's last step (current - 1) applied, to every update of that step.
            tf.summary.scalar("learning_rate", learning_rate_at(train_config, current - 1))
        if current % train_config.log_every_steps == 0 or current == num_steps:
            rate = examples_per_sec if timed_seconds else chunk_rate
            eta = (num_steps - current) * batch_size / max(rate, 1e-9)
            logging.info(
                "step %d/%d: loss %.5f, %.0f examples/s, ETA %s",
                current,
                num_steps,
                train_loss,
                chunk_rate,
                _format_duration(eta),
            )
        if current % train_config.eval_every_steps == 0 and current != num_steps:
            val_loss = evaluate(validation)
            logging.info("step %d: validation loss %.5f", current, val_loss)
            with validation_writer.as_default(step=current):
                tf.summary.scalar("loss", val_loss)
        stopping = stop_signal.received is not None
        if current % train_config.checkpoint_every_steps == 0 or current == num_steps or stopping:
            saved = checkpointer.save(current)
            if saved:
                logging.info("saved %s", saved)
        if stopping:
            raise Preempted(
                f"Received {stop_signal.received} at step {current}: saved {checkpointer.latest} and "
                "stopped. Run the same command again to resume from it."
            )
        if preemption is not None:
            # Every worker calls it once per loop call, so their counts agree. After a SIGTERM to
            # any worker, all save at the same step and `exit_fn` raises `Preempted`.
            progress["step"] = current
            preemption.save_checkpoint_if_preempted(current)

    val_loss = evaluate(validation)
    logging.info("step %d: validation loss %.5f", current, val_loss)
    metrics = {
        "step": current,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "examples_per_sec": examples_per_sec,
        "loss": train_config.loss,
        "tied": model.tied,
        "tied_layers": list(model.tied_layers),
        "layer_sizes": list(model.layer_sizes),
        "trainable_parameters": model.num_parameters(),
        "data": config.data.name,
        "strategy": train_config.strategy,
        "replicas": replicas,
        "precision": train_config.precision,
    }
    if is_ratings:
        metrics.update(ratings_metrics(splits, val_loss))
    if chief:
        _write_outputs(model, splits, config, workdir, metrics, validation_writer)
        logging.info("checkpoints: %s", os.path.abspath(checkpointer.directory))
    train_writer.flush()
    return metrics


def _write_outputs(model, splits, config, workdir, metrics, validation_writer) -> None:
    """The end-of-run outputs: the reconstruction picture, summaries, and `metrics.json`."""
    step = metrics["step"]
    picture_path = os.path.join(workdir, "reconstructions.png")
    is_ratings = isinstance(splits, ratings.RatingSplits)
    originals = None if is_ratings else splits.validation[: config.train.num_picture_examples]
    with validation_writer.as_default(step=step):
        tf.summary.scalar("loss", metrics["val_loss"])
        if "val_rmse" in metrics:
            tf.summary.scalar("rmse", metrics["val_rmse"])
        if not is_ratings and splits.image_shape and len(originals):
            grid = images.reconstruction_grid(originals, model(originals).numpy(), splits.image_shape)
            images.write_png(picture_path, grid)
            tf.summary.image("reconstructions", grid[None])
            logging.info("picture:     %s", os.path.abspath(picture_path))
    validation_writer.flush()
    if config.train.export:
        # A model with one row per user recommends; the vocabulary travels with the export.
        vocabulary = splits.vocabulary if is_ratings and splits.by == "user" else None
        saved_model = export.save(model, os.path.join(workdir, "export", "saved_model"), vocabulary)
        export.save_weights(model, os.path.join(workdir, "export", "weights.npz"))
        if is_ratings:
            splits.vocabulary.save(os.path.join(workdir, "export", "vocabulary.json"))
        logging.info("export:      %s (and weights.npz beside it)", saved_model)
    metrics_path = os.path.join(workdir, "metrics.json")
    write_json(metrics_path, metrics)
    logging.info("metrics:     %s", os.path.abspath(metrics_path))
    logging.info("TensorBoard: tensorboard --logdir %s", os.path.abspath(os.path.join(workdir, "summaries")))
