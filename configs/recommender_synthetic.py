"""`recommender.py` sized for a small ratings file: the offline recipe of docs/recommender.md.

Smaller layers (128-64), code dropout 0.5, Adam at 1e-3, gradients clipped to norm 5 and a
linear output layer; the rest (SELU, tied, masked MSE, one dense re-feeding step) as in
`recommender.py`.

    python -m rawtf_ae.recommender.synthetic synthetic_ratings.csv
    python train.py --config=configs/recommender_synthetic.py --config.data.path=synthetic_ratings.csv

On a large catalog the same command trains at a cost that follows the ratings, not the items:
`data.ratings_batches='auto'` takes sparse batches for wide rows, and then `train.optimizer=
'auto'` is `lazy_adam` (Keras `adam` on dense batches) and `train.dense_refeeding='auto'` is 0
(1 on dense batches); each choice is logged (docs/large-catalogs.md).

The synthetic file holds ~52,000 ratings of 2,000 users on 500 items, generated from rank-5
user and item factors plus biases and noise (`rawtf_ae.recommender.synthetic`). 10% of
the ratings are held out; the run reports their RMSE next to the per-item-mean baseline.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recommender  # noqa: E402


def get_config():
    config = recommender.get_config()
    config.model.layer_sizes = (0, 128, 64)
    config.model.output_activation = "linear"
    config.model.kernel_initializer = "auto"  # LeCun normal for SELU
    config.train.code_dropout = 0.5
    config.train.optimizer = "auto"  # adam on dense batches, lazy_adam on sparse ones
    config.train.learning_rate = 1e-3
    # Re-feeding through an untied decoder blows up a gradient now and then (norms of 400-3,000
    # against a median of 1.4, then a loss spike): clipping keeps --config.model.tied=False stable.
    config.train.clip_norm = 5.0
    config.train.batch_size = 64
    config.train.num_steps = 3_000
    config.train.eval_every_steps = 1_000
    config.train.checkpoint_every_steps = 1_000
    config.train.log_every_steps = 500
    return config
