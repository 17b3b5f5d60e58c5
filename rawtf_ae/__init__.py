"""rawtf_ae: tied-weights autoencoders in raw TensorFlow 2.

`import rawtf_ae` is cheap and has no side effects on the process: no TensorFlow until a name
that needs it is used (PEP 562), no change to standard input, output or error. The public
surface, each name from the module that owns it:

  TiedAutoencoder, TiedConvAutoencoder, untie   the models (`rawtf_ae.models`)
  reconstruction_loss(model, x, y, name)        per-example loss `[b]` (`rawtf_ae.training.losses`)
  StepOptions, make_step, make_train_step       the per-replica step (`rawtf_ae.training.steps`)
  make_train_loop, make_evaluate                N steps in one `tf.function`; evaluation
  TrainState, create_train_state                model + optimizer + step (`rawtf_ae.training.state`)
  curves, load_data, train_dataset, eval_dataset   data (`rawtf_ae.data`)
  Recommender(model, vocabulary)                top-K unrated items (`rawtf_ae.recommender`)
  save_model / load_model                       SavedModel signatures (`rawtf_ae.serving`)
  save_weights / load_weights                   `.npz` weights (`rawtf_ae.models.weights_file`)
  default_config(), train_and_evaluate          the config and the whole program

The parts, in import order (docs/layout.md): `files` <- `models`, `optim` <- `recommender` <-
`data` <- `training`, `serving` <- `config` <- `program`.

The flat modules of earlier releases (`rawtf_ae.model`, `rawtf_ae.train`, `rawtf_ae.tflite`,
`python -m rawtf_ae.synthetic_ratings`, ...) still work for this release: each of their names
is forwarded to its new home with a `DeprecationWarning` that names it.
"""

import importlib as _importlib
import importlib.abc as _importlib_abc
import importlib.util as _importlib_util
import sys as _sys
import types as _types
import warnings as _warnings

__version__ = "0.1.0"

# name -> (owner module under rawtf_ae, attribute there)
_PUBLIC = {
    "TiedAutoencoder": ("models.dense", "TiedAutoencoder"),
    "TiedConvAutoencoder": ("models.conv", "TiedConvAutoencoder"),
    "untie": ("models.dense", "untie"),
    "save_weights": ("models.weights_file", "save_weights"),
    "load_weights": ("models.weights_file", "load_weights"),
    "curves": ("data.sources", "curves"),
    "load_data": ("data.sources", "load"),
    "train_dataset": ("data.pipelines", "train_dataset"),
    "eval_dataset": ("data.pipelines", "eval_dataset"),
    "reconstruction_loss": ("training.losses", "reconstruction_loss"),
    "StepOptions": ("training.steps", "StepOptions"),
    "make_step": ("training.steps", "make_step"),
    "make_train_step": ("training.steps", "make_train_step"),
    "make_train_loop": ("training.loops", "make_train_loop"),
    "make_evaluate": ("training.evaluation", "make_evaluate"),
    "TrainState": ("training.state", "TrainState"),
    "create_train_state": ("training.state", "create_train_state"),
    "Recommender": ("recommender.recommend", "Recommender"),
    "save_model": ("serving.saved_model", "save"),
    "load_model": ("serving.saved_model", "load"),
    "default_config": ("config.defaults", "default_config"),
    "train_and_evaluate": ("program.train", "train_and_evaluate"),
}
_PARTS = ("files", "models", "optim", "recommender", "data", "training", "serving", "config", "program")

__all__ = sorted(_PUBLIC) + list(_PARTS)


def __getattr__(name):
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        value = getattr(_importlib.import_module(f"{__name__}.{module}"), attribute)
    elif name in _PARTS or name in _MOVED:
        value = _importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


# ---------------------------------------------------------------------------------------------
# The flat modules of earlier releases: old module -> {new module: "names it took"}.

_MOVED = {
    "activations": {
        "models.activations": "Activation ActivationSpec NAMES get name_of",
    },
    "architectures": {
        "models.architectures": (
            "KINDS activation_spec compute_dtype create_model from_architecture "
            "input_width input_width_name num_layers tied_flags variable_names "
            "widths with_input_width"
        ),
        "models.conv": "TiedConvAutoencoder",
        "models.dense": "TiedAutoencoder",
    },
    "array_files": {
        "data.array_files": "MAX_ARRAY_BYTES as_matrix load_images read_array read_npz",
        "data.idx": "read_idx_pair",
    },
    "baselines": {
        "models.pca": "pca pca_mse pca_reconstruction",
        "recommender.baselines": "biased_mf biased_mf_predict biased_mf_rmse item_mean_rmse",
    },
    "checkpoints": {
        "files": "write_error_cause",
        "models.dense": "TiedAutoencoder",
        "models.row_ops": "read_without_copy",
        "training.checkpoints": (
            "Checkpointer WorkdirLock all_finite candidates check_fits "
            "checkpoint_mismatches remove_partial_writes restore_latest size_of"
        ),
    },
    "classifier": {
        "config.defaults": "default_config",
        "models.dense": "TiedAutoencoder",
        "training.classifier": "Classifier error_rate fine_tune",
    },
    "cli": {
        "program.cli": "MODES PREEMPTED_EXIT_STATUS define_flags run",
        "program.console": "main",
    },
    "config": {
        "config.checks": "flat_keys validate",
        "config.defaults": "PRECISIONS default_config get_config",
        "models.architectures": "activation_spec input_width variable_names with_input_width",
        "optim.optimizers": "OPTIMIZERS",
        "optim.schedules": "SCHEDULES",
    },
    "config_files": {
        "config.saved": "key_docs saved to_json",
    },
    "conv": {
        "models.base": "ActivationArg Autoencoder",
        "models.conv": "TiedConvAutoencoder",
    },
    "corruption": {
        "training.corruption": "NAMES check corrupt dropout noise_seed normal replica_rows uniform",
    },
    "data": {
        "data.idx": "read_idx read_idx_pair",
        "data.pipelines": "eval_dataset train_dataset",
        "data.sources": "NAMES Splits curves load",
    },
    "distribute": {
        "training.distribute": (
            "STRATEGIES create_strategy is_chief mirrored_strategy split_cpu "
            "worker_id"
        ),
    },
    "early_stopping": {
        "training.early_stopping": "BestSoFar Tracker",
    },
    "evaluation": {
        "training.evaluation": "make_evaluate ratings_metrics",
    },
    "export": {
        "models.architectures": "from_architecture",
        "models.dense": "TiedAutoencoder",
        "models.row_ops": "read_without_copy",
        "models.weights_file": "load_weights save_weights",
        "recommender.ratings": "Vocabulary",
        "serving.saved_model": "LoadedAutoencoder METADATA_FILE VOCABULARY_FILE load metadata save",
    },
    "idx": {
        "data.idx": "MAX_IDX_BYTES MAX_IDX_DIMENSIONS idx_file read_idx read_idx_pair",
    },
    "images": {
        "program.images": "code_scatter reconstruction_grid write_png",
    },
    "initializers": {
        "models.initializers": "Initializer NAMES fans get glorot_uniform he_normal lecun_normal",
    },
    "item_index": {
        "models.row_ops": "read_without_copy",
        "recommender.top_k": (
            "AUTO_ITEMS FIRST_PASSES ItemIndex MONOTONE check unsuited unsupported "
            "wanted"
        ),
    },
    "lazy_optimizers": {
        "optim.lazy": "LazyAdagrad LazyAdam UniqueRows applies_rows deduplicated",
    },
    "loops": {
        "training.loops": "make_train_loop train_steps",
    },
    "losses": {
        "training.losses": (
            "NAMES check contractive global_mean jacobian_norm kl_sparsity "
            "kl_sparsity_of_mean loss_from_codes masked_squared_error "
            "mean_squared_error reconstruction_loss sigmoid_cross_entropy"
        ),
    },
    "model": {
        "models.base": "ActivationArg Autoencoder",
        "models.dense": "TiedAutoencoder untie",
        "models.row_ops": "gather_rows read_without_copy row_dots row_ids sum_by_row",
    },
    "onnx_export": {
        "serving.onnx": "OPSET SIGNATURES run save",
    },
    "optimizers": {
        "optim.optimizers": (
            "GroupedOptimizer OPTIMIZERS check_patterns create_optimizer "
            "follows_update_count multiplier_of parse_multipliers reset_constant_rate "
            "variable_name"
        ),
        "optim.schedules": (
            "SCHEDULES ScaledSchedule TrainingStepSchedule WarmupSchedule "
            "learning_rate_at learning_rate_schedule scaled"
        ),
    },
    "outputs": {
        "program.outputs": "write_run_outputs",
    },
    "preemption": {
        "training.preemption": (
            "COLLECTIVE_ERRORS PeerLost Preempted StopSignal create_handler "
            "peer_lost"
        ),
    },
    "pretrain": {
        "models.dense": "TiedAutoencoder",
        "training.pretrain": "assemble layer_loss pretrain_layers",
    },
    "progress": {
        "program.progress": "Throughput format_duration read_previous_metrics",
    },
    "ratings": {
        "recommender.ratings": (
            "ORIENTATIONS RatingMatrix RatingSplits SPLITS UNSEEN_POLICIES "
            "Vocabulary build_splits check_config"
        ),
        "recommender.ratings_file": "MAX_FILE_BYTES Ratings read_ratings write_ratings",
    },
    "ratings_batches": {
        "recommender.batching": "CHOICES SPARSE_ABOVE check_config choose sparse_blockers uses_sparse",
        "recommender.sparse_gradients": "gradient_capacity gradients_to_apply padded_for_replicas",
        "recommender.sparse_noise": "entry_uniform mask_entries",
    },
    "ratings_file": {
        "recommender.ratings_file": "MAX_FILE_BYTES Ratings read_ratings write_ratings",
    },
    "recommend": {
        "recommender.ratings": "RatingMatrix Vocabulary",
        "recommender.recommend": "Recommender predict_sparse rating_row top_k_unrated",
    },
    "row_ops": {
        "models.row_ops": "gather_rows read_without_copy row_dots row_ids sum_by_row",
    },
    "state": {
        "program.restore": "check_vocabulary restore_model trained_input_width",
        "training.state": "TrainState create_train_state",
    },
    "steps": {
        "training.steps": (
            "Objective StepOptions global_sum is_sparse make_step make_train_step "
            "unpack uses_xla"
        ),
    },
    "synthetic_ratings": {
        "recommender.ratings_file": "write_ratings",
        "recommender.synthetic": "catalog_ratings main synthetic_ratings",
    },
    "tflite": {
        "serving.tflite": "SIGNATURES run save",
    },
    "train": {
        "files": "write_json",
        "models.architectures": "compute_dtype create_model tied_flags",
        "optim.optimizers": "create_optimizer",
        "optim.schedules": (
            "TrainingStepSchedule WarmupSchedule learning_rate_at "
            "learning_rate_schedule"
        ),
        "program.restore": "restore_model trained_input_width",
        "program.train": "train_and_evaluate",
        "training.evaluation": "make_evaluate ratings_metrics",
        "training.loops": "make_train_loop",
        "training.preemption": "PeerLost Preempted",
        "training.state": "create_train_state",
        "training.steps": "StepOptions make_step make_train_step uses_xla",
    },
    "workdir": {
        "program.modes": "SPLITS encode encode_examples evaluate export_workdir write_projector",
    },
}


def _home(old: str, name: str):
    """The module under rawtf_ae that owns `name` of the old flat module `old`, or None."""
    for new, names in _MOVED[old].items():
        if name in names.split():
            return new
    return None


def _moved_attribute(old: str, name: str):
    """`rawtf_ae.<old>.<name>` from its new home, with a `DeprecationWarning` naming it."""
    new = _home(old, name)
    if new is None:
        raise AttributeError(f"module 'rawtf_ae.{old}' has no attribute {name!r}")
    _warnings.warn(
        f"rawtf_ae.{old}.{name} moved to rawtf_ae.{new}.{name}; rawtf_ae.{old} goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(_importlib.import_module(f"{__name__}.{new}"), name)


class _MovedModule(_types.ModuleType):
    """An old flat module: each name is read from its new home, with a `DeprecationWarning`."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _moved_attribute(self.__name__.split(".", 1)[1], name)

    def __dir__(self):
        old = self.__name__.split(".", 1)[1]
        return sorted(n for names in _MOVED[old].values() for n in names.split())


class _MovedLoader(_importlib_abc.Loader):
    def create_module(self, spec):
        return _MovedModule(spec.name)

    def exec_module(self, module):
        pass

    def get_code(self, fullname):
        """For `python -m rawtf_ae.<old>`: the code of the new home's `__main__` module."""
        old = fullname.split(".", 1)[1]
        new = _MAIN.get(old)
        if new is None:
            raise ImportError(f"{fullname} is not a command; its names moved to {', '.join(_MOVED[old])}")
        # Shown by Python's default filters, which show DeprecationWarnings of __main__ only.
        _warnings.warn_explicit(
            f"python -m {fullname} moved to python -m rawtf_ae.{new}", DeprecationWarning, fullname, 0,
            module="__main__",
        )
        spec = _importlib_util.find_spec(f"{__name__}.{new}")
        return spec.loader.get_code(spec.name)


class _MovedFinder(_importlib_abc.MetaPathFinder):
    """Finds `rawtf_ae.<old>` for the old flat modules that are no package of their own now."""

    def find_spec(self, fullname, path, target=None):
        old = fullname[len(__name__) + 1 :] if fullname.startswith(__name__ + ".") else ""
        if old not in _MOVED or old in _PARTS:
            return None
        # A command's origin is its new file: `python -m` runs it as the script (sys.argv[0]).
        origin = _importlib_util.find_spec(f"{__name__}.{_MAIN[old]}").origin if old in _MAIN else None
        return _importlib_util.spec_from_loader(fullname, _MovedLoader(), origin=origin)


# The old modules that were commands (`python -m rawtf_ae.synthetic_ratings`).
_MAIN = {"synthetic_ratings": "recommender.synthetic"}
if not any(isinstance(finder, _MovedFinder) for finder in _sys.meta_path):
    _sys.meta_path.append(_MovedFinder())
