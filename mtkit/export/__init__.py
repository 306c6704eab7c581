"""Export a trained model to ONNX: ``python -m mtkit.export CKPT -o DIR`` (``mtkit-export``).

- :mod:`~mtkit.export.graphs`: the encoder and step graphs as torch modules for the
  exporter (ONNX's own GRU/LSTM nodes for the encoder, the model's step as it is);
- :mod:`~mtkit.export.writer`: the folder (graphs, sentencepiece models, ``model.json``),
  built beside the target and renamed into place once checked;
- :mod:`~mtkit.export.int8`: the int8 step graph (onnxruntime's quantization).

:mod:`mtkit.onnx_runtime` translates with the folder, without PyTorch. This package
imports the exporter's libraries (onnx, onnxscript) only when it exports.
"""
