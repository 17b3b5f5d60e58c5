"""The program: train.py and `rawtf-ae`, their modes, and what a run writes and reads back.

  console.py   the command's entry point: a quiet console while TensorFlow loads
  cli.py       the flags and modes (train / eval / export / encode), the saved config
  train.py     train_and_evaluate: the outer loop around the step
  modes.py     eval / export / encode a trained workdir
  restore.py   a workdir read back: its model, input width and vocabulary
  outputs.py   what a finished run writes: picture, summaries, export, metrics.json
  images.py    the reconstruction grid PNG, the code scatter plot
  progress.py  examples/s, the ETA, the previous run's metrics

The top: imports every part, and nothing imports it.
"""
