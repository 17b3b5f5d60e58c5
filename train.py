"""Trains, evaluates, exports or encodes with a tied autoencoder.

    python train.py [--mode=train|eval|export|encode] [--workdir=DIR] [--config=configs/NAME.py]

Short on purpose: the command starts in `rawtf_ae/program/console.py` (a quiet console while
TensorFlow loads), the flags and modes live in `rawtf_ae/program/cli.py`, the work in
`rawtf_ae/program/train.py` and `rawtf_ae/program/modes.py`. Every knob is a config key
(`--config.train.num_steps=500`); see `rawtf_ae/config/defaults.py` for all of them.
Installed, `rawtf-ae` is the same command.
"""

import os

from rawtf_ae.program import console  # no TensorFlow yet

if __name__ == "__main__":
    console.main(os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "curves.py"))
