"""int8 products on CPUs: ``x W^T + b`` with 8-bit weights, the kernel of int8 decoding.

A decoding step multiplies a few dozen rows by the decoder's weight matrices, the output
layer's above all. With so few rows each weight is read once per step, so the product is
bound by memory traffic rather than arithmetic: int8 weights move a quarter of the bytes,
and the x86 backend (fbgemm) multiplies in 8-bit integers. Which products are quantized,
and how a model copy gets them, is :mod:`mtkit.search.quantize`.

The scheme (Jacob et al., 2018), with a fixed range for the inputs:

.. code-block:: text

    W_q[j, :] = round(W[j, :] / s_j),  s_j = max|W[j, :]| / 127   per output row, once
    x_q       = round(x / a) + z,      a, z from the range [-b, b]  per layer, fixed
    y         = a * s_j * (x_q - z) . W_q[j, :] + b_j               int32 accumulation

so only the rounding of ``x`` and ``W`` differs from ``x @ W.T + b``
(:func:`reference_linear`; the tests hold the two within a tolerance). Activations are
quantized to 7 bits (``reduce_range``), so that the backend's 16-bit intermediate sums
cannot saturate on CPUs without VNNI.

Why a fixed range: dynamic quantization takes ``a`` and ``z`` from the min and max of the
whole input matrix, so a sentence's rounding, and its translation, would depend on the
other sentences of its batch. Each input is instead clamped to a bound ``b`` known ahead
of time (a no-op for inputs that respect it) and quantized with the scale and zero point
of [-b, b], so the int8 products never mix the rows of a batch. The product is
``torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32`` over weights packed
by ``linear_prepack``: fp32 in, the input quantized with the scale and zero point given,
fp32 out; bit for bit what ``linear_dynamic`` gives on the input plus one row holding -b
and b, without copying the input. PyTorch marks the creation of quantized tensors, which
the packing needs, as deprecated, but this packed path is the CPU's fast int8 product;
where a PyTorch build lacks it, :func:`int8_available` says so and ``--precision int8``
is a one-line error.
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
        with warnings.catch_warnings():  # deprecated, still the fast path (module docstring)
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
        return type(self)(self._dequantized.clone(), self.bias, self.bound)


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
