"""Every knob of a run, with its default: the schema that `configs/*.py` override.

`default_config()` is the built-in default job (a tied autoencoder on generated `curves`);
the comment above each key is its documentation (`--list_config` prints it). Validation is
`rawtf_ae.config.checks`. No TensorFlow here: config files load in a blink.
"""

from __future__ import annotations

import ml_collections

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def default_config() -> ml_collections.ConfigDict:
    """The default run: a tied 784-512-128-32 autoencoder on 20,000 generated curve images."""
    config = ml_collections.ConfigDict()
    # Seeds the initial weights, the generated data and the order of the training batches.
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    # dense (TiedAutoencoder, layer_sizes) | conv (TiedConvAutoencoder: image_shape, filters, ...)
    config.model.kind = "dense"
    # The input width, then each encoder layer's width; the decoder mirrors it. An input width
    # of 0 takes the data's width (e.g. the number of items of a ratings file).
    config.model.layer_sizes = (784, 512, 128, 32)
    # One name for every encoder layer, or one per layer: a tuple or a comma-separated string,
    # e.g. "selu,selu,linear" for a linear code. Decoder layers mirror the encoder's.
    config.model.activation = "selu,selu,linear"
    # The reconstruction's activation; `bce` needs "sigmoid".
    config.model.output_activation = "sigmoid"
    config.model.tied = True  # the decoder uses the encoder's kernels, transposed
    # dense only: "none", or "l2": each input row divided by its L2 norm before the first layer
    # (Mult-DAE/VAE for implicit feedback, Liang et al. 2018), in training and serving alike.
    config.model.input_norm = "none"
    # dense, loss multinomial: Mult-VAE (Liang et al. 2018): the code layer (linear) is a
    # Gaussian's mean, a second kernel gives its log-variance; training decodes a sample and adds
    # the KL divergence (train.kl_cap, train.kl_anneal_steps); serving decodes the mean.
    config.model.variational = False
    # Partial tying: with tied=True, these encoder layers (0-based) get their own decoder kernel.
    config.model.untied_layers = ()
    # "auto": LeCun normal for SELU layers, Glorot uniform otherwise.
    config.model.kernel_initializer = "auto"
    # conv only: each layer's filters, kernel size and stride ("SAME" padding), and the shape
    # the flat inputs are reshaped to. The decoder applies the same filters transposed.
    config.model.image_shape = (28, 28, 1)
    config.model.filters = (16, 32)
    config.model.kernel_size = 3
    config.model.strides = 2

    config.data = ml_collections.ConfigDict()
    config.data.name = "curves"  # curves | mnist | fashion_mnist | array | ratings
    # mnist/fashion_mnist: a Keras .npz, or a folder of IDX .gz files (a t10k pair alone is
    # split into train/validation); empty = download through tf.keras.datasets.
    # array: a .npy matrix, or a .npz with `x_train` (and optionally `x_validation`).
    # ratings: a user,item,rating[,timestamp] file (header optional) that defines the vocabularies.
    config.data.path = ""
    # ratings only: held-out ratings to evaluate on (empty: hold out `validation_fraction` of
    # data.path's ratings, seeded by split_seed), the field separator ("," "\t" "::"), one row
    # per "user" (over the items; needed to recommend) or per "item", and what to do with
    # held-out ratings whose user or item training never saw: "skip" (and count) or "error".
    config.data.validation_path = ""
    config.data.validation_fraction = 0.1
    # Without validation_path: "random" (a seeded random fraction of all ratings), "temporal"
    # (each user's latest ratings by the 4th field, a timestamp: how a recommender is used) or
    # "users" (strong generalization, Liang et al. 2018: held-out users, never trained on, each
    # shown 1 - evaluated_fraction of their items and ranked on the rest; seeded by split_seed;
    # rawtf_ae.recommender.implicit).
    config.data.ratings_split = "random"
    # "users" split: how many validation and test users to hold out, the fewest interactions a
    # user needs to be kept at all (vae_cf's 5), and the seeded fraction of each held-out user's
    # items that is evaluated (the rest is shown to the model, "fold-in").
    config.data.validation_users = 100
    config.data.test_users = 100
    config.data.min_interactions = 5
    config.data.evaluated_fraction = 0.2
    # Implicit feedback from ratings: keep ratings > binarize_threshold as interactions of value 1
    # and drop the rest (vae_cf: > 3.5 on MovieLens). A `user,item` file (no rating column) is
    # read as interactions of value 1 without it.
    config.data.binarize = False
    config.data.binarize_threshold = 3.5
    config.data.delimiter = ","
    config.data.ratings_by = "user"
    config.data.unseen_ids = "skip"
    # dense: [batch, items] batches (fastest for small catalogs); sparse: the step reads the tied
    # first kernel as rows, its cost follows the ratings (large catalogs; use lazy_adam);
    # auto: sparse for wide, sparse rows (rawtf_ae.recommender.batching, docs/large-catalogs.md).
    config.data.ratings_batches = "auto"
    # curves: how many to generate. Files: the first `num_train` training examples (0 = all).
    config.data.num_train = 20_000
    # curves: how many to generate. Files: how many to hold out for validation; with test files
    # too (MNIST's t10k-*, an .npz's x_test), the last `num_validation` training examples, and
    # the test files stay untouched for `--mode=eval --split=test` (0: validate on the test
    # files); with one pool of examples only, a seeded random `num_validation` of it.
    config.data.num_validation = 10_000
    # Seeds the permutation that splits a single pool of examples into train/validation.
    config.data.split_seed = 0

    config.pretrain = ml_collections.ConfigDict()
    # Greedy layer-wise pretraining before end-to-end training (0 = none): each encoder layer is
    # first trained as a one-layer tied (denoising, with train.corruption) autoencoder on the
    # codes of the layers below, with the train.* optimizer settings. Runs only when a workdir
    # starts from scratch; the assembled model is checkpointed as step 0.
    config.pretrain.steps_per_layer = 0
    # One corruption level per encoder layer while pretraining (the DeepLearningTutorials SdA
    # uses 0.1, 0.2, 0.3), of the kind train.corruption; empty: train.corruption_level for all.
    config.pretrain.corruption_levels = ()

    config.train = ml_collections.ConfigDict()
    # The global batch: split evenly over all replicas of the strategy (so it must divide).
    config.train.batch_size = 128
    config.train.num_steps = 10_000  # training steps in all (a resumed run trains up to it)
    # bce (sigmoid cross-entropy from logits) | mse | masked_mse (ratings: observed entries only)
    # | multinomial (implicit feedback, Liang et al. 2018: log-softmax of the logits over every
    # item, weighted by the user's row; evaluated by Recall@20/50 and NDCG@100, which keep_best
    # selects on: rawtf_ae.recommender.ranking; on sparse batches with train.sampled_softmax)
    config.train.loss = "bce"
    # Denoising (Vincent et al. 2010): none | gaussian (sigma = level) | masking | salt_and_pepper
    # (a fraction `level` of the inputs set to 0, or to 0/1) | dropout (masking, the kept inputs
    # scaled by 1 / (1 - level): Mult-DAE's 0.5 on its normalized input). The loss compares with
    # the clean input.
    config.train.corruption = "none"
    config.train.corruption_level = 0.0
    # L2 weight decay on the kernels only, never the biases: adds weight_decay * sum(W^2) / 2.
    config.train.weight_decay = 0.0
    # Sparsity: sparsity_weight * sum_j KL(sparsity_target || mean activation of code unit j);
    # needs codes in (0, 1) (a sigmoid code layer).
    config.train.sparsity_weight = 0.0
    config.train.sparsity_target = 0.05
    # Contractive autoencoder (Rifai et al. 2011): contractive_weight * ||d code / d input||_F^2.
    # bce/mse average over the d inputs where the papers sum: a paper's weight lambda is
    # lambda / d here (docs/configs-and-data.md, "The papers' scale"); sparsity_weight too.
    config.train.contractive_weight = 0.0
    # model.variational: the KL term's weight rises linearly from 0 to kl_cap over the first
    # kl_anneal_steps steps (vae_cf: 0.2 over 200,000 updates; 0 steps: kl_cap from the start).
    config.train.kl_cap = 0.2
    config.train.kl_anneal_steps = 200_000
    # Loss multinomial on sparse ratings batches (catalog scale): the softmax over all items is
    # estimated from the user's items and this many items drawn per step, shared by the batch,
    # from q ~ (training count + 1) ** sampling_power (0: uniform, 1: by frequency), corrected by
    # log q (rawtf_ae.training.sampled_softmax). 0: no sampling (dense batches: the full softmax).
    config.train.sampled_softmax = 0
    config.train.sampling_power = 0.0
    # Dropout on the code layer: the probability of dropping each code unit while training.
    config.train.code_dropout = 0.0
    # masked_mse: after each update, this many dense re-feeding updates (Kuchaiev & Ginsburg
    # 2017, section 2.3): f(x) becomes an example of its own, input and target. "auto": 1 on
    # dense ratings batches, 0 on sparse ones (their cost follows the ratings, a re-fed example's
    # the catalog), logged (rawtf_ae.recommender.batching.resolve_auto).
    config.train.dense_refeeding = ml_collections.FieldReference(0, field_type=object)
    # Clip each update's gradient to this global norm (0 = off; the re-fed updates too). It
    # stops the loss spikes of untied recommenders with re-feeding (docs/recommender.md).
    config.train.clip_norm = 0.0
    # adam | sgd | rmsprop | lazy_adam | lazy_adagrad (row-wise updates of sparse gradients, for
    # the sparse ratings step: rawtf_ae.optim.lazy) | auto (adam on dense batches, lazy_adam on
    # sparse ratings batches, logged: rawtf_ae.recommender.batching.resolve_auto)
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-3  # the peak rate of any schedule
    # Per-variable learning-rate multipliers (Caffe's lr_mult): "PATTERN=MULTIPLIER,...", each
    # pattern a regular expression searched in the variable names (encoder/layer_0/kernel,
    # decoder/layer_1/bias, ...), e.g. "bias=2" or "encoder/layer_0=0" (frozen). Each multiplier
    # gets its own optimizer (exact for Adam too). Not in greedy pretraining.
    config.train.learning_rate_multipliers = ""
    # sgd: momentum (0 = plain SGD) and Nesterov; rmsprop: momentum.
    config.train.momentum = 0.9
    config.train.nesterov = False
    # constant | cosine (to 0 at num_steps) | exponential (x decay_rate every decay_steps).
    config.train.schedule = "constant"
    config.train.warmup_steps = 0  # linear warm-up from 0, for any schedule
    config.train.decay_rate = 0.5
    config.train.decay_steps = 1_000
    config.train.log_every_steps = 500  # a progress line (and summaries)
    config.train.eval_every_steps = 2_000  # the validation loss
    # Keep the weights of the evaluation with the lowest validation loss (the highest NDCG@100
    # for loss multinomial) in checkpoints/best.npz:
    # the run ends with them (metrics, picture, export), and --mode=eval/export/encode use them.
    config.train.keep_best = False
    # Loss multinomial: popularity's and EASE's ranking metrics on the same held-out users, in
    # metrics.json (EASE eigendecomposes an items x items matrix: 12 s at 5,312 items here; it is
    # skipped above 20,000 items). Also for --mode=eval.
    config.train.ranking_baselines = True
    # With keep_best: stop after this many evaluations in a row without a new best (0: never).
    config.train.early_stopping_evals = 0
    config.train.checkpoint_every_steps = 2_000  # a checkpoint (also at the end and on SIGTERM)
    config.train.keep_checkpoints = 3  # the newest this many are kept
    config.train.eval_batch_size = 1_000  # batches of the evaluation (none dropped)
    # How many validation examples the reconstruction picture shows (originals over
    # reconstructions, in rows of 8).
    config.train.num_picture_examples = 32
    # At the end of training, export the model: `export/saved_model/` and `export/weights.npz`.
    config.train.export = True
    # The export's `recommend`: auto | int8 | none (rawtf_ae.recommender.top_k: an exact int8 first
    # pass from 131,072 items, XLA-compiled; TensorFlow Serving runs it with
    # --xla_cpu_compilation_enabled=true only, so "none" for a SavedModel without XLA).
    config.train.export_first_pass = "auto"

    # Distribution and speed (see rawtf_ae/training/distribute.py and docs/distributed.md).
    # default | one_device | mirrored | multi_worker_mirrored (cluster from TF_CONFIG) | tpu |
    # parameter_server (TF_CONFIG's chief; workers and parameter servers run --mode=server).
    config.train.strategy = "default"
    # parameter_server: the catalog's rows (first kernel, output bias, their optimizer slots) in
    # this many shards (0: one per parameter server), none below ps_min_shard_bytes (small
    # variables stay whole); ps_synchronous runs one step at a time (one device's run exactly).
    config.train.ps_shards = 0
    config.train.ps_min_shard_bytes = 256 << 10
    config.train.ps_synchronous = False
    # one_device/mirrored: comma-separated devices, e.g. "/gpu:0,/gpu:1" (empty: all GPUs, else CPUs).
    config.train.devices = ""
    # tpu: "local" on a TPU VM, or the TPU's name or grpc:// address.
    config.train.tpu = ""
    # Split the CPU into this many logical devices first (0: leave it), so that `mirrored` runs
    # with several replicas on any machine.
    config.train.logical_cpus = 0
    # Compile the step with XLA: "auto" (on for float32 off TPUs, where benchmarks/throughput.py
    # measured it fastest in every case), True, or False.
    # (A reference of any type, so that both True/False and "auto" can be set, also as flags.)
    config.train.jit_compile = ml_collections.FieldReference("auto", field_type=object)
    # float32 | mixed_bfloat16 (bf16 matmuls, float32 variables) | mixed_float16 (with loss scaling).
    config.train.precision = "float32"
    # At most this many steps per tf.function call (a tf.range loop inside it); logging,
    # evaluation and checkpoint intervals also end a call.
    config.train.steps_per_loop = 100
    return config


def get_config() -> ml_collections.ConfigDict:
    """`default_config()`, so that this file is itself a config file (`--config=.../config.py`)."""
    return default_config()
