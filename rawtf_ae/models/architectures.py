"""The model kinds a config can name, in one place: `model.kind` is read here and nowhere else.

`dense` is a `TiedAutoencoder` (`model.layer_sizes`), `conv` a `TiedConvAutoencoder`
(`model.image_shape`, `model.filters`, ...). Everything that depends on the kind goes through
this module: the number of layers, the input width, the variables' names, the tying flags,
building the model from a config, and rebuilding it from an export's `architecture()` dict.
"""

from __future__ import annotations

import math

import ml_collections
import tensorflow as tf

from rawtf_ae.models import activations
from rawtf_ae.models.conv import TiedConvAutoencoder
from rawtf_ae.models.dense import INPUT_NORMS, TiedAutoencoder

KINDS = ("dense", "conv")
_COMPUTE_DTYPES = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}


def activation_spec(value):
    """`"selu,selu,linear"` -> `["selu", "selu", "linear"]`; a single name or tuple passes through."""
    if isinstance(value, str) and "," in value:
        return [part.strip() for part in value.split(",")]
    return list(value) if isinstance(value, (list, tuple)) else value


def num_layers(model_config) -> int:
    """The number of encoder layers of `config.model`."""
    if model_config.kind == "conv":
        return len(model_config.filters)
    return len(model_config.layer_sizes) - 1


def widths(config) -> tuple:
    """The flat widths the layers see, input first (a conv layer's is its number of filters)."""
    if config.model.kind == "conv":
        return (input_width(config), *config.model.filters)
    return tuple(config.model.layer_sizes)


def input_width(config) -> int:
    """The flat input width the config's model expects (0: the data's, for dense models)."""
    if config.model.kind == "conv":
        return int(math.prod(config.model.image_shape))
    return int(config.model.layer_sizes[0])


def input_width_name(config) -> str:
    """What sets the input width, for error messages."""
    return "the product of `model.image_shape`" if config.model.kind == "conv" else "`model.layer_sizes[0]`"


def with_input_width(config, width: int):
    """`config` itself, or a copy whose `model.layer_sizes[0]` of 0 is set to `width`."""
    if config.model.kind != "dense" or config.model.layer_sizes[0] != 0:
        return config
    resolved = config.copy_and_resolve_references()
    resolved.model.layer_sizes = (int(width), *config.model.layer_sizes[1:])
    return resolved


def tied_flags(model_config) -> list[bool]:
    """One tying flag per layer from `model.tied` and `model.untied_layers` (read only here)."""
    untied = set(model_config.untied_layers)
    return [bool(model_config.tied) and i not in untied for i in range(num_layers(model_config))]


def variable_names(config) -> list[str]:
    """The trainable variables' names of the config's model, e.g. `encoder/layer_0/kernel`."""
    layer = "conv" if config.model.kind == "conv" else "layer"
    names = []
    for i, tied in enumerate(tied_flags(config.model)):
        names += [f"encoder/{layer}_{i}/kernel", f"encoder/{layer}_{i}/bias", f"decoder/{layer}_{i}/bias"]
        if not tied:
            names.append(f"decoder/{layer}_{i}/kernel")
    return names


def check(config) -> None:
    """Raises `ValueError` naming the key for a bad `config.model` (kind, widths, activations,
    untied layers), before anything is built."""
    model = config.model
    if model.kind not in KINDS:
        raise ValueError(f"`model.kind` is {model.kind!r}; expected one of {', '.join(KINDS)}.")
    try:
        sizes = widths(config)
    except TypeError:  # not a sequence of widths
        sizes = ()
    if (
        len(sizes) < 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes)
        or not all(s > 0 for s in sizes[1:])
    ):
        raise ValueError(
            f"`model.layer_sizes` ({sizes!r}) needs at least two positive integer widths (the first "
            "may be 0: the data's width)."
        )
    spec = activation_spec(model.activation)
    for name in spec if isinstance(spec, list) else [spec]:
        activations.get(name)
    if isinstance(spec, list) and len(spec) != len(sizes) - 1:
        raise ValueError(
            f"`model.activation` ({model.activation!r}) has {len(spec)} entries for "
            f"{len(sizes) - 1} encoder layers."
        )
    activations.get(model.output_activation)
    if model.input_norm not in INPUT_NORMS:
        raise ValueError(
            f"`model.input_norm` is {model.input_norm!r}; expected one of {', '.join(INPUT_NORMS)}."
        )
    if model.input_norm != "none" and model.kind != "dense":
        raise ValueError(f"`model.input_norm={model.input_norm!r}` needs model.kind='dense'.")
    if not isinstance(model.variational, bool):
        raise ValueError(f"`model.variational` must be True or False, got {model.variational!r}.")
    if model.variational:
        last = spec[-1] if isinstance(spec, list) else spec
        if model.kind != "dense" or activations.name_of(last) != "linear":
            raise ValueError(
                "`model.variational=True` needs model.kind='dense' and a linear code layer (the "
                f"Gaussian's mean), e.g. model.activation='tanh,linear'; got {model.activation!r}."
            )
        if config.train.loss != "multinomial":
            raise ValueError("`model.variational=True` trains with train.loss='multinomial' (Mult-VAE).")
    bad = [i for i in model.untied_layers if not isinstance(i, int) or not 0 <= i < len(sizes) - 1]
    if bad:
        raise ValueError(
            f"`model.untied_layers` ({model.untied_layers!r}) must be layer indices in [0, {len(sizes) - 1})."
        )


def compute_dtype(config: ml_collections.ConfigDict) -> tf.DType:
    """The dtype of the matrix multiplies for `config.train.precision` (variables stay float32)."""
    return _COMPUTE_DTYPES[config.train.precision]


def create_model(config: ml_collections.ConfigDict):
    """The model a config describes (`config.model`, seeded by `config.seed`).

    Variables are float32; `config.train.precision` sets the dtype of the matrix multiplies.
    Create it under `strategy.scope()` to mirror its variables.
    """
    model_config = config.model
    common = dict(
        activation=activation_spec(model_config.activation),
        output_activation=model_config.output_activation,
        tied=tied_flags(model_config),
        kernel_initializer=model_config.kernel_initializer,
        seed=config.seed,
        compute_dtype=compute_dtype(config),
    )
    if model_config.kind == "conv":
        return TiedConvAutoencoder(
            tuple(model_config.image_shape),
            tuple(model_config.filters),
            kernel_size=model_config.kernel_size,
            strides=model_config.strides,
            **common,
        )
    return TiedAutoencoder(
        list(model_config.layer_sizes),
        input_norm=model_config.input_norm,
        variational=model_config.variational,
        **common,
    )


def from_architecture(architecture: dict):
    """Builds an (untrained) model from `model.architecture()`'s dict (an export's record)."""
    arguments = dict(architecture)
    kind = arguments.pop("kind", "dense")
    if kind == "conv":
        return TiedConvAutoencoder(
            arguments.pop("image_shape"), arguments.pop("filters"), **arguments, seed=0
        )
    if kind == "dense":
        return TiedAutoencoder(arguments.pop("layer_sizes"), **arguments, seed=0)
    raise ValueError(f"Unknown model kind {kind!r}.")
