"""`import rawtf_ae` as a library sees it: cheap, without side effects, the public surface whole,
and the flat modules of earlier releases still working with a DeprecationWarning."""

import importlib
import json
import os
import subprocess
import sys
import warnings

import pytest

import rawtf_ae
from tests.conftest import REPO

# Today's rawtf_ae.__all__ before the layout change, and the names research code reached deep for.
EARLIER_ALL = [
    "Recommender", "TiedAutoencoder", "activations", "config", "curves", "data", "default_config",
    "distribute", "eval_dataset", "export", "load_data", "load_model", "load_weights", "losses",
    "ratings", "recommend", "make_evaluate", "make_train_loop", "make_train_step",
    "reconstruction_loss", "save_model", "save_weights", "train", "train_and_evaluate",
    "train_dataset", "workdir",
]  # fmt: skip
DEEP = ["TiedConvAutoencoder", "untie", "TrainState", "create_train_state", "StepOptions", "make_step"]


def _python(code, **kwargs):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300, **kwargs
    )


def test_importing_the_package_loads_no_tensorflow_and_leaves_the_descriptors_alone():
    code = """
import json, os, sys
before = {0: os.fstat(0).st_ino, 1: os.fstat(1).st_ino, 2: os.fstat(2).st_ino}
open_before = sorted(os.listdir("/proc/self/fd"))
import rawtf_ae
after = {0: os.fstat(0).st_ino, 1: os.fstat(1).st_ino, 2: os.fstat(2).st_ino}
print(json.dumps({"tf": "tensorflow" in sys.modules, "same": before == after,
                  "fds": open_before == sorted(os.listdir("/proc/self/fd")),
                  "argv_read": "TF_CPP_MIN_LOG_LEVEL" in os.environ}))
"""
    result = _python(code, env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"tf": False, "same": True, "fds": True, "argv_read": False}
    assert result.stderr == ""


def test_a_name_that_needs_tensorflow_loads_it_on_first_use():
    result = _python("import sys, rawtf_ae; rawtf_ae.TiedAutoencoder; print('tensorflow' in sys.modules)")
    assert result.returncode == 0 and result.stdout.split()[-1] == "True", result.stderr


def test_the_public_surface_stays():
    for name in EARLIER_ALL + DEEP:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert getattr(rawtf_ae, name) is not None, name
    for name in rawtf_ae.__all__:
        assert getattr(rawtf_ae, name) is not None, name
    from rawtf_ae.models.dense import TiedAutoencoder, untie
    from rawtf_ae.training.steps import make_step

    assert rawtf_ae.TiedAutoencoder is TiedAutoencoder and rawtf_ae.untie is untie
    assert rawtf_ae.make_step is make_step
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        rawtf_ae.nothing_here  # noqa: B018


def test_every_old_flat_name_reaches_its_new_home_with_a_warning_naming_it():
    for old, homes in rawtf_ae._MOVED.items():
        for new, names in homes.items():
            owner = importlib.import_module(f"rawtf_ae.{new}")
            for name in names.split():
                module = importlib.import_module(f"rawtf_ae.{old}")
                with pytest.warns(DeprecationWarning, match=f"rawtf_ae.{old}.{name} moved to rawtf_ae.{new}.{name}"):
                    value = getattr(module, name)
                assert value is getattr(owner, name), (old, name)


def test_the_deep_paths_the_docs_named_keep_working():
    with pytest.warns(DeprecationWarning, match="rawtf_ae.models.dense.untie"):
        from rawtf_ae.model import untie
    with pytest.warns(DeprecationWarning, match="rawtf_ae.serving.tflite.save"):
        from rawtf_ae.tflite import save  # noqa: F401
    with pytest.warns(DeprecationWarning, match="rawtf_ae.config.defaults.default_config"):
        from rawtf_ae.config import default_config  # noqa: F401
    with pytest.warns(DeprecationWarning, match="rawtf_ae.training.steps.make_train_step"):
        rawtf_ae.train.make_train_step  # noqa: B018
    assert untie is rawtf_ae.untie
    with pytest.raises(AttributeError):
        rawtf_ae.model.no_such_name  # noqa: B018


def test_python_m_of_an_old_command_runs_the_new_one_and_says_where_it_went(tmp_path):
    out = tmp_path / "r.csv"
    args = [str(out), "--users=20", "--items=10", "--ratings_per_user=3"]
    result = subprocess.run(
        [sys.executable, "-m", "rawtf_ae.synthetic_ratings", *args],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
        env={**os.environ, "PYTHONPATH": REPO},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "python -m rawtf_ae.synthetic_ratings moved to python -m rawtf_ae.recommender.synthetic" in result.stderr
    assert out.exists() and len(out.read_text().splitlines()) > 20


def test_the_synthetic_ratings_command_keeps_tensorflow_s_start_up_lines_out(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rawtf_ae.recommender.synthetic", "r.csv", "--users=20", "--items=10"],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, "PYTHONPATH": REPO},
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("wrote ") and (tmp_path / "r.csv").exists()
