"""int8 decoding on CPUs: the decoder's matrix products with 8-bit weights.

A greedy or beam step multiplies a few dozen rows by the decoder's weight matrices, the
output layer's (H x M, 8 MB in fp32 for M = 4k columns) above all. With so few rows a
product reads each weight once per step, so its speed is the memory's, not the
arithmetic units': on a 2-core AVX2 CPU the fp32 output layer ran at 31 GFLOP/s for 32
rows against 50 for 800. With int8 weights a quarter of the bytes move, and the x86
backend (fbgemm) multiplies in 8-bit integers: ``scripts/bench_decode.py`` measures what
a whole search gains.

The scheme (Jacob et al., 2018), with a fixed range for the inputs:

.. code-block:: text

    W_q[j, :] = round(W[j, :] / s_j),  s_j = max|W[j, :]| / 127   per output row, once
    x_q       = round(x / a) + z,      a, z from the range [-b, b]  per layer, fixed
    y         = a * s_j * (x_q - z) . W_q[j, :] + b_j               int32 accumulation

so only the rounding of ``x`` and ``W`` differs from ``x @ W.T + b``
(:func:`reference_linear` is that fp32 product; the tests hold the two within a
tolerance). Activations are quantized to 7 bits (``reduce_range``), as the x86 backend
needs on CPUs without VNNI so its 16-bit intermediate sums cannot saturate.

Why a fixed range: PyTorch's dynamic quantization takes ``a`` and ``z`` from the min and
max of the whole input matrix, so a sentence's rounding, and its translation, would
depend on the other sentences of its batch. Every input of a decoder step is bounded
ahead of time instead: hidden states, attention contexts (convex combinations of
encoder states) and features are outputs of tanh/sigmoid gates, in [-1, 1]; the
embeddings lie within the largest absolute value of their table. Each layer's input is
clamped to its bound ``b`` (a no-op for these inputs) and quantized with the scale and
zero point of [-b, b], given to the backend, so the int8 products never mix the rows of
a batch. (The fp32 parts around them can still round a row's last
bit differently with the batch size, as in fp32; int8 rounding can, rarely, carry such a
difference into a different word.)

Which PyTorch API: ``torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32``
over weights packed by ``linear_prepack`` (the x86/fbgemm backend): fp32 in, the input
quantized with a scale and zero point we give, fp32 out. It gives bit for bit what
``linear_dynamic`` (which takes the range from the input's min and max) gives with one
extra row holding -b and b appended, the form used before, without copying the input
to append that row: a 32-row product of the output layer took ~2.1 instead of ~2.9 ms
on one AVX2 core (measured beside another job). PyTorch 2.13 marks the creation of quantized
tensors, which the packing needs, as deprecated; its replacements for int8 products on the
CPU, ``torch._int_mm`` and ``torch._weight_int8pack_mm``, measured 30 to 100 times
*slower* than fp32 on a 2-core AVX2 CPU (500 x 512 by 512 x 3961: 1.7 s against 40 ms;
``linear_dynamic`` 16 ms), so they are no option there yet. Should a later PyTorch drop
the packed path, :func:`check_int8` turns ``--precision int8`` into a one-line error.

What is quantized (:func:`quantize_for_inference`): in each :class:`~mtkit.model.seq2seq.Seq2Seq`,
the output layer, the decoder's attention projections and feature layer, and every
matrix of the decoder RNN's step but one: the embedding half of the first layer's input
gates depends only on the previous token, so it becomes a table of fp32 gates, one row
per vocabulary entry (:meth:`~mtkit.model.decoder.Decoder.tabulate_embedding_gates`, while the
table stays under ``GATE_TABLE_BYTES``; above, that product is int8 too). A lookup of a
step's rows replaces a product whose cost, for the few rows of a service's step, is
mostly fixed: a 13-row int8 step of a Multi30k model went from ~3.0 to ~2.7 ms on one
AVX2 core. The encoder (the library's fused RNN), the embeddings, the bridge and the
attention scores stay fp32. (An encoder written out step
by step, to quantize its products too, was slower than the fused one on a 2-core AVX2
CPU for every batch of more than one sentence, so it was not kept.)
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with W in int8 (a scale per output row), x quantized in [-b, b].

    ``weight`` (N, K) and ``bias`` (N,) are the fp32 originals, ``bound`` is ``b``, the
    largest absolute value the inputs can have; ``forward`` takes (..., K) and returns
    (..., N) in fp32. :attr:`weight` and :attr:`bias` give the
    dequantized weight and the bias back for code that needs the matrix itself (a
    shortlist scores its own columns with them, in fp32).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, bound: float = 1.0) -> None:
        super().__init__()
        weight = weight.detach().float().contiguous()
        scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        zeros = torch.zeros(len(scales), dtype=torch.long)
        with warnings.catch_warnings():  # see the module docstring: deprecated, still the fast one
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
            quantized = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
        bias = None if bias is None else bias.detach().float().contiguous()
        self.out_features, self.in_features = weight.shape
        # A packed-weight object, not a tensor: kept out of state_dict and parameters().
        self._packed: Any = torch.ops.quantized.linear_prepack(quantized, bias)
        self._dequantized = quantized.dequantize()
        self.bias: torch.Tensor | None = bias
        self.bound = float(bound)
        self.input_scale, self.input_zero = input_quantization(self.bound)
        # fp32 input quantized with the scale and zero point given, int8 weights, fp32 out
        self._linear = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32

    @property
    def weight(self) -> torch.Tensor:
        """The int8 weight as fp32 (N, K): what the products effectively use."""
        return self._dequantized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float().clamp(-self.bound, self.bound)
        y = self._linear(flat, self.input_scale, self.input_zero, self._packed)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    def __deepcopy__(self, memo: dict[int, Any]) -> Int8Linear:
        """Packed weights do not deep-copy; rebuild from the dequantized ones (same values)."""
        return Int8Linear(self._dequantized.clone(), self.bias, self.bound)


def input_quantization(bound: float) -> tuple[float, int]:
    """Scale and zero point of inputs in [-bound, bound] on 7 bits (0 .. 127).

    What PyTorch's dynamic quantization with ``reduce_range`` chooses for an input whose
    min and max are -bound and bound: ``a = 2 b / 127`` (as a float32) and
    ``z = nearbyint(b / a) = nearbyint(63.5) = 64``, so the products equal those of
    ``linear_dynamic`` on an input holding both bounds.
    """
    return float(torch.tensor(2.0 * bound / 127.0, dtype=torch.float32)), 64


def reference_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The fp32 product :class:`Int8Linear` approximates: ``x W^T + b``."""
    return F.linear(x, weight, bias)


def int8_available() -> bool:
    """Whether this PyTorch build can pack and multiply int8 weights on the CPU."""
    try:
        layer = Int8Linear(torch.ones(2, 2), torch.zeros(2))
        return bool(torch.isfinite(layer(torch.ones(1, 2))).all())
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
