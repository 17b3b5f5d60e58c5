"""Held-out RMSE of recommender variants over seeds, with the loss spikes each run had.

    python -m rawtf_ae.recommender.synthetic synthetic_ratings.csv
    python -m benchmarks.recommender_variants --config=configs/recommender_synthetic.py \
        --config.data.path=synthetic_ratings.csv --seeds=10

Each variant is the config with a few keys changed (`--variants` picks them by name); each runs
`train.train_and_evaluate` once per seed (`config.seed` = 0, 1, ...) in a temporary workdir,
logging the training loss every `--log_every` steps. A spike is the largest ratio of a logged
loss to the lowest one logged before it (after the first 10% of the steps): about 1.1 for a run
that only wanders, 5-20 for one whose loss jumped. Prints a markdown table: mean and standard
deviation of the held-out RMSE, the runs per seed, and the worst spike; `--baselines` adds the
global mean, the per-item mean and a biased matrix factorisation on the same split.
"""

import glob
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rawtf_ae.data import sources  # noqa: E402
from rawtf_ae.program import train
from rawtf_ae.recommender import baselines

VARIANTS = {
    "tied": {},
    "untied": {"model.tied": False},
    "untied_no_clip": {"model.tied": False, "train.clip_norm": 0.0},
    "tied_no_refeeding": {"train.dense_refeeding": 0},
    "untied_no_refeeding": {"model.tied": False, "train.dense_refeeding": 0},
    "tied_no_dropout": {"train.code_dropout": 0.0},
    "tied_no_corruption": {"train.corruption": "none"},
    "untied_no_corruption": {"model.tied": False, "train.corruption": "none"},
    "tied_by_user": {"data.ratings_by": "user"},
    # Sparse ratings batches: Keras Adam (dense updates of every row) against LazyAdam (the
    # rated rows only, their moments decaying only when rated); re-feeding needs dense batches.
    "sparse_adam": {"data.ratings_batches": "sparse", "train.dense_refeeding": 0, "train.optimizer": "adam"},
    "sparse_lazy_adam": {
        "data.ratings_batches": "sparse",
        "train.dense_refeeding": 0,
        "train.optimizer": "lazy_adam",
    },
}

_CONFIG = config_flags.DEFINE_config_file("config", "configs/recommender_synthetic.py", "Config file.")
_SEEDS = flags.DEFINE_integer("seeds", 10, "Seeds 0 .. seeds-1 per variant.")
_NAMES = flags.DEFINE_list("variants", list(VARIANTS), f"Which of: {', '.join(VARIANTS)}.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 20, "Steps between logged training losses.")
_BASELINES = flags.DEFINE_boolean(
    "baselines", False, "Also the global mean, the per-item mean and biased matrix factorisation."
)
_MF_RANK = flags.DEFINE_integer("mf_rank", 10, "--baselines: the factorisation's rank.")
_MF_REGULARIZATION = flags.DEFINE_float("mf_regularization", 10.0, "--baselines: its L2 weight.")


def _logged_losses(workdir: str) -> np.ndarray:
    values = []
    for path in glob.glob(os.path.join(workdir, "summaries", "train", "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            values += [float(tf.make_ndarray(v.tensor)) for v in event.summary.value if v.tag == "loss"]
    return np.array(values)


def worst_spike(losses: np.ndarray) -> float:
    """The largest `loss[t] / min(loss[:t])` after the first 10% of the logged losses."""
    start = max(1, len(losses) // 10)
    if len(losses) <= start:
        return float("nan")
    lowest = np.minimum.accumulate(losses)
    return float((losses[start:] / lowest[start - 1 : -1]).max())


def run(config, changes: dict, seed: int) -> tuple[float, float]:
    """`(held-out RMSE, worst spike)` of one run."""
    config = config.copy_and_resolve_references()
    config.seed = seed
    config.train.export = False
    config.train.log_every_steps = _LOG_EVERY.value
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        with config[section].ignore_type():  # e.g. dense_refeeding "auto" -> 0 (int or "auto")
            config[section][key] = value
    with tempfile.TemporaryDirectory() as workdir:
        metrics = train.train_and_evaluate(config, workdir)
        return metrics["val_rmse"], worst_spike(_logged_losses(workdir))


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    unknown = [name for name in _NAMES.value if name not in VARIANTS]
    if unknown:
        raise app.UsageError(f"--variants: unknown {unknown}; expected some of {list(VARIANTS)}.")
    base = _CONFIG.value
    rows = []
    for name in _NAMES.value:
        results = [run(base, VARIANTS[name], seed) for seed in range(_SEEDS.value)]
        for seed, (rmse, spike) in enumerate(results):
            print(f"{name}, seed {seed}: held-out RMSE {rmse:.4f}, worst spike {spike:.2f}", flush=True)
        flags_text = " ".join(f"`--config.{k}={v}`" for k, v in VARIANTS[name].items()) or "(the config)"
        rows.append((f"{name} {flags_text}", [r for r, _ in results], max(s for _, s in results)))
    print(
        f"\n{base.train.num_steps:,} steps, seeds 0-{_SEEDS.value - 1}, "
        f"jit_compile={base.train.jit_compile}\n"
    )
    print("| variant | held-out RMSE, mean ± std | per seed | worst spike |")
    print("|---|---:|---|---:|")
    for name, values, spike in rows:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {statistics.mean(values):.3f} ± {spread:.3f} | {per_seed} | {spike:.1f} |")
    if _BASELINES.value:
        for name, rmse in baseline_rmses(base).items():
            print(f"| {name} | {rmse:.3f} | (deterministic) | |")


def baseline_rmses(config) -> dict:
    """Held-out RMSE of the global mean, the per-item mean and biased MF on the config's split."""
    splits = sources.load(config.data, config.seed)
    targets = splits.validation_targets.values
    global_mean = float(np.sqrt(np.mean((splits.train.values.mean() - targets) ** 2)))
    rank, regularization = _MF_RANK.value, _MF_REGULARIZATION.value
    return {
        "global mean": global_mean,
        "per-item mean": baselines.item_mean_rmse(splits),
        f"biased MF (ALS, rank {rank}, regularization {regularization:g})": baselines.biased_mf_rmse(
            splits, rank=rank, regularization=regularization
        ),
    }


if __name__ == "__main__":
    app.run(main)
