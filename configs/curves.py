"""The default job: a tied 784-512-128-32 autoencoder on 20,000 generated curve images.

    python train.py --config=configs/curves.py

Every key and its meaning: `rawtf_ae/config/defaults.py`.
"""

from rawtf_ae.config.defaults import default_config


def get_config():
    return default_config()
