"""`validate(config)`: unknown keys and bad values rejected, each naming its key, before anything
is built or written. Each part checks its own keys (`losses.check`, `corruption.check`,
`batching.check_config`, ...); this module calls them in order.
"""

from __future__ import annotations

import ml_collections

from rawtf_ae.config.defaults import PRECISIONS, default_config
from rawtf_ae.data import sources
from rawtf_ae.models import activations, architectures
from rawtf_ae.optim import optimizers
from rawtf_ae.optim.optimizers import OPTIMIZERS
from rawtf_ae.optim.schedules import SCHEDULES
from rawtf_ae.recommender import batching, top_k
from rawtf_ae.training import corruption, distribute, losses, pretrain

# Kept here for existing imports; the model kinds live in `architectures`.
activation_spec = architectures.activation_spec
input_width = architectures.input_width
variable_names = architectures.variable_names
with_input_width = architectures.with_input_width


def flat_keys(config, prefix="") -> dict:
    """`{"train.num_steps": 10000, ...}`: every key of `config`, dotted."""
    keys = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys.update(flat_keys(value, f"{prefix}{key}."))
        else:
            keys[f"{prefix}{key}"] = value
    return keys


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")


def _one_of(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` is {value!r}; expected one of {', '.join(map(str, choices))}.")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises `ValueError` naming the key for unknown keys and bad values."""
    _check_keys(config)
    architectures.check(config)
    _one_of("data.name", config.data.name, sources.NAMES)
    for key in ("num_validation", "num_train", "split_seed"):
        _non_negative_int(f"data.{key}", config.data[key])
    _check_loss(config)
    _check_optimizer(config.train, config)
    _check_regularizers(config)
    pretrain.check(config)
    _check_runtime(config.train)
    if config.train.strategy == "parameter_server" and config.pretrain.steps_per_layer:
        raise ValueError(
            "train.strategy='parameter_server' does not pretrain (pretrain.steps_per_layer): "
            "pretrain on one machine, then train from its workdir."
        )


def _check_keys(config) -> None:
    known = flat_keys(default_config())
    given = flat_keys(config)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(
            f"Unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}."
        )
    missing = sorted(set(known) - set(given))
    if missing:
        raise ValueError(
            f"Config lacks key(s) {', '.join(missing)}; start from rawtf_ae.config.defaults.default_config()."
        )


def _check_loss(config) -> None:
    train = config.train
    _one_of("train.loss", train.loss, losses.NAMES)
    losses.check(train.loss, activations.name_of(config.model.output_activation))
    if (train.loss in losses.RATINGS) != (config.data.name == "ratings"):
        raise ValueError(
            f"`train.loss` is {train.loss!r} with data.name={config.data.name!r}: ratings data needs "
            "loss 'masked_mse' (only the observed ratings count) or 'multinomial' (implicit "
            "feedback), and only ratings data has a mask."
        )
    if train.loss == "multinomial" and train.contractive_weight:
        raise ValueError("`train.contractive_weight` does not work with loss 'multinomial'.")
    if config.data.name == "ratings":
        batching.check_config(config)
    _one_of("train.export_first_pass", train.export_first_pass, top_k.FIRST_PASSES)
    if train.export_first_pass == "int8" and train.precision in PRECISIONS:  # else named below
        output = activations.name_of(config.model.output_activation)
        reason = top_k.unsuited(output, train.precision.removeprefix("mixed_"))
        if reason:
            raise ValueError(
                f"`train.export_first_pass='int8'` cannot index this model: {reason}; use 'auto' or 'none'."
            )
    if not 0 <= train.code_dropout < 1:
        raise ValueError(f"`train.code_dropout` must be in [0, 1), got {train.code_dropout!r}.")
    if train.dense_refeeding != "auto":  # "auto": 1 on dense ratings batches, 0 on sparse ones
        _non_negative_int("train.dense_refeeding", train.dense_refeeding)
        if train.dense_refeeding and train.loss != "masked_mse":
            raise ValueError("`train.dense_refeeding` works with loss 'masked_mse' (ratings data) only.")


def _check_optimizer(train, config) -> None:
    for key in ("batch_size", "num_steps", "decay_steps"):
        _positive_int(f"train.{key}", train[key])
    _one_of("train.optimizer", train.optimizer, ("auto", *OPTIMIZERS))
    _one_of("train.schedule", train.schedule, SCHEDULES)
    if not train.learning_rate > 0:
        raise ValueError(f"`train.learning_rate` must be positive, got {train.learning_rate!r}.")
    multipliers = optimizers.parse_multipliers(train.learning_rate_multipliers)
    if multipliers:
        if train.precision == "mixed_float16":
            raise ValueError(
                "`train.learning_rate_multipliers` does not work with precision 'mixed_float16'."
            )
        optimizers.check_patterns(multipliers, variable_names(config))
    if not 0 <= train.momentum < 1:
        raise ValueError(f"`train.momentum` must be in [0, 1), got {train.momentum!r}.")
    if not train.clip_norm >= 0:
        raise ValueError(f"`train.clip_norm` must be >= 0 (0: off), got {train.clip_norm!r}.")
    if train.clip_norm and train.precision == "mixed_float16":
        # Its gradients are loss-scaled (and overflow on purpose): the norm would be meaningless.
        raise ValueError("`train.clip_norm` does not work with precision 'mixed_float16'.")
    if not 0 < train.decay_rate <= 1:
        raise ValueError(f"`train.decay_rate` must be in (0, 1], got {train.decay_rate!r}.")
    if train.warmup_steps < 0 or train.warmup_steps >= train.num_steps:
        raise ValueError(
            f"`train.warmup_steps` ({train.warmup_steps}) must be in [0, train.num_steps={train.num_steps})."
        )


def _check_regularizers(config) -> None:
    train = config.train
    corruption.check(train.corruption, train.corruption_level)
    if not train.kl_cap >= 0:
        raise ValueError(f"`train.kl_cap` must be >= 0, got {train.kl_cap!r}.")
    _non_negative_int("train.kl_anneal_steps", train.kl_anneal_steps)
    _non_negative_int("train.sampled_softmax", train.sampled_softmax)
    if not 0 <= train.sampling_power <= 2:
        raise ValueError(f"`train.sampling_power` must be in [0, 2], got {train.sampling_power!r}.")
    if train.sampled_softmax and train.loss != "multinomial":
        raise ValueError(f"`train.sampled_softmax` samples loss 'multinomial', got loss {train.loss!r}.")
    for key in ("weight_decay", "sparsity_weight", "contractive_weight"):
        if train[key] < 0:
            raise ValueError(f"`train.{key}` must be >= 0, got {train[key]!r}.")
    if not 0 < train.sparsity_target < 1:
        raise ValueError(f"`train.sparsity_target` must be in (0, 1), got {train.sparsity_target!r}.")
    code_activation = activation_spec(config.model.activation)
    code_activation = code_activation[-1] if isinstance(code_activation, list) else code_activation
    if train.sparsity_weight and code_activation != "sigmoid":
        raise ValueError(
            f"`train.sparsity_weight` needs codes in (0, 1): a sigmoid code layer, got {code_activation!r}."
        )


def _check_runtime(train) -> None:
    """Logging, checkpoints, evaluation, distribution and speed settings."""
    for key in (
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "eval_batch_size",
        "steps_per_loop",
    ):
        _positive_int(f"train.{key}", train[key])
    _one_of("train.strategy", train.strategy, distribute.STRATEGIES)
    _non_negative_int("train.ps_shards", train.ps_shards)
    _positive_int("train.ps_min_shard_bytes", train.ps_min_shard_bytes)
    if not isinstance(train.ps_synchronous, bool):
        raise ValueError(f"`train.ps_synchronous` must be True or False, got {train.ps_synchronous!r}.")
    if train.jit_compile not in ("auto", True, False):
        raise ValueError(f"`train.jit_compile` must be 'auto', True or False, got {train.jit_compile!r}.")
    if train.jit_compile is True and train.strategy == "parameter_server":
        raise ValueError(
            "`train.jit_compile=True` does not run with train.strategy='parameter_server': XLA cannot "
            "read the variables on the parameter servers; leave it 'auto' (off there)."
        )
    _one_of("train.precision", train.precision, PRECISIONS)
    _non_negative_int("train.logical_cpus", train.logical_cpus)
    _non_negative_int("train.early_stopping_evals", train.early_stopping_evals)
    if train.early_stopping_evals and not train.keep_best:
        raise ValueError("`train.early_stopping_evals` needs `train.keep_best=True` (it stops at the best).")
    if train.num_picture_examples < 0:
        raise ValueError(f"`train.num_picture_examples` must be >= 0, got {train.num_picture_examples}.")
