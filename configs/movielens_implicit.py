"""Implicit feedback: a tied Mult-DAE on MovieLens "latest-small" binarized (Liang et al. 2018).

    ../shared/data/movielens-small/make_ratings_csv.sh ratings.csv
    python train.py --config=configs/movielens_implicit.py --config.data.path=ratings.csv

The protocol of dawenl/vae_cf: ratings > 3.5 kept as interactions of value 1 (the rest
dropped), users with fewer than 5 dropped, and *strong generalization*: 100 validation and 100
test users (seeded by data.split_seed) are never trained on; each is shown 80% of their items
(fold-in) and the model ranks the whole catalog, the fold-in items excluded, against the other
20%: Recall@20, Recall@50 and NDCG@100 (`rawtf_ae.recommender.ranking`). The catalog is the
items the training users have. The run's metrics.json carries the same metrics for popularity
and EASE (Steck 2019, its L2 weight chosen on the validation users) on the same users.

The model is a Mult-DAE, `[items-200]` (vae_cf's `[items-600-200]` scored lower on the
validation users here) with a tanh code and logits out, the decoder *tied* to the encoder's
kernel (`--config.model.tied=False` for vae_cf's untied one, twice the parameters): each input
row L2-normalized, dropout 0.5 on it, the multinomial log-likelihood of the user's items under
a softmax over the catalog, weight decay 2 x vae_cf's `lam = 0.01 / batch` (vae_cf adds `2 *
lam * |W|^2 / 2`), Adam 1e-3. vae_cf trains 200 epochs and keeps the epoch of the best
validation NDCG@100: here 1,000 steps of 100 users (about 200 epochs of the 459 training
users), evaluated every 25 steps, the best kept (`train.keep_best`).
`--mode=eval --split=test` reports the test users once (docs/recommender.md, "Implicit feedback").
"""

from rawtf_ae.config.defaults import default_config


def get_config():
    config = default_config()
    config.data.name = "ratings"
    config.data.path = ""  # give --config.data.path=ratings.csv
    config.data.binarize = True
    config.data.binarize_threshold = 3.5
    config.data.ratings_split = "users"
    config.data.validation_users = 100
    config.data.test_users = 100
    config.data.min_interactions = 5
    config.data.evaluated_fraction = 0.2
    config.data.ratings_batches = "dense"  # the softmax is over every item anyway

    config.model.layer_sizes = (0, 200)  # 0: the catalog's width; [I-600-200] scored lower on validation
    config.model.activation = "tanh"
    config.model.output_activation = "linear"  # logits: the softmax is in the loss
    config.model.input_norm = "l2"
    config.model.tied = True

    train = config.train
    train.loss = "multinomial"
    train.corruption = "dropout"
    train.corruption_level = 0.5
    train.batch_size = 100
    train.weight_decay = 2 * 0.01 / train.batch_size
    train.optimizer = "adam"
    train.learning_rate = 1e-3
    train.num_steps = 1_000
    train.eval_every_steps = 25
    train.log_every_steps = 100
    train.checkpoint_every_steps = 500
    train.keep_best = True
    train.eval_batch_size = 1_000
    train.num_picture_examples = 0
    return config
