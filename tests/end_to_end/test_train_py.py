"""`python train.py` end to end: flags, outputs, resume, and one-line errors for bad input."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, WORKDIR_OUTPUTS

pytestmark = pytest.mark.slow

_TINY = [
    "--config.model.layer_sizes=(784,32,8)",
    "--config.model.activation=selu,linear",
    "--config.data.num_train=500",
    "--config.data.num_validation=100",
    "--config.train.batch_size=50",
    "--config.train.log_every_steps=10",
    "--config.train.eval_every_steps=20",
    "--config.train.checkpoint_every_steps=20",
    "--config.train.eval_batch_size=50",
]


def _run(*args, cwd=REPO, timeout=240, env=None):
    env = env or dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_train_py_trains_resumes_and_writes_its_outputs(tmp_path):
    workdir = tmp_path / "run"
    first = _run(f"--workdir={workdir}", "--config.train.num_steps=20", *_TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "step 20/20: loss" in first.stderr and "examples/s, ETA" in first.stderr
    assert "1 replica(s), float32, XLA\n" in first.stderr  # jit_compile="auto" compiles float32 steps
    assert sorted(os.listdir(workdir)) == WORKDIR_OUTPUTS
    second = _run(
        f"--workdir={workdir}", "--config.train.num_steps=40", "--config.train.jit_compile=False", *_TINY
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 replica(s), float32\n" in second.stderr  # --config.train.jit_compile=False parsed
    assert "resumed from" in second.stderr and "ckpt-20 at step 20" in second.stderr
    with open(workdir / "metrics.json") as f:
        assert json.load(f)["step"] == 40


def test_default_workdir_is_named_after_the_config_logged_and_resumed(tmp_path):
    # The README's first command twice, from a folder other than the clone: the default
    # workdir `workdirs/curves` is relative, and the second run must resume, not start over.
    result = _run("--config.train.num_steps=10", *_TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "default workdir workdirs/curves" in result.stderr
    assert (tmp_path / "workdirs" / "curves" / "metrics.json").exists()
    # Only what changes is typed again: the workdir's saved config supplies the rest (the
    # default config's model would not fit the checkpoint).
    # Every spelling absl accepts counts as an override (`--noconfig.KEY` for a False).
    again = _run("--config.train.num_steps=20", "--noconfig.train.export", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "config: the run's own" in again.stderr
    assert "--config.train.export" in again.stderr and "--config.train.num_steps" in again.stderr
    assert "export:" not in again.stderr  # the override was applied
    assert "starting from scratch" not in again.stderr
    assert "ckpt-10 at step 10" in again.stderr
    with open(tmp_path / "workdirs" / "curves" / "metrics.json") as f:
        assert json.load(f)["step"] == 20


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.train.learnin_rate=0.1"], "learnin_rate"),
        (
            ["--config.data.name=array", "--config.data.path=/nonexistent/x.npy"],
            "train.py: error: Data file /nonexistent/x.npy (data.path) does not exist.",
        ),
        (["--config.train.optimizer=adagrad"], "train.py: error: `train.optimizer` is 'adagrad'"),
        (["--config=configs/nope.py"], "nope.py"),
    ],
)
def test_bad_flags_and_data_exit_nonzero_with_a_clear_message(tmp_path, args, message):
    result = _run(f"--workdir={tmp_path / 'run'}", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_console_shows_the_runs_own_lines_and_tensorflows_only_with_verbose(tmp_path):
    # As a user runs it: no TF_CPP_MIN_LOG_LEVEL in the environment.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    result = _run(f"--workdir={tmp_path / 'run'}", "--config.train.num_steps=20", *_TINY, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    own = {name for _, _, names in os.walk(os.path.join(REPO, "rawtf_ae")) for name in names if name.endswith(".py")}
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    for line in lines:  # absl's format: I1124 19:31:19.849334 140268270050176 train.py:77] ...
        found = re.match(r"^[IWEF]\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\] ", line)
        assert found and found.group(1) in own, f"not one of the run's own lines: {line!r}"
    assert any("step 20/20: loss" in line for line in lines) and len(lines) < 25
    verbose = _run(f"--workdir={tmp_path / 'run'}", "--verbose", env=env)
    assert verbose.returncode == 0 and "Sharding callback" in verbose.stderr
    failed = _run(f"--workdir={tmp_path / 'other'}", "--config.train.optimizer=adagrad", env=env)
    assert failed.returncode == 1
    assert failed.stderr.count("'adagrad'") == 1  # printed once, not also as an absl error line
    assert failed.stderr.strip().splitlines()[-1].startswith("train.py: error: `train.optimizer`")


def test_list_config_prints_every_key_with_its_default_and_doc_and_the_configs():
    from rawtf_ae.config.defaults import default_config

    result = _run("--list_config")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    for key, value in default_config().items():
        for name in value.keys() if hasattr(value, "keys") else [None]:
            dotted = f"{key}.{name}" if name else key
            found = [i for i, line in enumerate(lines) if line.startswith(f"--config.{dotted}=")]
            assert found, dotted
            assert lines[found[0] + 1].strip(), f"{dotted} has no doc line"
    assert "--config.train.num_steps=10000" in result.stdout
    assert "mnist_deep.py" in result.stdout and "recommender.py" in result.stdout


def test_helpfull_lists_the_flags_exits_0_and_points_to_the_config_keys():
    for flag in ("--helpfull", "--help"):
        result = _run(flag)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "--workdir" in result.stdout and "--config" in result.stdout
        assert result.stdout.strip().endswith("--list_config")


def test_readme_mirrored_command_runs_two_replicas_on_logical_cpus(tmp_path):
    result = _run(
        f"--workdir={tmp_path / 'run'}",
        "--config.train.strategy=mirrored",
        "--config.train.logical_cpus=2",
        "--config.train.num_steps=10",
        *_TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "strategy: mirrored, 2 replica(s)" in result.stderr
    with open(tmp_path / "run" / "metrics.json") as f:
        assert json.load(f)["replicas"] == 2


def test_multi_worker_without_tf_config_is_a_one_line_error(tmp_path):
    env_free = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "train.py"),
            f"--workdir={tmp_path / 'run'}",
            "--config.train.strategy=multi_worker_mirrored",
        ],
        env=dict(env_free, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "train.py: error: train.strategy='multi_worker_mirrored' needs the TF_CONFIG" in result.stderr
    assert not (tmp_path / "run").exists()


def test_installed_console_script_trains_with_the_packaged_default_config(tmp_path):
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        assert 'rawtf-ae = "rawtf_ae.program.console:main"' in f.read()
    script = "import sys; from rawtf_ae.program.console import main; sys.argv[0] = 'rawtf-ae'; main()"
    result = subprocess.run(
        [sys.executable, "-c", script, "--config.train.num_steps=10", *_TINY],
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "default workdir workdirs/config" in result.stderr
    assert (tmp_path / "workdirs" / "config" / "export" / "saved_model" / "saved_model.pb").exists()


def test_the_console_filter_knows_the_package_from_a_clone_named_rawtf_ae():
    # The README's clone is named rawtf_ae/ and holds the .venv: TensorFlow's files live under
    # .../rawtf_ae/.venv/..., which must not pass as the run's own lines.
    import logging

    from rawtf_ae.program import cli

    def passes(path, level=logging.INFO):
        return cli._OwnLines().filter(logging.LogRecord("x", level, path, 1, "message", None, None))

    assert passes(os.path.join(os.path.dirname(cli.__file__), "train.py"))
    tensorflow = "/home/u/rawtf_ae/.venv/lib/python3.11/site-packages/tensorflow/python/saver.py"
    assert not passes(tensorflow)
    assert passes(tensorflow, logging.WARNING)  # anyone's warnings still show
