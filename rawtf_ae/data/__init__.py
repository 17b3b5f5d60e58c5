"""The data a config names, as arrays, and the resumable tf.data pipelines over them.

  sources.py      curves, MNIST, arrays, ratings: one `load(config.data, seed)` -> Splits
  pipelines.py    train_dataset (batch `s` from `(seed, s)`: resumable, sharded), eval_dataset
  array_files.py  Keras .npz, IDX folders, .npy/.npz arrays: checked readers
  idx.py          the safe IDX (MNIST) reader

Imports the parts below it (`recommender` for ratings) and `rawtf_ae.files`. The names of the
flat `rawtf_ae.data` module of earlier releases still work here, with a `DeprecationWarning`.
"""


def __getattr__(name):
    from rawtf_ae import _moved_attribute  # the old flat module's names (PEP 562)

    return _moved_attribute("data", name)
