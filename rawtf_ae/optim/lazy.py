"""Row-wise ("lazy") Adam and Adagrad: a sparse gradient updates only the rows it touches.

A tied ratings kernel `[items, units]` read by row (`tf.gather`, the sparse step) gets an
`IndexedSlices` gradient: the rows of the items a batch rated. Keras 3 optimizers turn it into a
dense update of the whole kernel and all its slots (measured: 175 ms per step for a
200,000 x 256 kernel and a 100-row gradient on this project's CPU), so the step's cost follows
the catalog. These two follow the touched rows instead, with TensorFlow's sparse update ops
(for Adam the touched rows gathered, updated by the fused `ResourceApplyAdam` kernel and
`scatter_update`d back; the `ResourceSparseApplyAdagradV2` kernel for Adagrad).
They are Keras optimizers: schedules, checkpoints (`tf.train.Checkpoint` saves the slots),
`tf.distribute` (mirrored replicas' sparse gradients are gathered, not densified) and
`LossScaleOptimizer` work as with `tf.keras.optimizers.Adam`.

How they differ from the dense optimizers, for a sparse gradient (a dense gradient gets exactly
the dense update, so every other variable trains as with Adam / Adagrad):

- `LazyAdam` (the semantics of TF Addons' `LazyAdam`): the moments `m`, `v` of a row decay only
  on the steps that touch the row, and only touched rows move. Dense Adam would keep moving an
  untouched row by its decaying momentum `m / sqrt(v)`; the bias correction still uses the
  global step. Both agree while every row is touched at every step.
- `LazyAdagrad`: identical to dense Adagrad of the same formula (an untouched row's gradient is
  0, so neither its accumulator nor its value would change). The formula is TensorFlow's
  kernel's: `accum += g^2; var -= lr * g / (sqrt(accum) + epsilon)`; Keras 3's `Adagrad` puts
  epsilon inside the square root (`sqrt(accum + epsilon)`), a difference of order epsilon.

Duplicate indices in a sparse gradient (an item rated by two users of a batch, or the encoder
and decoder paths of a tied kernel) are summed first, so the update is that of the dense
gradient the slices stand for.
"""

from __future__ import annotations

import tensorflow as tf


class UniqueRows(tf.IndexedSlices):
    """A sparse gradient whose row indices are distinct: `deduplicated`'s result, which
    `deduplicated` passes through (a step that sums the rows to clip them hands the sums on;
    any other transformation gives back a plain `tf.IndexedSlices`, summed again)."""


def deduplicated(gradient: tf.IndexedSlices) -> UniqueRows:
    """`gradient` with each row index once, in increasing order, the values of repeated
    indices summed.

    Each row's first entry is gathered and the later ones (few: items rated by several users
    of a batch) are added to it, in their order: faster on CPU than summing every entry by
    row (3.6 vs 5.8 ms for 12,800 x 512 with 2% repeats). Increasing rows make the optimizer's
    row gathers and scatters walk memory in order (24 vs 27 ms for three variables of a
    million rows).
    """
    if isinstance(gradient, UniqueRows):
        return gradient
    rows, positions = tf.unique(gradient.indices, out_idx=tf.int32)
    order = tf.argsort(rows)  # the rows are distinct: no tie to keep stable
    entry = tf.range(tf.size(positions))
    first = tf.math.unsorted_segment_min(entry, positions, tf.size(rows))  # each row's first entry
    repeated = tf.where(tf.not_equal(tf.gather(first, positions), entry))[:, 0]
    slot = tf.math.invert_permutation(order)  # a row's place among the increasing rows
    values = tf.tensor_scatter_nd_add(
        tf.gather(gradient.values, tf.gather(first, order)),
        tf.gather(slot, tf.gather(positions, repeated))[:, None],
        tf.gather(gradient.values, repeated),
    )
    return UniqueRows(values, tf.gather(rows, order), gradient.dense_shape)


def _tensor(variable):
    """The `tf.Variable` behind a Keras variable (Keras 3 wraps slots in its own class)."""
    return getattr(variable, "value", variable) if not isinstance(variable, tf.Variable) else variable


class _Rows:
    """Three variables of any number of rows, shaped like `variable`'s rows: one sparse
    update's rows of `variable` and of its two moments (a plain object: not checkpointed)."""

    def __init__(self, variable):
        shape = tf.TensorShape([None]).concatenate(variable.shape[1:])
        with tf.init_scope():  # made eagerly even if the optimizer is built inside a tf.function
            empty = tf.zeros([0, *variable.shape[1:]], variable.dtype)
            self.var, self.m, self.v = (tf.Variable(empty, shape=shape, trainable=False) for _ in range(3))


class LazyAdam(tf.keras.optimizers.Optimizer):
    """Adam whose sparse updates touch only the gradient's rows (see the module docstring).

    Args:
      learning_rate: a float or a `LearningRateSchedule`.
      beta_1, beta_2, epsilon: as in `tf.keras.optimizers.Adam` (epsilon outside the square
        root, added to `sqrt(v)`).
      name, **kwargs: as for any Keras optimizer.
    """

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="lazy_adam", **kwargs
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])
        # Scratch rows for the fused kernel (plain objects: not checkpointed). Under
        # ParameterServerStrategy they would live on a parameter server, where a variable of
        # `[None, units]` aborts the workers: the rows are updated by elementwise ops instead.
        remote = isinstance(tf.distribute.get_strategy(), tf.distribute.ParameterServerStrategy)
        self._rows = [None if remote else _Rows(v) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        m, v = _tensor(self._momentums[index]), _tensor(self._velocities[index])
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        if not isinstance(gradient, tf.IndexedSlices):  # the whole variable
            targets, grad = (variable, m, v), gradient
        else:
            # The touched rows of the variable and its moments, updated by the same kernel in
            # one pass (eleven elementwise ops took a quarter of the sparse step), then
            # written back.
            gradient = deduplicated(gradient)
            rows, scratch = gradient.indices, self._rows[index]
            if scratch is None:  # no scratch variables (ParameterServerStrategy)
                return _adam_rows(self, gradient, (variable, m, v), lr, step)
            targets, grad = (scratch.var, scratch.m, scratch.v), gradient.values
            for source, target in zip((variable, m, v), targets):
                target.assign(tf.gather(source, rows))
        # TensorFlow's fused Adam kernel: `m += (g - m)(1 - beta_1)`, `v += (g^2 - v)(1 - beta_2)`,
        # `var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon)`.
        tf.raw_ops.ResourceApplyAdam(
            var=targets[0].handle,
            m=targets[1].handle,
            v=targets[2].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=lr,
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.constant(self.epsilon, dtype),
            grad=tf.cast(grad, dtype),
        )
        if isinstance(gradient, tf.IndexedSlices):
            for source, target in zip(targets, (variable, m, v)):
                target.scatter_update(tf.IndexedSlices(tf.convert_to_tensor(source), rows))

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config


def _adam_rows(optimizer, gradient: UniqueRows, variables, lr, step) -> None:
    """`LazyAdam`'s sparse update without scratch variables: the rows gathered, updated by
    the fused kernel's formula in elementwise ops (bitwise its result on this project's CPU,
    tests/optim/test_lazy.py) and scattered back."""
    variable = variables[0]
    dtype = variable.dtype
    beta_1, beta_2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
    rows, grad = gradient.indices, tf.cast(gradient.values, dtype)
    var_rows, m_rows, v_rows = (tf.gather(source, rows) for source in variables)
    alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
    m_rows += (grad - m_rows) * (1 - beta_1)
    v_rows += (tf.square(grad) - v_rows) * (1 - beta_2)
    var_rows -= (m_rows * alpha) / (tf.sqrt(v_rows) + tf.constant(optimizer.epsilon, dtype))
    for target, value in zip(variables, (var_rows, m_rows, v_rows)):
        target.scatter_update(tf.IndexedSlices(value, rows))


class LazyAdagrad(tf.keras.optimizers.Optimizer):
    """Adagrad on TensorFlow's `(Sparse)ApplyAdagradV2` kernels (see the module docstring).

    Args:
      learning_rate: a float or a `LearningRateSchedule`.
      initial_accumulator_value: the accumulators' start (Keras's and TF 1's default, 0.1).
      epsilon: added to `sqrt(accum)`.
      name, **kwargs: as for any Keras optimizer.
    """

    def __init__(
        self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name="lazy_adagrad", **kwargs
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        initializer = tf.keras.initializers.Constant(self.initial_accumulator_value)
        self._accumulators = self.add_optimizer_variables(var_list, "accumulator", initializer=initializer)

    def update_step(self, gradient, variable, learning_rate):
        accumulator = _tensor(self._accumulators[self._get_variable_index(variable)])
        dtype = variable.dtype
        lr, epsilon = tf.cast(learning_rate, dtype), tf.constant(self.epsilon, dtype)
        if not isinstance(gradient, tf.IndexedSlices):
            tf.raw_ops.ResourceApplyAdagradV2(
                var=variable.handle,
                accum=accumulator.handle,
                lr=lr,
                epsilon=epsilon,
                grad=tf.cast(gradient, dtype),
            )
            return
        gradient = deduplicated(gradient)
        tf.raw_ops.ResourceSparseApplyAdagradV2(
            var=variable.handle,
            accum=accumulator.handle,
            lr=lr,
            epsilon=epsilon,
            grad=tf.cast(gradient.values, dtype),
            indices=gradient.indices,
        )

    def get_config(self):
        config = super().get_config()
        config.update(initial_accumulator_value=self.initial_accumulator_value, epsilon=self.epsilon)
        return config


def applies_rows(optimizer) -> bool:
    """Whether `optimizer` applies a `tf.IndexedSlices` gradient to its rows alone *and* as
    its dense update would (the lazy optimizers by design; plain SGD, whose update of an
    untouched row is zero anyway). Keras `Adam`, `RMSprop` and momentum `SGD` given
    `IndexedSlices` neither match their dense update nor save work: give them dense gradients.
    """
    optimizers = getattr(optimizer, "optimizers", [optimizer])  # one per multiplier group
    return all(
        isinstance(o, (LazyAdam, LazyAdagrad))
        or (isinstance(o, tf.keras.optimizers.SGD) and not float(o.momentum))
        for o in optimizers
    )
