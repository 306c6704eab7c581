"""The int8 step graph: onnxruntime's dynamic quantization of ``step.onnx``.

``quantize_dynamic`` stores the weights of the step's matrix products (MatMul, Gemm) in
int8, one scale per output channel, and quantizes each product's input at run time.
Only the step is quantized: it runs once per target token, the encoder once per
sentence. The input's scale is computed per tensor, over all rows of the batch, so a
row's numbers depend on the other rows in its batch: unlike mtkit's PyTorch int8 path
(one scale per row), the int8 step is not batch-invariant, and a sentence may be
translated differently alone and in a batch (docs/deploying.md gives the figures).
"""

from __future__ import annotations

from pathlib import Path


def quantize_step(source: Path, target: Path) -> None:
    """Write the int8 form of the step graph ``source`` to ``target``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The exporter annotates intermediate shapes that onnx's stricter shape inference
    # (which the quantizer runs) does not reproduce for sliced gate blocks: drop them.
    model = onnx.load(source)
    del model.graph.value_info[:]
    quantize_dynamic(
        model,
        target,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )
