"""Getting a trained model out: SavedModel signatures, TensorFlow Lite, ONNX.

  saved_model.py  encode/decode/reconstruct (and recommend) signatures; load
  tflite.py       the export as one .tflite model
  onnx.py         the export as .onnx files (the onnx extra)

Imports `recommender`, `models` and `rawtf_ae.files`; never `training`, `data` or `config`.
"""
