"""The training step: one frozen `StepOptions`, the objective as terms, the step built from them.

A step, per replica: corrupt the batch (denoising), encode, decode, and differentiate the
objective = reconstruction + penalties with one `tf.GradientTape`. A tied kernel is one
variable used by the encoder and (transposed) by the decoder, so the tape hands it the sum of
both paths' gradients. Then, with dense re-feeding, more updates on the step's own output.

Everything is divided so that the replicas' *summed* gradients (what Keras optimizers apply
under `tf.distribute`) are the gradients of the global batch's objective: N replicas take the
step one device takes with the whole batch (tested for every option).

`make_step(model, optimizer, StepOptions.from_config(config))` is what the trainer uses;
`make_train_step(model, optimizer, loss, global_batch_size, **options)` is the same step with
the options as keywords, for research code.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import tensorflow as tf

from rawtf_ae.models import row_ops
from rawtf_ae.optim import lazy, optimizers
from rawtf_ae.recommender import sparse_gradients, sparse_noise
from rawtf_ae.training import corruption, losses, multinomial, sampled_softmax, sparse_compiled


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """What a step does, made once from the config (`from_config`) and never changed.

    Attributes:
      loss: `"bce"` or `"mse"` for batches `[per_replica_batch, width]`; `"multinomial"` for
        implicit-feedback batches (`rawtf_ae.training.multinomial`: Mult-DAE/VAE; sparse ones:
        `sampled_softmax`), the input normalized (`input_norm`), then corrupted; `"masked_mse"` for
        ratings batches `{"inputs", "mask"}` (Kuchaiev & Ginsburg 2017: the squared error over
        the observed ratings, divided by their number in the global batch), or sparse ones
        `{"inputs": tf.SparseTensor}` (`rawtf_ae.recommender.batching`: the same loss, at a cost
        that follows the ratings; compiled, its ratings padded, by `sparse_compiled`).
      global_batch_size: the batch size summed over all replicas.
      jit_compile: compile with XLA: the whole step on one replica; across replicas only the
        loss and gradients, because the optimizer's all-reduce (`merge_call`) cannot be compiled;
        on sparse ratings batches the loss and gradients from the first kernel's gathered rows
        (`rawtf_ae.training.sparse_compiled`).
      corruption_kind, corruption_level: denoising (`rawtf_ae.training.corruption`), the noise
        seeded by `(seed, optimizer.iterations)`, drawn for the global batch (N replicas = one).
      seed: the run's seed, for the noise.
      weight_decay: L2 penalty `weight_decay / 2 * sum(W^2)` on the kernels only (never the
        biases), in every update, the re-fed ones too (as DeepRecommender's optimizer decays).
      sparsity_weight, sparsity_target: `sparsity_weight * sum_j KL(target || mean code_j)`
        (`losses.kl_sparsity_of_mean`; codes must lie in (0, 1), e.g. a sigmoid code layer).
        The mean is over the global batch (`losses.global_mean`, an all-reduce: with several
        replicas this step is not compiled with XLA).
      contractive_weight: `contractive_weight * ||d code / d input||_F^2` per example
        (`losses.contractive`, Rifai et al. 2011).
      code_dropout: the probability of dropping each code unit during training (Kuchaiev &
        Ginsburg 2017 drop 0.8 of the code layer); seeded like the corruption noise.
      dense_refeeding: after the update on the batch, this many more updates on dense
        re-fed examples (Kuchaiev & Ginsburg 2017, section 2.3): `y = f(x)` (held constant)
        becomes an example, input and target, every entry observed; the next uses `f(y)`.
        Needs `loss="masked_mse"`, and a learning-rate schedule that follows the training step
        (`optimizers.create_optimizer(..., step_counter)`), not the update count.
      clip_norm: clip each update's gradient to this global norm (0: off), the norm of the
        global batch's gradient (all-reduced across replicas first, so N replicas clip as one
        device does). Every update is clipped, the re-fed ones included.
      sparse_capacity: sparse ratings batches on several replicas: the most rows one
        replica's sparse gradient can touch (`ratings_batches.gradient_capacity`); each
        replica sends that many (`ratings_batches.padded_for_replicas`).
      kl_cap, kl_anneal_steps: a variational model (Mult-VAE): `rawtf_ae.training.multinomial`.
      sampled_softmax, sampling_power: loss multinomial on sparse batches: the items drawn per
        step and their proposal (`rawtf_ae.training.sampled_softmax`; `make_step`'s `proposal`).
    """

    loss: str
    global_batch_size: int
    jit_compile: bool = False
    corruption_kind: str = "none"
    corruption_level: float = 0.0
    seed: int = 0
    weight_decay: float = 0.0
    sparsity_weight: float = 0.0
    sparsity_target: float = 0.05
    contractive_weight: float = 0.0
    code_dropout: float = 0.0
    dense_refeeding: int = 0
    clip_norm: float = 0.0
    sparse_capacity: int = 0
    kl_cap: float = 0.2
    kl_anneal_steps: int = 200_000
    sampled_softmax: int = 0
    sampling_power: float = 0.0

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, **changes) -> "StepOptions":
        """The options `config.train` (and `config.seed`) set, with `changes` on top.

        E.g. `from_config(config, seed=config.seed + 1, sparsity_weight=0.0)` for a pretrained
        layer, whose code need not be logistic.
        """
        train = config.train
        if train.dense_refeeding == "auto":
            raise ValueError(
                "`train.dense_refeeding='auto'` depends on the batches: resolve it first with "
                "rawtf_ae.recommender.batching.resolve_auto(config, sparse) (train_and_evaluate does)."
            )
        options = cls(
            loss=train.loss,
            global_batch_size=train.batch_size,
            jit_compile=uses_xla(train),
            corruption_kind=train.corruption,
            corruption_level=train.corruption_level,
            seed=config.seed,
            weight_decay=train.weight_decay,
            sparsity_weight=train.sparsity_weight,
            sparsity_target=train.sparsity_target,
            contractive_weight=train.contractive_weight,
            code_dropout=train.code_dropout,
            dense_refeeding=train.dense_refeeding,
            clip_norm=train.clip_norm,
            kl_cap=train.kl_cap,
            kl_anneal_steps=train.kl_anneal_steps,
            sampled_softmax=train.sampled_softmax,
            sampling_power=train.sampling_power,
        )
        return dataclasses.replace(options, **changes)


def uses_xla(train_config) -> bool:
    """Whether the step is compiled with XLA: `train.jit_compile`, with "auto" resolved.

    "auto" compiles float32 steps, the fastest in every case of `benchmarks/throughput.py`
    (1.26-1.5x here), but not mixed precision (slower with XLA in `benchmarks/speed_options.py`;
    float16 loss scaling is not compiled), the contractive penalty (minutes to compile its
    `batch_jacobian`), nor TPUs (they compile everything anyway), nor parameter-server
    workers (XLA cannot read a variable on another task).
    """
    if train_config.jit_compile != "auto":
        return bool(train_config.jit_compile)
    compiles = train_config.strategy not in ("tpu", "parameter_server") and train_config.precision == "float32"
    return compiles and not train_config.contractive_weight


def unpack(batch):
    """A batch -> `(inputs, targets, mask)`. A tensor `[b, width]` is its own target (mask
    None); a ratings batch a dict with `inputs` and `mask` (observed) and, in evaluation,
    `targets`; a sparse one has `tf.SparseTensor` inputs (and targets), their entries the mask."""
    if isinstance(batch, dict):
        return batch["inputs"], batch.get("targets", batch["inputs"]), batch.get("mask")
    return batch, batch, None


def is_sparse(batch) -> bool:
    """Whether `batch` is a sparse ratings batch (`{"inputs": tf.SparseTensor, ...}`)."""
    return isinstance(batch, dict) and isinstance(batch["inputs"], tf.SparseTensor)


def global_sum(value):
    """`value` summed over the replicas of the current replica context (itself on one)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


class Objective:
    """The terms of a step's objective, one method each; call them while a tape records.

    `reconstruction` (dense, or masked for ratings), `penalties` (weight decay, sparsity,
    contractive), `refeeding` (the dense re-fed loss). Each replica's terms are divided so that
    the replicas' summed gradients are the global batch's.
    """

    def __init__(self, model, optimizer, options: StepOptions, proposal=None):
        self.model, self.optimizer, self.options = model, optimizer, options
        self.proposal = proposal  # the sampled softmax's (`sampled_softmax.Proposal`), or None
        self.decayed = list(model.kernels) + [k for k in model.decoder_kernels if k is not None]
        self.scales_loss = isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer)

    def noise_seed(self):
        return corruption.noise_seed(self.options.seed, self.optimizer.iterations)

    def corrupt(self, clean):
        """Denoising: the encoder sees the corrupted input, the loss compares with `clean` (loss
        multinomial: the noise on the normalized input, as Mult-DAE; encoded as it is)."""
        options, sparse = self.options, isinstance(clean, tf.SparseTensor)
        if options.loss == "multinomial":
            clean = self.model.normalize_sparse(clean) if sparse else self.model.encode_inputs(clean)
        if options.corruption_kind == "none":
            return clean
        if sparse:  # masking, dropout: config checks refuse other kinds
            rescale = options.corruption_kind == "dropout"
            return sparse_noise.mask_entries(clean, options.corruption_level, self.noise_seed(), rescale)
        return corruption.corrupt(clean, options.corruption_kind, options.corruption_level, self.noise_seed())

    def drop_codes(self, codes, stream: int):
        """Code dropout; `stream` 0 for the batch, k for the k-th re-fed update."""
        if not self.options.code_dropout:
            return codes
        seed = tf.random.experimental.stateless_fold_in(self.noise_seed(), stream, alg="philox")
        return corruption.dropout(codes, self.options.code_dropout, seed)

    def normalizer(self, batch):
        """What the reconstruction's sum is divided by: the global batch, or its observed count."""
        _, targets, mask = unpack(batch)
        if self.options.loss == "multinomial":  # a mean over users: nothing to count or all-reduce
            return tf.constant(float(self.options.global_batch_size))
        if isinstance(targets, tf.SparseTensor):  # its entries are the observed ratings
            count = tf.cast(tf.size(targets.values), tf.float32)
        elif mask is None:
            return tf.constant(float(self.options.global_batch_size))
        else:
            count = tf.reduce_sum(mask)
        # The masked loss is a mean over the global batch's observed ratings: count them all.
        return tf.maximum(global_sum(count), 1.0)

    def reconstruction(self, inputs, targets, mask, normalizer):
        """`(loss, codes, outputs)`: this replica's share of the global mean reconstruction loss."""
        model, options = self.model, self.options
        if isinstance(inputs, tf.SparseTensor):  # outputs at the observed entries only
            # Inputs and targets share their entries: a tied kernel's rows are read once, both ways.
            tied = model.tied_layers[0] and options.loss != "multinomial"  # sampled: its own gathers
            rows = model.first_kernel_rows(inputs.indices[:, 1]) if tied else None
            return (*self.sparse_reconstruction(inputs, targets, normalizer, (rows,)), None)
        if options.loss == "multinomial":  # `inputs` normalized already (`corrupt`)
            return (*multinomial.reconstruction(self, inputs, targets), None)
        if mask is not None:
            codes = model.encode(inputs)
            outputs = model.decode(self.drop_codes(codes, 0))
            loss = tf.reduce_sum(losses.masked_squared_error(targets, outputs, mask)) / normalizer
            return loss, codes, outputs
        if options.sparsity_weight or options.code_dropout:  # encode once for penalty and loss
            codes = model.encode(inputs)
            per_example = losses.loss_from_codes(model, self.drop_codes(codes, 0), targets, options.loss)
        else:
            codes = None
            per_example = losses.reconstruction_loss(model, inputs, targets, options.loss)
        # Keras optimizers sum the replicas' gradients: each divides by the *global* batch size.
        return (
            tf.nn.compute_average_loss(per_example, global_batch_size=options.global_batch_size),
            codes,
            None,
        )

    def sparse_reconstruction(self, inputs, targets, normalizer, rows=(None,), real=None):
        """`(loss, codes)` of sparse ratings batches: the squared error at `targets`' entries
        (loss multinomial: the sampled softmax, `sampled_softmax.reconstruction`).

        `rows`: the first kernel's rows at the entries' columns, for the encoder and the
        decoder (one tensor for a tied layer; None: read here); `real`: a bool per entry, False
        for the compiled step's padding (no error, no gradient, whatever its output)."""
        if self.options.loss == "multinomial":
            negatives = sampled_softmax.draw_negatives(self.proposal, targets, self.noise_seed(), real)
            return sampled_softmax.reconstruction(self, inputs, targets, negatives, real=real)
        codes = self.model.encode_sparse(inputs, rows[0])
        outputs = self.model.decode_at(self.drop_codes(codes, 0), targets, rows[-1])
        if real is not None:
            outputs = tf.where(real, outputs, tf.stop_gradient(targets.values))
        squared = tf.math.squared_difference(targets.values, outputs)
        return tf.reduce_sum(squared) / normalizer, codes

    def weight_decay(self):
        """This replica's share of `weight_decay / 2 * sum(W^2)` (the replicas' sum holds it once)."""
        penalty = (
            0.5 * self.options.weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in self.decayed])
        )
        return tf.nn.scale_regularization_loss(penalty)

    def penalties(self, objective, codes, inputs):
        """`objective` plus the configured penalties."""
        options = self.options
        if options.weight_decay:
            objective += self.weight_decay()
        if options.sparsity_weight:
            # Every replica adds the whole penalty of the global mean; `global_mean` passes each
            # replica the gradient of its own rows only, so the sum is the gradient once.
            mean = losses.global_mean(codes, options.global_batch_size)
            objective += options.sparsity_weight * losses.kl_sparsity_of_mean(mean, options.sparsity_target)
        if options.contractive_weight:
            objective += tf.nn.compute_average_loss(
                options.contractive_weight * losses.contractive(self.model, inputs),
                global_batch_size=options.global_batch_size,
            )
        return objective

    def refeeding(self, refed, stream: int):
        """`(objective, f(refed))` of a dense re-fed example `refed` `[b, width]` (held constant)."""
        outputs = self.model.decode(self.drop_codes(self.model.encode(refed), stream))
        # Every entry is observed: the global count is the global batch times the width.
        squared = tf.reduce_sum(tf.math.squared_difference(refed, outputs))
        objective = squared / float(self.options.global_batch_size * self.model.input_width)
        if self.options.weight_decay:
            objective += self.weight_decay()
        return objective, outputs

    def clipped(self, gradients):
        """`gradients` scaled so that the global batch's gradient has at most `clip_norm` norm.

        Each replica holds its share of the global gradient (the shares sum to it): the norm is
        taken of their all-reduced sum, and every share is scaled by the same factor.
        """
        if not self.options.clip_norm:
            return gradients
        # A sparse gradient's rows may repeat (one per rating): sum them before the norm. On
        # one device the sums are what is clipped and applied: the optimizer does not sum again.
        unique = lazy.deduplicated
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            gradients = [unique(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]
        summed = global_sum([g for g in gradients if g is not None])  # a sharded kernel's parts joined:
        present = [v for g, v in zip(gradients, self.model.trainable_variables) if g is not None]
        norm = tf.linalg.global_norm(row_ops.norm_terms(summed, present, unique))
        clipped = tf.clip_by_global_norm(gradients, self.options.clip_norm, use_norm=norm)[0]
        return [
            lazy.UniqueRows(c.values, c.indices, c.dense_shape) if isinstance(g, lazy.UniqueRows) else c
            for g, c in zip(gradients, clipped)
        ]

    def scaled(self, objective):
        # float16 gradients underflow: differentiate the scaled loss; the optimizer unscales.
        return self.optimizer.scale_loss(objective) if self.scales_loss else objective


def make_step(model, optimizer, options: StepOptions, proposal=None):
    """The per-replica step `batch -> scalar loss contribution` that `options` describe
    (`proposal`: the sampled softmax's on sparse multinomial batches, `sampled_softmax.Proposal`).

    Wrap it in `tf.function` to call it directly on one device, or pass it to
    `loops.make_train_loop`. The optimizer must already be built on `model.trainable_variables`.
    The returned loss is the reconstruction loss of the (first) update, without penalties.
    """
    if options.dense_refeeding and options.loss != "masked_mse":
        raise ValueError(f"`dense_refeeding` needs loss 'masked_mse', got {options.loss!r}.")
    if options.dense_refeeding and optimizers.follows_update_count(optimizer):
        raise ValueError(
            "With `dense_refeeding`, a learning-rate schedule must follow the training step, not "
            "the optimizer's update count (1 + dense_refeeding updates per step): create the "
            "optimizer with `create_optimizer(train_config, variables, step_counter)`."
        )
    if proposal is None and options.sampled_softmax:  # uniform, unless a power needs counts
        samples, power = options.sampled_softmax, options.sampling_power
        proposal = sampled_softmax.Proposal(model.input_width, samples, power)
    variables = model.trainable_variables
    objective = Objective(model, optimizer, options, proposal)

    def loss_and_gradients(batch, normalizer):
        """`(loss, gradients, outputs)`; `normalizer` divides the reconstruction's sum."""
        clean, targets, mask = unpack(batch)
        inputs = objective.corrupt(clean)
        with tf.GradientTape() as tape:
            loss, codes, outputs = objective.reconstruction(inputs, targets, mask, normalizer)
            total = objective.scaled(objective.penalties(loss, codes, inputs))
        # A tied kernel is one variable used twice: the tape sums both paths' gradients.
        return loss, tape.gradient(total, variables), outputs

    def refeed_gradients(refed, stream):
        """Gradients of the dense re-feeding loss on `refed`; `(gradients, f(refed))`."""
        refed = tf.stop_gradient(refed)
        with tf.GradientTape() as tape:
            total, outputs = objective.refeeding(refed, stream)
            total = objective.scaled(total)
        return tape.gradient(total, variables), outputs

    def run_step(batch, gradients_fn, refeed_fn):
        loss, gradients, outputs = gradients_fn(batch, objective.normalizer(batch))
        if is_sparse(batch):
            gradients = sparse_gradients.gradients_to_apply(gradients, optimizer, options.sparse_capacity)
        optimizer.apply_gradients(zip(objective.clipped(gradients), variables))
        for stream in range(1, options.dense_refeeding + 1):
            gradients, outputs = refeed_fn(outputs, stream)
            optimizer.apply_gradients(zip(objective.clipped(gradients), variables))
        return loss

    if not options.jit_compile:
        return lambda batch: run_step(batch, loss_and_gradients, refeed_gradients)
    compiled_step = tf.function(
        lambda batch: run_step(batch, loss_and_gradients, refeed_gradients), jit_compile=True
    )
    compiled_gradients = tf.function(loss_and_gradients, jit_compile=True)
    compiled_refeed = tf.function(refeed_gradients, jit_compile=True)
    compiled_sparse = sparse_compiled.make_gradients(objective, variables)

    def train_step(batch):
        context = tf.distribute.get_replica_context()
        one_replica = context is None or context.num_replicas_in_sync == 1
        if not one_replica and options.sparsity_weight:  # its all-reduce of the mean code cannot be compiled
            return run_step(batch, loss_and_gradients, refeed_gradients)
        if is_sparse(batch):  # padded to static shapes; the optimizer and the row gathers outside
            return run_step(batch, compiled_sparse, refeed_gradients)
        if one_replica:
            return compiled_step(batch)
        return run_step(batch, compiled_gradients, compiled_refeed)

    return train_step


def make_train_step(model, optimizer, loss: str, global_batch_size: int, **options):
    """`make_step` with the options as keywords (see `StepOptions` for each one)."""
    return make_step(model, optimizer, StepOptions(loss=loss, global_batch_size=global_batch_size, **options))
