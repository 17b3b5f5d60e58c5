"""The command line: `python train.py` in a checkout, `rawtf-ae` once installed.

    --mode=train   (default) train, or resume, in --workdir
    --mode=eval    newest checkpoint -> validation loss, reconstruction picture, code plots
    --mode=export  newest checkpoint -> SavedModel (export/saved_model) and export/weights.npz
    --mode=encode  newest checkpoint -> codes of a split (--split) in --output (.npy or .npz)
    --mode=server  a worker or parameter server of train.strategy=parameter_server (TF_CONFIG)

Errors a user can fix (bad flags, files, config values, checkpoints) end in one line and exit 1.
SIGTERM or Ctrl-C during training saves a checkpoint of the current step and exits with
status 143 (128 + SIGTERM, what schedulers expect of a preempted job; 130 for Ctrl-C), within
one step whatever train.steps_per_loop is; rerun to resume.
"""

import ast
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rawtf_ae import files
from rawtf_ae.config import defaults, saved
from rawtf_ae.models import architectures
from rawtf_ae.program import modes, train
from rawtf_ae.training import parameter_server, preemption

MODES = ("train", "eval", "export", "encode", "server")
PREEMPTED_EXIT_STATUS = 143
_CONFIG_ARGUMENT = "config"


def _fail(message) -> None:
    """One line, once: `train.py: error: ...`, and exit status 1."""
    sys.exit(f"{os.path.basename(sys.argv[0])}: error: {message}")


# The package's own folder: a clone named rawtf_ae/ holding the .venv must not pass
# TensorFlow's files (.../rawtf_ae/.venv/.../tensorflow/...) as the run's own.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class _OwnLines(std_logging.Filter):
    """Passes rawtf_ae's log lines, and anyone's warnings and errors; drops TensorFlow's info."""

    def filter(self, record) -> bool:
        own = os.path.abspath(record.pathname).startswith(_PACKAGE)
        return own or record.levelno >= std_logging.WARNING


def _quiet_console() -> None:
    """The run's own lines only: TensorFlow's Python-side info lines (checkpoint sharding,
    SavedModel signature notes, "Assets written to") are dropped unless --verbose."""
    logging.get_absl_handler().addFilter(_OwnLines())
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)


def _override_error(error) -> None:
    # ml_collections raises KeyError/AttributeError/TypeError for a bad `--config.KEY=VALUE`,
    # with the message quoted and escaped; unwrap it into one readable line.
    text = str(error).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    what = "unknown key " if isinstance(error, (KeyError, AttributeError)) else ""
    _fail(f"bad --config override: {what}{text}")


def define_flags(default_config_file: str):
    """Defines --config (loaded at once, with its `--config.KEY=VALUE` overrides) and the rest."""
    try:
        config = config_flags.DEFINE_config_file(
            _CONFIG_ARGUMENT, default_config_file, "Config file (Python, `get_config()`).", lock_config=True
        )
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        _override_error(e)
    flags.DEFINE_string(
        "workdir",
        None,
        "Where checkpoints, summaries, the picture, metrics and exports go; the same "
        "workdir resumes. Default: ./workdirs/<config file name>.",
    )
    flags.DEFINE_enum("mode", "train", MODES, "What to do with the workdir.")
    flags.DEFINE_boolean("verbose", False, "Also print TensorFlow's own log lines.")
    flags.DEFINE_boolean("tflite", False, "--mode=export: also write export/model.tflite (TensorFlow Lite).")
    flags.DEFINE_boolean(
        "onnx", False, "--mode=export: also write export/onnx/*.onnx (needs the onnx extra)."
    )
    flags.DEFINE_boolean(
        "list_config", False, "Print every config key with its default and doc, and the shipped configs."
    )
    flags.DEFINE_string("output", None, "--mode=encode: the .npy (codes) or .npz (codes, labels) to write.")
    flags.DEFINE_enum(
        "split",
        "validation",
        modes.SPLITS,
        "--mode=eval and --mode=encode: which examples (test: the test files).",
    )
    return config


_HELP_FLAGS = ("--help", "--helpfull", "--helpshort", "--helpxml", "-h", "-?")


def _config_file_argument(argv):
    """The `--config` file a command line names (`--config=F` or `--config F`), or None."""
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith(f"--{_CONFIG_ARGUMENT}="):
            return arg.split("=", 1)[1]
        if arg == f"--{_CONFIG_ARGUMENT}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_config_file(path: str) -> None:
    """Raises `ValueError` naming `path` (and the line) for a config file that cannot be one:
    missing, unreadable, a syntax error, or no `get_config`. Read, never run, here."""
    path = path.split(":", 1)[0] if not os.path.exists(path) and ":" in path else path  # FILE:ARG
    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else f"does not exist (in {os.getcwd()})"
        raise ValueError(f"--config file {path} {what}.")
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except SyntaxError as e:
        raise ValueError(f"--config file {path}: syntax error on line {e.lineno}: {e.msg}.") from None
    except (OSError, ValueError) as e:  # unreadable; NUL bytes or bad encoding
        raise ValueError(f"--config file {path} cannot be read as Python: {e}.") from None
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update(alias.asname or alias.name for alias in node.names)
    if "get_config" not in defined:
        raise ValueError(
            f"--config file {path} defines no get_config(): a config file is Python with a "
            "`def get_config():` that returns the ConfigDict (see configs/curves.py)."
        )


def _parse_flags(argv):
    given = _config_file_argument(argv)
    if given is not None:
        try:
            check_config_file(given)
        except ValueError as e:
            _fail(e)
    try:
        return flags.FLAGS(argv)
    except SystemExit:
        # absl exits with status 1 after printing the help a user asked for: that is no error.
        if any(arg in _HELP_FLAGS for arg in argv[1:]):
            print("\nEvery config key (--config.KEY=VALUE) with its default and doc: --list_config")
            sys.exit(0)
        raise
    except flags.Error as e:
        _fail(e)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        _override_error(e)
    except Exception as e:  # noqa: BLE001 (the config file's own code failed while loading)
        _fail(f"--config file {given}: {type(e).__name__}: {' '.join(str(e).split())}")


def _overrides(argv) -> list[str]:
    """The dotted keys the command line set (`--config.KEY=V`, `--noconfig.KEY`, a flagfile...).

    Asked of absl, which parsed them, so every spelling it accepts counts.
    """
    del argv  # absl knows what was given
    prefix = f"{_CONFIG_ARGUMENT}."
    return [
        name[len(prefix) :] for name in flags.FLAGS if name.startswith(prefix) and flags.FLAGS[name].present
    ]


def _config_file_given(argv) -> bool:
    del argv
    return bool(flags.FLAGS[_CONFIG_ARGUMENT].present)


def _get(config, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def _with_saved_config(config, run_dir: str, argv):
    """The workdir's saved config with the command line's overrides, when it has one.

    Without an explicit `--config=FILE`, a workdir that holds `config.json` (every trained one
    does) is evaluated, exported, encoded or resumed with the config it was trained with; the
    `--config.KEY=VALUE` overrides given still apply, except to `model.*`, whose change would
    make another architecture than the checkpoints hold (an error, before anything is read).
    """
    path = files.Workdir(run_dir).config
    if _config_file_given(argv) or not os.path.exists(path):
        return config
    trained = saved.saved(path)
    for key in _overrides(argv):
        value, before = _get(config, key), _get(trained, key)
        if key == "model.layer_sizes" and value and value[0] == 0:
            value = (before[0], *value[1:])  # 0: the data's width, which the run saved
        same = value == before
        if key == "model.activation":  # "selu,linear" and ("selu", "linear") are one spec
            same = architectures.activation_spec(value) == architectures.activation_spec(before)
        if key.startswith("model.") and not same:
            raise ValueError(
                f"--config.{key}={value!r} changes the architecture the run in {run_dir} was trained "
                f"with ({key}={before!r} in {path}); drop it, or train in another --workdir."
            )
        section, _, name = key.rpartition(".")
        (_get(trained, section) if section else trained)[name] = value
    given = ", ".join(f"--config.{key}" for key in _overrides(argv))
    logging.info("config: the run's own, %s%s", path, f" (with {given})" if given else "")
    return trained


def _list_config(default_config_file: str) -> None:
    """Prints every config key (`--config.KEY=...`) with its default and doc, then the configs."""
    for key, default, doc in saved.key_docs():
        print(f"--config.{key}={default!r}\n    {doc}")
    folder = os.path.dirname(os.path.abspath(default_config_file))
    shipped = [os.path.basename(default_config_file)]  # the installed command's own default
    if os.path.basename(folder) == "configs":  # a clone's configs/ folder
        shipped = sorted(name for name in os.listdir(folder) if name.endswith(".py"))
    print(f"\nConfig files in {folder} (--config=PATH):")
    for name in shipped:
        with open(os.path.join(folder, name)) as f:
            docstring = ast.get_docstring(ast.parse(f.read())) or ""
        print(f"  {name:28} {docstring.splitlines()[0] if docstring else ''}")


def _main(argv, config_flag, default_config_file):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if flags.FLAGS.list_config:
        _list_config(default_config_file)
        return
    if not flags.FLAGS.verbose:
        _quiet_console()
    if flags.FLAGS.mode == "server":  # no config or workdir: the chief sends the work
        try:
            parameter_server.serve()
        except ValueError as e:
            _fail(e)
        return
    config = config_flag.value
    try:
        config.keys()  # a --config file that failed to load raises here
    except OSError as e:
        path = config_flags.get_config_filename(flags.FLAGS[_CONFIG_ARGUMENT])
        if not os.path.exists(path):
            _fail(f"--config file {path} does not exist (in {os.getcwd()}).")
        _fail(" ".join(str(e).split()))
    config_file = config_flags.get_config_filename(flags.FLAGS[_CONFIG_ARGUMENT])
    config_name = os.path.splitext(os.path.basename(config_file))[0]
    if os.path.realpath(config_file) == os.path.realpath(defaults.__file__):
        config_name = "config"  # the packaged default's workdir keeps its name (workdirs/config)
    given = flags.FLAGS.workdir
    run_dir = given or os.path.join("workdirs", config_name)
    logging.info("config: %s%s", config_name, "" if given else f" (default workdir {run_dir})")
    mode = flags.FLAGS.mode
    try:
        # Absolute from here on: TensorFlow's checkpoint state and every join agree on it.
        run_dir = files.workdir_path(run_dir)
        config = _with_saved_config(config, run_dir, sys.argv[1:])
        if mode == "train":
            train.train_and_evaluate(config, run_dir)
            if config.train.strategy == "parameter_server":
                # Everything is written; TensorFlow's coordinator can wait at interpreter
                # shutdown on a worker that died during the run: leave without it.
                logging.flush()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
        elif mode == "eval":
            modes.evaluate(config, run_dir, flags.FLAGS.split)
        elif mode == "export":
            modes.export_workdir(config, run_dir, tflite=flags.FLAGS.tflite, onnx=flags.FLAGS.onnx)
        elif mode == "encode":
            if not flags.FLAGS.output:
                raise ValueError("--mode=encode needs --output=FILE.npy (or .npz for codes and labels).")
            modes.encode(config, run_dir, flags.FLAGS.output, flags.FLAGS.split)
    except (ValueError, FileNotFoundError, FloatingPointError, OSError, preemption.PeerLost) as e:
        _fail(e)
    except preemption.Preempted as e:
        logging.warning("%s", e)
        sys.exit(128 + e.signal_number)  # 143 for SIGTERM (what schedulers expect), 130 for Ctrl-C


def run(default_config_file: str) -> None:
    """Defines the flags and runs the mode they ask for."""
    config_flag = define_flags(default_config_file)
    app.run(lambda argv: _main(argv, config_flag, default_config_file), flags_parser=_parse_flags)

