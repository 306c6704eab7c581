"""The int8 step graph: onnxruntime's dynamic quantization of ``step.onnx``.

``quantize_dynamic`` stores the weights of the step's matrix products with a constant
weight (MatMul, Gemm) in int8, one scale per output channel, and quantizes each
product's input at run time. Only the step is quantized: it runs once per target token,
the encoder once per sentence. The input's scale is computed per tensor, over all rows
of the batch, so a row's numbers depend on the other rows of its batch: unlike mtkit's
PyTorch int8 path (one scale per row), the int8 step is not batch-invariant, and a
sentence may be translated differently alone and in a batch (docs/deploying.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


def quantize_step(source: Path, target: Path) -> None:
    """Write the int8 form of the step graph ``source`` to ``target``."""
    import onnx

    model = onnx.load(source)
    # Shape annotations: the exporter's intermediate ones are not all reproduced by the
    # stricter inference the quantizer runs (sliced gate blocks), and the quantizer's own
    # fix sizes it saw on dynamic axes. Both are dropped; onnxruntime infers its own.
    del model.graph.value_info[:]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process, at every call
    try:
        _quantize(model, target)
    finally:
        root.setLevel(level)
    quantized = onnx.load(target)
    del quantized.graph.value_info[:]
    onnx.save(quantized, target)


def weight_products(model: Any) -> list[str]:
    """The names of the MatMul/Gemm nodes whose second input is a weight matrix (a 2-D
    initializer): the step's projections, not the attention's product with ``v`` (a
    vector), whose sigmoid inputs an 8-bit scale would blur."""
    matrices = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in matrices
    ]


def _quantize(model: Any, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model,
        target,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_quantize=weight_products(model),
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )
