"""The training machinery: losses, noise, the step, the loop, state, checkpoints, signals.

  losses.py              reconstruction losses, masked squared error, penalties
  corruption.py          denoising noise and code dropout, drawn for the global batch
  steps.py               StepOptions (frozen, from the config), the objective, make_step
  multinomial.py         the Mult-DAE / Mult-VAE term of the objective (implicit feedback)
  sampled_softmax.py     the multinomial term on sparse batches, over sampled items
  sparse_compiled.py     the sparse step between its row gathers, XLA-compiled
  loops.py               make_train_loop: N steps in one tf.function
  state.py               TrainState, create_train_state (model + optimizer + step)
  evaluation.py          make_evaluate, ratings metrics, ranking metrics (make_rank)
  checkpoints.py         restore with fallback, safe saves, the workdir lock
  preemption.py          SIGTERM/Ctrl-C, PreemptionCheckpointHandler, lost workers
  early_stopping.py      the best validation loss so far: its weights kept, early stopping
  distribute.py          the tf.distribute strategy a config names
  parameter_server.py    the catalog sharded over parameter servers, the scheduled steps
  sharded_checkpoint.py  a sharded run's checkpoint in one device's layout
  pretrain.py            greedy layer-wise pretraining and assembly
  classifier.py          a softmax layer on the encoder, supervised fine-tuning

Imports `data`, `recommender`, `optim`, `models` and `rawtf_ae.files`; never `serving`,
`config` or `program`.
"""
