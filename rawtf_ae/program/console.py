"""The command's entry point: `python train.py` and `rawtf-ae` start here, before TensorFlow.

TensorFlow's C++ start-up lines (the oneDNN banner, CUDA probes on CPU machines, the XLA
service) are written to standard error while it loads. The command shows the run's own lines
only, so `main` closes standard error for the import of the program (which imports TensorFlow)
and opens it again right after, unless `--verbose` is given (`files.quiet_standard_error`). This is the program's business:
`import rawtf_ae` and its parts leave the process's descriptors alone. No TensorFlow here.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from rawtf_ae import files

# The package's own default config (`rawtf-ae` without --config): rawtf_ae/config/defaults.py.
PACKAGE_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "defaults.py"
)


def main(default_config_file: Optional[str] = None, argv: Optional[list] = None) -> None:
    """Runs the command: the flags of `argv` (default `sys.argv`), the mode they ask for.

    Args:
      default_config_file: the config file without `--config` (a clone's `configs/curves.py`;
        the installed command's own `rawtf_ae/config/defaults.py` when None).
    """
    argv = sys.argv if argv is None else argv
    with files.quiet_standard_error("--verbose" not in argv):
        from rawtf_ae.program import cli  # noqa: PLC0415 (TensorFlow loads here)
    cli.run(default_config_file or PACKAGE_DEFAULT_CONFIG)
