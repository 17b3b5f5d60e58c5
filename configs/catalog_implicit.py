"""Implicit feedback at catalog scale: a tied Mult-DAE on sparse batches with a sampled softmax.

    python -m rawtf_ae.recommender.synthetic catalog.csv --users=100000 --items=1048576 \
        --ratings_per_user=100 --popularity_exponent=1.0
    python train.py --config=configs/catalog_implicit.py --config.data.path=catalog.csv

(any `user,item[,rating]` file: `--config.data.binarize=False` keeps every row of a file of
interactions.) `configs/movielens_implicit.py`'s protocol (ratings > 3.5 kept, held-out users
ranked over the whole catalog by Recall@20/50 and NDCG@100) with vae_cf's `[items-600-200]`
tied Mult-DAE, where a full softmax would read and write the whole first kernel on every step:
`data.ratings_batches='sparse'` reads the tied kernel's rows of each user's items, and
`train.sampled_softmax=4096` estimates the softmax's partition from the user's items and 4,096
items drawn per step by training frequency to the power 0.75, corrected by log q
(`rawtf_ae.training.sampled_softmax`); `lazy_adam` moves only the rows read. Sparse batches take
no weight decay. Evaluation scores the whole catalog (the full softmax), 100 users per batch.
EASE is skipped above 20,000 items (its items x items matrix); popularity is reported.
Measured: docs/large-catalogs.md, "Implicit feedback: the sampled softmax".
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import movielens_implicit  # noqa: E402


def get_config():
    config = movielens_implicit.get_config()
    config.data.validation_users = 1_000
    config.data.test_users = 1_000
    config.data.ratings_batches = "sparse"
    config.model.layer_sizes = (0, 600, 200)
    train = config.train
    train.sampled_softmax = 4_096
    train.sampling_power = 0.75
    train.optimizer = "lazy_adam"
    train.weight_decay = 0.0
    train.batch_size = 128
    train.num_steps = 2_000
    train.eval_every_steps = 500
    train.checkpoint_every_steps = 500
    train.eval_batch_size = 100
    return config
