"""The recommender autoencoder on a large catalog: sparse ratings batches, a row-wise optimizer.

    python -m rawtf_ae.recommender.synthetic catalog.csv --users=100000 --items=1048576 \
        --ratings_per_user=100 --popularity_exponent=0
    python train.py --config=configs/catalog_synthetic.py --config.data.path=catalog.csv

(`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` before `python`: huge pages, 1.13x on Linux for the
previous version of the step, no gain measured for this one; see docs/large-catalogs.md.
`python -m benchmarks.catalog_scale --items= --top_k_items=0 --end_to_end` makes the file,
runs this and reports the figures.)

`configs/recommender.py`'s network (items-512-512-1024 SELU, tied, dropout 0.8 on the code,
batches of 128 users) at catalog scale: `data.ratings_batches='sparse'` reads the tied first
kernel as rows, so a step costs in proportion to the batch's ratings, not the million items
(docs/large-catalogs.md), and `lazy_adam` updates only the rated items' rows of the kernel and
its moments. Two things of the Netflix recipe need every item of a row and are left out:
dense re-feeding, and SGD with momentum (whose update moves every row on every step); Adam
at 1e-3 stands in. 2,000 steps are 2.5 epochs of 100,000 users.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recommender  # noqa: E402


def get_config():
    config = recommender.get_config()
    config.data.ratings_batches = "sparse"
    config.train.dense_refeeding = 0
    config.train.optimizer = "lazy_adam"
    config.train.learning_rate = 1e-3
    config.train.num_steps = 2_000
    config.train.log_every_steps = 100
    config.train.eval_every_steps = 1_000
    config.train.checkpoint_every_steps = 1_000
    return config
