"""Dense or sparse ratings batches (`data.ratings_batches`): what each is, and which a run takes.

A *dense* batch is `{"inputs": ratings, "mask": observed}`, each `[batch, items]`: the step
multiplies the whole first kernel both ways, so a step costs in proportion to the catalog.
That is the faster path for small catalogs (dense GEMMs beat gathers there).

A *sparse* batch is `{"inputs": tf.SparseTensor [batch, items]}` (evaluation adds `"targets"`,
the held-out ratings, another `tf.SparseTensor`): the encoder gathers the first kernel's rows of
the observed items and sums them per row (`TiedAutoencoder.encode_sparse`); the decoder's
last layer computes outputs at the observed items only, from the rows of the *same* variable
(`decode_at`). The masked MSE needs nothing else, so the step is exact, and it costs in
proportion to the ratings; the first kernel's gradient is one `tf.IndexedSlices` of the
touched rows (both paths), which a row-wise optimizer (`train.optimizer='lazy_adam'`) applies
without touching the other rows. No `[batch, items]` tensor exists on this path.

The sparse path refuses what needs every entry of a row: weight decay (it would update every
kernel row on every step), dense re-feeding (its re-fed examples are dense by definition),
the contractive penalty, noise on unobserved entries (`gaussian`, `salt_and_pepper`), mixed
precision (XLA compiles the step, its ratings padded: `rawtf_ae.training.sparse_compiled`) and
the multinomial loss's full softmax (`train.sampled_softmax` estimates it from the user's items
and drawn ones: `rawtf_ae.training.sampled_softmax`).
`masking` noise drops observed ratings, drawn per (step, example, item) by a counter-based
hash, so N replicas draw what one device draws (`sparse_noise`).

Two settings follow the batches when they are `"auto"` (the recommender recipes' values), so
that a recipe made for a small catalog still costs what the ratings cost on a large one
(`resolve_auto`, logged once each): `train.optimizer` is Keras `adam` on dense batches and
`lazy_adam` on sparse ones; `train.dense_refeeding` is 1 on dense batches and 0 on sparse
ones. An explicit value keeps its exact meaning (`adam` on sparse batches densifies the
gradient, with a warning; a re-feeding count keeps dense batches).
"""

from __future__ import annotations

from absl import logging

from rawtf_ae.recommender import implicit, ratings

CHOICES = ("auto", "dense", "sparse")

# `auto` takes the sparse path for rows this many times wider than their mean number of
# ratings: the break-even of benchmarks/catalog_scale.py (items-512-512-1024, lazy_adam, 100
# ratings per user: dense 1.35x faster at 8,192 items, sparse 1.20x at 16,384, 2.07x at
# 32,768; interpolated on a log scale, they cross near 12,600 items).
SPARSE_ABOVE = 125


def sparse_blockers(config) -> list[str]:
    """The options set in `config` that need dense batches, each with the reason."""
    train = config.train
    blockers = []
    if train.weight_decay:
        blockers.append("train.weight_decay (it changes every row of the first kernel on every step)")
    if train.dense_refeeding and train.dense_refeeding != "auto":
        blockers.append("train.dense_refeeding (a re-fed example is a dense [batch, items] output)")
    if train.contractive_weight:
        blockers.append("train.contractive_weight (its Jacobian is over every input)")
    if train.corruption in ("gaussian", "salt_and_pepper"):
        blockers.append(f"train.corruption={train.corruption!r} (it changes unobserved entries too)")
    if train.loss == "multinomial" and not train.sampled_softmax:
        blockers.append(
            "train.loss='multinomial' without train.sampled_softmax (its softmax is over every "
            "item: the whole first kernel each step; sampled, it reads the drawn items' rows only)"
        )
    if train.loss == "multinomial" and config.model.variational and len(config.model.layer_sizes) < 3:
        blockers.append("a one-layer model.variational (its log-variance kernel is as wide as the catalog)")
    if train.precision != "float32":
        blockers.append(f"train.precision={train.precision!r} (the sparse step runs in float32)")
    return blockers


def check_config(config) -> None:
    """Raises `ValueError` for ratings settings that cannot work (`ratings.check_config`), or a
    `data.ratings_batches` the other options cannot run."""
    ratings.check_config(config)
    implicit.check_config(config.data)
    choice = config.data.ratings_batches
    if choice not in CHOICES:
        raise ValueError(f"`data.ratings_batches` is {choice!r}; expected one of {', '.join(CHOICES)}.")
    blockers = sparse_blockers(config)
    if choice == "sparse" and blockers:
        raise ValueError(f"`data.ratings_batches='sparse'` does not work with {'; '.join(blockers)}.")


def choose(config, matrix: ratings.RatingMatrix) -> str:
    """`"dense"` or `"sparse"`: `data.ratings_batches`, with `"auto"` resolved for `matrix`.

    `auto` takes the sparse path for wide, sparse rows (`width >= SPARSE_ABOVE * mean ratings
    per row`) unless an option needs dense batches (`sparse_blockers`); it logs its choice.
    """
    choice = config.data.ratings_batches
    if choice != "auto":
        return choice
    per_row = matrix.nnz / max(len(matrix), 1)
    wide = matrix.width >= SPARSE_ABOVE * max(per_row, 1.0)
    blockers = sparse_blockers(config) if wide else []
    resolved = "sparse" if wide and not blockers else "dense"
    logging.info(
        "data.ratings_batches='auto': %s batches (%d columns, %.1f ratings per row%s)",
        resolved,
        matrix.width,
        per_row,
        f"; sparse would suit but {'; '.join(blockers)} needs dense" if blockers else "",
    )
    return resolved


def uses_sparse(config, splits) -> bool:
    """Whether training and evaluation on `splits` take sparse batches (never for images)."""
    return isinstance(splits, ratings.RatingSplits) and choose(config, splits.train) == "sparse"


def resolve_auto(config, sparse: bool):
    """`config` (a copy) with `train.optimizer` and `train.dense_refeeding` resolved where `"auto"`.

    On dense batches (`sparse=False`): Keras `adam` and one dense re-feeding update per step
    (0 without a masked loss: re-feeding is for ratings); on sparse ratings batches: `lazy_adam`
    (only the rated items' rows of the first kernel and of its moments move, so the update
    costs what the ratings cost; the rows' moments decay only when they are rated,
    docs/large-catalogs.md) and no re-feeding (a re-fed example is a dense output over the
    whole catalog). Each resolved value is logged with its reason; other values are kept.
    """
    if "auto" not in (config.train.optimizer, config.train.dense_refeeding):
        return config
    config = config.copy_and_resolve_references()
    train = config.train
    with train.ignore_type():  # a resolved copy holds plain values: "auto" -> an int
        if train.optimizer == "auto":
            train.optimizer = "lazy_adam" if sparse else "adam"
            reason = (
                "sparse ratings batches: it updates only the rated items' rows of the first kernel "
                "and its moments, where adam would update every row on every step"
            )
            logging.info(
                "train.optimizer='auto': %s (%s)", train.optimizer, reason if sparse else "dense batches"
            )
        if train.dense_refeeding == "auto":
            train.dense_refeeding = int(train.loss == "masked_mse" and not sparse)
            reason = "dense batches" if train.dense_refeeding else f"loss {train.loss!r}"
            if sparse:
                reason = (
                    "sparse ratings batches: a re-fed example is a dense output over every item; "
                    "--config.data.ratings_batches=dense --config.train.dense_refeeding=1 re-feeds "
                    "at a dense step's cost"
                )
            logging.info("train.dense_refeeding='auto': %d (%s)", train.dense_refeeding, reason)
    return config
