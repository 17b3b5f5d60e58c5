"""Configs: every shipped config validates; unknown keys and bad values are errors."""

import glob
import importlib.util
import os

import pytest

from rawtf_ae.config import checks
from rawtf_ae.models import architectures
from tests.conftest import REPO, tiny_config


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))))
def test_every_shipped_config_is_valid(path):
    checks.validate(_load(path))


def test_shipped_configs_have_the_promised_models():
    tied = _load(os.path.join(REPO, "configs", "mnist_tied.py"))
    untied = _load(os.path.join(REPO, "configs", "mnist_untied.py"))
    deep = _load(os.path.join(REPO, "configs", "mnist_deep.py"))
    assert tuple(tied.model.layer_sizes) == (784, 392, 196) and tied.model.tied and tied.train.loss == "bce"
    assert not untied.model.tied and untied.model.layer_sizes == tied.model.layer_sizes
    assert tuple(deep.model.layer_sizes) == (784, 1000, 500, 250, 30)
    assert architectures.activation_spec(deep.model.activation)[-1] == "linear"


def test_activation_spec_accepts_names_lists_and_comma_separated_strings():
    assert architectures.activation_spec("selu") == "selu"
    assert architectures.activation_spec("selu, linear") == ["selu", "linear"]
    assert architectures.activation_spec(("relu", "linear")) == ["relu", "linear"]


_IMPLICIT = {
    "data.name": "ratings",
    "data.path": "r.csv",
    "data.ratings_split": "users",
    "data.binarize": True,
    "model.layer_sizes": (0, 16, 8),
    "model.output_activation": "linear",
    "model.input_norm": "l2",
    "train.loss": "multinomial",
}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.learnin_rate": 0.1}, "Unknown config key.*train.learnin_rate"),
        ({"train.optimizer": "adagrad"}, "`train.optimizer` is 'adagrad'"),
        ({"train.loss": "l1"}, "`train.loss` is 'l1'"),
        (
            {"train.loss": "bce", "model.output_activation": "linear"},
            "needs model.output_activation='sigmoid'",
        ),
        ({"train.batch_size": 0}, "`train.batch_size` must be a positive integer"),
        ({"train.num_steps": -5}, "`train.num_steps` must be a positive integer"),
        ({"train.learning_rate": -1.0}, "`train.learning_rate` must be positive"),
        ({"train.momentum": 1.0}, r"`train.momentum` must be in \[0, 1\)"),
        ({"train.schedule": "step"}, "`train.schedule` is 'step'"),
        ({"train.warmup_steps": 40}, "`train.warmup_steps` .* must be in"),
        ({"model.layer_sizes": (784,)}, "`model.layer_sizes`"),
        ({"model.activation": "selu,selu,linear"}, "has 3 entries for 2 encoder layers"),
        ({"model.activation": "swishy"}, "Unknown activation 'swishy'"),
        ({"data.name": "cifar"}, "`data.name` is 'cifar'"),
        ({"data.num_validation": -1}, "`data.num_validation` must be a non-negative integer"),
        # Implicit feedback's keys (rawtf_ae.recommender.implicit, ranking).
        (
            {**_IMPLICIT, "data.binarize_threshold": float("nan")},
            "`data.binarize_threshold` must be a finite",
        ),
        ({**_IMPLICIT, "data.validation_users": 0}, "`data.validation_users` must be an integer >= 1"),
        ({**_IMPLICIT, "data.test_users": -1}, "`data.test_users` must be an integer >= 0"),
        ({**_IMPLICIT, "data.min_interactions": 0}, "`data.min_interactions` must be an integer >= 1"),
        ({**_IMPLICIT, "data.evaluated_fraction": 1.0}, r"`data.evaluated_fraction` must be in \(0, 1\)"),
        ({**_IMPLICIT, "data.validation_path": "v.csv"}, "holds out users of data.path itself"),
        (
            {**_IMPLICIT, "data.ratings_by": "item"},
            "`data.ratings_split='users'` needs data.ratings_by='user'",
        ),
        ({**_IMPLICIT, "model.input_norm": "l1"}, "`model.input_norm` is 'l1'"),
        ({"model.input_norm": "l2", "model.kind": "conv"}, "needs model.kind='dense'"),
        ({"train.loss": "multinomial"}, "ratings data needs loss 'masked_mse' .* or 'multinomial'"),
        (
            {**_IMPLICIT, "train.contractive_weight": 0.1},
            "`train.contractive_weight` does not work with loss 'multinomial'",
        ),
        ({**_IMPLICIT, "data.ratings_batches": "sparse"}, "train.loss='multinomial' without train.sampled_softmax"),
        (
            {**_IMPLICIT, "train.corruption": "dropout", "train.corruption_level": 1.0},
            "a fraction for dropout",
        ),
    ],
)
def test_bad_config_values_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        checks.validate(tiny_config(**overrides))


def test_untied_layers_ties_only_the_other_layers():
    from rawtf_ae.models import architectures

    model = architectures.create_model(tiny_config(**{"model.untied_layers": (1,)}))
    assert model.tied_layers == (True, False)
    assert architectures.create_model(tiny_config(**{"model.tied": False})).tied_layers == (False, False)
    with pytest.raises(
        ValueError, match=r"`model.untied_layers` \(\(2,\)\) must be layer indices in \[0, 2\)"
    ):
        checks.validate(tiny_config(**{"model.untied_layers": (2,)}))


def test_jit_compile_auto_compiles_float32_steps_only_where_measured_fastest():
    from rawtf_ae.training import steps

    assert steps.uses_xla(tiny_config().train)  # the default: "auto", float32
    for overrides in (
        {"train.precision": "mixed_bfloat16"},
        {"train.precision": "mixed_float16"},
        {"train.contractive_weight": 0.1},
        {"train.strategy": "tpu"},
        {"train.jit_compile": False},
    ):
        assert not steps.uses_xla(tiny_config(**overrides).train), overrides
    assert steps.uses_xla(
        tiny_config(**{"train.jit_compile": True, "train.precision": "mixed_bfloat16"}).train
    )
    with pytest.raises(ValueError, match="train.jit_compile"):
        checks.validate(tiny_config(**{"train.jit_compile": "yes"}))


def test_a_saved_config_reads_back_with_its_types_and_bad_ones_are_clear_errors(tmp_path):
    from rawtf_ae.config import saved
    from tests.conftest import tiny_config

    config = tiny_config(**{"model.untied_layers": (1,), "train.jit_compile": False})
    path = tmp_path / "config.json"
    path.write_text(config.to_json_best_effort(indent=2))
    read_back = saved.saved(str(path))
    assert read_back.model.layer_sizes == (784, 64, 16) and read_back.model.untied_layers == (1,)
    assert read_back.train.jit_compile is False and read_back.train.num_steps == 40
    checks.validate(read_back)
    assert read_back.to_dict() == config.to_dict()
    path.write_text('{"model": {"layer_sizes": [784, 8], "widths": 3}}')
    with pytest.raises(ValueError, match=r"config\.json has the unknown key model\.widths"):
        saved.saved(str(path))
    path.write_text('{"model": {"layer_sizes": [784, 8')
    with pytest.raises(ValueError, match=r"config\.json is damaged"):
        saved.saved(str(path))
