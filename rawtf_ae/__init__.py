"""rawtf_ae: tied-weights autoencoders in raw TensorFlow 2.

The public surface, short and stable:

  TiedAutoencoder(layer_sizes, ...)      the model: `encode` `[b, in] -> [b, code]`, `decode`,
                                          `__call__` (reconstruction), `reconstruction_logits`
  reconstruction_loss(model, x, y, name)  per-example loss `[b]` ("bce" from logits, "mse")
  curves / train_dataset / eval_dataset   data: generated curves, resumable tf.data pipelines
  load_data(config.data, seed)            the config's data as `Splits` of `[n, width]` arrays
  make_train_step / make_train_loop       the per-replica step and the N-steps `tf.function`
  make_evaluate, train_and_evaluate       evaluation, and the whole training program
  save_model / load_model                 SavedModel with encode/decode/reconstruct signatures
  save_weights / load_weights             `.npz` weights for other frameworks
  Recommender(model, vocabulary)          top-K unrated items for a user's `{item: rating}`
  default_config()                        every config key with its default

Submodules: `model`, `losses`, `data`, `ratings`, `recommend`, `train`, `distribute`,
`export`, `workdir`, `config`.
"""

import os as _os
import sys as _sys


def _own_command() -> bool:
    """Whether this process is rawtf_ae's command line: `rawtf-ae`, or the clone's `train.py`."""
    script = _os.path.abspath(_sys.argv[0]) if _sys.argv and _sys.argv[0] else ""
    clone_script = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "train.py")
    return _os.path.basename(script) == "rawtf-ae" or script == clone_script


# The command line shows the run's own lines: TensorFlow's C++ start-up lines (the oneDNN
# banner, CUDA probes on CPU machines, the XLA service) are kept out, unless --verbose. They are
# written while TensorFlow loads, so standard error is closed for the imports below only.
# Code that imports rawtf_ae as a library is left alone.
_quiet = _own_command() and "--verbose" not in _sys.argv
if _quiet:
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _stderr, _devnull = _os.dup(2), _os.open(_os.devnull, _os.O_WRONLY)
    _os.dup2(_devnull, 2)
try:
    from rawtf_ae import (
        activations,
        config,
        data,
        distribute,
        export,
        losses,
        ratings,
        recommend,
        train,
        workdir,
    )
finally:
    if _quiet:
        _os.dup2(_stderr, 2)
        _os.close(_stderr)
        _os.close(_devnull)
from rawtf_ae.config import default_config  # noqa: E402
from rawtf_ae.data import curves, eval_dataset, train_dataset  # noqa: E402
from rawtf_ae.data import load as load_data  # noqa: E402
from rawtf_ae.export import load as load_model  # noqa: E402
from rawtf_ae.export import load_weights, save_weights  # noqa: E402
from rawtf_ae.export import save as save_model  # noqa: E402
from rawtf_ae.losses import reconstruction_loss  # noqa: E402
from rawtf_ae.model import TiedAutoencoder  # noqa: E402
from rawtf_ae.recommend import Recommender  # noqa: E402
from rawtf_ae.train import make_evaluate, make_train_loop, make_train_step, train_and_evaluate  # noqa: E402

__all__ = [
    "Recommender",
    "TiedAutoencoder",
    "activations",
    "config",
    "curves",
    "data",
    "default_config",
    "distribute",
    "eval_dataset",
    "export",
    "load_data",
    "load_model",
    "load_weights",
    "losses",
    "ratings",
    "recommend",
    "make_evaluate",
    "make_train_loop",
    "make_train_step",
    "reconstruction_loss",
    "save_model",
    "save_weights",
    "train",
    "train_and_evaluate",
    "train_dataset",
    "workdir",
]
__version__ = "0.1.0"
