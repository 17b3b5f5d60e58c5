"""A recommender autoencoder (Kuchaiev & Ginsburg 2017, "Training Deep AutoEncoders for
Collaborative Filtering"): one row per user over the items, masked MSE on the observed ratings.

    python train.py --config=configs/recommender.py --config.data.path=ratings.csv \
        [--config.data.validation_path=held_out.csv]

`ratings.csv` holds `user,item,rating[,timestamp]` lines (MovieLens's ratings.csv as it is; a
header line is optional; MovieLens-1M's ratings.dat with --config.data.delimiter=::). The
item count is read from the file (layer_sizes[0] = 0).

The settings are NVIDIA's published Netflix-full recipe (DeepRecommender's README command and
its run.py / model.py), with one difference, our choice: the decoder is tied (the paper's
"constrained" autoencoder); NVIDIA's command trains an untied decoder, which
`--config.model.tied=False` gives. As in NVIDIA's code: items-512-512-1024 SELU, SELU on the
last decoder layer too (linear above 0, so ratings are not clipped), Xavier-uniform kernels,
zero biases, dropout 0.8 on the code only, one dense re-feeding step per batch (`--aug_step
1`), SGD with momentum 0.9 at learning rate 0.005, no weight decay, batches of 128 users,
12 epochs (the paper trains 102). NVIDIA's MultiStepLR halves the rate at epochs 24, 36, 48,
66 and 72, which a 12-epoch run never reaches: a constant rate is the same. Here the length is
in steps: 12 epochs of Netflix full's 477,412 training users in batches of 128 are 44,760 steps;
scale `train.num_steps` to your file (12 x users / 128). Not reproduced: NVIDIA trains in
float16 with float32 master weights (`--config.train.precision=mixed_float16` is the same idea).

`train.dense_refeeding='auto'` is NVIDIA's one re-feeding step on dense batches. On a catalog
wide enough for sparse batches (`data.ratings_batches='auto'`, docs/large-catalogs.md) it is 0,
logged: a re-fed example is a dense output over every item, whose cost follows the catalog.
`--config.train.dense_refeeding=1` keeps it, and dense batches, at any size.
"""

from rawtf_ae.config.defaults import default_config

NETFLIX_FULL_USERS = 477_412
EPOCHS = 12


def get_config():
    config = default_config()
    config.data.name = "ratings"
    config.data.path = ""  # required: the training ratings
    config.data.ratings_by = "user"  # one row per user: needed to recommend items to users
    config.data.unseen_ids = "skip"  # held-out ratings of users/items training never saw
    config.model.layer_sizes = (0, 512, 512, 1024)  # 0: the number of items in data.path
    config.model.activation = "selu"
    config.model.output_activation = "selu"  # NVIDIA's last decoder layer (no --skip_last_layer_nl)
    config.model.kernel_initializer = "glorot_uniform"  # torch's xavier_uniform
    config.model.tied = True  # our choice; NVIDIA's command: untied
    config.train.loss = "masked_mse"
    config.train.code_dropout = 0.8
    config.train.dense_refeeding = "auto"  # 1 on dense batches (NVIDIA's --aug_step 1), 0 on sparse
    config.train.optimizer = "sgd"
    config.train.momentum = 0.9
    config.train.learning_rate = 0.005
    config.train.schedule = "constant"
    config.train.batch_size = 128
    config.train.num_steps = EPOCHS * -(-NETFLIX_FULL_USERS // 128)  # 44,760
    config.train.eval_batch_size = 1_024
    return config
