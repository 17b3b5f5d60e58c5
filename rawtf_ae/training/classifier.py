"""Supervised fine-tuning of a (pretrained) encoder: a softmax layer on the code, trained on labels.

The stacked denoising autoencoder classifier of Vincent et al. (2010): pretrain the encoder
layer by layer without labels (`rawtf_ae.training.pretrain`), put a softmax layer on top, and train the
whole encoder and the softmax layer on the labels. The encoder's own variables are trained in
place (no copy); the decoder is not used.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from rawtf_ae.data import pipelines
from rawtf_ae.models import initializers
from rawtf_ae.models.dense import TiedAutoencoder
from rawtf_ae.training import loops, state


class Classifier(tf.Module):
    """`logits = encode(x) @ kernel + bias`, `[batch, layer_sizes[0]] -> [batch, num_classes]`."""

    def __init__(self, encoder: TiedAutoencoder, num_classes: int, seed: int = 0):
        super().__init__(name="classifier")
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be at least 2, got {num_classes}.")
        self.encoder = encoder
        shape = (encoder.code_width, num_classes)
        self.kernel = tf.Variable(
            initializers.glorot_uniform(shape, tf.constant([seed, 99], tf.int32)), name="kernel"
        )
        self.bias = tf.Variable(tf.zeros([num_classes]), name="bias")

    @property
    def fine_tuned_variables(self) -> list:
        """The encoder's kernels and biases plus the softmax layer (not the decoder)."""
        return [*self.encoder.kernels, *self.encoder.encoder_biases, self.kernel, self.bias]

    def __call__(self, x) -> tf.Tensor:
        return tf.matmul(self.encoder.encode(x), self.kernel) + self.bias


def fine_tune(
    classifier: Classifier,
    examples: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float = 1e-3,
    seed: int = 0,
    strategy: tf.distribute.Strategy = None,
    validation: tuple = None,
    eval_every: int = 500,
    patience: int = 0,
) -> float:
    """Trains `classifier` on `(examples [n, width], labels [n])` with Adam; returns the mean loss.

    With `validation=(examples, labels)`, the error rate on it is measured every `eval_every`
    steps and at the end; the classifier ends with the weights of the lowest one (model
    selection as in Vincent et al. 2010 and the DeepLearningTutorials), and with `patience`
    > 0 training stops after that many measurements in a row without a new lowest.

    The steps run through the library's N-step loop (`loops.make_train_loop`) on a
    `state.create_train_state` of the classifier, like every other training in rawtf_ae; the
    returned loss is the mean over the steps.

    Args:
      classifier: created under `strategy.scope()` when a strategy is given.
      steps, batch_size: the number of steps and the global batch size (it must divide evenly
        over the strategy's replicas).
      strategy: e.g. a `MirroredStrategy`; each replica trains on its slice of every global
        batch (the same batches as on one device) and the loss is averaged over the global
        batch, so replicas match one device. Use a strategy of its own (see
        `rawtf_ae.training.distribute.mirrored_strategy`) if another model trained under the same one.
    """
    if len(examples) != len(labels):
        raise ValueError(f"{len(examples)} examples but {len(labels)} labels.")
    strategy = strategy or tf.distribute.get_strategy()
    if batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"`batch_size` ({batch_size}) must divide evenly over {strategy.num_replicas_in_sync} replicas."
        )
    variables = classifier.fine_tuned_variables
    trained = state.create_train_state(
        None,
        strategy,
        model=classifier,
        variables=variables,
        make_optimizer=lambda step: tf.keras.optimizers.Adam(float(learning_rate)),
    )
    optimizer = trained.optimizer
    paired = np.concatenate([examples, labels[:, None].astype(np.float32)], axis=1)
    dataset = strategy.distribute_datasets_from_function(
        lambda context: pipelines.train_dataset(paired, batch_size, seed, input_context=context)
    )

    def step(batch):
        x, y = batch[:, :-1], tf.cast(batch[:, -1], tf.int32)
        with tf.GradientTape() as tape:
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(y, classifier(x))
            # Each replica divides by the global batch: the replicas' summed gradients are the mean.
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    loop = loops.make_train_loop(step, trained.step, strategy)
    iterator = iter(dataset)
    if validation is None:
        return float(loop(iterator, tf.constant(steps, tf.int64)))
    return _fine_tune_selecting(classifier, loop, iterator, steps, validation, eval_every, patience)


def _fine_tune_selecting(classifier, loop, iterator, steps, validation, eval_every, patience) -> float:
    """`fine_tune`'s loop with model selection on the validation error; the mean loss."""
    if eval_every < 1 or patience < 0:
        raise ValueError(f"`eval_every` must be positive and `patience` >= 0, got {eval_every}, {patience}.")
    variables = classifier.fine_tuned_variables
    best_error, best_step, best_values, stale, done, losses = np.inf, 0, None, 0, 0, []
    while done < steps and not (patience and stale >= patience):
        chunk = min(eval_every, steps - done)
        losses.append(float(loop(iterator, tf.constant(chunk, tf.int64))) * chunk)
        done += chunk
        error = error_rate(classifier, *validation)
        if error < best_error:
            best_error, best_step, stale = error, done, 0
            best_values = [v.numpy() for v in variables]
        else:
            stale += 1
    for variable, value in zip(variables, best_values):
        variable.assign(value)
    logging.info(
        "fine-tuned %d steps; the lowest validation error %.2f%% was at step %d",
        done,
        100 * best_error,
        best_step,
    )
    return sum(losses) / done


def error_rate(
    classifier: Classifier, examples: np.ndarray, labels: np.ndarray, batch_size: int = 1000
) -> float:
    """The fraction of `examples` whose most likely class is not their label."""
    predictions = np.concatenate(
        [np.argmax(classifier(batch).numpy(), axis=1) for batch in pipelines.eval_dataset(examples, batch_size)]
    )
    return float(np.mean(predictions != np.asarray(labels)))
