"""Optimizers and learning rates, built from `config.train`.

  optimizers.py  create_optimizer, per-variable learning-rate multipliers (GroupedOptimizer)
  schedules.py   warm-up, cosine, exponential; schedules that follow the training step
  lazy.py        LazyAdam, LazyAdagrad: a sparse gradient updates its rows only

Imports `rawtf_ae.files` only.
"""
