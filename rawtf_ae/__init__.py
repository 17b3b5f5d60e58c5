"""rawtf_ae: tied-weights autoencoders in raw TensorFlow 2.

The public surface: the model, the losses, the data builders, and the training pieces
(`rawtf_ae.train`: `create_model`, `create_optimizer`, `make_train_step`, `make_train_loop`,
`make_evaluate`, `train_and_evaluate`).
"""

from rawtf_ae import activations, config, data, losses, train
from rawtf_ae.model import TiedAutoencoder

__all__ = ["TiedAutoencoder", "activations", "config", "data", "losses", "train"]
__version__ = "0.1.0"
