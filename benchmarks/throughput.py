"""Training throughput of rawtf_ae's step against Keras, PyTorch and the GEMM floor.

    python -m benchmarks.throughput [--cases=A256,A32,B256,C128] [--sweep=32,...,4096] [--rounds=5]

Interleaved in one process (A B C A B C ..., medians of `--rounds` windows of at least
`--window_seconds`, after a warm-up), for each case:
  rawtf_ae          the library's step (`make_train_step` + `make_train_loop`) as users get it
                    by default: compiled with XLA (`train.jit_compile="auto"`)
  rawtf_ae, no XLA  the same with `train.jit_compile=False`
  Keras tied        a `DenseTranspose` layer (a Dense kernel reused with transpose_b=True, own
                    bias) in a `keras.Model` trained with `model.fit`
  Keras tied XLA    the same compiled with `jit_compile=True`
  Keras untied      the same network with separate decoder kernels, `model.fit`
  GEMM floor        only the matrix multiplies one tied step needs (per kernel use: forward,
                    input gradient, weight gradient; no input gradient for the first layer), XLA
  PyTorch tied      when torch is installed (`pip install -e ".[bench]"`): `F.linear` on the
                    transposed parameter, eager and `torch.compile`
Cases: A = 784-392-196 SELU, BCE (batch 256 and 32); B = 784-1000-500-250-30 sigmoid with a
linear code, BCE (batch 256); C = 4096-512-512-1024 SELU, linear output, masked MSE on rating
rows with ~2% observed entries (batch 128; Kuchaiev & Ginsburg 2017's shape). All with Adam.
Threads are pinned equally for every framework. `--sweep` then times A at each batch size
(rawtf_ae, rawtf_ae XLA and the GEMM floor only) to show how the cost grows.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402
from rawtf_ae.config.defaults import default_config  # noqa: E402

_CASES = flags.DEFINE_list("cases", ["A256", "A32", "B256", "C128"], "Cases: A256, A32, B256, C128.")
_SWEEP = flags.DEFINE_list(
    "sweep", ["32", "64", "128", "256", "512", "1024", "2048", "4096"], "Batch sizes for case A's sweep."
)
_THREADS = flags.DEFINE_integer("threads", 2, "Intra- and inter-op threads for every framework.")

A = ((784, 392, 196), ["selu", "selu"])
# (layer sizes, encoder activations, batch, masked): masked = ratings rows and masked MSE.
CASES = {
    "A256": (*A, 256, False),
    "A32": (*A, 32, False),
    "B256": ((784, 1000, 500, 250, 30), ["sigmoid", "sigmoid", "sigmoid", "linear"], 256, False),
    "C128": ((4096, 512, 512, 1024), ["selu", "selu", "selu"], 128, True),
}


def _examples(sizes, batch, masked):
    """`(inputs, mask)` NumPy arrays of 16 batches: pixels in [0, 1], or sparse 1-5 ratings."""
    if masked:
        inputs, mask = common.random_ratings(16 * batch, sizes[0], common.RATINGS_DENSITY).to_dense()
        return inputs, mask
    return np.random.default_rng(0).uniform(size=(16 * batch, sizes[0])).astype(np.float32), None


def _timed(run_steps, batch, steps_per_call):
    """A window function: calls `run_steps()` (doing `steps_per_call` steps) for a while."""

    def window():
        count, started = 0, time.perf_counter()
        while True:
            run_steps()
            count += steps_per_call
            elapsed = time.perf_counter() - started
            if elapsed >= common.WINDOW_SECONDS.value:
                return count * batch / elapsed

    return window


def rawtf_ae_window(sizes, activations, batch, masked, jit):
    config = default_config()
    config.model.layer_sizes, config.model.activation = sizes, ",".join(activations)
    config.train.batch_size, config.train.jit_compile = batch, jit
    if masked:
        config.model.output_activation, config.train.loss = "linear", "masked_mse"
    return common.loop_runner(config, window_seconds=common.WINDOW_SECONDS.value)[1]


def keras_window(sizes, activations, batch, masked, tied, jit):
    keras = tf.keras

    class DenseTranspose(keras.layers.Layer):
        """The classic tied layer: another Dense layer's kernel, transposed, plus its own bias."""

        def __init__(self, dense, activation=None, **kwargs):
            super().__init__(**kwargs)
            self.dense, self.activation = dense, keras.activations.get(activation)

        def build(self, input_shape):
            self.bias = self.add_weight(shape=(self.dense.kernel.shape[0],), initializer="zeros", name="bias")

        def call(self, inputs):
            return self.activation(tf.matmul(inputs, self.dense.kernel, transpose_b=True) + self.bias)

    inputs = keras.Input((sizes[0],))
    h, encoders = inputs, []
    for width, activation in zip(sizes[1:], activations):
        encoders.append(keras.layers.Dense(width, activation=activation))
        h = encoders[-1](h)
    for i in reversed(range(len(encoders))):
        activation = activations[i - 1] if i > 0 else None  # logits out; BCE from logits
        h = (
            DenseTranspose(encoders[i], activation)(h)
            if tied
            else keras.layers.Dense(sizes[i], activation)(h)
        )
    model = keras.Model(inputs, h)

    def masked_mse(targets_and_mask, predictions):
        # The targets carry the mask beside them: [ratings, mask], `[batch, 2 * width]`.
        targets, mask = tf.split(targets_and_mask, 2, axis=-1)
        return tf.reduce_sum(mask * tf.square(targets - predictions), axis=-1)

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=masked_mse if masked else keras.losses.BinaryCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    x, mask = _examples(sizes, batch, masked)
    y = np.concatenate([x, mask], axis=-1) if masked else x
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat().prefetch(2)
    )
    steps = 10
    return _timed(lambda: model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0), batch, steps)


def gemm_floor_window(sizes, batch):
    """Only the matmuls of one tied step, with a real step's data flow (nothing can be skipped).

    Linear layers: encoder forward, decoder forward with each kernel transposed, then the
    backward pass (input and weight gradients, none for the data) and an update that uses the
    gradients, so XLA cannot drop any product.
    """
    rng = np.random.default_rng(0)
    kernels = [
        tf.Variable((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32))
        for a, b in zip(sizes, sizes[1:])
    ]
    x = tf.constant(rng.uniform(size=(batch, sizes[0])).astype(np.float32))

    @tf.function(jit_compile=True)
    def one_step():
        hs = [x]
        for w in kernels:  # encoder
            hs.append(tf.matmul(hs[-1], w))
        rs = [hs[-1]]
        for w in reversed(kernels):  # decoder: the same kernels, transposed
            rs.append(tf.matmul(rs[-1], w, transpose_b=True))
        grads, g = [None] * len(kernels), rs[-1]
        for position, k in enumerate(range(len(kernels))):  # decoder backward, last layer first
            grads[k] = tf.matmul(g, rs[-2 - position], transpose_a=True)
            g = tf.matmul(g, kernels[k])
        for k in reversed(range(len(kernels))):  # encoder backward
            grads[k] += tf.matmul(hs[k], g, transpose_a=True)
            if k > 0:
                g = tf.matmul(g, kernels[k], transpose_b=True)
        for w, grad in zip(kernels, grads):
            w.assign_sub(1e-9 * grad)

    @tf.function
    def run(n):
        for _ in tf.range(n):
            one_step()

    steps = tf.constant(10)
    return _timed(lambda: (run(steps), kernels[0].numpy()[0, 0]), batch, 10)


def flops_per_step(sizes, batch):
    per_use = [2 * batch * a * b for a, b in zip(sizes, sizes[1:])]
    return sum(6 * f for f in per_use) - 2 * per_use[0]  # 2 uses x 3 matmuls, minus the data's gradient


def torch_windows(sizes, activations, batch, masked):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {}
    torch.set_num_threads(_THREADS.value)
    torch.manual_seed(0)
    kernels = [torch.nn.Parameter(torch.randn(b, a) * (1 / a) ** 0.5) for a, b in zip(sizes, sizes[1:])]
    encoder_biases = [torch.nn.Parameter(torch.zeros(b)) for b in sizes[1:]]
    decoder_biases = [torch.nn.Parameter(torch.zeros(a)) for a in sizes[:-1]]
    functions = {"selu": F.selu, "sigmoid": torch.sigmoid, "linear": lambda v: v}

    def forward(x):
        h = x
        for w, b, name in zip(kernels, encoder_biases, activations):
            h = functions[name](F.linear(h, w, b))
        for i in reversed(range(len(kernels))):
            h = F.linear(h, kernels[i].t(), decoder_biases[i])  # the same parameter, transposed
            if i > 0:
                h = functions[activations[i - 1]](h)
        if masked:
            return (mask * (h - x) ** 2).sum() / mask.sum()
        return F.binary_cross_entropy_with_logits(h, x)

    inputs, observed = _examples(sizes, batch, masked)
    x = torch.from_numpy(inputs[:batch])
    mask = torch.from_numpy(observed[:batch]) if masked else None
    windows = {}
    for name, fn in (
        ("PyTorch tied, eager", forward),
        ("PyTorch tied, torch.compile", torch.compile(forward)),
    ):
        optimizer = torch.optim.Adam([*kernels, *encoder_biases, *decoder_biases], lr=1e-3)

        def ten_steps(fn=fn, optimizer=optimizer):
            for _ in range(10):
                optimizer.zero_grad(set_to_none=True)
                fn(x).backward()
                optimizer.step()

        windows[name] = _timed(ten_steps, batch, 10)
    return windows


def main(argv):
    del argv
    tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
    tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
    for case in _CASES.value:
        if case not in CASES:
            raise app.UsageError(f"--cases: unknown case {case!r}; expected some of {', '.join(CASES)}.")
        sizes, activations, batch, masked = CASES[case]
        windows = {
            "rawtf_ae": rawtf_ae_window(sizes, activations, batch, masked, jit="auto"),
            "rawtf_ae, no XLA": rawtf_ae_window(sizes, activations, batch, masked, jit=False),
            "Keras tied, fit": keras_window(sizes, activations, batch, masked, tied=True, jit=False),
            "Keras tied, fit XLA": keras_window(sizes, activations, batch, masked, tied=True, jit=True),
            "Keras untied, fit": keras_window(sizes, activations, batch, masked, tied=False, jit=False),
            "GEMM floor (XLA)": gemm_floor_window(sizes, batch),
            **torch_windows(sizes, activations, batch, masked),
        }
        rates = common.interleave(windows, common.ROUNDS.value)
        flops = flops_per_step(sizes, batch)
        title = (
            f"case {case}: {'-'.join(map(str, sizes))}, batch {batch}, Adam, median of {common.ROUNDS.value}"
        )
        common.print_table(title, rates, baseline="rawtf_ae")
        medians = {name: statistics.median(values) for name, values in rates.items()}
        print(
            "\nrawtf_ae / each: "
            + ", ".join(
                f"{name} {medians['rawtf_ae'] / rate:.2f}x"
                for name, rate in medians.items()
                if name != "rawtf_ae"
            )
        )
        floor = medians["GEMM floor (XLA)"]
        for name in ("rawtf_ae", "rawtf_ae, no XLA", "GEMM floor (XLA)"):
            rate = medians[name]
            print(f"{name}: {rate / floor:.0%} of the GEMM floor, {rate / batch * flops / 1e9:.1f} GFLOP/s")
    if _SWEEP.value:
        sweep()


def sweep():
    """Case A at every `--sweep` batch size: examples/s and the share of the GEMM floor."""
    sizes, activations = A
    shape = "-".join(map(str, sizes))
    print(f"\nbatch sweep, case A ({shape} SELU, BCE, Adam), median of {common.ROUNDS.value}\n")
    print("| batch | rawtf_ae (XLA) | no XLA | GEMM floor | rawtf_ae / floor | no XLA / floor | GFLOP/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for batch in (int(b) for b in _SWEEP.value):
        windows = {
            "default": rawtf_ae_window(sizes, activations, batch, False, jit="auto"),
            "no XLA": rawtf_ae_window(sizes, activations, batch, False, jit=False),
            "floor": gemm_floor_window(sizes, batch),
        }
        medians = {
            name: statistics.median(v) for name, v in common.interleave(windows, common.ROUNDS.value).items()
        }
        default, plain, floor = medians["default"], medians["no XLA"], medians["floor"]
        gflops = default / batch * flops_per_step(sizes, batch) / 1e9
        print(
            f"| {batch} | {default:,.0f} | {plain:,.0f} | {floor:,.0f} | {default / floor:.0%} | "
            f"{plain / floor:.0%} | {gflops:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
