"""Implicit feedback, vae_cf's protocol: models and baselines over split seeds, test users once.

    ../shared/data/movielens-small/make_ratings_csv.sh ratings.csv
    python -m benchmarks.implicit_feedback --config=configs/movielens_implicit.py \
        --config.data.path=ratings.csv --split_seeds=0,1,2

For each split seed (`data.split_seed`: which users are held out and which of their items are
evaluated) the baselines (popularity, EASE with its L2 weight chosen on the validation users) and
each variant (the config with a few keys changed, `--variants`) are scored on the same users:
each variant trains with `train.train_and_evaluate` in a temporary workdir, keeps the weights of
its best validation NDCG@100 (`train.keep_best`), and is then evaluated once on the test users
(`--mode=eval --split=test`'s code). Prints a markdown table of the test users' Recall@20,
Recall@50 and NDCG@100: the mean over split seeds, +- their standard deviation, and the mean
standard error over users within a split; then the validation NDCG@100 each run selected on.

Last, each variant against EASE user by user: the test users' NDCG@100 differences pooled over
the split seeds (the same users, so the users' spread cancels), their mean with its standard
error, and how many users each ranks better. The per-user values are recomputed here (EASE's
scores, the restored model's logits) and checked to give the table's means.
"""

import os
import statistics
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rawtf_ae.data import sources  # noqa: E402
from rawtf_ae.program import modes, restore, train  # noqa: E402
from rawtf_ae.recommender import baselines, ranking  # noqa: E402

# Mult-VAE as vae_cf trains it: a linear code (the mean) beside its log-variance, no weight
# decay, the KL weight annealed to 0.2 (reached at 80% of the steps, as vae_cf's 200,000
# annealing steps against its ~46,000 training steps on ML-20M).
_VAE = {
    "model.layer_sizes": (0, 600, 200),
    "model.activation": "tanh,linear",
    "model.variational": True,
    "train.weight_decay": 0.0,
    "train.kl_anneal_steps": 4_000,
}
# The sampled softmax against the full one, on a catalog where both fit: sparse batches take no
# weight decay and a row-wise optimizer, so the full softmax's row drops its decay too.
_SAMPLED = {
    "data.ratings_batches": "sparse",
    "train.sampled_softmax": 1_000,
    "train.sampling_power": 0.75,
    "train.optimizer": "lazy_adam",
    "train.weight_decay": 0.0,
}
VARIANTS = {
    "dae_tied": {},
    "dae_untied": {"model.tied": False},
    "vae_tied": _VAE,
    "vae_untied": {**_VAE, "model.tied": False},
    "dae_tied_no_decay": {"train.weight_decay": 0.0},
    "dae_tied_sampled": _SAMPLED,
}

_CONFIG = config_flags.DEFINE_config_file("config", "configs/movielens_implicit.py", "Config file.")
_SPLIT_SEEDS = flags.DEFINE_list("split_seeds", ["0", "1", "2"], "data.split_seed values.")
_NAMES = flags.DEFINE_list("variants", list(VARIANTS)[:4], f"Which of: {', '.join(VARIANTS)}.")
_BASELINES = flags.DEFINE_boolean("baselines", True, "Also popularity and EASE.")
_METRICS = [ranking.key(name, k) for name, k in ranking.DEFAULT]


def _variant_config(base, overrides: dict, split_seed: int):
    config = base.copy_and_resolve_references()
    config.data.split_seed = split_seed
    config.train.ranking_baselines = False  # scored once per split below
    config.train.export = False
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        config[section][key] = tuple(value) if isinstance(value, list) else value
    return config


def _per_user(scores_fn, splits, mean: float) -> np.ndarray:
    """The test users' NDCG@100 under `scores_fn`, checked against the table's `mean`."""
    inputs, targets = splits.evaluated("test")
    values = ranking.accumulate(scores_fn, inputs, targets, 100).values[ranking.SELECTED]
    values = np.concatenate(values)
    if abs(values.mean() - mean) > 1e-5:  # e.g. sparse batches' logits, rounded otherwise
        print(f"note: the per-user NDCG@100 average {values.mean():.6f}, the table's {mean:.6f}")
    return values


def _run_variant(config, splits) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        found = train.train_and_evaluate(config, workdir)
        test = modes.evaluate(config, workdir, split="test")
        model, _, _ = restore.restore_model(config, workdir)
    logits = lambda fold_in: model.reconstruction_logits(fold_in).numpy()  # noqa: E731
    per_user = _per_user(logits, splits, test[f"test_{ranking.SELECTED}"])
    return {
        "best_step": found.get("best_step"),
        "val": found[f"val_{ranking.SELECTED}"],
        "per_user": per_user,
        **test,
    }


def _paired(results: dict) -> None:
    """Each variant's per-user NDCG@100 minus EASE's, pooled over the split seeds."""
    if len(results.get("ease", ())) != len(_SPLIT_SEEDS.value):
        return
    print(
        "\n| model - EASE, test NDCG@100 per user | mean difference | standard error | users better / worse |"
    )
    print("|---|---:|---:|---:|")
    ease = np.concatenate([run["per_user"] for run in results["ease"]])
    for name, runs in results.items():
        if name in ("ease", "popularity"):
            continue
        difference = np.concatenate([run["per_user"] for run in runs]) - ease
        error = difference.std() / np.sqrt(len(difference))
        better, worse = int((difference > 0).sum()), int((difference < 0).sum())
        print(
            f"| {name} | {difference.mean():+.4f} | {error:.4f} | {better} / {worse} of {len(difference)} |"
        )


def _table(results: dict) -> None:
    print("\n| model | " + " | ".join(f"test {m}" for m in _METRICS) + " | val NDCG@100 | best steps |")
    print("|---|" + "---|" * (len(_METRICS) + 2))
    for name, runs in results.items():
        cells = []
        for metric in _METRICS:
            values = [run[f"test_{metric}"] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            errors = [run.get(f"test_{metric}_se") for run in runs]
            within = f" (se {statistics.mean(errors):.3f})" if None not in errors else ""
            cells.append(f"{statistics.mean(values):.4f} +- {spread:.4f}{within}")
        val = [run["val"] for run in runs]
        steps = ",".join(str(run.get("best_step", "")) for run in runs)
        print(f"| {name} | " + " | ".join(cells) + f" | {statistics.mean(val):.4f} | {steps} |")


def _baselines(splits) -> dict:
    """`{"popularity": run, "ease": run}` on the split's users (EASE's with its per-user values)."""
    scored = baselines.ranking_baselines(splits, ("validation", "test"))
    runs = {}
    for baseline in ("popularity", "ease"):
        run = {f"test_{m}": scored[f"{baseline}_test_{m}"] for m in _METRICS}
        run["val"] = scored[f"{baseline}_val_{ranking.SELECTED}"]
        run["best_step"] = scored["ease_lambda"] if baseline == "ease" else "-"
        runs[baseline] = run
    if scored["ease_lambda"] is None:  # skipped: too many items
        return {"popularity": runs["popularity"]}
    eigen, chosen = baselines.gram_eigen(splits.train), scored["ease_lambda"]
    ease = lambda fold_in: baselines.ease_scores(fold_in.astype(np.float64), eigen, chosen)  # noqa: E731
    runs["ease"]["per_user"] = _per_user(ease, splits, runs["ease"][f"test_{ranking.SELECTED}"])
    return runs


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    base = _CONFIG.value
    results = {}
    for split_seed in map(int, _SPLIT_SEEDS.value):
        config = _variant_config(base, {}, split_seed)
        splits = sources.load(config.data, config.seed)
        if _BASELINES.value:
            for baseline, run in _baselines(splits).items():
                results.setdefault(baseline, []).append(run)
        for name in _NAMES.value:
            run = _run_variant(_variant_config(base, VARIANTS[name], split_seed), splits)
            results.setdefault(name, []).append(run)
            print(
                f"split seed {split_seed} {name}: test NDCG@100 {run[f'test_{ranking.SELECTED}']:.4f}, "
                f"val {run['val']:.4f} (step {run['best_step']})",
                flush=True,
            )
    _table(results)
    print("\n(for EASE the last column is its L2 weight, chosen on the validation users)")
    _paired(results)


if __name__ == "__main__":
    app.run(main)
