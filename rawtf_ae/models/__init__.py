"""The autoencoders: `tf.Module`s over raw `tf.Variable` lists, the decoder tied to the encoder.

  base.py           Autoencoder: what every model shares (dtypes, widths, encode/decode)
  dense.py          TiedAutoencoder (dense layers, tied, untied or partially tied), untie
  conv.py           TiedConvAutoencoder: conv2d encoder, conv2d_transpose decoder, same filters
  architectures.py  the model kinds a config names: create_model(config), widths, tying
  activations.py, initializers.py   by name, per layer
  row_ops.py        the row gathers and sums of the sparse path
  weights_file.py   `.npz` weights for other frameworks (save_weights, load_weights)
  pca.py            PCA, the linear baseline an autoencoder is compared with

Imports `rawtf_ae.files` only.
"""
