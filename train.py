"""Trains a tied autoencoder: `python train.py [--workdir=DIR] [--config=configs/NAME.py]`.

Short on purpose: flags in, one call to `rawtf_ae.train.train_and_evaluate`. Every knob is a
config key (`--config.train.num_steps=500`); see `rawtf_ae/config.py` for all of them.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rawtf_ae import train

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_HERE, "configs", "curves.py"), "Config file (Python, `get_config()`).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, summaries, the picture and metrics go; the same workdir "
    "resumes. Default: ./workdirs/<config file name>."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config_name = os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"])))[0]
    workdir = _WORKDIR.value or os.path.join("workdirs", config_name)
    logging.info("config: %s%s", config_name, "" if _WORKDIR.value else f" (default workdir {workdir})")
    try:
        train.train_and_evaluate(_CONFIG.value, workdir)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        logging.error("%s", e)
        sys.exit(f"train.py: error: {e}")


if __name__ == "__main__":
    flags.mark_flags_as_required([])
    app.run(main)
