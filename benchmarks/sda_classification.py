"""Test error of a classifier with and without denoising pretraining, averaged over seeds.

    python -m benchmarks.sda_classification --config=configs/mnist_sda.py --seeds=3
        [--config.train.strategy=mirrored --config.train.logical_cpus=2]

For each seed: (a) the encoder from random initialization, (b) the encoder after greedy
denoising pretraining (`rawtf_ae.training.pretrain`, unsupervised, training split only); then a softmax
layer on top and supervised fine-tuning of the whole encoder (`rawtf_ae.training.classifier`) for the
same number of steps; test error on the held-out split. With test files (the full MNIST at
`data.num_validation=10000`), the validation split picks the fine-tuning step
(`--eval_every`, `--patience`) and the test files are scored once. Prints a markdown table. The
fine-tuning runs under `train.strategy` (a fresh strategy per model; pretraining runs on one
device, as in `train.py`).
"""

import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rawtf_ae.data import sources  # noqa: E402
from rawtf_ae.models import architectures
from rawtf_ae.training import classifier, distribute, pretrain

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mnist_sda.py", "Config file.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "How many seeds to average over.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 1_000, "With test files: steps between validation errors.")
_PATIENCE = flags.DEFINE_integer("patience", 0, "With test files: stop after this many without a new best.")


def main(argv):
    del argv
    base = _CONFIG.value
    splits = sources.load(base.data, base.seed)
    # With test files (the full MNIST: 50,000 / 10,000 / 10,000), the validation split selects
    # the fine-tuning step and the test split is scored once; a t10k-only folder has no test
    # split, and its held-out validation images are the test then (no selection).
    selecting = splits.test is not None
    test_x, test_y = splits.examples("test") if selecting else splits.examples("validation")
    selection = {}
    if selecting:
        selection = dict(
            validation=(splits.validation, splits.validation_labels),
            eval_every=_EVAL_EVERY.value,
            patience=_PATIENCE.value,
        )
    errors = {"random initialization": [], "denoising pretraining": []}
    for seed in range(_SEEDS.value):
        config = base.copy_and_resolve_references()
        config.seed = seed
        for name in errors:
            strategy = distribute.create_strategy(config.train)
            with strategy.scope():
                encoder = architectures.create_model(config)
                model = classifier.Classifier(encoder, num_classes=10, seed=seed)
            if name == "denoising pretraining":
                pretrain.assemble(encoder, pretrain.pretrain_layers(config, splits.train))
            classifier.fine_tune(
                model,
                splits.train,
                splits.train_labels,
                steps=config.train.num_steps,
                batch_size=config.train.batch_size,
                learning_rate=config.train.learning_rate,
                seed=seed,
                strategy=strategy,
                **selection,
            )
            errors[name].append(classifier.error_rate(model, test_x, test_y))
            print(f"seed {seed}, {name}: test error {errors[name][-1]:.2%}", flush=True)
    sizes = "-".join(map(str, base.model.layer_sizes))
    print(
        f"\n{sizes} {base.model.activation}, {len(splits.train):,} train / "
        f"{len(splits.validation) if selecting else 0:,} validation / {len(test_x):,} test, "
        f"{base.train.num_steps:,} fine-tuning steps, {_SEEDS.value} seeds\n"
    )
    print("| encoder | mean test error | per seed |")
    print("|---|---:|---|")
    for name, values in errors.items():
        print(f"| {name} | {statistics.mean(values):.2%} | {', '.join(f'{v:.2%}' for v in values)} |")


if __name__ == "__main__":
    app.run(main)
