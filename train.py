"""Trains a tied autoencoder: `python train.py [--workdir=DIR] [--config=configs/NAME.py]`.

Short on purpose: flags in, one call to `rawtf_ae.train.train_and_evaluate`. Every knob is a
config key (`--config.train.num_steps=500`); see `rawtf_ae/config.py` for all of them.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rawtf_ae import train


def _fail(message):
    logging.error("%s", message)
    sys.exit(f"train.py: error: {message}")


def _override_error(error):
    # ml_collections raises KeyError/AttributeError/TypeError for a bad `--config.KEY=VALUE`,
    # with the message quoted and escaped; unwrap it into one readable line.
    text = str(error).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    what = "unknown key " if isinstance(error, (KeyError, AttributeError)) else ""
    _fail(f"bad --config override: {what}{text}")


_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    # Loads the default config file at once and applies `--config.KEY=VALUE` from sys.argv.
    _CONFIG = config_flags.DEFINE_config_file(
        "config",
        os.path.join(_HERE, "configs", "curves.py"),
        "Config file (Python, `get_config()`).",
        lock_config=True,
    )
except (AttributeError, KeyError, TypeError, ValueError) as e:
    _override_error(e)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Where checkpoints, summaries, the picture and metrics go; the same workdir "
    "resumes. Default: ./workdirs/<config file name>.",
)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(e)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        _override_error(e)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    try:
        config.keys()  # a --config file that failed to load raises here
    except OSError as e:
        _fail(" ".join(str(e).split()))
    config_name = os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"])))[
        0
    ]
    workdir = _WORKDIR.value or os.path.join("workdirs", config_name)
    logging.info("config: %s%s", config_name, "" if _WORKDIR.value else f" (default workdir {workdir})")
    try:
        train.train_and_evaluate(config, workdir)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        _fail(e)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
