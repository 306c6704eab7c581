"""Translate with an ONNX export, without PyTorch: numpy, onnxruntime and sentencepiece only.

``python -m mtkit.onnx_runtime DIR -i IN -o OUT [--beam-size K] [--nbest N]`` (the
``mtkit-onnx`` console script) reads a folder written by ``mtkit-export``:

- :mod:`~mtkit.onnx_runtime.folder`: ``model.json`` and the graphs, checked, as an
  :class:`~mtkit.onnx_runtime.folder.ExportedModel` with the step protocol over numpy
  arrays (an ensemble's members stepped together);
- :mod:`~mtkit.onnx_runtime.codec`: text <-> ids, the model's source processing;
- :mod:`~mtkit.onnx_runtime.options`: search options, scores and length limits;
- :mod:`~mtkit.onnx_runtime.greedy` and :mod:`~mtkit.onnx_runtime.beam`: the searches,
  the same rules as :mod:`mtkit.search`'s;
- :mod:`~mtkit.onnx_runtime.translator`: text in, text out, in input order.

This package imports nothing of mtkit but :mod:`mtkit.errors` (an import-linter
contract holds it to that), so it installs and runs beside numpy, onnxruntime and
sentencepiece alone: ``pip install 'mtkit[onnx]'``.
"""
