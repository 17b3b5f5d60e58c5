"""Trains, evaluates, exports or encodes with a tied autoencoder.

    python train.py [--mode=train|eval|export|encode] [--workdir=DIR] [--config=configs/NAME.py]

Short on purpose: the flags and modes live in `rawtf_ae/cli.py`, the work in `rawtf_ae.train`
and `rawtf_ae.workdir`. Every knob is a config key (`--config.train.num_steps=500`); see
`rawtf_ae/config.py` for all of them. Installed, `rawtf-ae` is the same command.
"""

import os

from rawtf_ae import cli  # quiets TensorFlow's start-up lines for this command (see rawtf_ae/__init__.py)

if __name__ == "__main__":
    cli.run(os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "curves.py"))
